"""Partitions fanned out to Celery workers (separate processes on a local Redis broker) give the rows of a sequential run.

The deployment under test is the README's "Running on more than one machine": a Redis broker, `dagster-celery worker`
processes, and runs started with LP_EXECUTOR=celery, all on one shared data directory and one Dagster instance.
Here every process runs on this machine; what differs between machines (hosts, a shared filesystem) is not tested.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from _cli_runs import (
    CHAIN,
    REPO,
    cli_env,
    comparable_table,
    materialize_chain_in_process,
    materialize_cmd,
)

from assets_defs.definitions import default_executor
from linkage_pipeline.synthetic.corpus import generate_corpus

REDIS_SERVER = shutil.which("redis-server")
pytestmark = [pytest.mark.slow, pytest.mark.scale_out]
needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed (Debian package "
                                 "redis-server, installed by .ci/setup): no broker for the Celery workers")

SOURCES = ("firm_directory", "supplier_lists")
WORKERS = ("lpworker1", "lpworker2")
TABLES = ("page_images", "layout_regions", "region_crops", "ocr_texts", "labelled_regions")
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM to the process group that ``proc`` leads (started with start_new_session), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=timeout)
            break
        except subprocess.TimeoutExpired:
            continue
    # children of the group (a celery worker under `dagster-celery worker start`) may outlive its leader
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _group_pids(pgid: int) -> set[int]:
    """Pids of the live processes in process group ``pgid`` (from /proc)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the command: state, ppid, pgrp, ...
            pids.add(int(stat.parent.name))
    return pids


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A Redis server of this test alone on a free loopback port, with no persistence; stopped afterwards."""
    port = _free_port()
    log = (tmp_path / "redis.log").open("w")
    proc = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"redis-server exited: {(tmp_path / 'redis.log').read_text()[-2000:]}"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not answer PING within 30 s"
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc)
        log.close()


def _wait_for_workers(broker: str, names: tuple[str, ...], procs: list[subprocess.Popen], logs: list[Path]) -> None:
    from celery import Celery

    app = Celery(broker=broker, backend=broker)
    deadline = time.monotonic() + 120
    answered: set[str] = set()
    try:
        while not all(any(a.startswith(f"{n}@") for a in answered) for n in names):
            for proc, log in zip(procs, logs):
                assert proc.poll() is None, f"a Celery worker exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"workers not ready in 120 s; answered: {answered}"
            answered |= {name for reply in app.control.ping(timeout=1.0) for name in reply}
    finally:
        app.close()


def test_executor_is_chosen_by_lp_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LP_EXECUTOR", raising=False)
    assert default_executor() is None  # Definitions keeps Dagster's default multiprocess executor
    monkeypatch.setenv("LP_EXECUTOR", "celery")
    monkeypatch.setenv("LP_CELERY_BROKER", "redis://broker.example:6379/0")
    monkeypatch.delenv("LP_CELERY_BACKEND", raising=False)
    executor = default_executor()
    assert executor is not None and executor.name == "celery"
    config = executor.config_schema.resolve_config({}).value["config"]  # what a run with no execution config gets
    assert (config["broker"], config["backend"]) == ("redis://broker.example:6379/0", "redis://broker.example:6379/0")
    monkeypatch.setenv("LP_EXECUTOR", "dask")
    with pytest.raises(ValueError, match="LP_EXECUTOR='dask': expected 'multiprocess'"):
        default_executor()


@needs_redis
def test_celery_workers_run_the_partitions_and_equal_a_sequential_run(tmp_path: Path, redis_url: str) -> None:
    seq_dir, dist_dir = tmp_path / "sequential", tmp_path / "celery"
    for d in (seq_dir, dist_dir):
        generate_corpus(d, seed=5, n_firms=8, n_list_pages=1)

    # one Dagster instance for the run processes and the workers, set up as `linkage-pipeline` sets up its own
    (tmp_path / "dagster_home").mkdir()
    (tmp_path / "dagster_home" / "dagster.yaml").write_text(
        "concurrency:\n  pools:\n    default_limit: 1\ntelemetry:\n  enabled: false\n")
    # the workers: `dagster-celery worker start`, one process group each, importing the definitions at start-up
    env = cli_env(tmp_path / "dagster_home", dist_dir, SOURCES) | {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # dagster-celery starts `celery` from PATH
        "LP_EXECUTOR": "celery", "LP_CELERY_BROKER": redis_url, "LP_CELERY_BACKEND": redis_url, "LP_DEVICE": "cpu",
    }
    worker_yaml = tmp_path / "celery.yaml"
    worker_yaml.write_text(f"execution:\n  config:\n    broker: {redis_url}\n    backend: {redis_url}\n")
    workers, logs = [], []
    try:
        for name in WORKERS:
            logs.append(tmp_path / f"{name}.log")
            with logs[-1].open("w") as log:
                workers.append(subprocess.Popen(
                    [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", str(worker_yaml),
                     "-n", name, "-i", "assets_defs.definitions", "--", "--concurrency=1"],
                    env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

        # meanwhile the reference: the same chain, sequential and in process, on a corpus of its own
        materialize_chain_in_process(seq_dir, SOURCES)

        _wait_for_workers(redis_url, WORKERS, workers, logs)
        worker_pids = set().union(*(_group_pids(w.pid) for w in workers))

        # one run per source, started together (as a backfill does); each run sends its steps to the workers
        started = time.monotonic()
        runs: list[subprocess.Popen] = []
        try:
            for name in SOURCES:
                runs.append(subprocess.Popen(materialize_cmd(name), env=env, cwd=REPO, stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, text=True, start_new_session=True))
            outputs = [r.communicate(timeout=300)[0] for r in runs]
        finally:
            for r in runs:
                _stop(r, timeout=5)
        elapsed = time.monotonic() - started
        for run, out in zip(runs, outputs):
            assert run.returncode == 0 and "RUN_SUCCESS" in out, out[-5000:]
            assert "Could not set lock" not in out and "Conflicting lock" not in out
    finally:
        for w in workers:
            _stop(w)

    # every step ran in a worker process, none in the run processes, and both workers took steps
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        dagster_runs = instance.get_runs()
        assert sorted(r.tags["dagster/partition"] for r in dagster_runs) == sorted(SOURCES)
        step_hosts: dict[tuple[str, str], str] = {}
        for r in dagster_runs:
            events = [e.dagster_event for e in instance.all_logs(r.run_id) if e.dagster_event is not None]
            run_pid = next(e.pid for e in events if e.event_type == dg.DagsterEventType.RUN_START)
            starts = [e for e in events if e.event_type == dg.DagsterEventType.STEP_START]
            assert len(starts) == len(CHAIN.split(",")), [e.step_key for e in starts]
            for e in starts:
                assert e.pid != run_pid and e.pid in worker_pids, (e.step_key, e.pid, run_pid, worker_pids)
            for e in events:
                metadata = getattr(e.event_specific_data, "metadata", None) or {}
                if "Celery worker" in metadata:
                    step_hosts[(r.run_id, e.step_key)] = metadata["Celery worker"].value
        assert len(step_hosts) == len(SOURCES) * len(CHAIN.split(","))
        assert {host.split("@")[0] for host in step_hosts.values()} == set(WORKERS), step_hosts

    for table in TABLES:
        pd.testing.assert_frame_equal(comparable_table(seq_dir, table), comparable_table(dist_dir, table), obj=table)
    assert len(comparable_table(dist_dir, "ocr_texts")) > 0
    print(f"celery runs of {len(SOURCES)} sources on {len(WORKERS)} workers: {elapsed:.1f} s")
