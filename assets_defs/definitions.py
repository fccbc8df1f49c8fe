"""The one Definitions object: assets, SQL models, jobs, the new-source sensor and resources."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from assets_defs import documents, evaluation, linking, model, network
from assets_defs.jobs import linkage_job, source_job, training_job
from assets_defs.sensors import document_source_sensor
from assets_defs.sql_models import sql_model_assets
from resources import ComputeResource, EnginesResource, LinkageStore

REPO_ROOT = Path(__file__).resolve().parent.parent
# The demo corpus is the default data directory; users point LP_DATA_DIR at their own (README).
os.environ.setdefault("LP_DATA_DIR", str(REPO_ROOT / "data" / "demo"))
os.environ.setdefault("LP_DUCKDB_PATH", "")
os.environ.setdefault("LP_ARTIFACT_DIR", "")


def default_resources() -> dict[str, object]:
    """Resources read from the environment: LP_DATA_DIR, LP_DUCKDB_PATH, LP_ARTIFACT_DIR, LP_DEVICE."""
    return {
        "linkage_store": LinkageStore(
            data_dir=dg.EnvVar("LP_DATA_DIR"), database=dg.EnvVar("LP_DUCKDB_PATH"), artifact_dir=dg.EnvVar("LP_ARTIFACT_DIR")
        ),
        "compute": ComputeResource(device=os.environ.get("LP_DEVICE", "auto")),
        "engines": EnginesResource(),
    }


all_assets = [
    *dg.load_assets_from_modules([documents, evaluation, linking, model, network]),
    *sql_model_assets,
]

defs = dg.Definitions(
    assets=all_assets,
    jobs=[source_job, linkage_job, training_job],
    sensors=[document_source_sensor],
    resources=default_resources(),
)
