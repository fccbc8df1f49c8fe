"""Small helpers shared by the asset modules (metadata, rejections, check results, sensor answers; no domain logic)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from linkage_pipeline import schema
from linkage_pipeline.config import Rejection
from linkage_pipeline.evaluation.quality import CheckOutcome
from linkage_pipeline.store import Store


def preview(df: pd.DataFrame, n: int = 10) -> dg.MetadataValue:
    """A markdown preview of the first rows of a frame."""
    if df.empty:
        return dg.MetadataValue.md("_no rows_")
    return dg.MetadataValue.md(df.head(n).to_markdown(index=False))


def table_step(*specs: dg.AssetSpec, group: str, **kwargs: Any) -> Callable[..., dg.AssetsDefinition]:
    """One step that writes several DuckDB tables together: a multi-asset with one spec per table (so lineage
    shows each), in the ``duckdb`` pool; any subset of its tables can be selected (see :func:`selected_results`)."""
    return dg.multi_asset(specs=list(specs), group_name=group, pool="duckdb", can_subset=True, **kwargs)


def selected_results(context: dg.AssetExecutionContext, *results: dg.MaterializeResult) -> Iterator[dg.MaterializeResult]:
    """The results of the assets this run selected, in order. A run of a subset still writes every table of its
    step (they are computed together and must not disagree), but reports only what was selected."""
    selected = context.selected_asset_keys
    yield from (r for r in results if r.asset_key in selected)


def write_rejections(store: Store, stage: str, source: str, rejections: Iterable[Rejection]) -> int:
    """Replaces one stage's rejections for one source in ``rejected_inputs``.

    The table has one Parquet file per (stage, source), so a stage re-run replaces only its own rows.
    """
    rows = [r.to_record() for r in rejections]
    frame = pd.DataFrame(rows, columns=list(schema.REJECTED_INPUTS))
    return store.write_partition("rejected_inputs", f"{stage}.{source}", frame, schema.REJECTED_INPUTS)


def reviews_in_force(store: Store) -> pd.DataFrame:
    """The review in force per query crop (``link_reviews``, written by the review page); none before any."""
    from linkage_pipeline.review import verdicts

    return verdicts.in_force(store.read_table("link_reviews") if store.table_exists("link_reviews") else None)


def check_result(name: str, outcome: CheckOutcome, *, warn_only: bool = False) -> dg.AssetCheckResult:
    """An asset check result from a library quality measure."""
    return dg.AssetCheckResult(
        check_name=name,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.WARN if warn_only else dg.AssetCheckSeverity.ERROR,
        description=outcome.description,
        metadata=outcome.metadata,
    )


def changed_partitions_result(
    context: dg.SensorEvaluationContext,
    fingerprints: dict[str, str],
    partitions_name: str,
    *,
    new_reason: str,
    changed_reason: str,
    nothing: str,
) -> dg.SensorResult:
    """A sensor's answer for dynamic partitions watched by fingerprint (one per partition, kept in the cursor).

    New partitions are added and run; a known partition runs again when its fingerprint differs from the one in
    the cursor. A known partition the sensor has not fingerprinted yet (switched on after it was processed) is
    recorded, not run; from then on every change of its files runs it.
    """
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(partitions_name))
    new = sorted(name for name in fingerprints if name not in known)
    requests = [
        dg.RunRequest(
            partition_key=name,
            run_key=f"{name}-{fingerprint}",
            tags={"linkage/reason": new_reason if name in new else changed_reason, "linkage/fingerprint": fingerprint},
        )
        for name, fingerprint in sorted(fingerprints.items())
        if name in new or (name in seen and seen[name] != fingerprint)
    ]
    cursor = json.dumps(fingerprints, sort_keys=True)
    if not requests:
        return dg.SensorResult(skip_reason=nothing, cursor=cursor)
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[dg.AddDynamicPartitionsRequest(partitions_name, new)] if new else [],
        cursor=cursor,
    )


_IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED]


def runs_in_progress(instance: dg.DagsterInstance, jobs: Iterable[str]) -> int:
    """Runs of these jobs that are queued, starting or running."""
    return sum(len(instance.get_runs(filters=dg.RunsFilter(job_name=job, statuses=_IN_PROGRESS))) for job in jobs)


def latest_materialization(instance: dg.DagsterInstance, asset: str, partition: str | None = None):
    """The latest materialization record of ``asset`` (of one partition, or of any), or ``None``."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    return records[0] if records else None


# -- runs whose process is gone ------------------------------------------------------------------------------
# `linkage-pipeline` executes its runs in its own process (execute_in_process). A process killed mid-run (SIGKILL,
# out of memory, a closed laptop lid) leaves its run STARTED and its pool slots claimed for ever: every later run
# then waits for a `gpu` or `duckdb` slot no one will free. So each CLI process holds an exclusive lock on a file
# of its own under $DAGSTER_HOME while it lives and tags its runs with that file's name; the kernel drops the lock
# when the process dies however it dies, so a run whose owner's lock can be taken belongs to a dead process.

#: Run tags of the runs `linkage-pipeline` executes: the owner (lock file name), and for people its pid and host.
OWNER_TAG, OWNER_PID_TAG, OWNER_HOST_TAG = "linkage_pipeline/owner", "linkage_pipeline/pid", "linkage_pipeline/host"
_UNFINISHED = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
               dg.DagsterRunStatus.CANCELING]


def _owners_dir(instance: dg.DagsterInstance) -> Path:
    return Path(instance.root_directory) / "linkage_pipeline" / "owners"


