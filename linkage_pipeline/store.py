"""DuckDB and Parquet storage: the only Python in the project that writes SQL.

Per-source stage outputs are one Parquet file per (table, source), written to a temporary name and renamed,
and exposed in DuckDB as a view over all partition files of the table. Cross-source tables are DuckDB tables
replaced inside a transaction. A connection is held only for the few milliseconds a statement needs, so that
parallel backfill processes can share the one DuckDB file (DuckDB allows one writer process at a time).
"""

from __future__ import annotations

import contextlib
import graphlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from linkage_pipeline import schema as contracts
from linkage_pipeline.paths import atomic_write_bytes

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
_PARTITION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SCHEMA_FILE = "_schema.parquet"

SCHEMA_VERSION = 7
"""Version of the tables' columns this code writes, kept in ``<artifact_dir>/schema_version``."""
_VERSION_FILE = "schema_version"
# Columns each version renamed, as (table, old name, new name). Version 2: the OCR condition is `ocr` in every
# table (it was `engine` in ocr_texts and ocr_evaluation, `condition` in stg_crop_texts).
_RENAMED: dict[int, tuple[tuple[str, str, str], ...]] = {
    2: (("ocr_texts", "engine", "ocr"), ("ocr_evaluation", "engine", "ocr"), ("stg_crop_texts", "condition", "ocr")),
}
# Columns each version added, as (table, column, type, value for rows written before). Version 3: which line
# classifier decided each region's kind (earlier detectors decided by type-size rules), and the detector and
# classifier behind each layout evaluation (unknown for evaluations written before).
_ADDED: dict[int, tuple[tuple[str, str, str, str | bool | None], ...]] = {
    3: (
        ("layout_regions", "classifier", "VARCHAR", "size rules"),
        ("layout_evaluation", "detector", "VARCHAR", None),
        ("layout_evaluation", "classifier", "VARCHAR", None),
    ),
    # Version 4: what the Fellegi-Sunter fit of each table linkage used and found.
    4: (
        ("table_linkage_summary", "estimate", "VARCHAR", "em"),
        ("table_linkage_summary", "expected_matches", "DOUBLE", None),
        ("table_linkage_summary", "feasible_matches", "BIGINT", None),
        ("table_linkage_summary", "dependent_fields", "VARCHAR", None),
        ("table_linkage_summary", "resolved_links", "BIGINT", None),
    ),
    # Version 5: the image weight of the pooled embedding each multimodal evaluation row was linked with.
    5: (("linkage_evaluation", "pooling_weight", "DOUBLE", None),),
    # Version 6: whether a reviewer's verdict decided each record link (none had one before).
    6: (("record_links", "reviewed", "BOOLEAN", False),),
    # Version 7: which reader (engine version, model, parsing rule) produced each OCR text; unknown before, so the
    # next run reads those crops again.
    7: (("ocr_texts", "reader", "VARCHAR", None),),
}
# Columns of DuckDB tables whose type a version changed, as (table, column, new type). Version 4: a table linkage's
# one_to_one is "auto", "true" or "false" (it was a boolean).
_RETYPED: dict[int, tuple[tuple[str, str, str], ...]] = {
    4: (("table_linkages", "one_to_one", "VARCHAR"),),
}

_ARROW_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "FLOAT": pa.float32(),
    "BOOLEAN": pa.bool_(),
    "VARCHAR[]": pa.list_(pa.string()),
    "FLOAT[]": pa.list_(pa.float32()),
}


class SchemaVersionError(RuntimeError):
    """The data directory holds tables written by another version of the column contracts."""


class SqlModelError(RuntimeError):
    """A SQL model failed; the message carries the file name and the SQL text."""


