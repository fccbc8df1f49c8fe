"""Known-answer tests of layout, OCR, split and linkage evaluation (linkage_pipeline.evaluation)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from linkage_pipeline.evaluation.metrics import (
    LINKAGE_EVALUATION_COLUMNS,
    MATCH_COLUMNS,
    assign_split,
    character_error_rate,
    iou,
    iou_matrix,
    layout_metrics,
    linkage_evaluation_rows,
    linkage_outcomes,
    match_regions_to_labels,
    top1_accuracy,
    top1_accuracy_with_nomatch,
    tune_nomatch_threshold,
)

# ------------------------------------------------------------------------------------------------------ IoU


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),
        ((0, 0, 10, 10), (0, 0, 5, 5), 25 / 100),  # contained
        ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),  # touching edge: x1 is exclusive
        ((0, 0, 10, 10), (20, 20, 30, 30), 0.0),
        ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),  # no area at all
        ((0, 0, 10, 12), (0, 10, 10, 20), 20 / 200),
    ],
)
def test_iou(a, b, expected):
    assert iou(a, b) == pytest.approx(expected)
    assert iou(b, a) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [((0, 0, 10), (0, 0, 1, 1), r"shape \(n, 4\)"), ((10, 0, 0, 10), (0, 0, 1, 1), "x0 <= x1")],
)
def test_iou_errors(a, b, message):
    with pytest.raises(ValueError, match=message):
        iou(a, b)


def test_iou_matrix_shape():
    m = iou_matrix(np.zeros((3, 4)) + [0, 0, 1, 1], np.array([[0, 0, 1, 1], [5, 5, 6, 6]]))
    assert m.shape == (3, 2) and m.dtype == np.float64
    assert m[:, 0].tolist() == [1.0, 1.0, 1.0] and m[:, 1].tolist() == [0.0, 0.0, 0.0]


# ------------------------------------------------------------------------------------------ region matching
def _regions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "region_id": ["R0", "R1", "R2", "R3"],
            "page": ["p1.png", "p1.png", "p1.png", "p2.png"],
            "x0": [0, 0, 0, 0],
            "y0": [0, 1, 11, 0],
            "x1": [10, 10, 10, 10],
            "y1": [12, 11, 20, 10],
            "kind": ["title", "entry", "heading", "entry"],
        }
    )


def _labels() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "page": ["p1.png", "p1.png", "p3.png"],
            "x0": [0, 0, 0],
            "y0": [0, 10, 0],
            "x1": [10, 10, 10],
            "y1": [10, 20, 10],
            "text": ["三井物産", "東京會社", "見出し"],
            "entity_id": ["e1", "e2", None],
            "role": ["title", "supplier", "heading"],
        },
        index=[100, 101, 102],
    )


def test_greedy_matching_hand_case():
    # IoU on p1: R0-L100 = 100/120, R1-L100 = 90/110, R2-L101 = 90/100. Greedy by IoU takes R2-L101 (0.9), then
    # R0-L100 (0.833); R1 is left without a label although it also overlaps L100 well. R3 is on another page.
    m = match_regions_to_labels(_regions(), _labels())
    assert list(m.columns) == list(MATCH_COLUMNS)
    assert m["region_id"].tolist() == ["R0", "R2"]
    assert m["label_index"].tolist() == [100, 101]
    np.testing.assert_allclose(m["iou"], [100 / 120, 0.9])
    assert m["entity_id"].tolist() == ["e1", "e2"]
    assert m["role"].tolist() == ["title", "supplier"]
    assert m["text"].tolist() == ["三井物産", "東京會社"]


@pytest.mark.parametrize(
    ("threshold", "matched"),
    [
        (0.5, ["R0", "R2"]),
        (0.85, ["R2"]),  # R0-L100 = 0.833 drops out
        (0.95, []),
        # R1-L101 (10/190) and R0-L101 (0.1) now qualify, but greedy order has used both sides already
        (0.05, ["R0", "R2"]),
    ],
)
def test_matching_threshold(threshold, matched):
    m = match_regions_to_labels(_regions(), _labels(), iou_threshold=threshold)
    assert m["region_id"].tolist() == matched


def test_matching_is_one_to_one_with_duplicate_detections():
    regions = pd.DataFrame(
        {"region_id": ["a", "b"], "page": ["p"] * 2, "x0": [0, 0], "y0": [0, 0], "x1": [10, 10], "y1": [10, 10]}
    )
    labels = _labels().iloc[:1].assign(page="p")
    m = match_regions_to_labels(regions, labels)
    assert m["region_id"].tolist() == ["a"]  # equal IoU: the earlier region wins


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r, l: (r.drop(columns=["page"]), l), r"regions is missing columns \['page'\]"),
        (lambda r, l: (r, l.drop(columns=["entity_id"])), r"labels is missing columns \['entity_id'\]"),
        (lambda r, l: (r.assign(region_id="x"), l), "must be unique"),
        (lambda r, l: (r.assign(x1=-1), l), "invalid boxes"),
    ],
)
def test_matching_errors(mutate, message):
    regions, labels = mutate(_regions(), _labels())
    with pytest.raises(ValueError, match=message):
        match_regions_to_labels(regions, labels)


def test_matching_threshold_range():
    with pytest.raises(ValueError, match=r"iou_threshold must be in \(0, 1\]"):
        match_regions_to_labels(_regions(), _labels(), iou_threshold=0)


def test_layout_metrics():
    regions, labels = _regions(), _labels()
    m = match_regions_to_labels(regions, labels)
    got = layout_metrics(regions, labels, m)
    # R3's page p2 has no labels, so only R0..R2 count as detections; kinds: R0 title=title, R2 heading!=entry
    assert got["n_detected"] == 3 and got["n_labelled"] == 3 and got["n_matched"] == 2
    assert got["precision"] == pytest.approx(2 / 3) and got["recall"] == pytest.approx(2 / 3)
    assert got["f1"] == pytest.approx(2 / 3)
    assert got["kind_accuracy"] == pytest.approx(0.5)
    all_pages = layout_metrics(regions, labels, m, only_labelled_pages=False)
    assert all_pages["n_detected"] == 4 and all_pages["precision"] == pytest.approx(0.5)
    no_kind = layout_metrics(regions.drop(columns=["kind"]), labels, m)
    assert math.isnan(no_kind["kind_accuracy"])


def test_layout_metrics_supplier_counts_as_entry():
    regions = _regions().assign(kind=["title", "entry", "entry", "entry"])
    m = match_regions_to_labels(regions, _labels())
    assert layout_metrics(regions, _labels(), m)["kind_accuracy"] == 1.0


def test_layout_metrics_unknown_role():
    labels = _labels().assign(role=["title", "vendor", "heading"])
    with pytest.raises(ValueError, match="unknown roles"):
        layout_metrics(_regions(), labels, match_regions_to_labels(_regions(), _labels()))


# ---------------------------------------------------------------------------------------------------- CER
@pytest.mark.parametrize(
    ("pred", "truth", "expected"),
    [
        (["會社"], ["会社"], 1 / 2),
        (["ＡＢＣ"], ["ABC"], 0.0),  # NFKC on both sides
        (["abd", "de"], ["abc", "de"], 1 / 5),  # corpus level: errors / characters
        ([""], ["ab"], 1.0),
        (["abcd"], ["ab"], 1.0),  # insertions count
        ([None], ["ab"], 1.0),
        ([""], [""], float("nan")),
    ],
)
def test_character_error_rate(pred, truth, expected):
    got = character_error_rate(pred, truth)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected)


def test_character_error_rate_length_mismatch():
    with pytest.raises(ValueError, match="same length, got 2 and 1"):
        character_error_rate(["a", "b"], ["a"])


# -------------------------------------------------------------------------------------------------- splits
# pinned so that a change of the hashing scheme (which would move firms between train and test) is noticed
PINNED_SPLITS = ["test", "train", "val", "val", "test", "val"]


def test_assign_split_pinned_values():
    assert assign_split(["e1", "e2", "e3", "e4", "e5", "e6"]).tolist() == PINNED_SPLITS


def test_assign_split_by_entity_and_order_free():
    ids = [f"firm{i % 50}" for i in range(500)]
    s = assign_split(ids)
    assert s.dtype.kind == "U" and set(s) <= {"train", "val", "test"}
    by_firm = pd.Series(s).groupby(ids).nunique()
    assert (by_firm == 1).all()
    shuffled = list(reversed(ids))
    assert assign_split(shuffled).tolist() == list(reversed(s.tolist()))


def test_assign_split_fractions_and_seed():
    ids = [f"f{i}" for i in range(20_000)]
    s = assign_split(ids, fractions=(0.6, 0.2, 0.2))
    shares = pd.Series(s).value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.6, abs=0.02)
    assert shares["val"] == pytest.approx(0.2, abs=0.02)
    assert (assign_split(ids, seed=1) != s).mean() > 0.3
    assert set(assign_split(ids[:100], fractions=(0, 0, 1))) == {"test"}


@pytest.mark.parametrize(
    ("ids", "fractions", "message"),
    [
        (["a"], (0.5, 0.5, 0.5), "summing to 1"),
        (["a"], (0.5, 0.5), "three non-negative shares"),
        (["a"], (1.2, -0.2, 0.0), "non-negative"),
        (["a", None], (0.6, 0.2, 0.2), "missing values"),
    ],
)
def test_assign_split_errors(ids, fractions, message):
    with pytest.raises(ValueError, match=message):
        assign_split(ids, fractions=fractions)


# ------------------------------------------------------------------------------------------------- linkage
# Hand-made table. Target source holds e1, e2, e3, e5, e6, e7, e10 (e1 listed twice there, which must not
# matter). q10 is an unlabelled query and q9 got no link at all.
TARGET_ENTITIES = ["e1", "e1", "e2", "e3", "e5", "e6", "e7", "e10"]
QUERIES = pd.DataFrame(
    {
        "query_id": [f"q{i}" for i in range(1, 11)],
        "entity_id": ["e1", "e2", "e4", "e5", "e6", "e7", "e8", "e9", "e10", None],
        "split": ["val", "val", "val", "val", "test", "test", "test", "test", "train", "test"],
    }
)
LINKS = pd.DataFrame(
    {
        "query_id": ["q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8"],
        "target_entity_id": ["e1", "e3", "e1", "e5", "e6", "e1", "e6", "e6"],
        "score": [0.9, 0.6, 0.4, 0.7, 0.8, 0.75, 0.5, 0.72],
    }
)


def test_linkage_outcomes():
    correct, in_target = linkage_outcomes(["e1", None, "e2"], ["e1", "e1", "e9"], TARGET_ENTITIES)
    assert correct.tolist() == [True, False, False]
    assert in_target.tolist() == [True, True, False]


def test_top1_accuracy_counts_only_firms_in_target():
    labelled = QUERIES.iloc[:8]
    pred = LINKS["target_entity_id"]
    # in target: q1 ok, q2 wrong, q4 ok, q5 ok, q6 wrong -> 3 / 5
    assert top1_accuracy(pred, labelled["entity_id"], TARGET_ENTITIES) == pytest.approx(3 / 5)
    assert math.isnan(top1_accuracy(["e1"], ["e99"], TARGET_ENTITIES))


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (0.0, 3 / 8),  # link everything: q1, q4, q5 right
        (0.55, 5 / 8),  # + q3 and q7 rejected rightly
        (0.85, 4 / 8),  # q1 linked; q3, q7, q8 rejected rightly
        (1.01, 3 / 8),  # link nothing: only the three absent firms are right
    ],
)
def test_top1_accuracy_with_nomatch(threshold, expected):
    got = top1_accuracy_with_nomatch(
        LINKS["target_entity_id"], LINKS["score"], QUERIES["entity_id"].iloc[:8], TARGET_ENTITIES, threshold
    )
    assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    ("scores", "correct", "in_target", "expected"),
    [
        # validation part of the table: best accuracy 3/4 for t in (0.4, 0.7] -> midpoint of 0.4 and 0.7
        ([0.9, 0.6, 0.4, 0.7], [True, False, False, True], [True, True, False, True], 0.55),
        # separable: midpoint between the highest negative and the lowest positive
        ([0.9, 0.5], [True, False], [True, False], 0.7),
        # every firm present and right: link everything -> lowest score
        ([0.9, 0.8], [True, True], [True, True], 0.8),
        # no firm present: link nothing -> just above the highest score
        ([0.9, 0.8], [False, False], [False, False], np.nextafter(0.9, 1.0)),
        # all equally bad (every present firm wrong): lowest plateau -> lowest score
        ([0.9, 0.8], [False, False], [True, True], 0.8),
        # NaN = no candidate: never linked, so it is right exactly when the firm is absent
        ([float("nan"), 0.6, 0.3], [False, True, False], [False, True, False], 0.45),
    ],
)
def test_tune_nomatch_threshold(scores, correct, in_target, expected):
    assert tune_nomatch_threshold(scores, correct, in_target) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("scores", "correct", "in_target", "message"),
    [
        ([], [], [], "at least one query"),
        ([0.5], [True, False], [True, False], "one value per query"),
        ([0.5], [True], [True, False], "same length"),
        ([float("nan")], [False], [True], "no finite values"),
    ],
)
def test_tune_nomatch_threshold_errors(scores, correct, in_target, message):
    with pytest.raises(ValueError, match=message):
        tune_nomatch_threshold(scores, correct, in_target)


def _links_for(method: str, target_entity_id: list[str]) -> pd.DataFrame:
    return LINKS.assign(method=method, training="none", ocr="clean", target_entity_id=target_entity_id)


def test_linkage_evaluation_rows():
    links = pd.concat(
        [
            _links_for("levenshtein", LINKS["target_entity_id"].tolist()),
            _links_for("ngram", ["e1", "e2", "e1", "e5", "e6", "e7", "e6", "e6"]),
        ]
    )
    rows = linkage_evaluation_rows(QUERIES, links, TARGET_ENTITIES)
    assert list(rows.columns) == list(LINKAGE_EVALUATION_COLUMNS)
    got = rows.set_index(["method", "split"])
    expected = {
        # levenshtein: threshold 0.55 from val. test: q5 right, q6 wrong, q7 (0.5) rejected right, q8 (0.72)
        # wrongly linked. all: also q1, q3, q4 right, q2 and q9 (no link) wrong.
        ("levenshtein", "test"): (1 / 2, 2 / 4, 0.55, 2, 4),
        ("levenshtein", "all"): (3 / 6, 5 / 9, 0.55, 6, 9),
        # ngram: val all right for t in (0.4, 0.6] -> 0.5; q7 (0.5 >= 0.5) and q8 are linked wrongly
        ("ngram", "test"): (2 / 2, 2 / 4, 0.5, 2, 4),
        ("ngram", "all"): (5 / 6, 6 / 9, 0.5, 6, 9),
    }
    assert len(rows) == len(expected)
    for key, (acc, acc_nm, thr, n, n_nm) in expected.items():
        row = got.loc[key]
        assert row["top1_accuracy"] == pytest.approx(acc)
        assert row["top1_accuracy_with_nomatch"] == pytest.approx(acc_nm)
        assert row["nomatch_threshold"] == pytest.approx(thr)
        assert (row["n"], row["n_with_nomatch"]) == (n, n_nm)
        assert (row["training"], row["ocr"]) == ("none", "clean")


def test_linkage_evaluation_rows_without_val_split():
    queries = QUERIES.assign(split="test")
    links = _links_for("levenshtein", LINKS["target_entity_id"].tolist())
    rows = linkage_evaluation_rows(queries, links, TARGET_ENTITIES)
    assert rows["nomatch_threshold"].isna().all()
    assert rows["top1_accuracy_with_nomatch"].isna().all()
    assert rows.loc[rows["split"] == "test", "top1_accuracy"].item() == pytest.approx(3 / 6)


@pytest.mark.parametrize(
    ("queries", "links", "message"),
    [
        (QUERIES.drop(columns=["split"]), _links_for("m", LINKS["target_entity_id"].tolist()), "queries is missing"),
        (QUERIES, LINKS, r"links is missing columns \['method', 'training', 'ocr'\]"),
        (pd.concat([QUERIES, QUERIES.iloc[:1]]), _links_for("m", LINKS["target_entity_id"].tolist()), "must be unique"),
        (QUERIES, pd.concat([_links_for("m", ["e1"] * 8)] * 2), "several rows per query_id"),
        (QUERIES, _links_for("m", ["e1"] * 8).assign(query_id="q99"), "not in queries"),
    ],
)
def test_linkage_evaluation_rows_errors(queries, links, message):
    with pytest.raises(ValueError, match=message):
        linkage_evaluation_rows(queries, links, TARGET_ENTITIES)
