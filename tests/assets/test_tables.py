"""Table sources (CSV/Parquet) in Dagster: config parsing, then the table assets materialized against a DuckDB file.

The data are two synthetic firm registers with known truth (``tables.synthetic_firm_tables``): the left one as
CSV (with three rows that must be rejected), the right one as Parquet.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets_defs.definitions import defs, table_assets
from assets_defs.tables import (
    TABLE_PARTITIONS_NAME,
    table_linkage_sensor,
    table_source_sensor,
)
from linkage_pipeline import config as config_lib
from linkage_pipeline.config import load_sources
from linkage_pipeline.probabilistic import records as probabilistic_records
from linkage_pipeline.synthetic import tables
from resources import ComputeResource, LinkageStore

N_FIRMS = 120
SEED = 7
GOOD_TABLES = """\
tables:
  registry_a: {path: tables/registry_a.csv, id: firm_id}
  registry_b: {path: tables/registry_b.parquet, id: record_no}
"""
LINKAGES = """\
table_linkages:
  - name: a_to_b
    left: registry_a
    right: registry_b
    fields:
      name: {comparison: jaro_winkler, right: firm_name}
      city: exact
      founded: levenshtein
  - {dedup: registry_a, fields: {name: jaro_winkler, city: exact, founded: exact}}