def _check_name(name: str, what: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(f"{what} {name!r} is not a valid table name; expected letters, digits and '_'")
    return name


def check_partition(partition: str) -> str:
    """Returns ``partition`` if it is safe as a file name, else raises ValueError."""
    if not isinstance(partition, str) or not _PARTITION_RE.match(partition) or ".." in partition:
        raise ValueError(
            f"partition {partition!r} is not a safe source name; expected 1-128 characters of letters, digits, "
            "'_', '.', '-' starting with a letter or digit"
        )
    return partition


def arrow_schema(schema: Mapping[str, str]) -> pa.Schema:
    """Arrow schema of a column contract (``{column: duckdb type}``, see ``schema.py``)."""
    try:
        return pa.schema([(col, _ARROW_TYPES[typ]) for col, typ in schema.items()])
    except KeyError as exc:
        raise ValueError(f"unsupported column type {exc.args[0]!r}; expected one of {sorted(_ARROW_TYPES)}") from None


def conform(df: pd.DataFrame, schema: Mapping[str, str], *, table: str = "table") -> pa.Table:
    """Casts a frame to a column contract: exactly those columns, in that order, with those types.

    Raises:
        ValueError: when a column of the contract is missing, naming the table and the missing columns.
    """
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise ValueError(f"{table}: missing columns {missing}; expected {list(schema)}")
    target = arrow_schema(schema)
    frame = df.loc[:, list(schema)].reset_index(drop=True)
    return pa.Table.from_pandas(frame, schema=target, preserve_index=False, safe=False)


def table_contract(table: str, given: Mapping[str, str] | None = None) -> Mapping[str, str] | None:
    """The contract a table is written and read with: its entry in :data:`schema.CONTRACTS`.

    ``given`` (the contract a caller passes) must equal that entry, or, for a table of
    :data:`schema.LEADING_CONTRACTS` (the user's own columns follow), start with its columns. A table schema.py
    does not name keeps ``given`` (``None``: the frame's own columns, for tables outside the pipeline).

    Raises:
        ValueError: when ``given`` disagrees with schema.py, naming the table and both column lists.
    """
    known = contracts.CONTRACTS.get(table)
    if known is not None:
        if given is not None and dict(given) != dict(known):
            raise ValueError(f"columns given for table {table!r} {dict(given)} differ from its contract in "
                             f"linkage_pipeline/schema.py {dict(known)}; expected that contract")
        return known
    leading = contracts.LEADING_CONTRACTS.get(table)
    if leading is not None and (given is None or list(given.items())[: len(leading)] != list(leading.items())):
        raise ValueError(f"columns given for table {table!r} {None if given is None else dict(given)} do not start "
                         f"with its leading columns in linkage_pipeline/schema.py {dict(leading)}")
    return given


def duckdb_glob_literal(path: Path) -> str:
    """``path`` as a DuckDB glob pattern that matches exactly that path.

    DuckDB reads ``*``, ``?``, ``[...]`` and ``**`` in the paths given to ``read_parquet`` as wildcards, so a
    folder named ``scans [1956]`` would match nothing and one named ``**`` everything below. Each of those
    characters is wrapped in a one-character class (``[`` -> ``[[]``), which DuckDB matches literally.
    """
    return "".join(f"[{c}]" if c in "*?[]" else c for c in str(path))


def _atomic_write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@dataclass(frozen=True)
class Store:
    """Where the pipeline's tables live.

    Attributes:
        database: the DuckDB file users open.
        artifact_dir: folder for Parquet partitions, crop images, indexes and models.
    """

    database: Path
    artifact_dir: Path
    lock_timeout_s: float = 120.0
    check_version: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "database", Path(self.database))
        object.__setattr__(self, "artifact_dir", Path(self.artifact_dir))
        found = self.found_version()
        if self.check_version and found is not None and found != SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.artifact_dir} holds tables of schema version {found}; this code reads and writes version "
                f"{SCHEMA_VERSION} (version 2 named the OCR condition 'ocr' in every table; version 3 records the line "
                "classifier of each layout region; version 4 records what each table linkage's Fellegi-Sunter fit used and "
                "found; version 5 the pooling weight of each multimodal evaluation row; version 6 whether a reviewer decided each record link; version 7 which reader produced each OCR text). Run 'linkage-pipeline migrate --data-dir <data dir>' once to "
                "rename and add the columns in place, or delete "
                f"{self.artifact_dir} to rebuild every table"
            )
        if "?" in str(self.database):
            # DuckDB names the write-ahead log by inserting '.wal' before the first '?' of the (resolved) path,
            # reading the rest as URL parameters (duckdb/duckdb#13472): the first commit fails. No link helps.
            raise ValueError(f"database path {self.database} contains '?', where DuckDB cannot keep its write-ahead "
                             "log; expected a database path without '?' (the artifact folder may keep it)")
        if os.sep == "/" and "\\" in str(self.artifact_dir):
            # DuckDB reads '\\' as a path separator in the Parquet paths behind the views, on every platform.
            raise ValueError(f"artifact folder {self.artifact_dir} contains a backslash, which DuckDB reads as a "
                             "path separator; expected an artifact folder without '\\' in its path")

    # -- schema version -----------------------------------------------------------------------------------
    def found_version(self) -> int | None:
        """The schema version of the tables already here: ``None`` for a new store, 1 for stores written before
        versions were recorded."""
        path = self.artifact_dir / _VERSION_FILE
        if path.is_file():
            text = path.read_text(encoding="utf-8").strip()
            if not text.isdigit():
                raise SchemaVersionError(f"{path} holds {text[:40]!r}; expected a whole number (the schema version)")
            return int(text)
        if self.database.exists() or (self.artifact_dir / "tables").exists():
            return 1
        return None

    def _stamp_version(self) -> None:
        path = self.artifact_dir / _VERSION_FILE
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, f"{SCHEMA_VERSION}\n".encode())

    def migrate(self) -> list[str]:
        """Renames and adds, in place, the columns that later schema versions renamed or added; returns what it
        changed (added columns take the value their version gives rows written before).

        Parquet partitions are rewritten one by one (write then rename), DuckDB tables altered in one
        transaction; the version file is written last, so a migration stopped half way is run again.
        """
        found = self.found_version()
        if found is None or found == SCHEMA_VERSION:
            self._stamp_version()
            return []
        if found > SCHEMA_VERSION:
            raise SchemaVersionError(f"{self.artifact_dir} holds schema version {found}, newer than this code's "
                                     f"{SCHEMA_VERSION}; upgrade linkage_pipeline instead")
        done: list[str] = []
        renames = [r for v in range(found + 1, SCHEMA_VERSION + 1) for r in _RENAMED.get(v, ())]
        added = [a for v in range(found + 1, SCHEMA_VERSION + 1) for a in _ADDED.get(v, ())]
        retyped = [r for v in range(found + 1, SCHEMA_VERSION + 1) for r in _RETYPED.get(v, ())]
        for table, column, kind, value in added:
            folder = self.artifact_dir / "tables" / table
            for path in sorted(folder.glob("*.parquet")) if folder.exists() else []:
                data = pq.read_table(path)
                if column not in data.column_names:
                    filled = pa.array([value] * data.num_rows, _ARROW_TYPES[kind])
                    _atomic_write_parquet(data.append_column(column, filled), path)
                    done.append(f"{table}/{path.name}: + {column}")
        for table, old, new in renames:
            folder = self.artifact_dir / "tables" / table
            for path in sorted(folder.glob("*.parquet")) if folder.exists() else []:
                data = pq.read_table(path)
                if old in data.column_names:
                    _atomic_write_parquet(data.rename_columns([new if c == old else c for c in data.column_names]), path)
                    done.append(f"{table}/{path.name}: {old} -> {new}")
        if self.database.exists():
            with duckdb.connect(str(self.database)) as con:
                con.execute("begin transaction")
                for table, old, new in renames:
                    found_column = con.execute(
                        "select c.column_name from information_schema.columns c join information_schema.tables t "
                        "using (table_name) where c.table_name = ? and t.table_type = 'BASE TABLE' "
                        "and c.column_name = ?", [table, old]).fetchall()
                    if found_column:
                        con.execute(f'alter table {_check_name(table, "table")} rename column "{old}" to "{new}"')
                        done.append(f"{table}: {old} -> {new}")
                for table, column, kind, value in added:
                    has_table = con.execute(
                        "select 1 from information_schema.tables where table_name = ? and table_type = 'BASE TABLE'",
                        [table]).fetchall()
                    has_column = con.execute(
                        "select 1 from information_schema.columns where table_name = ? and column_name = ?",
                        [table, column]).fetchall()
                    if has_table and not has_column:
                        con.execute(f'alter table {_check_name(table, "table")} add column "{column}" {kind}')
                        if value is not None:
                            con.execute(f'update {_check_name(table, "table")} set "{column}" = ?', [value])
                        done.append(f"{table}: + {column}")
                for table, column, kind in retyped:
                    current = con.execute(
                        "select c.data_type from information_schema.columns c join information_schema.tables t "
                        "using (table_name) where c.table_name = ? and t.table_type = 'BASE TABLE' "
                        "and c.column_name = ?", [table, column]).fetchall()
                    if current and current[0][0] != kind:
                        con.execute(f'alter table {_check_name(table, "table")} alter "{column}" type {kind}')
                        done.append(f"{table}: {column} {current[0][0]} -> {kind}")
                # views over partitions bind their columns when created: create them again over the renamed files
                for name, sql in con.execute("select view_name, sql from duckdb_views() where not internal").fetchall():
                    con.execute(sql.replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1))
                con.execute("commit")
        atomic_write_bytes(self.artifact_dir / _VERSION_FILE, f"{SCHEMA_VERSION}\n".encode())
        logger.info("migrated %s from schema version %d to %d: %s", self.artifact_dir, found, SCHEMA_VERSION, done)
        return done

    # -- connections -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Opens a short-lived connection, retrying while another process holds the write lock."""
        self.database.parent.mkdir(parents=True, exist_ok=True)
        if not read_only:
            self._stamp_version()
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(self.database), read_only=read_only and self.database.exists())
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        try:
            yield con
        finally:
            con.close()

    # -- per-source partitions -----------------------------------------------------------------------------
    @staticmethod
    def _contract(table: str, given: Mapping[str, str] | None) -> Mapping[str, str]:
        contract = table_contract(table, given)
        if contract is None:
            raise ValueError(f"table {table!r} has no contract in linkage_pipeline/schema.py; expected one there or "
                             "passed as schema=")
        return contract

    def table_dir(self, table: str) -> Path:
        return self.artifact_dir / "tables" / _check_name(table, "table")

    def partition_path(self, table: str, partition: str) -> Path:
        return self.table_dir(table) / f"{check_partition(partition)}.parquet"

    def write_partition(
        self, table: str, partition: str, df: pd.DataFrame, schema: Mapping[str, str] | None = None
    ) -> int:
        """Replaces one source's rows of a per-source table atomically; returns the row count.

        ``schema`` defaults to the table's contract in ``schema.py`` and must agree with it (see
        :func:`table_contract`); a table schema.py does not name needs one.
        """
        schema = self._contract(table, schema)
        data = conform(df, schema, table=table)
        self._stamp_version()
        self.ensure_view(table, schema)
        _atomic_write_parquet(data, self.partition_path(table, partition))
        logger.info("wrote %d rows to %s[%s]", data.num_rows, table, partition)
        return data.num_rows

    def delete_partition(self, table: str, partition: str) -> bool:
        path = self.partition_path(table, partition)
        if path.exists():
            path.unlink()
            return True
        return False

    def read_partition(self, table: str, partition: str, schema: Mapping[str, str] | None = None) -> pd.DataFrame:
        """One source's rows of a per-source table, read from its Parquet file (no DuckDB lock needed)."""
        schema = self._contract(table, schema)
        path = self.partition_path(table, partition)
        if not path.exists():
            return arrow_schema(schema).empty_table().to_pandas()
        return pq.read_table(path, schema=arrow_schema(schema)).to_pandas()

    def partitions(self, table: str) -> list[str]:
        d = self.table_dir(table)
        return sorted(p.stem for p in d.glob("*.parquet") if p.name != _SCHEMA_FILE) if d.exists() else []

    def ensure_view(self, table: str, schema: Mapping[str, str]) -> None:
        """Creates the view over the table's partition files; a schema file keeps it valid when empty.

        The view reads a glob of the table's folder, with the folder's own glob characters escaped (see
        :func:`duckdb_glob_literal`), so partitions written later by any process appear without touching the view.
        The view is checked in DuckDB itself, not inferred from the schema file: a process killed between writing
        the schema file and creating the view must not leave a table without its view, and a view over another
        folder (an artifact folder moved or copied) is pointed at this one.
        """
        d = self.table_dir(table)
        schema_file = d / _SCHEMA_FILE
        target = arrow_schema(schema)
        same_schema = schema_file.exists() and pq.read_schema(schema_file).equals(target)
        if not same_schema:
            _atomic_write_parquet(target.empty_table(), schema_file)
        literal = "'" + (duckdb_glob_literal(d) + os.sep + "*.parquet").replace("'", "''") + "'"
        with self.connect() as con:
            if same_schema:
                found = con.execute("select sql from duckdb_views() where view_name = ? and not internal", [table])
                row = found.fetchone()
                if row is not None and literal in (row[0] or ""):
                    return
            con.execute(f"create or replace view {table} as select * from read_parquet({literal}, union_by_name=true)")

    # -- cross-source tables ------------------------------------------------------------------------------
    def replace_table(self, table: str, df: pd.DataFrame, schema: Mapping[str, str] | None = None) -> int:
        """Replaces a DuckDB table with ``df`` inside one transaction; returns the row count.

        The table's contract in ``schema.py`` applies when it has one (``schema`` must then agree with it);
        otherwise ``schema``, or the frame's own columns when that is ``None``.
        """
        _check_name(table, "table")
        schema = table_contract(table, schema)
        data = conform(df, schema, table=table) if schema is not None else pa.Table.from_pandas(df, preserve_index=False)
        self._write_incoming(data, [f"create or replace table {table} as select * from _incoming"])
        logger.info("replaced table %s with %d rows", table, data.num_rows)
        return data.num_rows

    def _write_incoming(self, data: pa.Table, statements: list[str]) -> None:
        """Runs ``statements`` (which read ``data`` as ``_incoming``) in one transaction: all of them or none."""
        with self.connect() as con:
            con.execute("begin transaction")
            try:
                con.register("_incoming", data)
                for sql in statements:
                    con.execute(sql)
                con.unregister("_incoming")
                con.execute("commit")
            except Exception:
                con.execute("rollback")
                raise

    def append_rows(self, table: str, df: pd.DataFrame, schema: Mapping[str, str] | None = None) -> int:
        """Appends ``df`` to a DuckDB table inside one transaction (creating the table when missing); returns
        the rows added. Every row is in the table after the call, or none is (a crash in between leaves none)."""
        _check_name(table, "table")
        schema = table_contract(table, schema)
        if schema is None:
            raise ValueError(f"table {table!r} has no contract in schema.py; pass its schema")
        data = conform(df, schema, table=table)
        columns = ", ".join(f'"{c}" {t}' for c, t in schema.items())
        self._write_incoming(data, [f"create table if not exists {table} ({columns})",
                                    f"insert into {table} by name select * from _incoming"])
        logger.info("appended %d rows to table %s", data.num_rows, table)
        return data.num_rows

    def query(self, sql: str, params: Sequence[object] | Mapping[str, object] | None = None) -> pd.DataFrame:
        """Runs a read query with bound parameters and returns a frame."""
        with self.connect() as con:
            return con.execute(sql, params).df() if params is not None else con.execute(sql).df()

    def read_table(self, table: str, *, where_source: str | None = None) -> pd.DataFrame:
        """All rows of a table or view, optionally of one source (bound as a parameter)."""
        _check_name(table, "table")
        if where_source is None:
            return self.query(f"select * from {table}")
        return self.query(f"select * from {table} where source = ?", [where_source])

    def read_partitions(self, table: str, schema: Mapping[str, str] | None = None) -> pd.DataFrame:
        """Every source's rows of a per-source table, through its view; empty with its columns when no source
        has written the table yet (a data directory of table sources only, or before the first source run)."""
        self.ensure_view(table, self._contract(table, schema))
        return self.read_table(table)

    def table_exists(self, table: str) -> bool:
        _check_name(table, "table")
        with self.connect() as con:
            row = con.execute(
                "select count(*) from information_schema.tables where table_name = ?", [table]
            ).fetchone()
        return bool(row and row[0])

    # -- SQL models ---------------------------------------------------------------------------------------
    def run_sql_model(self, model: SqlModel) -> int:
        """Materialises one SQL model as a table inside a transaction; returns its row count."""
        with self.connect() as con:
            con.execute("begin transaction")
            try:
                con.execute(f"create or replace table {model.name} as {model.sql}")
                (n,) = con.execute(f"select count(*) from {model.name}").fetchone()
                con.execute("commit")
            except duckdb.Error as exc:
                con.execute("rollback")
                raise SqlModelError(f"SQL model {model.path} failed: {exc}\n--- SQL ---\n{model.sql}") from exc
        return int(n)


