"""Helpers of the tests that run `dagster asset materialize` in separate processes on a corpus of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from assets_defs.partitions import SOURCE_PARTITIONS_NAME
from resources import LinkageStore

REPO = Path(__file__).resolve().parents[2]
#: The per-source document chain (crop embeddings need the linkage model and are not what these tests are about).
CHAIN = "page_images,region_labels,layout_regions,region_crops,ocr_texts,labelled_regions"


def comparable_table(data_dir: Path, table: str) -> pd.DataFrame:
    """A table with its file-path columns dropped (they differ between data directories), as sorted text."""
    frame = LinkageStore(data_dir=str(data_dir)).store().read_table(table)
    frame = frame.drop(columns=[c for c in frame.columns if c.endswith("_path")]).astype(str)
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def cli_env(home: Path, data_dir: Path, sources: Sequence[str]) -> dict[str, str]:
    """Environment of a Dagster instance in ``home`` on ``data_dir``, with ``sources`` added as partitions."""
    home.mkdir(exist_ok=True)
    env = os.environ | {"DAGSTER_HOME": str(home), "LP_DATA_DIR": str(data_dir), "LP_DUCKDB_PATH": "",
                        "LP_ARTIFACT_DIR": ""}
    subprocess.run([sys.executable, "-c", "import dagster as dg; dg.DagsterInstance.get().add_dynamic_partitions("
                    f"{SOURCE_PARTITIONS_NAME!r}, {list(sources)!r})"], env=env, check=True, cwd=REPO)
    return env


def materialize_cmd(partition: str, selection: str = CHAIN) -> list[str]:
    """The `dagster asset materialize` command line for one partition."""
    return [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "assets_defs.definitions",
            "--select", selection, "--partition", partition]


def materialize_chain_in_process(data_dir: Path, sources: Sequence[str]) -> None:
    """The reference of the multi-process tests: :data:`CHAIN` of every source, sequential and in process."""
    import dagster as dg

    from assets_defs.definitions import all_assets
    from resources import ComputeResource, EnginesResource

    resources = {"linkage_store": LinkageStore(data_dir=str(data_dir)), "compute": ComputeResource(device="cpu"),
                 "engines": EnginesResource()}
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, list(sources))
    for name in sources:
        assert dg.materialize(all_assets, selection=dg.AssetSelection.assets(*CHAIN.split(",")), partition_key=name,
                              instance=instance, resources=resources).success
