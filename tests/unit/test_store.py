"""Store: atomic per-source Parquet partitions behind DuckDB views, transactional tables, SQL models."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from linkage_pipeline import schema
from linkage_pipeline.schema import LINK_REVIEWS
from linkage_pipeline.store import (
    SCHEMA_VERSION,
    SchemaVersionError,
    SqlModelError,
    Store,
    check_partition,
    load_sql_models,
)

SCHEMA = {"id": "VARCHAR", "source": "VARCHAR", "value": "DOUBLE", "n": "INTEGER"}


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "db.duckdb", tmp_path / "artifacts")


def test_partitions_are_views_and_replace_only_their_source(store: Store) -> None:
    a = pd.DataFrame({"id": ["x", "y"], "source": "a", "value": [1.0, 2.0], "n": [1, 2], "extra": [0, 0]})
    b = pd.DataFrame({"id": ["z"], "source": "b", "value": [3.5], "n": [7]})
    assert store.write_partition("things", "a", a, SCHEMA) == 2
    assert store.write_partition("things", "b", b, SCHEMA) == 1
    got = store.query("select id, source, value, n from things order by id")
    assert got["id"].tolist() == ["x", "y", "z"]
    assert list(store.read_table("things").columns) == list(SCHEMA)  # extra column dropped, order kept
    store.write_partition("things", "a", a.iloc[:1], SCHEMA)
    assert store.query("select count(*) as c from things where source = ?", ["a"])["c"].item() == 1
    assert store.partitions("things") == ["a", "b"]


def test_empty_view_is_queryable_with_its_columns(store: Store) -> None:
    store.write_partition("things", "a", pd.DataFrame(columns=list(SCHEMA)), SCHEMA)
    got = store.read_table("things")
    assert got.empty and list(got.columns) == list(SCHEMA)


def test_a_view_lost_in_a_crash_is_recreated_by_the_next_write(store: Store) -> None:
    """A process killed after the schema file was written but before the view existed must not leave no view."""
    one = pd.DataFrame({"id": ["x"], "source": "a", "value": [1.0], "n": [1]})
    store.write_partition("things", "a", one, SCHEMA)
    with store.connect() as con:
        con.execute("drop view things")  # the state such a crash leaves: schema file present, view missing
    assert not store.table_exists("things")
    store.write_partition("things", "b", one.assign(source="b"), SCHEMA)
    assert sorted(store.read_table("things")["source"]) == ["a", "b"]


def test_missing_column_names_table_and_column(store: Store) -> None:
    with pytest.raises(ValueError, match=r"things: missing columns \['n'\]"):
        store.write_partition("things", "a", pd.DataFrame({"id": ["x"], "source": "a", "value": [1.0]}), SCHEMA)


@pytest.mark.parametrize("bad", ["../evil", "/abs", "a/b", ".hidden", "", "a..b"])
def test_unsafe_partition_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a safe source name"):
        check_partition(bad)


def test_replace_table_is_all_or_nothing(store: Store) -> None:
    store.replace_table("t", pd.DataFrame({"a": [1, 2, 3]}))
    with pytest.raises(ValueError):
        store.replace_table("t", pd.DataFrame({"b": [1]}), {"a": "INTEGER"})
    assert store.read_table("t")["a"].tolist() == [1, 2, 3]


def test_sql_models_run_in_dependency_order_and_errors_carry_sql(store: Store, tmp_path: Path) -> None:
    sql = tmp_path / "sql"
    (sql / "staging").mkdir(parents=True)
    (sql / "marts").mkdir()
    (sql / "marts" / "mart_b.sql").write_text("-- depends_on: stg_a\nselect x * 2 as y from stg_a\n")
    (sql / "staging" / "stg_a.sql").write_text("-- depends_on: seed\nselect x from seed where x > 1\n")
    store.replace_table("seed", pd.DataFrame({"x": [1, 2, 3]}))
    models = load_sql_models(sql)
    assert [m.name for m in models] == ["stg_a", "mart_b"]
    for m in models:
        store.run_sql_model(m)
    assert sorted(store.read_table("mart_b")["y"]) == [4, 6]
    (sql / "marts" / "mart_b.sql").write_text("-- depends_on: stg_a\nselect nope from stg_a\n")
    with pytest.raises(SqlModelError, match=r"mart_b\.sql failed(.|\n)*select nope from stg_a"):
        store.run_sql_model(load_sql_models(sql)[1])
    assert sorted(store.read_table("mart_b")["y"]) == [4, 6]  # the failed model left the old table


def test_sql_model_cycle_and_missing_header(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("-- depends_on: b\nselect 1")
    (tmp_path / "b.sql").write_text("-- depends_on: a\nselect 1")
    with pytest.raises(ValueError, match="cycle"):
        load_sql_models(tmp_path)
    (tmp_path / "b.sql").write_text("select 1")
    with pytest.raises(ValueError, match="missing '-- depends_on:' header"):
        load_sql_models(tmp_path)


def test_project_sql_models_load_in_order() -> None:
    models = load_sql_models(Path(__file__).resolve().parents[2] / "dbt_like_sql")
    names = [m.name for m in models]
    assert names.index("stg_regions") < names.index("stg_crop_texts")
    assert names.index("int_list_entries") < names.index("mart_supply_chain_edges")


# -- paths with glob characters ------------------------------------------------------------------------------

ODD_DIRS = ["scans [1956]", "a*b?c", "[!a]", "odd ]name[", "x-[a-z]", "**", "it's [x]"]


@pytest.mark.parametrize("odd", ODD_DIRS)
def test_store_under_paths_with_glob_characters_round_trips(tmp_path: Path, odd: str) -> None:
    root = tmp_path / odd / "data dir [2]?"
    store = Store(tmp_path / "db dir [1]*" / "db [x]*.duckdb", root / odd / "artifacts *?[]")
    empty = pd.DataFrame(columns=list(SCHEMA))
    store.write_partition("things", "empty", empty, SCHEMA)
    got = store.read_table("things")  # only the schema file so far: queryable, with its columns
    assert got.empty and list(got.columns) == list(SCHEMA)
    a = pd.DataFrame({"id": ["x", "y"], "source": "a", "value": [1.0, 2.0], "n": [1, 2]})
    b = pd.DataFrame({"id": ["z"], "source": "b", "value": [3.5], "n": [7]})
    assert store.write_partition("things", "a", a, SCHEMA) == 2
    assert store.write_partition("things", "b", b, SCHEMA) == 1
    assert store.query("select id from things order by id")["id"].tolist() == ["x", "y", "z"]
    assert store.read_table("things", where_source="b")["id"].tolist() == ["z"]
    pd.testing.assert_frame_equal(store.read_partition("things", "a", SCHEMA), a.astype({"n": "int32"}))
    assert store.partitions("things") == ["a", "b", "empty"]
    assert store.delete_partition("things", "a")
    assert store.read_table("things")["id"].tolist() == ["z"]
    assert store.replace_table("totals", pd.DataFrame({"n": [1, 2]})) == 2
    assert store.query("select sum(n) as s from totals")["s"].item() == 3


def test_glob_characters_in_the_path_do_not_pull_in_another_stores_files(tmp_path: Path) -> None:
    """Unescaped, 'art[ab]' would match the sibling folder 'arta', and '**' every folder below."""
    one = pd.DataFrame({"id": ["mine"], "source": "a", "value": [1.0], "n": [1]})
    other = Store(tmp_path / "other.duckdb", tmp_path / "arta")
    other.write_partition("things", "a", one.assign(id="other's"), SCHEMA)
    for odd in ("art[ab]", "**"):
        store = Store(tmp_path / f"{odd}.duckdb", tmp_path / odd)
        store.write_partition("things", "a", one, SCHEMA)
        assert store.read_table("things")["id"].tolist() == ["mine"], odd


def test_a_view_left_over_from_another_location_is_repointed(tmp_path: Path) -> None:
    """An artifact folder copied elsewhere must not keep reading the old location's Parquet files."""
    one = pd.DataFrame({"id": ["x"], "source": "a", "value": [1.0], "n": [1]})
    Store(tmp_path / "db.duckdb", tmp_path / "old").write_partition("things", "a", one, SCHEMA)
    shutil.copytree(tmp_path / "old", tmp_path / "new [2]")
    moved = Store(tmp_path / "db.duckdb", tmp_path / "new [2]")
    moved.write_partition("things", "b", one.assign(source="b"), SCHEMA)
    assert sorted(moved.read_table("things")["source"]) == ["a", "b"]


