"""Small helpers shared by the asset modules (metadata only; no domain logic)."""

from __future__ import annotations

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
