"""Small helpers shared by the asset modules (metadata, rejections, check results, sensor answers; no domain logic)."""

from __future__ import annotations

import json
from collections.abc import Iterable

import dagster as dg
import pandas as pd

from linkage_pipeline import schema
from linkage_pipeline.quality import CheckOutcome
from linkage_pipeline.documents.sources import Rejection
from linkage_pipeline.store import Store


def preview(df: pd.DataFrame, n: int = 10) -> dg.MetadataValue:
    """A markdown preview of the first rows of a frame."""
    if df.empty:
        return dg.MetadataValue.md("_no rows_")
    return dg.MetadataValue.md(df.head(n).to_markdown(index=False))


def write_rejections(store: Store, stage: str, source: str, rejections: Iterable[Rejection]) -> int:
    """Replaces one stage's rejections for one source in ``rejected_inputs``.

    The table has one Parquet file per (stage, source), so a stage re-run replaces only its own rows.
    """
    rows = [r.to_record() for r in rejections]
    frame = pd.DataFrame(rows, columns=list(schema.REJECTED_INPUTS))
    return store.write_partition("rejected_inputs", f"{stage}.{source}", frame, schema.REJECTED_INPUTS)


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
