"""The one Definitions object: assets, SQL models, jobs, the new-source sensor and resources."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from assets_defs import documents, evaluation, linking, model, network, review
from assets_defs import tables as table_defs
from assets_defs.jobs import (
    distillation_job,
    linkage_job,
    source_job,
    table_job,
    table_linkage_job,
    training_job,
)
from assets_defs.schedules import linkage_job_schedule
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


def default_executor() -> dg.ExecutorDefinition | None:
    """Dagster's default (multiprocess) executor, or with LP_EXECUTOR=celery the Celery executor (README).

    The Celery executor sends each step to the workers listening on LP_CELERY_BROKER (default
    ``redis://localhost:6379/0``) and reads step results from LP_CELERY_BACKEND (default: the broker).
    """
    choice = os.environ.get("LP_EXECUTOR", "")
    if choice in ("", "multiprocess"):
        return None
    if choice != "celery":
        raise ValueError(f"LP_EXECUTOR={choice!r}: expected 'multiprocess' (the default) or 'celery'")
    from dagster_celery import (
        celery_executor,  # the [celery] extra: imported only when asked for
    )

    broker = os.environ.get("LP_CELERY_BROKER", "redis://localhost:6379/0")
    backend = os.environ.get("LP_CELERY_BACKEND", broker)
    return celery_executor.configured({"broker": broker, "backend": backend}, name="celery")


all_assets = [
    *dg.load_assets_from_modules([documents, evaluation, linking, model, network, review]),
    *sql_model_assets,
]
# Table sources (CSV/Parquet) and their Fellegi-Sunter assets; kept out of all_assets because table_records is
# partitioned by table source, not by document source (selections over all_assets stay as they were).
table_assets = dg.load_assets_from_modules([table_defs])

# Every step that rejects inputs writes its own Parquet file of this table (one per stage and source), so no step
# owns it: it is declared downstream of all of them, for lineage in the UI.
rejected_inputs = dg.AssetsDefinition(
    specs=[
        dg.AssetSpec(
            "rejected_inputs",
            deps=["document_sources", "page_images", "region_labels", "layout_regions", "region_crops",
                  "crop_embeddings", "table_sources", "table_records", "table_links"],
            group_name="documents",
            kinds={"parquet"},
            description="One row per rejected input (a file, page, crop, row or sources.yaml entry) with the stage "
            "and the reason; written by the step that rejected it.",
        )
    ]
)

defs = dg.Definitions(
    assets=[*all_assets, *table_assets, rejected_inputs],
    jobs=[source_job, linkage_job, training_job, distillation_job, table_job, table_linkage_job],
    schedules=[linkage_job_schedule],
    sensors=[document_source_sensor, table_defs.table_source_sensor, table_defs.table_linkage_sensor],
    resources=default_resources(),
    executor=default_executor(),
)
