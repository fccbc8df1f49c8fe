"""The review queue: the least certain links first, with the reasons a human should look."""

from __future__ import annotations

import math

import pandas as pd

from linkage_pipeline.review.queue import QUEUE_COLUMNS, review_queue


def _case(rows: list[tuple[str, str, int, float]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    cand = pd.DataFrame([{"query_crop_id": q, "target_crop_id": t, "query_source": "lists", "target_source": "dir",
                          "rank": r, "score": s} for q, t, r, s in rows])
    top = cand[cand["rank"] == 1]
    links = top.assign(matched=top["score"] >= 0.6)
    return links, cand


TEXTS = pd.DataFrame({"crop_id": ["t1", "t2", "t3", "t4", "t5", "t6"],
                      "text": ["明治製菓", "明治製藥", "東洋紡績", "大阪商船", "日本郵船", "三井物産"]})


def test_queue_orders_by_margin_and_distance_to_threshold_and_flags_near_identical_names() -> None:
    links, cand = _case([
        ("q_sure", "t3", 1, 0.95), ("q_sure", "t4", 2, 0.40),  # far from everything
        ("q_margin", "t4", 1, 0.90), ("q_margin", "t5", 2, 0.88),  # margin 0.02
        ("q_threshold", "t5", 1, 0.61), ("q_threshold", "t3", 2, 0.30),  # 0.01 above the threshold
        ("q_twins", "t1", 1, 0.90), ("q_twins", "t2", 2, 0.84),  # margin 0.06, names differ by one character
        ("q_none", "t6", 1, 0.45), ("q_none", "t3", 2, 0.20),  # unlinked, 0.15 below
    ])
    queue = review_queue(links, cand, TEXTS, threshold=0.6)
    assert list(queue.columns) == QUEUE_COLUMNS
    assert queue["query_crop_id"].tolist() == ["q_threshold", "q_margin", "q_twins", "q_none", "q_sure"]
    got = queue.set_index("query_crop_id")
    assert math.isclose(got.loc["q_twins", "uncertainty"], 0.03, abs_tol=1e-9)  # halved: near-identical names
    assert got.loc["q_twins", "near_identical"] and not got.loc["q_margin", "near_identical"]
    assert "near-identical" in got.loc["q_twins", "reasons"]
    assert "from the threshold" in got.loc["q_threshold", "reasons"]
    assert "no match" in got.loc["q_none", "reasons"] and not got.loc["q_none", "matched"]
    assert got.loc["q_margin", "model_target_crop_id"] == "t4"


def test_reviewed_queries_leave_the_queue_and_a_single_candidate_has_no_margin() -> None:
    links, cand = _case([("q1", "t1", 1, 0.7), ("q2", "t3", 1, 0.65), ("q2", "t4", 2, 0.1)])
    queue = review_queue(links, cand, TEXTS, threshold=float("nan"), exclude={"q2"})
    assert queue["query_crop_id"].tolist() == ["q1"]
    assert math.isinf(queue["uncertainty"].iloc[0])  # no second candidate and no threshold: nothing uncertain
    assert review_queue(links.iloc[:0], cand, TEXTS, threshold=0.5).empty
