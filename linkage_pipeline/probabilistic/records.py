"""Reading table sources (CSV/Parquet) into record frames."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from linkage_pipeline.config import (
    Rejection,
    TableSourceConfig,
    short_repr,
)
from linkage_pipeline.schema import RECORD_COLUMNS

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- records
def records_schema(source: TableSourceConfig, columns: Iterable[str] | None = None) -> dict[str, str]:
    """Column contract of a source's ``table_records`` rows: the record columns, then ``columns`` (default:
    all of the source's columns) as VARCHAR."""
    return {**RECORD_COLUMNS, **{c: "VARCHAR" for c in (source.columns if columns is None else columns)}}


def _normalise(series: pd.Series) -> pd.Series:
    """Text values: NFC, runs of whitespace as one space, ends stripped; empty or null -> None."""
    text = series.astype("string").str.normalize("NFC").str.replace(r"\s+", " ", regex=True).str.strip()
    out = text.astype(object).to_numpy(copy=True)
    out[text.fillna("").eq("").to_numpy()] = None
    return pd.Series(out, index=series.index, dtype=object)


def _read_csv(source: TableSourceConfig) -> tuple[pd.DataFrame, list[str]]:
    kwargs: dict[str, Any] = {"sep": source.delimiter, "encoding": source.encoding, "dtype": str,
                              "keep_default_na": False, "na_filter": False}
    try:
        return pd.read_csv(source.path, **kwargs), []
    except pd.errors.ParserError:
        # Some lines have more fields than the header: read again, setting those lines aside.
        bad: list[list[str]] = []
        frame = pd.read_csv(source.path, engine="python", on_bad_lines=lambda fields: bad.append(fields), **kwargs)
        n = len(frame.columns)
        return frame, [f"a line with {len(b)} fields ({', '.join(map(str, b[:4]))}...); expected {n} as in the header"
                       for b in bad]


def _read_parquet(source: TableSourceConfig) -> pd.DataFrame:
    table = pq.read_table(source.path)
    columns = {}
    for name in table.column_names:
        col = table[name]
        try:
            columns[name] = pc.cast(col, pa.string()).to_pandas()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            # nested or binary values: their Python text form
            columns[name] = pd.Series([None if v is None else str(v) for v in col.to_pylist()], dtype=object)
    return pd.DataFrame(columns)


def read_table_source(source: TableSourceConfig) -> tuple[pd.DataFrame, list[Rejection]]:
    """Reads a table source's rows as normalised text and rejects the rows that cannot be records.

    Every value becomes text (Parquet numbers as their decimal text, dates in ISO form), NFC-normalised, with
    runs of whitespace collapsed and ends stripped; empty text is missing (``None``). Rejected, each with its row
    number (1 = the first data row) and reason: a row without an id, a row whose id an earlier row already has,
    a row with no value besides its id, and (CSV) a line with more fields than the header (row numbers then count
    the lines kept). A file that cannot be read at all gives no rows and one rejection.

    Args:
        source: the table source.

    Returns:
        ``(records, rejections)``: records with the columns of :func:`records_schema` in file order,
        ``row_number`` int64; one :class:`Rejection` per rejected row (stage ``table_records``).
    """
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in records_schema(source)})

    def rejection(reason: str) -> Rejection:
        return Rejection(source=source.name, file=source.file, stage="table_records", reason=reason)

    try:
        if source.format == "parquet":
            raw, bad_lines = _read_parquet(source), []
        else:
            raw, bad_lines = _read_csv(source)
    except UnicodeDecodeError as exc:
        return empty, [rejection(f"not valid {source.encoding} text ({exc}); expected the encoding named in "
                                 "sources.yaml ('encoding')")]
    except Exception as exc:  # noqa: BLE001 - an unreadable file is this source's rejection, not a crash
        return empty, [rejection(f"cannot read the file ({type(exc).__name__}: {exc}); expected a {source.format} table")]
    missing = [c for c in (source.id_column, *source.columns) if c not in raw.columns]
    if missing:
        return empty, [rejection(f"columns {missing} are no longer in the file; expected {source.id_column!r} and "
                                 f"{', '.join(source.columns)} as when sources.yaml was read")]
    rejections = [rejection(reason) for reason in bad_lines]
    ids = _normalise(raw[source.id_column])
    values = pd.DataFrame({c: _normalise(raw[c]) for c in source.columns}, index=raw.index)
    row_number = np.arange(1, len(raw) + 1, dtype=np.int64)
    no_id = ids.isna().to_numpy()
    duplicate = ids.duplicated(keep="first").to_numpy() & ~no_id
    no_value = values.isna().all(axis=1).to_numpy() if len(source.columns) else np.zeros(len(raw), dtype=bool)
    first_row = dict(zip(ids[~no_id].iloc[::-1], row_number[~no_id][::-1]))  # id -> first row using it
    for k in np.flatnonzero(no_id | duplicate | no_value):
        if no_id[k]:
            reason = f"row {row_number[k]}: empty id in column {source.id_column!r}; expected a non-empty id"
        elif duplicate[k]:
            reason = (f"row {row_number[k]}: id {short_repr(ids.iloc[k])} is already used by row "
                      f"{first_row[ids.iloc[k]]}; "
                      f"expected unique ids in column {source.id_column!r}")
        else:
            reason = (f"row {row_number[k]} (id {short_repr(ids.iloc[k])}): every value is empty; "
                      "expected at least one value")
        rejections.append(rejection(reason))
    keep = ~(no_id | duplicate | no_value)
    records = pd.DataFrame({"source": source.name, "record_id": ids[keep].to_numpy(), "row_number": row_number[keep]})
    for c in source.columns:
        records[c] = values[c].to_numpy()[keep]
    logger.info("table %s: %d records, %d rejected", source.name, len(records), len(rejections))
    return records.reset_index(drop=True), rejections


def select_records(
    records: Mapping[str, pd.DataFrame], source: TableSourceConfig, columns: Iterable[str]
) -> pd.DataFrame:
    """One source's records with ``columns``, in row order.

    Args:
        records: table source name -> its ``table_records`` rows as written (columns of :func:`records_schema`
            when they were read; possibly fewer data columns than ``source`` has now). Sources whose records were
            never read are left out.
        source: the table source.
        columns: its data columns that are needed, in order (repeats are dropped).

    Returns:
        The record columns, then ``columns``, sorted by ``row_number`` (stable), with a fresh index.

    Raises:
        ValueError: when ``records`` has no rows for ``source`` (never read), or they lack one of ``columns``
            (read before the file gained it), naming the partition and what to run.
    """
    columns = list(dict.fromkeys(columns))
    frame = records.get(source.name)
    if frame is None:
        raise ValueError(f"table_records has no partition {source.name!r}; expected table_records materialized for "
                         "it first (table_job)")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"table_records partition {source.name!r} lacks columns {missing}; expected it "
                         "re-materialized after its file changed (table_job)")
    frame = frame[list(records_schema(source, columns))]
    return frame.sort_values("row_number", kind="stable").reset_index(drop=True)
