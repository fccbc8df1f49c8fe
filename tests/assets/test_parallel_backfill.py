"""Sources materialized in parallel processes give exactly the rows of a sequential run, with no lock errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd

from assets_defs.definitions import all_assets
from assets_defs.jobs import source_assets
from assets_defs.partitions import SOURCE_PARTITIONS_NAME
from linkage_pipeline.documents.synthetic import generate_corpus
from resources import ComputeResource, EnginesResource, LinkageStore

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("firm_directory", "supplier_lists")
PER_SOURCE_TABLES = ("page_images", "layout_regions", "region_crops", "ocr_texts", "labelled_regions", "rejected_inputs")
SELECTION = "page_images,region_labels,layout_regions,region_crops,ocr_texts,labelled_regions"


def _table(data_dir: Path, table: str) -> pd.DataFrame:
    frame = LinkageStore(data_dir=str(data_dir)).store().read_table(table)
    # paths differ between the two data directories; everything else must be identical
    frame = frame.drop(columns=[c for c in frame.columns if c.endswith("_path")]).astype(str)
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def test_parallel_partition_runs_equal_sequential_run(tmp_path: Path) -> None:
    seq_dir, par_dir = tmp_path / "sequential", tmp_path / "parallel"
    for d in (seq_dir, par_dir):
        generate_corpus(d, seed=9, n_firms=14, n_list_pages=2)

    # sequential, in process
    resources = {"linkage_store": LinkageStore(data_dir=str(seq_dir)), "compute": ComputeResource(device="cpu"),
                 "engines": EnginesResource()}
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, list(SOURCES))
    for name in SOURCES:
        # the document chain only (crop embeddings need the linkage model; they are not what this test is about)
        chain = source_assets - dg.AssetSelection.assets("crop_embeddings")
        assert dg.materialize(all_assets, selection=chain, partition_key=name, instance=instance,
                              resources=resources).success

    # parallel: one `dagster asset materialize` process per source, started together, sharing one DuckDB file
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = os.environ | {"DAGSTER_HOME": str(home), "LP_DATA_DIR": str(par_dir), "LP_DUCKDB_PATH": "", "LP_ARTIFACT_DIR": ""}
    subprocess.run(
        [sys.executable, "-c", "import dagster as dg; dg.DagsterInstance.get().add_dynamic_partitions("
         f"{SOURCE_PARTITIONS_NAME!r}, {list(SOURCES)!r})"], env=env, check=True, cwd=REPO,
    )
    dagster = str(Path(sys.executable).parent / "dagster")
    procs = [
        subprocess.Popen([dagster, "asset", "materialize", "-m", "assets_defs.definitions", "--select", SELECTION,
                          "--partition", name], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
        for name in SOURCES
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
        assert "RUN_SUCCESS" in out
        assert "Could not set lock" not in out and "Conflicting lock" not in out

    for table in PER_SOURCE_TABLES:
        pd.testing.assert_frame_equal(_table(seq_dir, table), _table(par_dir, table), obj=table)
    assert len(_table(par_dir, "ocr_texts")) > 0
