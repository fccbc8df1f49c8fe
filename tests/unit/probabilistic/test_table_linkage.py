"""Fellegi-Sunter linkage of table sources, frames in and frames out (linkage_pipeline.probabilistic.tables)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest

from linkage_pipeline import schema
from linkage_pipeline.config import TableLinkage, TableRegistry, TableSourceConfig
from linkage_pipeline.probabilistic import FieldSpec
from linkage_pipeline.probabilistic.tables import (
    linkages_fingerprint,
    linked_sources,
    relink_decision,
    run_table_linkages,
)
from linkage_pipeline.synthetic.tables import synthetic_firm_tables

N_FIRMS = 100


def _source(name: str, id_column: str, columns: tuple[str, ...]) -> TableSourceConfig:
    return TableSourceConfig(name=name, path=Path(f"/data/{name}.csv"), file=f"tables/{name}.csv",
                             id_column=id_column, format="csv", columns=columns)


def _records(name: str, frame: pd.DataFrame, id_column: str) -> pd.DataFrame:
    """``frame`` as its table_records rows (the record columns first, values as text)."""
    data = frame.drop(columns=[id_column]).astype(object).where(frame.notna(), None)
    return pd.concat([pd.DataFrame({"source": name, "record_id": frame[id_column],
                                    "row_number": range(1, len(frame) + 1)}), data], axis=1)


A_TO_B = TableLinkage(name="a_to_b", left="firms_a", right="firms_b", fields=(
    FieldSpec("name", right_name="firm_name"), FieldSpec("city", "exact"), FieldSpec("founded", "levenshtein")))
DEDUP_A = TableLinkage(name="firms_a__dedup", left="firms_a", right=None, fields=(
    FieldSpec("name"), FieldSpec("city", "exact"), FieldSpec("founded", "exact")))
REGISTRY = TableRegistry(
    sources=(_source("firms_a", "firm_id", ("name", "city", "founded")),
             _source("firms_b", "record_no", ("firm_name", "city", "founded")),
             _source("unused", "id", ("name",))),
    linkages=(A_TO_B, DEDUP_A),
)


@pytest.fixture(scope="module")
def firms() -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    left, right, truth = synthetic_firm_tables(N_FIRMS, seed=1)
    records = {"firms_a": _records("firms_a", left, "firm_id"), "firms_b": _records("firms_b", right, "record_no")}
    return records, truth


@pytest.fixture(scope="module")
def outputs(firms):
    records, _ = firms
    return run_table_linkages(records, REGISTRY, device="cpu", workers=1)


def _precision_recall(found: set, true: set) -> tuple[float, float]:
    tp = len(found & true)
    return tp / len(found), tp / len(true)


def test_links_between_tables_match_the_known_truth(firms, outputs) -> None:
    _, truth = firms
    entity = dict(zip(truth["table"] + ":" + truth["record_id"], truth["entity_id"]))
    left_ids = truth.loc[truth["table"] == "left", "record_id"]
    right_ids = truth.loc[truth["table"] == "right", "record_id"]
    true = {(a, b) for a in left_ids for b in right_ids if entity[f"left:{a}"] == entity[f"right:{b}"]}
    links = outputs.links[outputs.links["linkage"] == "a_to_b"]
    precision, recall = _precision_recall(set(zip(links["left_id"], links["right_id"])), true)
    assert len(true) == 76  # 70 shared firms, 6 of them listed twice on the left
    assert precision >= 0.98 and recall >= 0.95, (precision, recall)  # 74 links, all true, on this fixed data
    assert (links["left_source"] == "firms_a").all() and (links["right_source"] == "firms_b").all()
    assert links["match_probability"].between(0.5, 1.0).all()


def test_dedup_clusters_every_record_and_find_the_duplicates(firms, outputs) -> None:
    _, truth = firms
    left = truth[truth["table"] == "left"]
    clusters = outputs.clusters[outputs.clusters["linkage"] == "firms_a__dedup"]
    assert sorted(clusters["record_id"]) == sorted(left["record_id"])  # singletons included
    entity = dict(zip(left["record_id"], left["entity_id"]))
    cluster = dict(zip(clusters["record_id"], clusters["cluster_id"]))
    true = {p for p in itertools.combinations(sorted(entity), 2) if entity[p[0]] == entity[p[1]]}
    found = {p for p in itertools.combinations(sorted(cluster), 2) if cluster[p[0]] == cluster[p[1]]}
    assert len(true) == 10
    precision, recall = _precision_recall(found, true)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)  # 1.0 and 1.0 on this fixed data
    both = outputs.clusters[outputs.clusters["linkage"] == "a_to_b"]
    assert len(both) == len(truth) and not both.duplicated(["source", "record_id"]).any()


def test_outputs_follow_the_contracts_one_summary_row_per_linkage(firms, outputs) -> None:
    records, truth = firms
    for frame, contract in ((outputs.patterns, schema.TABLE_COMPARISON_PATTERNS),
                            (outputs.parameters, schema.TABLE_MODEL_PARAMETERS), (outputs.links, schema.TABLE_LINKS),
                            (outputs.clusters, schema.TABLE_CLUSTERS),
                            (outputs.summary, schema.TABLE_LINKAGE_SUMMARY)):
        assert list(frame.columns) == list(contract)
    summary = outputs.summary.set_index("linkage")
    n_left, n_right = len(records["firms_a"]), len(records["firms_b"])
    assert summary.loc["a_to_b", "pairs"] == n_left * n_right
    assert summary.loc["firms_a__dedup", "pairs"] == n_left * (n_left - 1) // 2
    assert outputs.patterns.groupby("linkage")["pairs"].sum().to_dict() == summary["pairs"].to_dict()
    assert summary["links"].to_dict() == outputs.links.groupby("linkage").size().to_dict()
    assert outputs.rejected == ()


def test_a_linkage_without_records_is_rejected_and_the_others_run(firms) -> None:
    records, _ = firms
    out = run_table_linkages({"firms_a": records["firms_a"]}, REGISTRY, workers=1)
    assert out.summary["linkage"].tolist() == ["firms_a__dedup"]
    (rejection,) = out.rejected
    assert (rejection.source, rejection.file, rejection.stage) == ("a_to_b", "sources.yaml", "table_linkages")
    assert "table_records has no partition 'firms_b'" in rejection.reason
    empty = run_table_linkages({}, REGISTRY, workers=1)
    assert len(empty.rejected) == 2 and empty.links.empty and list(empty.links.columns) == list(schema.TABLE_LINKS)


def test_linked_sources_are_the_tables_a_linkage_reads() -> None:
    assert linked_sources(REGISTRY) == ["firms_a", "firms_b"]
    assert linked_sources(TableRegistry(sources=REGISTRY.sources, linkages=(DEDUP_A,))) == ["firms_a"]


FP = linkages_fingerprint((A_TO_B, DEDUP_A))


@pytest.mark.parametrize(
    ("linkages", "cursor", "records_id", "links_id", "busy", "expected"),
    [
        ((), None, 5, None, 0, (None, "no table_linkages in sources.yaml", linkages_fingerprint(()))),
        ((A_TO_B, DEDUP_A), FP, 9, 3, 2, (None, "2 table run(s) in progress; linking when they are done", None)),
        ((A_TO_B, DEDUP_A), None, None, None, 0, (None, "no table records read yet", FP)),
        ((A_TO_B, DEDUP_A), None, 7, None, 0, (f"7-{FP}", "table records changed", FP)),
        ((A_TO_B, DEDUP_A), FP, 7, 9, 0, (None, "table links are up to date", FP)),
        ((A_TO_B, DEDUP_A), "old", 7, 9, 0, (f"7-{FP}", "table_linkages changed", FP)),
        ((A_TO_B, DEDUP_A), "old", 10, 9, 0, (f"10-{FP}", "table records changed; table_linkages changed", FP)),
        ((A_TO_B, DEDUP_A), "old", None, None, 0, (f"0-{FP}", "table_linkages changed", FP)),
    ],
)
def test_relink_decision(linkages, cursor, records_id, links_id, busy, expected) -> None:
    got = relink_decision(linkages, cursor, records_id=records_id, links_id=links_id, runs_in_progress=busy)
    assert (got.run_key, got.reason, got.cursor) == expected


def test_linkages_fingerprint_changes_with_any_entry() -> None:
    assert len(FP) == 16 and FP == linkages_fingerprint([A_TO_B, DEDUP_A])
    assert FP != linkages_fingerprint((DEDUP_A, A_TO_B))
    changed = TableLinkage(name="a_to_b", left="firms_a", right="firms_b", threshold=0.9, fields=A_TO_B.fields)
    assert linkages_fingerprint((changed, DEDUP_A)) != FP