@dataclass(frozen=True)
class SqlModel:
    """One ``select`` in ``dbt_like_sql/``: file stem = table name, deps from its ``-- depends_on:`` header."""

    name: str
    path: Path
    sql: str
    depends_on: tuple[str, ...]
    layer: str


_DEPENDS_RE = re.compile(r"^\s*--\s*depends_on:\s*(.*)$", re.MULTILINE)


def load_sql_models(sql_dir: Path) -> list[SqlModel]:
    """Reads the SQL models under ``sql_dir`` in dependency order.

    Raises:
        ValueError: for a file without a ``-- depends_on:`` header, a bad name, or a dependency cycle.
    """
    sql_dir = Path(sql_dir)
    models: dict[str, SqlModel] = {}
    for path in sorted(sql_dir.rglob("*.sql")):
        text = path.read_text(encoding="utf-8")
        m = _DEPENDS_RE.search(text)
        if m is None:
            raise ValueError(f"{path}: missing '-- depends_on:' header; expected e.g. '-- depends_on: stg_regions'")
        deps = tuple(d.strip() for d in m.group(1).split(",") if d.strip())
        name = _check_name(path.stem, f"SQL model file {path.name}:")
        if name in models:
            raise ValueError(f"{path}: duplicate SQL model name {name!r} (also {models[name].path})")
        body = _DEPENDS_RE.sub("", text).strip().rstrip(";")
        models[name] = SqlModel(name, path, body, deps, path.parent.name)
    sorter = graphlib.TopologicalSorter({n: [d for d in m.depends_on if d in models] for n, m in models.items()})
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as exc:
        raise ValueError(f"SQL models in {sql_dir} form a dependency cycle: {exc.args[1]}") from None
    return [models[n] for n in order]