class RunOwner:
    """This process as the owner of the runs it executes: a lock on ``<DAGSTER_HOME>/linkage_pipeline/owners/<id>.lock``
    held until :meth:`close` (or the process's death), and the tags that name it on each run."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        import fcntl
        import socket
        import uuid

        self.id = uuid.uuid4().hex
        self.path = _owners_dir(instance) / f"{self.id}.lock"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # locked before it is visible under its name: a checker never finds it unlocked while this process lives
        staging = self.path.with_suffix(".new")
        self._fd: int | None = os.open(staging, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.tags = {OWNER_TAG: self.id, OWNER_PID_TAG: str(os.getpid()), OWNER_HOST_TAG: socket.gethostname()}
        os.write(self._fd, json.dumps(self.tags).encode())
        os.replace(staging, self.path)

    def close(self) -> None:
        """Gives the lock up (only once none of this owner's runs is in progress)."""
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def owner_is_alive(instance: dg.DagsterInstance, owner: str) -> bool:
    """Whether the process of ``owner`` (an :data:`OWNER_TAG` value) still holds its lock; removes a stale lock file."""
    import fcntl

    if not owner.isalnum():  # a tag edited by hand must not name a path outside the owners' folder
        return False
    path = _owners_dir(instance) / f"{owner}.lock"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the lock if we took it
    path.unlink(missing_ok=True)
    return False


def _pool_holders(instance: dg.DagsterInstance) -> dict[str, set[str]]:
    """Run id -> the pools in which it holds or waits for a slot."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    holders: dict[str, set[str]] = {}
    for pool, info in storage.get_concurrency_infos(sorted(storage.get_concurrency_keys())).items():
        for run_id in [s.run_id for s in info.claimed_slots] + [p.run_id for p in info.pending_steps]:
            holders.setdefault(run_id, set()).add(pool)
    return holders


def _process_gone(pid: int, since: float) -> bool | None:
    """Whether process ``pid`` of this machine is gone: not running, a zombie, or a later process that reuses the
    pid (started after ``since``, a Unix time). ``None`` where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except FileNotFoundError:
        return Path("/proc/self/stat").exists() or None
    except (OSError, ValueError, IndexError):
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the command name in parentheses may contain spaces
    # field 22 of proc(5): start time in clock ticks after boot; its age is measured on the same clock
    age = uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return fields[0] in ("Z", "X") or time.time() - age > since + 1.0


def _local_storage(instance: dg.DagsterInstance) -> bool:
    """Whether the instance keeps its runs in SQLite files, which only processes of this machine write."""
    storage = instance.run_storage
    inner = getattr(getattr(storage, "_storage", None), "run_storage", storage)  # LegacyRunStorage wraps one
    return "sqlite" in type(inner).__name__.lower()


def _gone(instance: dg.DagsterInstance, run: dg.DagsterRun, local: bool) -> str | None:
    """Which dead process ran ``run`` (one phrase), or ``None`` when it is alive or cannot be checked from here."""
    import socket

    owner = run.tags.get(OWNER_TAG)
    if owner is not None:
        host = run.tags.get(OWNER_HOST_TAG, "?")
        if host != socket.gethostname() or owner_is_alive(instance, owner):
            return None
        return f"pid {run.tags.get(OWNER_PID_TAG, '?')} on {host}"
    if not local:
        return None
    # A run started some other way (an older linkage-pipeline, the UI, `dagster job execute`): its first engine
    # event names the process that orchestrates it ("Executing steps in process (pid: N)", "Started process for
    # run"), and was written after that process started.
    named = next(
        (e for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
         if e.dagster_event is not None and "pid" in (e.dagster_event.engine_event_data.metadata or {})),
        None,
    )
    if named is None:
        return None
    pid = int(named.dagster_event.engine_event_data.metadata["pid"].value)
    return f"pid {pid}" if _process_gone(pid, named.timestamp) else None


def release_dead_runs(instance: dg.DagsterInstance) -> tuple[list[str], list[str]]:
    """Marks failed the unfinished runs whose process is gone and frees every pool slot held by a run that is
    over (or deleted), so later runs do not wait for slots no one will free.

    A run of `linkage-pipeline` is judged by its owner's lock (:class:`RunOwner`); another run by the process its
    first engine event names, when the instance is local (SQLite) and /proc can tell. Runs of other machines and
    runs that name no process are left alone.

    Returns:
        What was released (one line each) and, for the pool slots held by unfinished runs that are alive (or
        cannot be checked), a line each saying which run holds which pools (steps in those pools wait for them).
    """
    released: list[str] = []
    local = _local_storage(instance)
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=_UNFINISHED)):
        who = _gone(instance, run, local)
        if who is None:
            continue
        instance.report_run_failed(
            run, message=f"Marked failed by linkage-pipeline: the process that ran it ({who}) is gone."
        )
        released.append(f"run {run.run_id} of {run.job_name} ({run.status.value}; its process, {who}, is gone): "
                        "marked failed")
    holding = []
    for run_id, pools in sorted(_pool_holders(instance).items()):
        run = instance.get_run_by_id(run_id)
        names = ", ".join(sorted(pools))
        if run is None or run.is_finished:
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
            state = "deleted" if run is None else run.status.value
            released.append(f"run {run_id} ({state}): freed its slots in pool(s) {names}")
        else:
            holding.append(f"run {run_id} of {run.job_name} ({run.status.value}) holds pool(s) {names}; "
                           "steps in those pools wait until it ends (or is terminated in the UI)")
    return released, holding


def release_own_runs(instance: dg.DagsterInstance, owner: RunOwner, reason: str) -> list[str]:
    """Marks failed the unfinished runs of ``owner`` (this process, about to exit) and frees their pool slots."""
    done = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=_UNFINISHED, tags={OWNER_TAG: owner.id})):
        instance.report_run_failed(run, message=f"Marked failed by linkage-pipeline: {reason}.")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        done.append(run.run_id)
    return done
