"""Table sources (CSV/Parquet files) and their Fellegi-Sunter linkages, declared in ``sources.yaml``.

Beside document sources, a data directory may hold tables: census extracts, firm registers, cleaned OCR output.
They are declared in the same ``sources.yaml``::

    tables:
      firms_1930: {path: tables/firms_1930.csv, id: firm_id}
      firms_1950: {path: tables/firms_1950.parquet, id: record_no}
    table_linkages:
      - name: firms_1930_1950          # optional; default "<left>__<right>" or "<table>__dedup"
        left: firms_1930
        right: firms_1950
        fields:                        # column: comparison (jaro_winkler, exact or levenshtein)
          name: jaro_winkler
          city: exact
          founded: {comparison: levenshtein, right: year_founded}   # a different column on the right
        threshold: 0.5                 # posterior match probability for a link (optional)
        one_to_one: true               # at most one link per record on each side (optional)
      - {dedup: firms_1930, fields: {name: jaro_winkler, city: exact}}

A table's ``path`` is relative to the data directory and may not leave it; ``id`` names the column of unique
record ids; optional ``delimiter`` and ``encoding`` apply to CSV. Each table and linkage entry is checked on its own
(against the file's header, too): a bad one is left out and recorded as a
:class:`~linkage_pipeline.documents.sources.Rejection` (stage ``table_sources``), the others still load.

Rows are read with every value as text (NFC, runs of whitespace collapsed, ends stripped, empty = missing); a row
without an id, with an id already used, or with no value at all is rejected with its row number. The linkage of a
table pair (or the de-duplication of one table) is :class:`~linkage_pipeline.probabilistic.FellegiSunter` on all
pairs: pattern counts, m/u/lambda per field and level, links above the threshold, and clusters (connected
components of the links) in which every record, singletons included, has a cluster id.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from linkage_pipeline.documents.sources import (
    SOURCES_FILE,
    SOURCE_NAME_RE,
    Rejection,
    check_source_name,
    log_rejections,
    read_sources_yaml,
    short_repr,
    source_label,
)
from linkage_pipeline.paths import safe_child
from linkage_pipeline.probabilistic import (
    DEFAULT_MATCH_THRESHOLD,
    FellegiSunter,
    FieldSpec,
    clusters_from_links,
)
from linkage_pipeline.probabilistic.comparisons import COMPARISONS, DEFAULT_MAX_EDITS
from linkage_pipeline.store import Store

logger = logging.getLogger(__name__)

__all__ = [
    "CLUSTERS",
    "LINKS",
    "PARAMETERS",
    "PATTERNS",
    "RECORD_COLUMNS",
    "SUMMARY",
    "TABLE_LINKAGES",
    "TABLE_SOURCES",
    "TableLinkage",
    "TableLinkageOutputs",
    "TableLinkageResult",
    "TableRegistry",
    "TableSourceConfig",
    "link_table_records",
    "load_table_sources",
    "match_weights_markdown",
    "plot_match_weights",
    "plot_match_weights_per_linkage",
    "read_records",
    "read_table_source",
    "records_schema",
    "run_table_linkages",
    "synthetic_firm_tables",
]

#: File suffixes a table source may have, and how each is read.
TABLE_FORMATS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
_TABLE_FIELDS = ("path", "id", "delimiter", "encoding")
_LINKAGE_FIELDS = ("name", "left", "right", "dedup", "fields", "threshold", "one_to_one", "blocking")
_FIELD_SETTINGS = ("comparison", "thresholds", "right")
#: Columns every row of ``table_records`` has before the table's own columns (which are all VARCHAR).
RECORD_COLUMNS = {"source": "VARCHAR", "record_id": "VARCHAR", "row_number": "BIGINT"}

# Column contracts of the DuckDB tables written by the table assets.
TABLE_SOURCES = {
    "name": "VARCHAR", "path": "VARCHAR", "format": "VARCHAR", "id_column": "VARCHAR", "columns": "VARCHAR[]",
}
TABLE_LINKAGES = {
    "name": "VARCHAR", "kind": "VARCHAR", "left_source": "VARCHAR", "right_source": "VARCHAR",
    "fields": "VARCHAR[]", "threshold": "DOUBLE", "one_to_one": "BOOLEAN",
}
PATTERNS = {
    "linkage": "VARCHAR", "pattern": "BIGINT", "levels": "VARCHAR", "labels": "VARCHAR", "pairs": "BIGINT",
    "match_probability": "DOUBLE", "match_weight": "DOUBLE",
}
PARAMETERS = {
    "linkage": "VARCHAR", "field": "VARCHAR", "level": "INTEGER", "label": "VARCHAR", "m": "DOUBLE", "u": "DOUBLE",
    "match_weight": "DOUBLE", "lambda": "DOUBLE",
}
LINKS = {
    "linkage": "VARCHAR", "left_source": "VARCHAR", "left_id": "VARCHAR", "right_source": "VARCHAR",
    "right_id": "VARCHAR", "match_probability": "DOUBLE", "match_weight": "DOUBLE", "pattern": "BIGINT",
}
CLUSTERS = {
    "linkage": "VARCHAR", "source": "VARCHAR", "record_id": "VARCHAR", "cluster_id": "BIGINT",
    "cluster_size": "BIGINT",
}
SUMMARY = {
    "linkage": "VARCHAR", "kind": "VARCHAR", "left_source": "VARCHAR", "right_source": "VARCHAR",
    "left_records": "BIGINT", "right_records": "BIGINT", "pairs": "BIGINT", "lambda": "DOUBLE",
    "converged": "BOOLEAN", "em_iterations": "INTEGER", "links": "BIGINT", "clusters": "BIGINT", "seconds": "DOUBLE",
}

_TABLES_HINT = "expected e.g. tables: {firms_1930: {path: tables/firms_1930.csv, id: firm_id}}"
_LINKAGE_HINT = (
    "expected e.g. {left: firms_1930, right: firms_1950, fields: {name: jaro_winkler, city: exact}} "
    "or {dedup: firms_1930, fields: {name: jaro_winkler}}"
)


# ---------------------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class TableSourceConfig:
    """One table source: a CSV or Parquet file in the data directory.

    Attributes:
        name: safe source name; the partition key of ``table_records``.
        path: absolute, resolved path of the file (inside the data directory).
        file: the path as written in ``sources.yaml`` (relative to the data directory); used in rejections.
        id_column: column of unique record ids.
        format: ``csv`` or ``parquet``.
        columns: the file's columns other than ``id_column``, in file order (all read as text).
        delimiter: CSV field separator.
        encoding: CSV text encoding.
    """

    name: str
    path: Path
    file: str
    id_column: str
    format: str
    columns: tuple[str, ...]
    delimiter: str = ","
    encoding: str = "utf-8"

    def fingerprint(self) -> str:
        """A hash of the file's size and modification time and of how it is read: it changes when the file is
        replaced or edited, or its entry in ``sources.yaml`` changes, so a sensor reruns exactly those sources."""
        st = self.path.stat() if self.path.is_file() else None
        entry = (self.file, st.st_size, st.st_mtime_ns) if st else (self.file, -1, -1)
        entry += (self.id_column, self.delimiter, self.encoding, self.columns)
        return hashlib.sha256(repr(entry).encode()).hexdigest()[:16]

    def to_record(self) -> dict[str, Any]:
        """One row of the ``table_sources`` table."""
        return {"name": self.name, "path": str(self.path), "format": self.format, "id_column": self.id_column,
                "columns": list(self.columns)}


@dataclass(frozen=True)
class TableLinkage:
    """One Fellegi-Sunter job: link ``left`` to ``right``, or de-duplicate ``left`` when ``right`` is None.

    Attributes:
        name: safe name; the value of the ``linkage`` column in every output table.
        left: left table source (the one de-duplicated in dedup mode).
        right: right table source, or ``None`` for dedup.
        fields: compared fields; ``FieldSpec.name`` is the left column, ``FieldSpec.right`` the right one.
        threshold: posterior match probability for a link, in (0, 1).
        one_to_one: keep at most one link per record on each side (linking only).
        blocking: optional blocking rules (columns that must be equal); ``None`` compares all pairs.
    """

    name: str
    left: str
    right: str | None
    fields: tuple[FieldSpec, ...]
    threshold: float = DEFAULT_MATCH_THRESHOLD
    one_to_one: bool = False
    blocking: tuple[tuple[str, ...], ...] | None = None

    @property
    def kind(self) -> str:
        """``dedup`` or ``link``."""
        return "dedup" if self.right is None else "link"

    @property
    def right_source(self) -> str:
        """The table on the right: ``right``, or ``left`` itself in dedup mode."""
        return self.right or self.left

    def to_record(self) -> dict[str, Any]:
        """One row of the ``table_linkages`` table."""
        fields = [
            f"{f.name}:{f.comparison}" + (f"->{f.right_name}" if f.right_name else "") for f in self.fields
        ]
        return {"name": self.name, "kind": self.kind, "left_source": self.left, "right_source": self.right_source,
                "fields": fields, "threshold": self.threshold, "one_to_one": self.one_to_one}


@dataclass(frozen=True)
class TableRegistry:
    """The ``tables`` and ``table_linkages`` of a ``sources.yaml``: usable entries and everything rejected."""

    sources: tuple[TableSourceConfig, ...] = ()
    linkages: tuple[TableLinkage, ...] = ()
    rejected: tuple[Rejection, ...] = field(default_factory=tuple)

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the usable table sources, in file order."""
        return tuple(s.name for s in self.sources)

    def get(self, name: str) -> TableSourceConfig:
        """The table source called ``name``.

        Raises:
            KeyError: naming the known table sources when there is none of that name.
        """
        for src in self.sources:
            if src.name == name:
                return src
        raise KeyError(f"table source {short_repr(name)} is not loaded; "
                       f"known table sources: {', '.join(self.names) or 'none'}")


