"""Known-answer tests of the string-matching baselines (linkage_pipeline.linking.strings)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from linkage_pipeline.linking import strings
from linkage_pipeline.linking.strings import (
    STRING_METHODS,
    normalize,
    string_similarity_matrix,
    topk_string_matches,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("會社", "會社"),  # old form kept: folding it is the encoders' job
        ("ＡＢＣ株式会社", "ABC株式会社"),  # full-width -> ASCII
        ("㈱東京", "(株)東京"),  # enclosed abbreviation expanded by NFKC
        ("　東京 会社\n", "東京会社"),  # ideographic and inner whitespace removed
        ("", ""),
        (None, ""),
        (float("nan"), ""),
        (pd.NA, ""),
    ],
)
def test_normalize(text, expected):
    assert normalize(text) == expected


def test_normalize_rejects_non_text():
    with pytest.raises(ValueError, match="expects a str"):
        normalize(12)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", STRING_METHODS)
def test_exact_match_scores_one_and_ranks_first(method):
    idx, sc = topk_string_matches(["東京会社", "三井物産"], ["大阪販売", "三井物産", "東京会社"], method=method, k=2)
    assert idx.dtype == np.int64 and sc.dtype == np.float32
    assert idx.shape == sc.shape == (2, 2)
    assert idx[:, 0].tolist() == [2, 1]
    assert sc[:, 0].tolist() == [1.0, 1.0]
    assert (sc >= 0).all() and (sc <= 1).all()
    assert (np.diff(sc, axis=1) <= 0).all()  # best first


# query, targets, method, expected indices, expected scores (hand-computed)
KNOWN = [
    # 会社 vs 會社: one substitution in two characters
    ("会社", ["會社"], "levenshtein", [0], [0.5]),
    # Jaro with window 0: only 社 matches -> (1/2 + 1/2 + 1) / 3, no common prefix
    ("会社", ["會社"], "jaro_winkler", [0], [2 / 3]),
    # n-grams {会, 社, 会社} vs {會, 社, 會社}: one shared of three each
    ("会社", ["會社"], "ngram", [0], [1 / 3]),
    # both targets need four insertions -> 0.5 each; tie goes to the lower index
    ("三井物産", ["三井物産株式会社", "株式会社三井物産"], "levenshtein", [0, 1], [0.5, 0.5]),
    ("三井物産", ["株式会社三井物産", "三井物産株式会社"], "levenshtein", [0, 1], [0.5, 0.5]),
    # Jaro-Winkler rewards the shared prefix: jaro 5/6, + 4 * 0.1 * (1 - 5/6) = 0.9; suffix order is out of window
    ("三井物産", ["株式会社三井物産", "三井物産株式会社"], "jaro_winkler", [1, 0], [0.9, 0.0]),
    # bag of n-grams cannot tell prefix from suffix: 7 / sqrt(7 * 15) for both, tie -> lower index
    ("三井物産", ["株式会社三井物産", "三井物産株式会社"], "ngram", [0, 1], [math.sqrt(7 / 15)] * 2),
    # identical targets tie at 1.0 -> lower index first
    ("東京", ["東京", "東京", "京東"], "levenshtein", [0, 1, 2], [1.0, 1.0, 0.0]),
]


@pytest.mark.parametrize(("query", "targets", "method", "exp_idx", "exp_scores"), KNOWN)
def test_known_scores(query, targets, method, exp_idx, exp_scores):
    idx, sc = topk_string_matches([query], targets, method=method, k=len(targets))
    assert idx[0].tolist() == exp_idx
    np.testing.assert_allclose(sc[0], exp_scores, rtol=0, atol=1e-6)


# The paper's failure mode: an old character form (賣) makes every string method prefer a *different* firm that
# shares the old form, over the same firm printed with the new form (売).
OLD_FORM_TARGETS = ["大阪販売", "大阪販賣所"]  # 0 = same firm (new form), 1 = another firm


@pytest.mark.parametrize(
    ("method", "same_firm", "other_firm"),
    [
        ("levenshtein", 0.75, 0.8),  # 1 - 1/4 vs 1 - 1/5
        ("jaro_winkler", 5 / 6 + 3 * 0.1 / 6, 14 / 15 + 4 * 0.1 / 15),
        ("ngram", 5 / 7, math.sqrt(7) / 3),  # 5 shared of 7 vs all 7 of the query's n-grams in 9
    ],
)
def test_old_form_defeats_string_matching(method, same_firm, other_firm):
    sim = string_similarity_matrix(["大阪販賣"], OLD_FORM_TARGETS, method=method)
    np.testing.assert_allclose(sim[0], [same_firm, other_firm], atol=1e-6)
    idx, _ = topk_string_matches(["大阪販賣"], OLD_FORM_TARGETS, method=method, k=1)
    assert idx[0, 0] == 1  # the wrong firm wins


def test_ngram_range_changes_ngram_score():
    sim = string_similarity_matrix(["会社"], ["會社"], method="ngram", ngram_range=(1, 1))
    assert sim[0, 0] == pytest.approx(0.5)  # {会, 社} vs {會, 社}
    sim = string_similarity_matrix(["会社"], ["會社"], method="ngram", ngram_range=(2, 3))
    assert sim[0, 0] == 0.0


@pytest.mark.parametrize("method", STRING_METHODS)
def test_empty_strings_score_zero(method):
    idx, sc = topk_string_matches(["", "会社", None], ["", "会社"], method=method, k=2)
    assert sc[0].tolist() == [0.0, 0.0] and idx[0].tolist() == [0, 1]
    assert sc[2].tolist() == [0.0, 0.0]
    assert idx[1, 0] == 1 and sc[1].tolist() == [1.0, 0.0]  # an empty target never matches


@pytest.mark.parametrize(
    ("n_q", "n_t", "k", "shape"),
    [(2, 3, 10, (2, 3)), (2, 3, 0, (2, 0)), (2, 0, 5, (2, 0)), (0, 3, 2, (0, 2)), (0, 0, 2, (0, 0))],
)
def test_output_shapes_and_k_clipping(n_q, n_t, k, shape):
    idx, sc = topk_string_matches(["会社"] * n_q, ["會社"] * n_t, method="levenshtein", k=k)
    assert idx.shape == sc.shape == shape
    assert idx.dtype == np.int64 and sc.dtype == np.float32


@pytest.mark.parametrize("method", STRING_METHODS)
def test_topk_equals_stable_sort_of_full_matrix(method, monkeypatch):
    rng = np.random.default_rng(0)
    chars = list("株式会社會商事販売賣東京大阪三井物産")  # small alphabet -> many ties
    q = ["".join(rng.choice(chars, rng.integers(1, 6))) for _ in range(40)]
    t = ["".join(rng.choice(chars, rng.integers(1, 6))) for _ in range(60)]
    full = string_similarity_matrix(q, t, method=method)
    monkeypatch.setattr(strings, "_MAX_BLOCK_CELLS", 7 * 60)  # force several row blocks
    idx, sc = topk_string_matches(q, t, method=method, k=5, workers=1)
    ref = np.argsort(-full, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_array_equal(sc, np.take_along_axis(full, ref, axis=1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "cosine"}, "levenshtein, jaro_winkler, ngram"),
        ({"method": "levenshtein", "k": -1}, "k must be a non-negative int"),
        ({"method": "levenshtein", "k": 2.5}, "k must be a non-negative int"),
        ({"method": "levenshtein", "workers": 0}, "workers must be"),
        ({"method": "ngram", "ngram_range": (2, 1)}, "ngram_range"),
    ],
)
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        topk_string_matches(["会社"], ["會社"], **kwargs)


@pytest.mark.parametrize(
    ("queries", "targets", "message"),
    [
        ("会社", ["會社"], "queries must be a sequence of strings"),
        (["会社"], [1], r"targets\[0\]"),
    ],
)
def test_bad_texts(queries, targets, message):
    with pytest.raises(ValueError, match=message):
        topk_string_matches(queries, targets, method="levenshtein")


def test_unknown_method_in_matrix():
    with pytest.raises(ValueError, match="expected one of levenshtein, jaro_winkler, ngram"):
        string_similarity_matrix(["a"], ["b"], method="soundex")
