"""A run killed mid-way (SIGKILL of the run process) and run again leaves exactly the tables of a clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from _cli_runs import CHAIN, REPO, cli_env, comparable_table, materialize_cmd

from assets_defs.definitions import all_assets
from assets_defs.partitions import SOURCE_PARTITIONS_NAME
from linkage_pipeline.synthetic.corpus import generate_corpus
from resources import ComputeResource, EnginesResource, LinkageStore

pytestmark = pytest.mark.slow  # kills a `dagster asset materialize` subprocess mid-run

TABLES = ("page_images", "layout_regions", "region_crops", "ocr_texts", "labelled_regions")


def test_sigkill_mid_run_then_rerun_equals_a_clean_run(tmp_path: Path) -> None:
    clean_dir, killed_dir = tmp_path / "clean", tmp_path / "killed"
    for d in (clean_dir, killed_dir):
        generate_corpus(d, seed=6, n_firms=24, n_list_pages=4)
    resources = {"linkage_store": LinkageStore(data_dir=str(clean_dir)), "compute": ComputeResource(device="cpu"),
                 "engines": EnginesResource()}
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, ["supplier_lists"])
    selection = dg.AssetSelection.assets(*CHAIN.split(","))
    assert dg.materialize(all_assets, selection=selection, partition_key="supplier_lists", instance=instance,
                          resources=resources).success

    env = cli_env(tmp_path / "dagster_home", killed_dir, ["supplier_lists"])
    cmd = materialize_cmd("supplier_lists")
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    # kill it while OCR runs: crops are written, OCR texts not yet
    store = LinkageStore(data_dir=str(killed_dir)).store()
    deadline = time.monotonic() + 300
    while not store.partition_path("region_crops", "supplier_lists").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the run never reached region_crops"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not store.partition_path("ocr_texts", "supplier_lists").exists()  # killed before OCR finished
    assert len(store.read_table("region_crops")) > 0  # what was written before the kill is whole and readable

    rerun = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0 and "RUN_SUCCESS" in out, out[-5000:]
    for table in TABLES:
        pd.testing.assert_frame_equal(comparable_table(clean_dir, table), comparable_table(killed_dir, table), obj=table)