def test_a_question_mark_in_the_database_path_is_a_clear_error(tmp_path: Path) -> None:
    """DuckDB cannot keep its write-ahead log there (duckdb/duckdb#13472); say so before any work is done."""
    with pytest.raises(ValueError, match=r"database path .*run \?.* contains '\?'.*expected a database path without"):
        Store(tmp_path / "run ?" / "db.duckdb", tmp_path / "artifacts ?")
    Store(tmp_path / "db.duckdb", tmp_path / "artifacts ?")  # Parquet partitions are fine there


@pytest.mark.skipif(os.sep != "/", reason="a backslash is a path separator on Windows")
def test_a_backslash_in_the_artifact_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"contains a backslash.*expected an artifact folder without"):
        Store(tmp_path / "db.duckdb", tmp_path / "back\\slash")


# ---------------------------------------------------------------------------------------------- schema version


def _version_1_store(tmp_path: Path) -> Store:
    """A store as written before versions were recorded: `engine` in ocr_texts and ocr_evaluation, `condition`
    in stg_crop_texts, and no version file (written directly: the store itself refuses the old columns)."""
    folder = tmp_path / "art" / "tables" / "ocr_texts"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"crop_id": ["c1"], "engine": ["tesseract"], "text": ["甲"]}), folder / "dir.parquet")
    pq.write_table(pa.table({"crop_id": ["c2"], "engine": ["rapidocr"], "text": ["乙"]}), folder / "lists.parquet")
    pq.write_table(pa.table({"crop_id": pa.array([], pa.string()), "engine": pa.array([], pa.string()),
                             "text": pa.array([], pa.string())}), folder / "_schema.parquet")
    with duckdb.connect(str(tmp_path / "db.duckdb")) as con:
        con.execute(f"create view ocr_texts as select * from read_parquet('{folder}/*.parquet', union_by_name=true)")
        con.execute("create table ocr_evaluation as select 'dir' as source, 'tesseract' as engine, 0.1 as cer")
        con.execute("create table stg_crop_texts as select 'c1' as crop_id, 'tesseract' as condition")
    return Store(tmp_path / "db.duckdb", tmp_path / "art", check_version=False)


