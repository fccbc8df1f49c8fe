"""Table sources (CSV/Parquet) in Dagster: the table assets materialized against a DuckDB file, and their sensors.

Parsing of the table sources is tested in tests/unit/test_config.py, reading and linking them in
tests/unit/probabilistic (test_records.py, test_table_linkage.py).

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
from fixtures.table_sources import TABLE_LINKAGES_YAML, TABLES_YAML

from assets_defs.definitions import defs, table_assets
from assets_defs.tables import (
    TABLE_PARTITIONS_NAME,
    table_linkage_sensor,
    table_source_sensor,
)
from linkage_pipeline import config as config_lib
from linkage_pipeline.synthetic import tables
from resources import ComputeResource, LinkageStore

N_FIRMS = 120
SEED = 7


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


# -- materialized against DuckDB ----------------------------------------------------------------------------


def _resources(data_dir: Path) -> dict[str, object]:
    return {"linkage_store": LinkageStore(data_dir=str(data_dir)), "compute": ComputeResource(device="cpu")}


#: The assets of fellegi_sunter_table_linkage (one multi-asset: materialized together).
LINKAGE_ASSETS = ["table_comparison_patterns", "table_model_parameters", "table_links", "table_clusters",
                  "table_linkage_summary"]
#: The assets of table_sources (one multi-asset).
SOURCE_ASSETS = ["table_sources", "table_linkages"]
OUTPUT_TABLES = ["table_sources", "table_linkages", "table_records", "table_comparison_patterns",
                 "table_model_parameters", "table_linkage_summary", "table_links", "table_clusters", "rejected_inputs"]


def materialize_tables(data_dir: Path, instance: dg.DagsterInstance) -> dg.ExecuteInJobResult:
    resources = _resources(data_dir)
    names = config_lib.load_table_sources(data_dir).names
    known = set(instance.get_dynamic_partitions(TABLE_PARTITIONS_NAME))
    instance.add_dynamic_partitions(TABLE_PARTITIONS_NAME, [n for n in names if n not in known])
    assert dg.materialize(table_assets, selection=SOURCE_ASSETS, instance=instance, resources=resources).success
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
    (data_dir / "sources.yaml").write_text(TABLES_YAML + bad + TABLE_LINKAGES_YAML, encoding="utf-8")
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
    assert set(events) == set(LINKAGE_ASSETS)  # each table the multi-asset writes is an asset of its own
    assert events["table_linkage_summary"].materialization.metadata["linkages"].value == 2
    meta = events["table_model_parameters"].materialization.metadata
    text = meta["match_weights"].value
    assert "**a_to_b**" in text and "**registry_a__dedup**" in text and "data:image/png;base64," in text
    assert events["table_links"].materialization.metadata["links"].value > 80
    # what each fit used: the estimate, lambda's expected matches against the feasible maximum, the EM trace
    diagnostics = meta["fit_diagnostics"].value
    assert set(diagnostics) == {"a_to_b", "registry_a__dedup"}
    fit = diagnostics["a_to_b"]
    assert fit["estimate"] == "em" and fit["fallback_reason"] is None
    assert 0 < fit["expected_matches"] <= fit["feasible_matches"]
    assert len(fit["em_trace"]) == fit["em_iterations"] and len(fit["dependence"]) > 0


def test_summary_records_what_each_fit_used(materialized) -> None:
    _, _, store, _, _ = materialized
    summary = store.read_table("table_linkage_summary").set_index("linkage")
    assert summary["estimate"].tolist() == ["em", "em"]
    assert (summary["expected_matches"] <= summary["feasible_matches"]).all()
    assert summary.loc["a_to_b", "feasible_matches"] == min(summary.loc["a_to_b", "left_records"],
                                                            summary.loc["a_to_b", "right_records"])
    assert summary.loc["registry_a__dedup", "feasible_matches"] == 2 * summary.loc["registry_a__dedup",
                                                                                   "left_records"]
    assert (summary["resolved_links"] >= 0).all()


def test_rerun_gives_identical_tables(materialized) -> None:
    data_dir, instance, store, _, _ = materialized
    before = snapshot(store)
    materialize_tables(data_dir, instance)
    after = snapshot(store)
    for name in OUTPUT_TABLES:
        pd.testing.assert_frame_equal(before[name], after[name], obj=name)


def test_linkage_with_missing_records_is_rejected_and_others_run(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path, TABLES_YAML + TABLE_LINKAGES_YAML)
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
    data = make_data_dir(tmp_path, TABLES_YAML)
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

    data = make_data_dir(tmp_path, TABLES_YAML + TABLE_LINKAGES_YAML)
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
    (data / "sources.yaml").write_text(TABLES_YAML + TABLE_LINKAGES_YAML.replace("founded: levenshtein", "founded: exact"),
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
    assert linkage_keys == {*SOURCE_ASSETS, *LINKAGE_ASSETS}
    assert not {"table_records", *LINKAGE_ASSETS} & {
        k.to_user_string() for k in defs.resolve_job_def("linkage_job").asset_layer.executable_asset_keys}
    sensors = {s.name: s for s in defs.sensors}
    assert sensors["table_source_sensor"].job_name == "table_job"
    assert sensors["table_linkage_sensor"].job_name == "table_linkage_job"
