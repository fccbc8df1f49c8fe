"""A `linkage-pipeline` process that dies or is stopped mid-run leaves nothing that blocks the next one.

A run killed inside a pooled step (``crop_embeddings``, pool ``gpu``) kept its pool slot for ever, and every later
run waited for it, spinning and deaf to SIGTERM and SIGINT. Now each command tags its runs with a lock it holds
while it lives; the next command marks the runs of dead owners failed and frees their slots, and a command
answers SIGTERM and SIGINT at once, even while a step waits for a slot.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
from _pipeline_cli import (
    RUN_ID,
    cli_env,
    instance_at,
    pool_claims,
    pool_pending,
    run_cli,
    start_cli,
    tiny_corpus,
    wait_for,
)
from dagster._core.events import EngineEventData
from dagster._core.events.log import EventLogEntry

from assets_defs._common import (
    OWNER_HOST_TAG,
    OWNER_PID_TAG,
    OWNER_TAG,
    RunOwner,
    owner_is_alive,
    release_dead_runs,
)

pytestmark = pytest.mark.slow  # runs the CLI in subprocesses and signals them


def add_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus, tags: dict[str, str] | None = None) -> str:
    run = dg.DagsterRun(job_name="source_job", run_id=str(uuid.uuid4()), status=status, tags=tags or {})
    instance.add_run(run)
    return run.run_id


def hold_slot(instance: dg.DagsterInstance, pool: str, run_id: str, step: str) -> None:
    instance.event_log_storage.initialize_concurrency_limit_to_default(pool)  # one slot (dagster.yaml)
    assert instance.event_log_storage.claim_concurrency_slot(pool, run_id, step).is_claimed


def test_release_dead_runs_fails_runs_of_dead_owners_and_frees_slots_of_runs_that_are_over(tmp_path: Path) -> None:
    instance = instance_at(tmp_path / "home")
    live = RunOwner(instance)
    dead_owner = uuid.uuid4().hex  # never held its lock: the same as a process that died
    dead = add_run(instance, dg.DagsterRunStatus.STARTED, {**live.tags, OWNER_TAG: dead_owner, OWNER_PID_TAG: "4321"})
    # a run of another machine sharing the instance: its lock cannot be checked from here
    elsewhere = add_run(instance, dg.DagsterRunStatus.STARTED, {OWNER_TAG: dead_owner, OWNER_HOST_TAG: "elsewhere"})
    alive = add_run(instance, dg.DagsterRunStatus.STARTED, live.tags)
    foreign = add_run(instance, dg.DagsterRunStatus.STARTED)  # e.g. launched from the UI: not ours to judge
    over = add_run(instance, dg.DagsterRunStatus.SUCCESS)
    hold_slot(instance, "gpu", dead, "crop_embeddings")
    hold_slot(instance, "duckdb", foreign, "record_links")
    hold_slot(instance, "tesseract", over, "ocr_texts")
    hold_slot(instance, "other", alive, "x")

    released, holding = release_dead_runs(instance)

    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    failure = [e.dagster_event for e in instance.all_logs(dead, of_type=dg.DagsterEventType.RUN_FAILURE)]
    assert len(failure) == 1 and "the process that ran it (pid 4321" in failure[0].message
    assert [instance.get_run_by_id(r).status for r in (alive, foreign, over, elsewhere)] == [
        dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.SUCCESS,
        dg.DagsterRunStatus.STARTED]
    assert pool_claims(instance, "gpu") == [] and pool_claims(instance, "tesseract") == []
    assert pool_claims(instance, "duckdb") == [(foreign, "record_links")]
    assert pool_claims(instance, "other") == [(alive, "x")]
    gone = f"run {dead} of source_job (STARTED; its process, pid 4321 on {socket.gethostname()}, is gone): marked failed"
    assert gone in released, released
    assert any(over in line and "freed" in line for line in released), released
    assert sorted(holding) == sorted(
        f"run {run} of source_job (STARTED) holds pool(s) {pool}; steps in those pools wait until it ends (or is "
        "terminated in the UI)" for run, pool in ((foreign, "duckdb"), (alive, "other")))
    assert owner_is_alive(instance, live.id) and not owner_is_alive(instance, dead_owner)
    live.close()
    assert not owner_is_alive(instance, live.id)


def test_release_dead_runs_judges_a_run_started_elsewhere_by_the_process_it_names(tmp_path: Path) -> None:
    """Runs without the owner tag (an older linkage-pipeline, `dagster job execute`, the UI's run workers): the
    process named by the run's first engine event, checked in /proc, pid reuse included."""
    instance = instance_at(tmp_path / "home")
    ended = subprocess.Popen(["true"])
    ended.wait()
    later = subprocess.Popen(["sleep", "60"])  # alive, but started after the event: a pid reused, not the run's process

    def run_in_process(pid: int, seconds_ago: float = 0.0) -> str:
        run_id = add_run(instance, dg.DagsterRunStatus.STARTED)
        event = dg.DagsterEvent(event_type_value=dg.DagsterEventType.ENGINE_EVENT.value, job_name="source_job",
                                message=f"Executing steps in process (pid: {pid})",
                                event_specific_data=EngineEventData.in_process(pid))
        instance.handle_new_event(EventLogEntry(error_info=None, level=logging.DEBUG, user_message="", run_id=run_id,
                                                timestamp=time.time() - seconds_ago, dagster_event=event))
        return run_id

    try:
        dead, alive, reused_run = run_in_process(ended.pid), run_in_process(os.getpid()), run_in_process(later.pid, 30)
        hold_slot(instance, "gpu", dead, "crop_embeddings")
        released, holding = release_dead_runs(instance)
    finally:
        later.kill()
        later.wait()
    status = {run: instance.get_run_by_id(run).status for run in (dead, alive, reused_run)}
    assert status == {dead: dg.DagsterRunStatus.FAILURE, alive: dg.DagsterRunStatus.STARTED,
                      reused_run: dg.DagsterRunStatus.FAILURE}
    assert f"run {dead} of source_job (STARTED; its process, pid {ended.pid}, is gone): marked failed" in released
    assert pool_claims(instance, "gpu") == [] and holding == []


def test_sigkill_inside_a_gpu_step_does_not_wedge_the_next_run(tmp_path: Path) -> None:
    data, home = tiny_corpus(tmp_path / "corpus"), tmp_path / "home"
    env = cli_env(home)
    proc = start_cli(["run", "--data-dir", str(data)], env, tmp_path / "killed")
    instance = instance_at(home)
    (run_id, step), = wait_for(lambda: pool_claims(instance, "gpu"), proc, "a step holding the gpu pool")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert step == "crop_embeddings"
    assert pool_claims(instance, "gpu") == [(run_id, step)]  # the dead run still holds the slot
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED

    t0 = time.monotonic()
    rerun = run_cli(["run", "--data-dir", str(data)], env, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert time.monotonic() - t0 < 300
    assert f"released: run {run_id} of source_job (STARTED; its process" in rerun.stderr, rerun.stderr[-3000:]
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    assert pool_claims(instance, "gpu") == [] and "linkage, evaluation, SQL models, network: ok" in rerun.stdout


def test_sigterm_while_a_step_waits_for_a_pool_slot_exits_at_once(tmp_path: Path) -> None:
    data, home = tiny_corpus(tmp_path / "corpus"), tmp_path / "home"
    instance = instance_at(home)
    blocker = add_run(instance, dg.DagsterRunStatus.STARTED)  # a live run from elsewhere (e.g. the UI) on the GPU
    hold_slot(instance, "gpu", blocker, "crop_embeddings")
    proc = start_cli(["run", "--data-dir", str(data)], cli_env(home), tmp_path / "stopped")
    waiting = wait_for(lambda: [p for p in pool_pending(instance, "gpu") if p[0] != blocker], proc,
                       "a step waiting for the gpu pool")
    time.sleep(1.0)  # well inside the wait loop
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    assert time.monotonic() - t0 < 15
    assert proc.returncode == 128 + signal.SIGTERM
    err = (tmp_path / "stopped" / "stderr.txt").read_text()
    assert f"note: run {blocker} of source_job (STARTED) holds pool(s) gpu" in err, err[-3000:]
    assert "linkage-pipeline: stopped by SIGTERM" in err, err[-3000:]
    (run_id, _), = waiting
    assert f"marked run {run_id} failed" in err
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    assert pool_pending(instance, "gpu") == [(blocker, "crop_embeddings")]  # the stopped run no longer waits
    assert pool_claims(instance, "gpu") == [(blocker, "crop_embeddings")]


def test_sigint_inside_a_step_exits_at_once_and_marks_the_run_failed(tmp_path: Path) -> None:
    data, home = tiny_corpus(tmp_path / "corpus"), tmp_path / "home"
    instance = instance_at(home)
    proc = start_cli(["run", "--data-dir", str(data)], cli_env(home), tmp_path / "stopped")

    def a_source_step_running() -> list[dg.DagsterRun]:
        runs = instance.get_runs(filters=dg.RunsFilter(job_name="source_job", statuses=[dg.DagsterRunStatus.STARTED]))
        return [r for r in runs if instance.all_logs(r.run_id, of_type=dg.DagsterEventType.STEP_START)]

    (source_run,) = wait_for(a_source_step_running, proc, "a step of a source run")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=20)
    assert time.monotonic() - t0 < 15
    assert proc.returncode == 128 + signal.SIGINT
    err = (tmp_path / "stopped" / "stderr.txt").read_text()
    assert "linkage-pipeline: stopped by SIGINT" in err and RUN_ID.search(err), err[-3000:]
    assert instance.get_run_by_id(source_run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert pool_claims(instance, "gpu") == [] and pool_claims(instance, "duckdb") == []