def test_a_new_store_records_the_schema_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.duckdb", tmp_path / "art")
    assert store.found_version() is None
    store.replace_table("t", pd.DataFrame({"a": [1]}))
    assert (tmp_path / "art" / "schema_version").read_text().strip() == str(SCHEMA_VERSION)
    assert Store(tmp_path / "db.duckdb", tmp_path / "art").found_version() == SCHEMA_VERSION


def test_tables_of_an_older_version_are_refused_with_how_to_migrate(tmp_path: Path) -> None:
    _version_1_store(tmp_path)
    with pytest.raises(SchemaVersionError, match=r"schema version 1.*linkage-pipeline migrate --data-dir"):
        Store(tmp_path / "db.duckdb", tmp_path / "art")


def test_migrate_renames_the_ocr_condition_columns_in_place(tmp_path: Path) -> None:
    _version_1_store(tmp_path)
    changed = Store(tmp_path / "db.duckdb", tmp_path / "art", check_version=False).migrate()
    assert sorted(changed) == [
        "ocr_evaluation: engine -> ocr", "ocr_texts/_schema.parquet: + reader",
        "ocr_texts/_schema.parquet: engine -> ocr", "ocr_texts/dir.parquet: + reader",
        "ocr_texts/dir.parquet: engine -> ocr", "ocr_texts/lists.parquet: + reader",
        "ocr_texts/lists.parquet: engine -> ocr", "stg_crop_texts: condition -> ocr",
    ]
    store = Store(tmp_path / "db.duckdb", tmp_path / "art")  # no longer refused
    texts = store.read_table("ocr_texts").sort_values("crop_id")
    assert list(texts.columns) == ["crop_id", "ocr", "text", "reader"]  # version 7's reader added, unknown
    assert texts["ocr"].tolist() == ["tesseract", "rapidocr"] and texts["reader"].isna().all()
    assert pq.read_table(tmp_path / "art" / "tables" / "ocr_texts" / "dir.parquet").column_names == [
        "crop_id", "ocr", "text", "reader"]
    assert store.read_table("ocr_evaluation").columns.tolist() == ["source", "ocr", "cer"]
    assert store.read_table("stg_crop_texts").columns.tolist() == ["crop_id", "ocr"]
    assert store.migrate() == []  # a second run has nothing left to do