"""


def write_tables(data_dir: Path) -> pd.DataFrame:
    """Writes both registers (plus a CJK firm on each side and three bad rows on the left); returns the truth."""
    left, right, truth = tables.synthetic_firm_tables(N_FIRMS, seed=SEED)
    cjk = {"name": "大阪紡績株式会社", "city": "大阪", "founded": "1882"}
    left = pd.concat([left, pd.DataFrame([{"firm_id": "L90000", **cjk}])], ignore_index=True)
    right = pd.concat([right, pd.DataFrame([{"record_no": "R90000", "firm_name": cjk["name"], "city": "大阪",
                                             "founded": "1882"}])], ignore_index=True)
    truth = pd.concat([truth, pd.DataFrame({"table": ["left", "right"], "record_id": ["L90000", "R90000"],
                                            "entity_id": ["E_CJK", "E_CJK"]})], ignore_index=True)
    bad = pd.DataFrame([
        {"firm_id": "", "name": "Nobody Trading Co.", "city": "Kobe", "founded": "1900"},       # no id
        {"firm_id": "L00003", "name": "Someone Else Ltd.", "city": "Kobe", "founded": "1901"},  # duplicate id
        {"firm_id": "L99999", "name": " ", "city": "", "founded": ""},                        # no value
    ])
    (data_dir / "tables").mkdir(parents=True, exist_ok=True)
    pd.concat([left, bad], ignore_index=True).to_csv(data_dir / "tables" / "registry_a.csv", index=False)
    right.to_parquet(data_dir / "tables" / "registry_b.parquet", index=False)
    return truth


def make_data_dir(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_tables(root)
    (root / "sources.yaml").write_text(text, encoding="utf-8")
    return root


# -- config parsing (unit level) ----------------------------------------------------------------------------


def test_good_table_config(tmp_path: Path) -> None:
    registry = config_lib.load_table_sources(make_data_dir(tmp_path, GOOD_TABLES + LINKAGES), strict=True)
    assert registry.names == ("registry_a", "registry_b")
    a = registry.get("registry_a")
    assert (a.format, a.id_column, a.columns) == ("csv", "firm_id", ("name", "city", "founded"))
    assert registry.get("registry_b").format == "parquet"
    link, dedup = registry.linkages
    assert (link.name, link.kind, link.left, link.right) == ("a_to_b", "link", "registry_a", "registry_b")
    assert [(f.name, f.right, f.comparison) for f in link.fields] == [
        ("name", "firm_name", "jaro_winkler"), ("city", "city", "exact"), ("founded", "founded", "levenshtein")]
    assert (dedup.name, dedup.kind, dedup.right_source, dedup.threshold) == ("registry_a__dedup", "dedup", "registry_a", 0.5)


def test_document_sources_ignore_the_tables_section(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path, GOOD_TABLES + LINKAGES)
    registry = load_sources(data)  # a tables-only file has no document sources and is not an error
    assert (registry.sources, registry.linkages, registry.rejected) == ((), (), ())
    (tmp_path / "docs" / "pages").mkdir(parents=True)
    (tmp_path / "sources.yaml").write_text("sources:\n  docs: {role: query, direction: horizontal}\n" + GOOD_TABLES)
    assert load_sources(tmp_path).names == ("docs",)


@pytest.mark.parametrize(
    ("entry", "name", "fragment"),
    [
        ("../up: {path: tables/registry_a.csv, id: firm_id}", "../up", "contains a path separator"),
        ("esc: {path: ../outside.csv, id: firm_id}", "esc", "outside"),
        ("abs: {path: /etc/passwd.csv, id: firm_id}", "abs", "is absolute"),
        ("gone: {path: tables/missing.csv, id: firm_id}", "gone", "file "),
        ("xls: {path: tables/registry_a.xlsx, id: firm_id}", "xls", "suffix '.xlsx'; expected one of .csv"),
        ("noid: {path: tables/registry_a.csv}", "noid", "field 'id' is None; expected a non-empty string"),
        ("badid: {path: tables/registry_a.csv, id: nope}", "badid", "id column 'nope' is not in 'tables/registry_a.csv'; its columns are firm_id, name"),
        ("extra: {path: tables/registry_a.csv, id: firm_id, sep: ';'}", "extra", "unknown field 'sep'; expected only path, id"),
        ("enc: {path: tables/registry_a.csv, id: firm_id, encoding: klingon}", "enc", "encoding 'klingon' is not a known"),
        ("pqdelim: {path: tables/registry_b.parquet, id: record_no, delimiter: ';'}", "pqdelim", "apply to CSV files only"),
        ("docs: {path: tables/registry_a.csv, id: firm_id}", "docs", "is also a document source"),
    ],
)
def test_bad_table_entry_is_rejected_and_the_others_load(tmp_path: Path, entry: str, name: str, fragment: str) -> None:
    (tmp_path / "docs" / "pages").mkdir(parents=True)
    text = "sources:\n  docs: {role: query, direction: horizontal}\n" + GOOD_TABLES + f"  {entry}\n"
    registry = config_lib.load_table_sources(make_data_dir(tmp_path, text))
    assert registry.names == ("registry_a", "registry_b")
    (rejection,) = registry.rejected
    assert (rejection.source, rejection.file, rejection.stage) == (name, "sources.yaml", "table_sources")
    assert fragment in rejection.reason, rejection.reason


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("{left: registry_a, right: nowhere, fields: {name: exact}}", "right table 'nowhere' is not defined under 'tables'"),
        ("{left: registry_a, fields: {name: exact}}", "expected either 'dedup: <table>' or both 'left' and 'right'"),
        ("{dedup: registry_a, right: registry_b, fields: {name: exact}}", "expected either 'dedup: <table>'"),
        ("{dedup: registry_a, fields: {}}", "fields {} is not a non-empty mapping"),
        ("{dedup: registry_a, fields: {name: soundex}}", "comparison 'soundex' is not one of jaro_winkler, exact, levenshtein"),
        ("{dedup: registry_a, fields: {town: exact}}", "field 'town' is not a column of left table 'registry_a' (tables/registry_a.csv)"),
        ("{left: registry_a, right: registry_b, fields: {name: exact}}", "field 'name' is not a column of right table 'registry_b'"),
        ("{dedup: registry_a, fields: {firm_id: exact}}", "is the id column of table 'registry_a'"),
        ("{dedup: registry_a, fields: {name: {thresholds: [0.9, 0.8]}}}", "field 'name': FieldSpec('name').thresholds"),
        ("{dedup: registry_a, fields: {name: exact}, threshold: 1.5}", "threshold 1.5 is not a probability"),
        ("{dedup: registry_a, fields: {name: exact}, one_to_one: true}", "one_to_one applies to linking two tables"),
        ("{dedup: registry_a, fields: {name: exact}, blocking: [[town]]}", "blocking column 'town' is not a column"),
        ("{name: ../x, dedup: registry_a, fields: {name: exact}}", "name '../x' is not a safe name"),
        ("{dedup: registry_a, fields: {name: exact}, colour: red}", "unknown field 'colour'"),
    ],
)
def test_bad_table_linkage_is_rejected(tmp_path: Path, entry: str, fragment: str) -> None:
    text = GOOD_TABLES + "table_linkages:\n  - {dedup: registry_b, fields: {firm_name: jaro_winkler}}\n" + f"  - {entry}\n"
    registry = config_lib.load_table_sources(make_data_dir(tmp_path, text))
    assert [link.name for link in registry.linkages] == ["registry_b__dedup"]
    (rejection,) = registry.rejected
    assert rejection.stage == "table_sources" and str(rejection).count("table linkage 2") == 1, str(rejection)
    assert fragment in rejection.reason, rejection.reason


def test_table_linkage_rejections_name_the_entry_once(tmp_path: Path) -> None:
    text = GOOD_TABLES + (
        "table_linkages:\n"
        "  - {dedup: registry_b, fields: {firm_name: jaro_winkler}}\n"
        "  - {dedup: registry_a, fields: {name: exact}, colour: red}\n"
        "  - {name: named_one, dedup: registry_a, fields: {name: exact}, colour: red}\n"
        "  - just text\n"
        "  - {dedup: registry_a, fields: {town: exact}}\n"
    )
    registry = config_lib.load_table_sources(make_data_dir(tmp_path, text))
    fields = "name, left, right, dedup, fields, threshold, one_to_one, blocking"
    assert [str(r) for r in registry.rejected] == [
        f"sources.yaml: source 'table linkage 2': unknown field 'colour'; expected only {fields}",
        f"sources.yaml: source 'named_one': table linkage 3: unknown field 'colour'; expected only {fields}",
        "sources.yaml: source 'table linkage 4': entry 'just text' is a str; expected e.g. {left: firms_1930, "
        "right: firms_1950, fields: {name: jaro_winkler, city: exact}} or {dedup: firms_1930, fields: "
        "{name: jaro_winkler}}",
        "sources.yaml: source 'table linkage 5': field 'town' is not a column of left table 'registry_a' "
        "(tables/registry_a.csv); its columns are name, city, founded",
    ]


def test_duplicate_linkage_names_and_strict_mode(tmp_path: Path) -> None:
    text = GOOD_TABLES + "table_linkages:\n" + "  - {dedup: registry_a, fields: {name: exact}}\n" * 2
    data = make_data_dir(tmp_path, text)
    (rejection,) = config_lib.load_table_sources(data).rejected
    assert "name 'registry_a__dedup' is already used" in rejection.reason
    with pytest.raises(ValueError, match=r"sources.yaml: 1 problem\(s\):\n- .*already used"):
        config_lib.load_table_sources(data, strict=True)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("tables: [a, b]\n", "'tables' is a list"),
        ("tables: {}\ntable_linkages: {a: b}\n", "'table_linkages' is a dict; expected a list"),
        ("tables: {a: {path: x.csv, id: a}\n", "malformed YAML at line"),
    ],
)
def test_unreadable_tables_section_raises_naming_the_file(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="sources.yaml") as info:
        config_lib.load_table_sources(make_data_dir(tmp_path, text))
    assert fragment in str(info.value)


def test_read_table_source_rejects_rows_with_reasons(tmp_path: Path) -> None:
    registry = config_lib.load_table_sources(make_data_dir(tmp_path, GOOD_TABLES))
    records, rejected = probabilistic_records.read_table_source(registry.get("registry_a"))
    n = N_FIRMS + round(0.1 * N_FIRMS) + 1  # firms, their in-table duplicates, the CJK firm
    assert len(records) == n and records["record_id"].is_unique
    assert [r.reason for r in rejected] == [
        f"row {n + 1}: empty id in column 'firm_id'; expected a non-empty id",
        f"row {n + 2}: id 'L00003' is already used by row 4; expected unique ids in column 'firm_id'",
        f"row {n + 3} (id 'L99999'): every value is empty; expected at least one value",
    ]
    assert {(r.source, r.file, r.stage) for r in rejected} == {("registry_a", "tables/registry_a.csv", "table_records")}
    assert records.loc[records["record_id"] == "L90000", "name"].item() == "大阪紡績株式会社"


# -- materialized against DuckDB ----------------------------------------------------------------------------


def _resources(data_dir: Path) -> dict[str, object]:
    return {"linkage_store": LinkageStore(data_dir=str(data_dir)), "compute": ComputeResource(device="cpu")}


LINKAGE_ASSETS = ["table_comparison_patterns", "table_model_parameters", "table_links", "table_clusters"]
OUTPUT_TABLES = ["table_sources", "table_linkages", "table_records", "table_comparison_patterns",
                 "table_model_parameters", "table_linkage_summary", "table_links", "table_clusters", "rejected_inputs"]


def materialize_tables(data_dir: Path, instance: dg.DagsterInstance) -> dg.ExecuteInJobResult:
    resources = _resources(data_dir)
    names = config_lib.load_table_sources(data_dir).names
    known = set(instance.get_dynamic_partitions(TABLE_PARTITIONS_NAME))
    instance.add_dynamic_partitions(TABLE_PARTITIONS_NAME, [n for n in names if n not in known])
    assert dg.materialize(table_assets, selection=["table_sources"], instance=instance, resources=resources).success
    for name in names:
        assert dg.materialize(table_assets, selection=["table_records"], partition_key=name, instance=instance,
                              resources=resources).success
    result = dg.materialize(table_assets, selection=LINKAGE_ASSETS, instance=instance, resources=resources)
    assert result.success
    return result


def snapshot(store) -> dict[str, pd.DataFrame]:
    out = {}
    for name in OUTPUT_TABLES:
        frame = store.read_table(name).drop(columns=["seconds"], errors="ignore").astype(str)
        out[name] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return out


@pytest.fixture(scope="module")
def materialized(tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp("tables")
    truth = write_tables(data_dir)
    bad = "  escape: {path: ../../outside.csv, id: firm_id}\n"
    (data_dir / "sources.yaml").write_text(GOOD_TABLES + bad + LINKAGES, encoding="utf-8")
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_tables(data_dir, instance)
    store = _resources(data_dir)["linkage_store"].store()
    return data_dir, instance, store, truth, result


def _pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["left_id"], frame["right_id"]))


def _f1(found: set, true: set) -> float:
    tp = len(found & true)
    return 2 * tp / (len(found) + len(true)) if found or true else 1.0


def test_links_between_tables_have_high_f1(materialized) -> None:
    _, _, store, truth, _ = materialized
    links = store.read_table("table_links")
    a_to_b = links[links["linkage"] == "a_to_b"]
    entity = dict(zip(truth["table"] + ":" + truth["record_id"], truth["entity_id"]))
    left_ids = truth.loc[truth["table"] == "left", "record_id"]
    right_ids = truth.loc[truth["table"] == "right", "record_id"]
    true = {(a, b) for a in left_ids for b in right_ids if entity[f"left:{a}"] == entity[f"right:{b}"]}
    assert len(true) >= round(0.7 * N_FIRMS)  # every shared firm, more where it is listed twice on the left
    f1 = _f1(_pairs(a_to_b), true)
    assert f1 >= 0.95, f1  # 0.98+ on this fixed data
    assert ("L90000", "R90000") in _pairs(a_to_b)  # CJK text compares by character
    assert (a_to_b["match_probability"] >= 0.5).all() and (a_to_b["match_probability"] <= 1).all()
    assert (a_to_b["left_source"] == "registry_a").all() and (a_to_b["right_source"] == "registry_b").all()


def test_dedup_clusters_keep_every_record(materialized) -> None:
    _, _, store, truth, _ = materialized
    clusters = store.read_table("table_clusters")
    dedup = clusters[clusters["linkage"] == "registry_a__dedup"]
    left = truth[truth["table"] == "left"]
    assert sorted(dedup["record_id"]) == sorted(left["record_id"])  # every record, singletons included
    assert (dedup["cluster_size"] == dedup.groupby("cluster_id")["record_id"].transform("size")).all()
    assert (dedup["cluster_size"] == 1).sum() >= N_FIRMS - 2 * round(0.1 * N_FIRMS)
    entity = dict(zip(left["record_id"], left["entity_id"]))
    cluster = dict(zip(dedup["record_id"], dedup["cluster_id"]))
    true = {p for p in itertools.combinations(sorted(entity), 2) if entity[p[0]] == entity[p[1]]}
    found = {p for p in itertools.combinations(sorted(cluster), 2) if cluster[p[0]] == cluster[p[1]]}
    assert _f1(found, true) >= 0.95, (_f1(found, true), len(found), len(true))  # 1.0 on this fixed data
    # the two-table linkage clusters both tables' records: every record of either table once
    both = clusters[clusters["linkage"] == "a_to_b"]
    assert len(both) == len(truth) and not both.duplicated(["source", "record_id"]).any()


def test_model_parameters_are_sane(materialized) -> None:
    _, _, store, truth, _ = materialized
    params = store.read_table("table_model_parameters")
    assert set(params["linkage"]) == {"a_to_b", "registry_a__dedup"}
    for (linkage, field), rows in params.groupby(["linkage", "field"]):
        levels = rows[rows["level"] > 0].sort_values("level")
        assert levels["m"].between(0, 1).all() and levels["u"].between(0, 1).all(), rows
        assert levels["m"].sum() == pytest.approx(1.0) and levels["u"].sum() == pytest.approx(1.0)
        assert levels["match_weight"].iloc[-1] > 0 > levels["match_weight"].iloc[0], (linkage, field)
        assert rows.loc[rows["level"] == 0, "m"].isna().all()  # the missing level has no m or u
    summary = store.read_table("table_linkage_summary").set_index("linkage")
    n_left = int((truth["table"] == "left").sum())
    n_right = int((truth["table"] == "right").sum())
    assert summary.loc["a_to_b", "pairs"] == n_left * n_right
    assert summary.loc["registry_a__dedup", "pairs"] == n_left * (n_left - 1) // 2
    # lambda near the true share of matching pairs (within a factor of 2)
    true_share = 1.1 * 0.7 * N_FIRMS / (n_left * n_right)
    assert 0.5 * true_share < summary.loc["a_to_b", "lambda"] < 2 * true_share
    assert (params.groupby("linkage")["lambda"].nunique() == 1).all()
    patterns = store.read_table("table_comparison_patterns")
    assert patterns.groupby("linkage")["pairs"].sum().to_dict() == summary["pairs"].to_dict()
    assert patterns["labels"].str.contains("name: jw >= 0.94").any()


def test_rejected_rows_and_entries_are_recorded(materialized) -> None:
    _, _, store, _, _ = materialized
    rejected = store.read_table("rejected_inputs")
    rows = rejected[rejected["stage"] == "table_records"]
    assert len(rows) == 3 and set(rows["source"]) == {"registry_a"}
    assert rows["reason"].str.contains("empty id").sum() == 1
    assert rows["reason"].str.contains("is already used by row 4").sum() == 1
    assert rows["reason"].str.contains("every value is empty").sum() == 1
    (entry,) = rejected[rejected["stage"] == "table_sources"].itertuples()
    assert entry.source == "escape" and "outside" in entry.reason
    assert store.read_table("table_sources")["name"].tolist() == ["registry_a", "registry_b"]


def test_match_weight_chart_in_metadata(materialized) -> None:
    _, _, _, _, result = materialized
    events = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
    meta = events["table_model_parameters"].materialization.metadata
    text = meta["match_weights"].value
    assert "**a_to_b**" in text and "**registry_a__dedup**" in text and "data:image/png;base64," in text
    assert events["table_links"].materialization.metadata["links"].value > 80


def test_rerun_gives_identical_tables(materialized) -> None:
    data_dir, instance, store, _, _ = materialized
    before = snapshot(store)
    materialize_tables(data_dir, instance)
    after = snapshot(store)
    for name in OUTPUT_TABLES:
        pd.testing.assert_frame_equal(before[name], after[name], obj=name)


def test_linkage_with_missing_records_is_rejected_and_others_run(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path, GOOD_TABLES + LINKAGES)
    resources = _resources(data)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(TABLE_PARTITIONS_NAME, ["registry_a"])
    assert dg.materialize(table_assets, selection=["table_records"], partition_key="registry_a", instance=instance,
                          resources=resources).success
    assert dg.materialize(table_assets, selection=LINKAGE_ASSETS, instance=instance, resources=resources).success
    store = resources["linkage_store"].store()
    assert set(store.read_table("table_links")["linkage"]) == {"registry_a__dedup"}
    rejected = store.read_table("rejected_inputs")
    (row,) = rejected[rejected["stage"] == "table_linkages"].itertuples()
    assert row.source == "a_to_b" and "table_records has no partition 'registry_b'" in row.reason


def test_sensor_adds_new_tables_and_reruns_changed_ones(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path, GOOD_TABLES)
    instance = dg.DagsterInstance.ephemeral()
    resources = {"linkage_store": LinkageStore(data_dir=str(data))}
    first = table_source_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert sorted(r.partition_key for r in first.run_requests) == ["registry_a", "registry_b"]
    assert first.dynamic_partitions_requests[0].partition_keys == ["registry_a", "registry_b"]
    instance.add_dynamic_partitions(TABLE_PARTITIONS_NAME, ["registry_a", "registry_b"])
    quiet = table_source_sensor(dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor))
    assert not quiet.run_requests
    path = data / "tables" / "registry_b.parquet"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    changed = table_source_sensor(dg.build_sensor_context(instance=instance, resources=resources, cursor=quiet.cursor))
    assert [r.partition_key for r in changed.run_requests] == ["registry_b"]


def test_linkage_sensor_relinks_after_new_records_or_a_changed_linkage(tmp_path: Path) -> None:
    from dagster._core.utils import make_new_run_id

    data = make_data_dir(tmp_path, GOOD_TABLES + LINKAGES)
    instance = dg.DagsterInstance.ephemeral()
    resources = _resources(data)

    def evaluate(cursor):
        return table_linkage_sensor(dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor))

    def reasons(result):
        return [r.tags["linkage/reason"] for r in result.run_requests]

    nothing_read = evaluate(None)
    assert not nothing_read.run_requests and nothing_read.skip_reason.skip_message == "no table records read yet"
    instance.add_dynamic_partitions(TABLE_PARTITIONS_NAME, ["registry_a", "registry_b"])
    for name in ("registry_a", "registry_b"):
        assert dg.materialize(table_assets, selection=["table_records"], partition_key=name, instance=instance,
                              resources=resources).success
    read = evaluate(nothing_read.cursor)
    assert reasons(read) == ["table records changed"]
    # a table run in progress: wait, and keep the cursor
    busy_run = instance.add_run(dg.DagsterRun(job_name="table_job", run_id=make_new_run_id(),
                                              status=dg.DagsterRunStatus.STARTED))
    busy = evaluate(read.cursor)
    assert not busy.run_requests and "1 table run(s) in progress" in busy.skip_reason.skip_message
    assert busy.cursor is None
    instance.delete_run(busy_run.run_id)
    assert dg.materialize(table_assets, selection=LINKAGE_ASSETS, instance=instance, resources=resources).success
    linked = evaluate(read.cursor)
    assert not linked.run_requests and linked.skip_reason.skip_message == "table links are up to date"
    # a changed linkage entry relinks, once
    (data / "sources.yaml").write_text(GOOD_TABLES + LINKAGES.replace("founded: levenshtein", "founded: exact"),
                                       encoding="utf-8")
    edited = evaluate(linked.cursor)
    assert reasons(edited) == ["table_linkages changed"]
    assert not evaluate(edited.cursor).run_requests
    # records read again relink, with a new run key
    assert dg.materialize(table_assets, selection=["table_records"], partition_key="registry_b", instance=instance,
                          resources=resources).success
    reread = evaluate(edited.cursor)
    assert reasons(reread) == ["table records changed"]
    assert reread.run_requests[0].run_key != read.run_requests[0].run_key


def test_definitions_hold_the_table_jobs_and_sensor() -> None:
    table_job = defs.resolve_job_def("table_job")
    assert table_job.partitions_def is not None and table_job.partitions_def.name == TABLE_PARTITIONS_NAME
    linkage_keys = {k.to_user_string() for k in defs.resolve_job_def("table_linkage_job").asset_layer.executable_asset_keys}
    assert linkage_keys == {"table_sources", *LINKAGE_ASSETS}
    assert not {"table_records", *LINKAGE_ASSETS} & {
        k.to_user_string() for k in defs.resolve_job_def("linkage_job").asset_layer.executable_asset_keys}
    sensors = {s.name: s for s in defs.sensors}
    assert sensors["table_source_sensor"].job_name == "table_job"
    assert sensors["table_linkage_sensor"].job_name == "table_linkage_job"
