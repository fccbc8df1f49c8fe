"""The one incremental top-k (linking.topk.incremental_topk) on a fixed score table, against a full search."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from linkage_pipeline.linking.topk import incremental_topk, topk_rows

QUERIES = [f"q{i}" for i in range(6)]
TARGETS = [f"t{i}" for i in range(8)]
#: Scores of query i (rows) against target j (columns); t5 repeats t1's column (one firm listed twice: exact ties)
SCORES = np.round(np.random.default_rng(3).uniform(0, 1, (6, 8)), 3)
SCORES[:, 5] = SCORES[:, 1]


class Recorder:
    """A search over SCORES among ``targets`` (those an index holds) that records what it was asked."""

    def __init__(self, targets: list[str] = TARGETS) -> None:
        self.targets = targets
        self.calls: list[tuple[list[str], list[str] | None]] = []

    def __call__(self, query_ids: list[str], target_ids: list[str] | None, k: int) -> pd.DataFrame:
        self.calls.append((list(query_ids), None if target_ids is None else list(target_ids)))
        targets = self.targets if target_ids is None else target_ids
        rows = [(q, t, float(SCORES[QUERIES.index(q), TARGETS.index(t)])) for q in query_ids for t in targets]
        return topk_rows(pd.DataFrame(rows, columns=["query_crop_id", "target_crop_id", "score"]), k)


def _full(queries: list[str], targets: list[str], k: int) -> pd.DataFrame:
    """The expected result, by sorting every pair: score descending, ties by target id."""
    rows = []
    for q in queries:
        pairs = sorted((-SCORES[QUERIES.index(q), TARGETS.index(t)], t) for t in targets)[:k]
        rows += [(q, t, -s, r) for r, (s, t) in enumerate(pairs, start=1)]
    return pd.DataFrame(rows, columns=["query_crop_id", "target_crop_id", "score", "rank"])


def _same(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    got = got.sort_values(["query_crop_id", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[list(expected.columns)], expected, check_dtype=False)


def test_a_first_run_searches_every_query_against_every_target() -> None:
    search = Recorder(TARGETS[:6])
    out, stats = incremental_topk(QUERIES[:4], TARGETS[:6], search, 3)
    assert search.calls == [(QUERIES[:4], None)]  # None: every target, so a prebuilt index can answer
    assert stats == {"queries_searched": 4, "queries_checked": 0, "queries_changed": 0, "queries_kept": 0}
    _same(out, _full(QUERIES[:4], TARGETS[:6], 3))


def test_new_targets_and_queries_cost_only_themselves_and_equal_a_full_search() -> None:
    first, _ = incremental_topk(QUERIES[:4], TARGETS[:6], Recorder(TARGETS[:6]), 3)
    search = Recorder()
    out, stats = incremental_topk(QUERIES, TARGETS, search, 3, previous=first, previous_targets=TARGETS[:6])
    # the two new queries against everything, the four old ones against the two new targets only
    assert search.calls == [(QUERIES[4:], None), (QUERIES[:4], ["t6", "t7"])]
    expected = _full(QUERIES, TARGETS, 3)
    changed = sum(
        _full([q], TARGETS[:6], 3)["target_crop_id"].tolist() != _full([q], TARGETS, 3)["target_crop_id"].tolist()
        for q in QUERIES[:4]
    )
    assert stats == {"queries_searched": 2, "queries_checked": 4, "queries_changed": changed, "queries_kept": 0}
    assert changed == 2  # two of the old queries have t6 or t7 among their best three now
    _same(out, expected)


def test_ties_rank_by_target_id_and_nothing_new_reuses_every_list() -> None:
    full = _full(QUERIES, TARGETS, 3)
    # t1 and t5 tie for every query; where both are listed, t1 comes first
    both = full[full["target_crop_id"].isin(["t1", "t5"])].groupby("query_crop_id")["target_crop_id"].apply(list)
    assert all(ids == ["t1", "t5"] for ids in both if len(ids) == 2) and (both.str.len() == 2).any()
    search = Recorder()
    out, stats = incremental_topk(QUERIES, TARGETS, search, 3, previous=full.drop(columns="rank"),
                                  previous_targets=TARGETS)
    assert search.calls == [] and stats["queries_kept"] == 6 and stats["queries_searched"] == 0
    _same(out, full)


@pytest.mark.parametrize(
    ("why", "previous_targets", "k"),
    [("a target is gone", [*TARGETS, "t_gone"], 3), ("nothing stored", None, 3), ("k was raised", TARGETS, 4)],
)
def test_lists_that_cannot_be_reused_are_searched_again(why: str, previous_targets, k: int) -> None:
    previous = _full(QUERIES, TARGETS, 3)
    search = Recorder()
    out, stats = incremental_topk(QUERIES, TARGETS, search, k, previous=previous, previous_targets=previous_targets)
    assert search.calls == [(QUERIES, None)], why
    assert stats["queries_searched"] == 6 and stats["queries_kept"] == 0
    _same(out, _full(QUERIES, TARGETS, k))


def test_a_target_listed_twice_counts_once_and_gone_queries_are_dropped() -> None:
    # a run stopped between writing links and what they were computed from: the lists already hold t6/t7
    grown = _full(QUERIES, TARGETS, 3)
    out, stats = incremental_topk(QUERIES[:3], TARGETS, Recorder(), 3, previous=grown, previous_targets=TARGETS[:6])
    assert stats["queries_checked"] == 3 and stats["queries_changed"] == 0
    assert not out.duplicated(["query_crop_id", "target_crop_id"]).any()
    _same(out, _full(QUERIES[:3], TARGETS, 3))


def test_no_query_gives_no_rows_and_k_must_be_positive() -> None:
    out, stats = incremental_topk([], TARGETS, Recorder(), 3)
    assert out.empty and list(out.columns) == ["query_crop_id", "target_crop_id", "score", "rank"]
    assert stats == dict.fromkeys(("queries_searched", "queries_checked", "queries_changed", "queries_kept"), 0)
    with pytest.raises(ValueError, match="k must be a positive number of targets per query, got 0"):
        incremental_topk(QUERIES, TARGETS, Recorder(), 0)