def test_a_version_file_that_is_not_a_number_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "schema_version").write_text("two\n")
    with pytest.raises(SchemaVersionError, match="expected a whole number"):
        Store(tmp_path / "db.duckdb", tmp_path / "art")


# ---------------------------------------------------------------------------------------------- contracts
def test_writes_of_a_pipeline_table_are_checked_against_schema_py(store: Store) -> None:
    frame = pd.DataFrame({"crop_id": ["c"], "source": ["s"], "ocr": ["tesseract"], "text": ["甲"], "confidence": [0.9],
                          "reader": ["tesseract 5.5.0"]})
    store.write_partition("ocr_texts", "s", frame)  # no contract passed: schema.py's
    assert list(store.read_partition("ocr_texts", "s").columns) == list(schema.OCR_TEXTS)
    with pytest.raises(ValueError, match=r"'ocr_texts' .* differ from its contract in linkage_pipeline/schema"):
        store.write_partition("ocr_texts", "s", frame.rename(columns={"ocr": "engine"}),
                              {**{k: v for k, v in schema.OCR_TEXTS.items() if k != "ocr"}, "engine": "VARCHAR"})
    with pytest.raises(ValueError, match="differ from its contract"):
        store.replace_table("record_links", pd.DataFrame({"a": [1]}), {"a": "BIGINT"})
    with pytest.raises(ValueError, match=r"'scratch' has no contract in linkage_pipeline/schema.py"):
        store.write_partition("scratch", "s", frame)


def test_table_records_keep_their_leading_columns(store: Store) -> None:
    records = {**schema.RECORD_COLUMNS, "name": "VARCHAR"}
    frame = pd.DataFrame({"source": ["a"], "record_id": ["1"], "row_number": [0], "name": ["Acme"]})
    assert store.write_partition("table_records", "a", frame, records) == 1
    with pytest.raises(ValueError, match="do not start with its leading columns"):
        store.write_partition("table_records", "a", frame[["name"]], {"name": "VARCHAR"})


def test_migrate_adds_the_classifier_columns_of_version_3(tmp_path: Path) -> None:
    """A version-2 data dir: layout_regions partitions without `classifier`, a layout_evaluation table without
    `detector` and `classifier`; migrate adds them (old regions were classified by size rules)."""
    folder = tmp_path / "art" / "tables" / "layout_regions"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"region_id": ["r1", "r2"], "kind": ["entry", "title"]}), folder / "dir.parquet")
    (tmp_path / "art" / "schema_version").write_text("2\n")
    with duckdb.connect(str(tmp_path / "db.duckdb")) as con:
        con.execute("create table layout_evaluation as select 'dir' as source, 0.9 as precision")
    with pytest.raises(SchemaVersionError, match="schema version 2"):
        Store(tmp_path / "db.duckdb", tmp_path / "art")
    changed = Store(tmp_path / "db.duckdb", tmp_path / "art", check_version=False).migrate()
    assert sorted(changed) == [
        "layout_evaluation: + classifier", "layout_evaluation: + detector", "layout_regions/dir.parquet: + classifier",
    ]
    data = pq.read_table(folder / "dir.parquet").to_pandas()
    assert data["classifier"].tolist() == ["size rules", "size rules"]
    store = Store(tmp_path / "db.duckdb", tmp_path / "art")
    evaluation = store.read_table("layout_evaluation")
    assert evaluation.columns.tolist() == ["source", "precision", "detector", "classifier"]
    assert evaluation["classifier"].isna().all()
    assert store.migrate() == []


def test_migrate_to_version_4_retypes_one_to_one_and_adds_the_fit_columns(tmp_path: Path) -> None:
    """A version-3 data dir: table_linkages.one_to_one is a boolean and table_linkage_summary lacks the columns of
    what the fit used; migrate turns the flag into text ("true"/"false") and adds the columns (old fits were EM)."""
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "schema_version").write_text("3\n")
    with duckdb.connect(str(tmp_path / "db.duckdb")) as con:
        con.execute("create table table_linkages as select * from (values ('a__b', true), ('c__d', false)) "
                    "t(name, one_to_one)")
        con.execute("create table table_linkage_summary as select 'a__b' as linkage, 0.5 as lambda")
    changed = Store(tmp_path / "db.duckdb", tmp_path / "art", check_version=False).migrate()
    assert "table_linkages: one_to_one BOOLEAN -> VARCHAR" in changed
    assert "table_linkage_summary: + estimate" in changed and "table_linkage_summary: + resolved_links" in changed
    store = Store(tmp_path / "db.duckdb", tmp_path / "art")
    assert store.read_table("table_linkages")["one_to_one"].tolist() == ["true", "false"]
    summary = store.read_table("table_linkage_summary")
    assert summary.columns.tolist() == ["linkage", "lambda", "estimate", "expected_matches", "feasible_matches",
                                        "dependent_fields", "resolved_links"]
    assert summary["estimate"].tolist() == ["em"]
    assert store.migrate() == []


