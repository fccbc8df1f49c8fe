"""Helpers of the tests that run the `linkage-pipeline` command in a subprocess, on a Dagster instance of their own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import dagster as dg

from linkage_pipeline.synthetic import tables
from linkage_pipeline.synthetic.corpus import generate_corpus

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "linkage-pipeline")
#: What `linkage-pipeline` writes into a new $DAGSTER_HOME (one slot per pool: DuckDB writers, the GPU).
DAGSTER_YAML = "concurrency:\n  pools:\n    default_limit: 1\ntelemetry:\n  enabled: false\n"
RUN_ID = re.compile(r"run ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def tiny_corpus(data_dir: Path) -> Path:
    """The smallest document corpus that exercises every job: 8 firms, 1 directory page and 2 list pages."""
    generate_corpus(data_dir, seed=0, n_firms=8, n_list_pages=2)
    return data_dir


def tables_only_dir(data_dir: Path) -> Path:
    """A data directory with two firm registers (CSV and Parquet), one table linkage and no document source."""
    left, right, _ = tables.synthetic_firm_tables(60, seed=3)
    (data_dir / "tables").mkdir(parents=True)
    left.to_csv(data_dir / "tables" / "reg_a.csv", index=False)
    right.to_parquet(data_dir / "tables" / "reg_b.parquet", index=False)
    (data_dir / "sources.yaml").write_text(
        "tables:\n"
        "  reg_a: {path: tables/reg_a.csv, id: firm_id}\n"
        "  reg_b: {path: tables/reg_b.parquet, id: record_no}\n"
        "table_linkages:\n"
        "  - {name: a_to_b, left: reg_a, right: reg_b, fields: {name: {comparison: jaro_winkler, right: firm_name},"
        " city: exact}}\n",
        encoding="utf-8",
    )
    return data_dir


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a `linkage-pipeline` command on the Dagster instance in ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("LP_DATA_DIR", "LP_DUCKDB_PATH", "LP_ARTIFACT_DIR")}
    return env | {"DAGSTER_HOME": str(home), "DAGSTER_DISABLE_TELEMETRY": "1"} | extra


def run_cli(args: Sequence[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def start_cli(args: Sequence[str], env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
    """Starts the command with its output in ``log_dir/stdout.txt`` and ``stderr.txt`` (files, not pipes: a
    process that is killed can leave children holding a pipe open)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "stdout.txt").open("wb") as out, (log_dir / "stderr.txt").open("wb") as err:
        return subprocess.Popen([CLI, *args], env=env, cwd=REPO, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def instance_at(home: Path) -> dg.DagsterInstance:
    """The Dagster instance in ``home`` (as the command opens it), without touching this process's environment."""
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text(DAGSTER_YAML)
    return dg.DagsterInstance.from_config(str(home))


def wait_for(condition: Callable[[], object], proc: subprocess.Popen[bytes], what: str, timeout: float = 180):
    """Polls ``condition`` until it returns something truthy (returned); fails if ``proc`` ends first."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        assert proc.poll() is None, f"the command ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def pool_claims(instance: dg.DagsterInstance, pool: str) -> list[tuple[str, str]]:
    """(run id, step key) of each slot of ``pool`` that is claimed."""
    if pool not in instance.event_log_storage.get_concurrency_keys():
        return []
    return [(s.run_id, s.step_key) for s in instance.event_log_storage.get_concurrency_info(pool).claimed_slots]


def pool_pending(instance: dg.DagsterInstance, pool: str) -> list[tuple[str, str]]:
    """(run id, step key) of each step waiting for (or holding) a slot of ``pool``."""
    if pool not in instance.event_log_storage.get_concurrency_keys():
        return []
    return [(p.run_id, p.step_key) for p in instance.event_log_storage.get_concurrency_info(pool).pending_steps]
