"""Sources materialized in parallel processes give exactly the rows of a sequential run, with no lock errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
from _cli_runs import (
    REPO,
    cli_env,
    comparable_table,
    materialize_chain_in_process,
    materialize_cmd,
)

from linkage_pipeline.synthetic.corpus import generate_corpus

pytestmark = pytest.mark.slow  # runs partitions in parallel subprocesses

SOURCES = ("firm_directory", "supplier_lists")
PER_SOURCE_TABLES = ("page_images", "layout_regions", "region_crops", "ocr_texts", "labelled_regions", "rejected_inputs")


def test_parallel_partition_runs_equal_sequential_run(tmp_path: Path) -> None:
    seq_dir, par_dir = tmp_path / "sequential", tmp_path / "parallel"
    for d in (seq_dir, par_dir):
        generate_corpus(d, seed=9, n_firms=14, n_list_pages=2)

    # sequential, in process
    materialize_chain_in_process(seq_dir, SOURCES)

    # parallel: one `dagster asset materialize` process per source, started together, sharing one DuckDB file
    env = cli_env(tmp_path / "dagster_home", par_dir, SOURCES)
    procs = [
        subprocess.Popen(materialize_cmd(name), env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
        for name in SOURCES
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
        assert "RUN_SUCCESS" in out
        assert "Could not set lock" not in out and "Conflicting lock" not in out

    for table in PER_SOURCE_TABLES:
        pd.testing.assert_frame_equal(comparable_table(seq_dir, table), comparable_table(par_dir, table), obj=table)
    assert len(comparable_table(par_dir, "ocr_texts")) > 0