def test_migrate_to_version_5_adds_the_pooling_weight_of_evaluation_rows(tmp_path: Path) -> None:
    """A version-4 data dir: linkage_evaluation lacks pooling_weight; migrate adds it, empty for old rows."""
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "schema_version").write_text("4\n")
    with duckdb.connect(str(tmp_path / "db.duckdb")) as con:
        con.execute("create table linkage_evaluation as select 'multimodal' as method, 0.9 as top1_accuracy")
    with pytest.raises(SchemaVersionError, match="version 6 whether a reviewer decided"):
        Store(tmp_path / "db.duckdb", tmp_path / "art")
    changed = Store(tmp_path / "db.duckdb", tmp_path / "art", check_version=False).migrate()
    assert changed == ["linkage_evaluation: + pooling_weight"]
    table = Store(tmp_path / "db.duckdb", tmp_path / "art").read_table("linkage_evaluation")
    assert table.columns.tolist() == ["method", "top1_accuracy", "pooling_weight"]
    assert table["pooling_weight"].isna().all()


def test_migrate_to_version_6_marks_earlier_record_links_as_not_reviewed(tmp_path: Path) -> None:
    """A version-5 data dir: record_links lacks reviewed; migrate adds it as false (no verdict existed)."""
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "schema_version").write_text("5\n")
    with duckdb.connect(str(tmp_path / "db.duckdb")) as con:
        con.execute("create table record_links as select 'q1' as query_crop_id, 't1' as target_crop_id")
    changed = Store(tmp_path / "db.duckdb", tmp_path / "art", check_version=False).migrate()
    assert changed == ["record_links: + reviewed"]
    table = Store(tmp_path / "db.duckdb", tmp_path / "art").read_table("record_links")
    assert table["reviewed"].tolist() == [False]


def test_migrate_to_version_7_leaves_the_reader_of_earlier_ocr_texts_unknown(tmp_path: Path) -> None:
    """A version-6 data dir: ocr_texts partitions lack reader; migrate adds it empty, so the next run reads those
    crops again (an empty reader matches no engine's)."""
    folder = tmp_path / "art" / "tables" / "ocr_texts"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"crop_id": ["c1"], "source": ["dir"], "ocr": ["tesseract"], "text": ["東洋紡績"],
                             "confidence": [0.9]}), folder / "dir.parquet")
    (tmp_path / "art" / "schema_version").write_text("6\n")
    with pytest.raises(SchemaVersionError, match="version 7 which reader produced each OCR text"):
        Store(tmp_path / "db.duckdb", tmp_path / "art")
    changed = Store(tmp_path / "db.duckdb", tmp_path / "art", check_version=False).migrate()
    assert changed == ["ocr_texts/dir.parquet: + reader"]
    data = pq.read_table(folder / "dir.parquet").to_pandas()
    assert data.columns.tolist() == ["crop_id", "source", "ocr", "text", "confidence", "reader"]
    assert data["reader"].isna().all() and data["text"].tolist() == ["東洋紡績"]


def test_append_rows_creates_the_table_then_adds_to_it_in_one_transaction(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.duckdb", tmp_path / "art")
    row = {c: None for c in LINK_REVIEWS} | {"review_id": "r1", "query_crop_id": "q", "verdict": "none",
                                            "score": float("nan"), "top_score": 0.5}
    assert store.append_rows("link_reviews", pd.DataFrame([row])) == 1
    assert store.append_rows("link_reviews", pd.DataFrame([row | {"review_id": "r2"}])) == 1
    assert store.read_table("link_reviews")["review_id"].tolist() == ["r1", "r2"]
    with pytest.raises(ValueError, match="verdict"):
        store.append_rows("link_reviews", pd.DataFrame([{k: v for k, v in row.items() if k != "verdict"}]))
    assert len(store.read_table("link_reviews")) == 2