def _read_header(path: Path, fmt: str, delimiter: str, encoding: str) -> list[str]:
    if fmt == "parquet":
        return list(pq.read_schema(path).names)
    return [str(c) for c in pd.read_csv(path, nrows=0, sep=delimiter, encoding=encoding, dtype=str).columns]


def _load_table(data_dir: Path, raw_name: Any, settings: Any) -> TableSourceConfig:
    """One table source from its YAML entry; raises ValueError with the reason."""
    name = check_source_name(raw_name)
    if not isinstance(settings, Mapping):
        raise ValueError(f"settings {short_repr(settings)} are a {type(settings).__name__}; expected a mapping like "
                         "{path: tables/firms.csv, id: firm_id}")
    unknown = [k for k in settings if k not in _TABLE_FIELDS]
    if unknown:
        raise ValueError(f"unknown field {short_repr(unknown[0])}; expected only {', '.join(_TABLE_FIELDS)}")
    for required, example in (("path", "tables/firms.csv"), ("id", "firm_id")):
        if not isinstance(settings.get(required), str) or not settings[required]:
            raise ValueError(f"field {required!r} is {short_repr(settings.get(required))}; "
                             "expected a non-empty string like "
                             f"{example!r}")
    file, id_column = settings["path"], settings["id"]
    fmt = TABLE_FORMATS.get(Path(file).suffix.lower())
    if fmt is None:
        raise ValueError(f"path {short_repr(file)} has suffix {short_repr(Path(file).suffix)}; expected one of "
                         f"{', '.join(TABLE_FORMATS)}")
    try:
        path = safe_child(data_dir, file)
    except ValueError as exc:  # its message names the path, where it resolves and what is expected
        raise ValueError(f"field 'path': {exc}") from None
    if not path.is_file():
        raise ValueError(f"path {short_repr(file)}: file {path} not found; expected a {fmt} file there")
    delimiter = settings.get("delimiter") or ("\t" if Path(file).suffix.lower() == ".tsv" else ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(f"delimiter {short_repr(delimiter)} is not one character; expected e.g. ',' or ';'")
    encoding = settings.get("encoding") or "utf-8"
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise ValueError(f"encoding {short_repr(encoding)} is not a known text encoding; expected e.g. 'utf-8' or "
                         "'cp932'") from None
    if fmt == "parquet" and ("delimiter" in settings or "encoding" in settings):
        raise ValueError(f"path {short_repr(file)} is a Parquet file; "
                         "'delimiter' and 'encoding' apply to CSV files only")
    try:
        header = _read_header(path, fmt, delimiter, encoding)
    except Exception as exc:  # noqa: BLE001 - any reader error becomes the entry's rejection
        raise ValueError(f"path {short_repr(file)}: cannot read the header ({type(exc).__name__}: {exc}); expected a "
                         f"{fmt} file{' with a header row' if fmt == 'csv' else ''}") from None
    if id_column not in header:
        raise ValueError(f"id column {short_repr(id_column)} is not in {short_repr(file)}; its columns are "
                         f"{', '.join(header)}")
    columns = tuple(c for c in header if c != id_column)
    clash = [c for c in columns if c in RECORD_COLUMNS]
    if clash:
        raise ValueError(f"column {clash[0]!r} of {short_repr(file)} has the name of a column table_records adds "
                         f"({', '.join(RECORD_COLUMNS)}); expected it renamed in the file")
    return TableSourceConfig(name=name, path=path, file=file, id_column=id_column, format=fmt, columns=columns,
                             delimiter=delimiter, encoding=encoding)


def _field_spec(column: Any, setting: Any, left: TableSourceConfig, right: TableSourceConfig | None) -> FieldSpec:
    if not isinstance(column, str) or not column:
        raise ValueError(f"field name {short_repr(column)} is not a column name; expected a string")
    if isinstance(setting, str) or setting is None:
        setting = {"comparison": setting or "jaro_winkler"}
    if not isinstance(setting, Mapping):
        raise ValueError(f"field {short_repr(column)}: {short_repr(setting)} is a {type(setting).__name__}; "
                         "expected a comparison "
                         f"({', '.join(COMPARISONS)}) or a mapping with {', '.join(_FIELD_SETTINGS)}")
    unknown = [k for k in setting if k not in _FIELD_SETTINGS]
    if unknown:
        raise ValueError(f"field {short_repr(column)}: unknown setting {short_repr(unknown[0])}; expected only "
                         f"{', '.join(_FIELD_SETTINGS)}")
    comparison = setting.get("comparison", "jaro_winkler")
    if comparison not in COMPARISONS:
        raise ValueError(f"field {short_repr(column)}: comparison {short_repr(comparison)} is not one of "
                         f"{', '.join(COMPARISONS)}")
    right_column = setting.get("right")
    thresholds = setting.get("thresholds")
    try:
        spec = FieldSpec(column, comparison, tuple(thresholds) if isinstance(thresholds, list) else thresholds,
                         right_name=right_column if right_column != column else None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"field {short_repr(column)}: {exc}") from None
    for side, table, name in (("left", left, spec.name), ("right", right, spec.right)):
        if table is None:
            continue
        if name == table.id_column:
            raise ValueError(f"field {short_repr(name)} is the id column of table {table.name!r}; "
                             "expected a data column")
        if name not in table.columns:
            raise ValueError(f"field {short_repr(name)} is not a column of {side} table {table.name!r} ({table.file}); "
                             f"its columns are {', '.join(table.columns)}")
    return spec


def _load_linkage(item: Any, tables: Mapping[str, TableSourceConfig], rejected_names: set[str]) -> TableLinkage:
    """One table linkage from its YAML entry; raises ValueError with the reason (without the entry's position,
    which the caller adds where the rejection's source does not already name it)."""
    if not isinstance(item, Mapping):
        raise ValueError(f"entry {short_repr(item)} is a {type(item).__name__}; {_LINKAGE_HINT}")
    unknown = [k for k in item if k not in _LINKAGE_FIELDS]
    if unknown:
        raise ValueError(f"unknown field {short_repr(unknown[0])}; expected only {', '.join(_LINKAGE_FIELDS)}")
    dedup = "dedup" in item
    if dedup == ("left" in item or "right" in item) or (not dedup and not ("left" in item and "right" in item)):
        raise ValueError(f"expected either 'dedup: <table>' or both 'left' and 'right'; {_LINKAGE_HINT}")

    def table(place: str) -> TableSourceConfig:
        name = item[place]
        if isinstance(name, str) and name in tables:
            return tables[name]
        rejected_before = source_label(name) in rejected_names
        why = "was rejected (see its own rejection)" if rejected_before else "is not defined under 'tables'"
        raise ValueError(f"{place} table {short_repr(name)} {why}; expected one of the loaded tables: "
                         f"{', '.join(tables) or 'none'}")

    left = table("dedup" if dedup else "left")
    right = None if dedup else table("right")
    name = item.get("name") or (f"{left.name}__dedup" if dedup else f"{left.name}__{right.name}")  # type: ignore[union-attr]
    if not isinstance(name, str) or not SOURCE_NAME_RE.match(name) or ".." in name:
        raise ValueError(f"name {short_repr(name)} is not a safe name; expected 1-64 letters, digits, '_', '.', '-' "
                         "starting with a letter or digit")
    fields = item.get("fields")
    if not isinstance(fields, Mapping) or not fields:
        raise ValueError(f"fields {short_repr(fields)} is not a non-empty mapping; expected column: comparison, "
                         "e.g. {name: jaro_winkler, city: exact}")
    specs = tuple(_field_spec(col, setting, left, right) for col, setting in fields.items())
    threshold = item.get("threshold", DEFAULT_MATCH_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold {short_repr(threshold)} is not a probability; expected a number in (0, 1)")
    one_to_one = item.get("one_to_one", False)
    if not isinstance(one_to_one, bool):
        raise ValueError(f"one_to_one {short_repr(one_to_one)} is not true or false")
    if one_to_one and dedup:
        raise ValueError(f"one_to_one applies to linking two tables; expected it left out for dedup")
    blocking = item.get("blocking")
    if blocking is not None:
        if not isinstance(blocking, list) or not blocking or not all(
            isinstance(r, list) and r and all(isinstance(c, str) for c in r) for r in blocking
        ):
            raise ValueError(f"blocking {short_repr(blocking)}; expected a list of rules, each a list of column "
                             "names, e.g. [[city], [founded, name]]")
        for rule in blocking:
            for col in rule:
                for tbl in (left, right or left):
                    if col not in tbl.columns:
                        raise ValueError(f"blocking column {short_repr(col)} is not a column of table {tbl.name!r}; "
                                         f"its columns are {', '.join(tbl.columns)}")
        blocking = tuple(tuple(r) for r in blocking)
    return TableLinkage(name=name, left=left.name, right=None if right is None else right.name, fields=specs,
                        threshold=float(threshold), one_to_one=one_to_one, blocking=blocking)


def load_table_sources(data_dir: Path, *, strict: bool = False, log_repeats: bool = True) -> TableRegistry:
    """Reads and validates the ``tables`` and ``table_linkages`` of ``<data_dir>/sources.yaml``.

    A table entry is bad when its name is unsafe or already used by a document source or (up to letter case)
    another table, a field is missing or unknown, its path is not a ``.csv``/``.tsv``/``.parquet`` file inside
    the data directory, its header cannot be read, or its id column is not in the header. A linkage is bad
    when it names a table that is not loaded, a column either table lacks, an unknown comparison, a threshold
    outside (0, 1), or a name already used. Bad entries become rejections (stage ``table_sources``, file
    ``sources.yaml``); the others load. A file without ``tables`` gives an empty registry. A rejected linkage's
    source is its ``name``, or ``table linkage <n>`` (its place in the list) when it has none; each rejection is
    logged as a warning once per load (see :func:`~linkage_pipeline.documents.sources.log_rejections`).

    Args:
        data_dir: the data directory holding ``sources.yaml``.
        strict: raise instead of returning rejections.
        log_repeats: ``False`` logs at debug level the rejections that the previous load of the same file in
            this process already reported (for callers that reload the file for every asset or sensor tick).

    Returns:
        The registry: usable table sources and linkages in file order, and the rejections.

    Raises:
        FileNotFoundError: when ``data_dir`` or its ``sources.yaml`` does not exist.
        ValueError: when the file is not valid YAML, ``tables``/``table_linkages`` have the wrong type, or, with
            ``strict``, when anything was rejected (all reasons listed).
    """
    data_dir = Path(data_dir).expanduser().resolve()
    path = data_dir / SOURCES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {_TABLES_HINT}")
    doc = read_sources_yaml(path)
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise ValueError(f"{path}: top level is a {type(doc).__name__}; expected a mapping with 'tables'")
    raw_tables = doc.get("tables") if doc.get("tables") is not None else {}
    if not isinstance(raw_tables, Mapping):
        raise ValueError(f"{path}: 'tables' is a {type(raw_tables).__name__}; {_TABLES_HINT}")
    raw_linkages = doc.get("table_linkages") if doc.get("table_linkages") is not None else []
    if not isinstance(raw_linkages, list):
        raise ValueError(f"{path}: 'table_linkages' is a {type(raw_linkages).__name__}; expected a list like "
                         f"[{_LINKAGE_HINT.split('e.g. ')[1].split(' or ')[0]}]")
    document_sources = doc.get("sources") if isinstance(doc.get("sources"), Mapping) else {}

    rejected: list[Rejection] = []

    def reject(source: str, reason: str) -> None:
        rejected.append(Rejection(source=source, file=SOURCES_FILE, stage="table_sources", reason=reason))

    tables: dict[str, TableSourceConfig] = {}
    folded: dict[str, str] = {}
    for raw_name, settings in raw_tables.items():
        try:
            src = _load_table(data_dir, raw_name, settings)
        except ValueError as exc:
            reject(source_label(raw_name), str(exc))
            continue
        if src.name in document_sources:
            reject(src.name, f"name {src.name!r} is also a document source; expected distinct names")
            continue
        other = folded.get(src.name.casefold())
        if other is not None:
            reject(src.name, f"name differs from table {other!r} only in letter case; expected distinct names")
            continue
        folded[src.name.casefold()] = src.name
        tables[src.name] = src

    rejected_names = {r.source for r in rejected}
    linkages: list[TableLinkage] = []
    for index, item in enumerate(raw_linkages):
        position = f"table linkage {index + 1}"
        name = item.get("name") if isinstance(item, Mapping) else None
        try:
            linkage = _load_linkage(item, tables, rejected_names)
        except ValueError as exc:
            # The source names the entry; the reason adds its position only when the source is its name.
            if name:
                reject(source_label(name), f"{position}: {exc}")
            else:
                reject(position, str(exc))
            continue
        if any(other.name == linkage.name for other in linkages):
            reject(linkage.name, f"table linkage {index + 1}: name {linkage.name!r} is already used; expected "
                                 "distinct names (set 'name' on one of them)")
            continue
        linkages.append(linkage)

    if strict and rejected:
        raise ValueError(f"{path}: {len(rejected)} problem(s):\n" + "\n".join(f"- {r}" for r in rejected))
    log_rejections(path, "table_sources", rejected, repeats=log_repeats)
    logger.info("loaded %d table sources and %d table linkages from %s (%d rejected)", len(tables), len(linkages),
                path, len(rejected))
    return TableRegistry(sources=tuple(tables.values()), linkages=tuple(linkages), rejected=tuple(rejected))


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


def read_records(store: Store, source: TableSourceConfig, columns: Iterable[str]) -> pd.DataFrame:
    """One source's ``table_records`` partition with ``columns``, in row order.

    Raises:
        ValueError: when the partition was never written, or was written before the file gained one of
            ``columns`` (naming the partition and what to run).
    """
    columns = list(dict.fromkeys(columns))
    path = store.partition_path("table_records", source.name)
    if not path.exists():
        raise ValueError(f"table_records has no partition {source.name!r}; expected table_records materialized for "
                         "it first (table_job)")
    present = set(pq.read_schema(path).names)
    missing = [c for c in columns if c not in present]
    if missing:
        raise ValueError(f"table_records partition {source.name!r} lacks columns {missing}; expected it "
                         "re-materialized after its file changed (table_job)")
    frame = store.read_partition("table_records", source.name, records_schema(source, columns))
    return frame.sort_values("row_number", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- linkage
@dataclass(frozen=True)
class TableLinkageResult:
    """What one table linkage produced; frames follow :data:`PATTERNS`, :data:`PARAMETERS`, :data:`LINKS`,
    :data:`CLUSTERS`, and ``summary`` is one row of :data:`SUMMARY`."""

    patterns: pd.DataFrame
    parameters: pd.DataFrame
    links: pd.DataFrame
    clusters: pd.DataFrame
    summary: dict[str, Any]


def _level_labels(spec: FieldSpec, default_thresholds: Sequence[float]) -> list[str]:
    if spec.comparison == "exact":
        return ["missing", "different", "equal"]
    if spec.comparison == "levenshtein":
        edits = spec.thresholds or DEFAULT_MAX_EDITS
        return ["missing", f"more than {edits[0]} edits", *(f"at most {int(d)} edits" for d in edits), "equal"]
    thr = spec.thresholds or default_thresholds
    return ["missing", f"jw < {thr[0]:g}", *(f"jw >= {t:g}" for t in thr)]


def link_table_records(
    linkage: TableLinkage,
    left: pd.DataFrame,
    right: pd.DataFrame | None = None,
    *,
    device: str = "cpu",
    workers: int = -1,
) -> TableLinkageResult:
    """Fits Fellegi-Sunter on all pairs of one table linkage and derives patterns, links and clusters.

    Args:
        linkage: the linkage (``right`` None: de-duplicate ``left``).
        left: the left table's records (``record_id`` and the left columns of ``linkage.fields``), n_l rows.
        right: the right table's records, n_r rows; ``None`` in dedup mode.
        device: ``cpu``, ``cuda``/``cuda:N`` (Jaro-Winkler on the GPU) or ``auto``.
        workers: CPU threads for rapidfuzz (-1: all cores).

    Returns:
        The result. ``clusters`` has one row per record (both tables when linking: connected components of the
        links across them), singletons included, ``cluster_id`` numbered 0, 1, ... in record order.

    Raises:
        ValueError: when the linkage and the tables do not fit together or there are no pairs to compare.
    """
    if (right is None) != (linkage.right is None):
        raise ValueError(f"linkage {linkage.name!r} is a {linkage.kind}; expected "
                         f"{'no right table' if linkage.right is None else 'a right table'}")
    t0 = time.perf_counter()
    model = FellegiSunter(list(linkage.fields), threshold=linkage.threshold, id_column="record_id", device=device,
                          workers=workers, blocking=None if linkage.blocking is None else [list(r) for r in linkage.blocking])
    model.fit(left, right)
    links = model.predict(one_to_one=linkage.one_to_one)
    left_rows, right_rows = links.attrs["left_row"], links.attrs["right_row"]

    names = [f.name for f in linkage.fields]
    labels = [_level_labels(f, model.thresholds) for f in linkage.fields]
    table = model.pattern_table()
    patterns = pd.DataFrame({
        "linkage": linkage.name,
        "pattern": table["pattern"].to_numpy(np.int64),
        "levels": ["; ".join(f"{n}={int(lv)}" for n, lv in zip(names, row)) for row in table[names].to_numpy()],
        "labels": ["; ".join(f"{n}: {lab[int(lv)]}" for n, lab, lv in zip(names, labels, row))
                   for row in table[names].to_numpy()],
        "pairs": table["count"].to_numpy(np.int64),
        "match_probability": table["match_probability"].to_numpy(np.float64),
        "match_weight": table["match_weight"].to_numpy(np.float64),
    })
    parameters = model.match_weights().assign(linkage=linkage.name, **{"lambda": float(model.lambda_)})

    n_l = len(left)
    right_frame = left if right is None else right
    out_links = pd.DataFrame({
        "linkage": linkage.name, "left_source": linkage.left, "left_id": links["left_id"].astype(str).to_numpy(),
        "right_source": linkage.right_source, "right_id": links["right_id"].astype(str).to_numpy(),
        "match_probability": links["match_probability"].to_numpy(np.float64),
        "match_weight": links["match_weight"].to_numpy(np.float64), "pattern": links["pattern"].to_numpy(np.int64),
    })
    if right is None:
        comp = clusters_from_links(n_l, left_rows, right_rows, ids=left["record_id"].to_numpy())
        sources = np.full(n_l, linkage.left, dtype=object)
    else:
        # records of both tables are the nodes; right rows follow the left ones
        ids = np.concatenate([left["record_id"].to_numpy(), right_frame["record_id"].to_numpy()])
        comp = clusters_from_links(n_l + len(right_frame), left_rows, np.asarray(right_rows) + n_l, ids=ids)
        sources = np.array([linkage.left] * n_l + [linkage.right] * len(right_frame), dtype=object)
    clusters = pd.DataFrame({
        "linkage": linkage.name, "source": sources, "record_id": comp["id"].astype(str).to_numpy(),
        "cluster_id": comp["cluster_id"].to_numpy(np.int64), "cluster_size": comp["cluster_size"].to_numpy(np.int64),
    })
    summary = {
        "linkage": linkage.name, "kind": linkage.kind, "left_source": linkage.left,
        "right_source": linkage.right_source, "left_records": n_l, "right_records": len(right_frame),
        "pairs": int(model.pattern_counts_.sum()), "lambda": float(model.lambda_), "converged": bool(model.converged_),
        "em_iterations": int(model.n_iter_), "links": len(out_links), "clusters": int(clusters["cluster_id"].nunique()),
        "seconds": time.perf_counter() - t0,
    }
    logger.info("table linkage %s: %d pairs, lambda %.3g, %d links, %d clusters", linkage.name, summary["pairs"],
                summary["lambda"], summary["links"], summary["clusters"])
    return TableLinkageResult(patterns=patterns, parameters=parameters[list(PARAMETERS)], links=out_links,
                              clusters=clusters, summary=summary)


@dataclass(frozen=True)
class TableLinkageOutputs:
    """Every table linkage's outputs concatenated (columns of the contracts), plus linkages that failed."""

    patterns: pd.DataFrame
    parameters: pd.DataFrame
    links: pd.DataFrame
    clusters: pd.DataFrame
    summary: pd.DataFrame
    rejected: tuple[Rejection, ...]


def _concat(frames: list[pd.DataFrame], schema: Mapping[str, str]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in schema})
    return pd.concat(frames, ignore_index=True)[list(schema)]


def run_table_linkages(
    store: Store, registry: TableRegistry, *, device: str = "cpu", workers: int = -1
) -> TableLinkageOutputs:
    """Runs every linkage of ``registry`` on the ``table_records`` partitions in ``store``.

    A linkage that cannot run (its records not materialized, fewer than two records, ...) is recorded as a
    rejection (stage ``table_linkages``, source = the linkage name) and the others still run. Outputs are in
    the order of the linkages in ``sources.yaml``.
    """
    results: list[TableLinkageResult] = []
    rejected: list[Rejection] = []
    for linkage in registry.linkages:
        try:
            left_src = registry.get(linkage.left)
            left = read_records(store, left_src, [f.name for f in linkage.fields] + [c for r in linkage.blocking or () for c in r])
            right = None
            if linkage.right is not None:
                right_src = registry.get(linkage.right)
                right = read_records(store, right_src, [f.right for f in linkage.fields] + [c for r in linkage.blocking or () for c in r])
            results.append(link_table_records(linkage, left, right, device=device, workers=workers))
        except (ValueError, KeyError) as exc:
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            rejection = Rejection(source=linkage.name, file=SOURCES_FILE, stage="table_linkages", reason=str(reason))
            logger.warning("%s", rejection)
            rejected.append(rejection)
    return TableLinkageOutputs(
        patterns=_concat([r.patterns for r in results], PATTERNS),
        parameters=_concat([r.parameters for r in results], PARAMETERS),
        links=_concat([r.links for r in results], LINKS),
        clusters=_concat([r.clusters for r in results], CLUSTERS),
        summary=pd.DataFrame([r.summary for r in results], columns=list(SUMMARY)),
        rejected=tuple(rejected),
    )


# ---------------------------------------------------------------------------------------------- reporting
def match_weights_markdown(parameters: pd.DataFrame) -> str:
    """The m, u and match weight of every non-missing level as a markdown table (the chart's text form)."""
    rows = parameters[parameters["level"] > 0]
    if rows.empty:
        return "_no fitted linkage_"
    cols = ["linkage", "field", "label", "m", "u", "match_weight", "lambda"]
    return rows[cols].to_markdown(index=False, floatfmt=".4g")


def plot_match_weights(parameters: pd.DataFrame, path: Path, *, title: str | None = None) -> Path | None:
    """Draws one linkage's match weights (log2 m/u per field and level) as horizontal bars to a PNG.

    Uses matplotlib's Agg canvas (no pyplot state, safe in worker processes). Bars to the right reward a pair,
    to the left punish it; the missing level (weight 0) is left out.

    Args:
        parameters: rows of :data:`PARAMETERS` for one linkage.
        path: the ``.png`` to write; parent folders are created.
        title: figure title.

    Returns:
        ``path``, or ``None`` when matplotlib is not installed (use :func:`match_weights_markdown` instead).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        logger.info("matplotlib is not installed: no match-weight chart")
        return None
    rows = parameters[parameters["level"] > 0].reset_index(drop=True)
    labels = [f"{f}: {lab}" for f, lab in zip(rows["field"], rows["label"])]
    weights = rows["match_weight"].to_numpy(np.float64)
    fig = Figure(figsize=(8, 0.35 * max(len(rows), 3) + 1.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(rows))[::-1]
    ax.barh(y, np.nan_to_num(weights), color=["#2ca02c" if w > 0 else "#d62728" for w in weights])
    ax.set_yticks(y, labels, fontsize=8)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("match weight log2(m / u)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_match_weights_per_linkage(parameters: pd.DataFrame, out_dir: Path) -> dict[str, Path | None]:
    """One match-weight chart per linkage in ``parameters`` (``<out_dir>/<linkage>_match_weights.png``).

    Returns:
        Linkage name -> the PNG written, or ``None`` when matplotlib is not installed.
    """
    return {
        name: plot_match_weights(rows, Path(out_dir) / f"{check_source_name(name)}_match_weights.png",
                                 title=f"match weights: {name}")
        for name, rows in parameters.groupby("linkage", sort=False)
    }


# ---------------------------------------------------------------------------------------------- demo data
_SURNAMES = (
    "Abe Baker Carter Dalton Ellis Fischer Garcia Hughes Ibsen Jensen Keller Larsen Moreau Nakamura Olsen Perez "
    "Quinn Rossi Sato Tanaka Ueda Vogel Walsh Young Zimmer Brandt Costa Dubois Eriksen Fontaine"
).split()
_TRADES = ("Textiles", "Shipping", "Brewing", "Steel", "Paper", "Chemicals", "Machinery", "Trading", "Mining",
           "Foods", "Glass", "Cement", "Rubber", "Printing", "Electric", "Tobacco")
_SUFFIXES = (("Company", "Co."), ("Limited", "Ltd."), ("Corporation", "Corp."), ("Brothers", "Bros."))
_CITIES = ("Osaka", "Tokyo", "Nagoya", "Kobe", "Yokohama", "Kyoto", "Sendai", "Hiroshima", "Fukuoka", "Sapporo",
           "Niigata", "Kanazawa")


def _typo(text: str, rng: np.random.Generator) -> str:
    if len(text) < 4:
        return text
    k = int(rng.integers(1, len(text) - 1))
    op = int(rng.integers(3))
    if op == 0:  # substitution
        return text[:k] + "abcdefghijklmnopqrstuvwxyz"[int(rng.integers(26))] + text[k + 1:]
    if op == 1:  # deletion
        return text[:k] + text[k + 1:]
    return text[: k - 1] + text[k] + text[k - 1] + text[k + 1:]  # transposition


def synthetic_firm_tables(
    n_firms: int = 200, *, seed: int = 0, overlap: float = 0.7, duplicate_share: float = 0.1
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Two small firm registers with known truth, for tests and the README example.

    The left register lists every firm once plus noisy duplicates of ``duplicate_share`` of them (for dedup);
    the right register lists ``overlap`` of the firms, each with noise (a typo in the name, an abbreviated legal
    suffix, a missing city, a founding year off by one, each with some probability), plus as many new firms.

    Args:
        n_firms: firms in the left register (before duplicates).
        seed: random seed; the same seed gives the same tables.
        overlap: share of the firms also in the right register.
        duplicate_share: share of the firms listed twice in the left register.

    Returns:
        ``(left, right, truth)``: left has ``firm_id, name, city, founded``; right has ``record_no, firm_name,
        city, founded``; truth has ``table`` (``left``/``right``), ``record_id`` and ``entity_id``.
    """
    if n_firms < 2:
        raise ValueError(f"n_firms must be at least 2, got {n_firms}")
    if not 0.0 <= overlap <= 1.0 or not 0.0 <= duplicate_share <= 1.0:
        raise ValueError(f"overlap and duplicate_share must lie in [0, 1], got {overlap} and {duplicate_share}")
    rng = np.random.default_rng(seed)

    def firm(k: int) -> dict[str, Any]:
        a, b = rng.choice(len(_SURNAMES), size=2, replace=False)
        suffix = _SUFFIXES[int(rng.integers(len(_SUFFIXES)))]
        return {"entity": f"E{k:05d}", "base": f"{_SURNAMES[a]} {_SURNAMES[b]} {_TRADES[int(rng.integers(len(_TRADES)))]}",
                "suffix": suffix, "city": _CITIES[int(rng.integers(len(_CITIES)))],
                "founded": int(rng.integers(1850, 1950))}

    def noisy(f: dict[str, Any]) -> dict[str, Any]:
        base = _typo(f["base"], rng) if rng.random() < 0.5 else f["base"]
        suffix = f["suffix"][1] if rng.random() < 0.5 else f["suffix"][0]
        city = None if rng.random() < 0.15 else f["city"]
        founded = f["founded"] + (1 if rng.random() < 0.15 else 0)
        return {"name": f"{base} {suffix}", "city": city, "founded": str(founded)}

    firms = [firm(k) for k in range(n_firms)]
    left_rows, truth = [], []
    for f in firms:
        left_rows.append({"entity": f["entity"], "name": f"{f['base']} {f['suffix'][0]}", "city": f["city"],
                          "founded": str(f["founded"])})
    for k in rng.choice(n_firms, size=int(round(duplicate_share * n_firms)), replace=False):
        left_rows.append({"entity": firms[int(k)]["entity"], **noisy(firms[int(k)])})
    order = rng.permutation(len(left_rows))
    left = pd.DataFrame([left_rows[k] for k in order])
    left.insert(0, "firm_id", [f"L{k:05d}" for k in range(len(left))])
    truth.append(pd.DataFrame({"table": "left", "record_id": left["firm_id"], "entity_id": left.pop("entity")}))

    shared = rng.choice(n_firms, size=int(round(overlap * n_firms)), replace=False)
    new = [firm(n_firms + k) for k in range(len(shared))]
    right_rows = [{"entity": firms[int(k)]["entity"], **noisy(firms[int(k)])} for k in shared]
    right_rows += [{"entity": f["entity"], "name": f"{f['base']} {f['suffix'][int(rng.integers(2))]}",
                    "city": f["city"], "founded": str(f["founded"])} for f in new]
    order = rng.permutation(len(right_rows))
    right = pd.DataFrame([right_rows[k] for k in order]).rename(columns={"name": "firm_name"})
    right.insert(0, "record_no", [f"R{k:05d}" for k in range(len(right))])
    truth.append(pd.DataFrame({"table": "right", "record_id": right["record_no"], "entity_id": right.pop("entity")}))
    return left, right, pd.concat(truth, ignore_index=True)
