"""Known-answer tests of the field comparisons (linkage_pipeline.probabilistic.comparisons)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from _fs_cases import ALPHABETS, random_strings
from rapidfuzz.distance import JaroWinkler, Levenshtein

from linkage_pipeline.probabilistic import comparisons as fs_comparisons
from linkage_pipeline.probabilistic.comparisons import (
    jaro_winkler_level_pairs,
    level_of_similarity,
    levenshtein_level_pairs,
    prepare_values,
)
from linkage_pipeline.probabilistic.gpu import encode_code_points


def _brute_levels(left: list[str], right: list[str], thresholds: tuple[float, ...]) -> dict[tuple[int, int], int]:
    out = {}
    for i, a in enumerate(left):
        for j, b in enumerate(right):
            level = 1 + sum(JaroWinkler.normalized_similarity(a, b) >= t for t in thresholds)
            if level >= 2:
                out[(i, j)] = level
    return out


# ---------------------------------------------------------------------------------------------------- comparisons
@pytest.mark.parametrize("alphabet", sorted(ALPHABETS))
@pytest.mark.parametrize("thresholds", [(0.88, 0.94), (0.5, 0.7, 0.9), (0.8,)])
@pytest.mark.parametrize("symmetric", [False, True])
def test_jaro_winkler_on_unique_values_equals_rapidfuzz_per_pair(alphabet, thresholds, symmetric):
    rng = np.random.default_rng(len(alphabet) + len(thresholds))
    left = random_strings(rng, ALPHABETS[alphabet], 120)
    right = left if symmetric else random_strings(rng, ALPHABETS[alphabet], 90)
    pairs = jaro_winkler_level_pairs(left, right, thresholds, symmetric=symmetric)
    assert np.all(np.diff(pairs.x.astype(np.int64) * len(right) + pairs.y) > 0)  # sorted by (x, y), each once
    got = {(int(x), int(y)): int(lv) for x, y, lv in zip(pairs.x, pairs.y, pairs.level)}
    expected = _brute_levels(left, right, thresholds)
    assert got == expected
    assert len(expected) > 10  # the case exercises agreeing pairs
    assert pairs.level.dtype == np.uint8 and pairs.x.dtype == pairs.y.dtype == np.int32


@pytest.mark.parametrize("alphabet", sorted(ALPHABETS))
@pytest.mark.parametrize("thresholds", [(0.88, 0.94), (0.7, 0.9), (0.95,)])
def test_jaro_winkler_pruned_by_character_counts_equals_rapidfuzz_per_pair(monkeypatch, alphabet, thresholds):
    # the bound path (character-count product, per-first-character blocks) on every size of input
    monkeypatch.setattr(fs_comparisons, "_PRUNE_MIN_PAIRS", 0)
    rng = np.random.default_rng(3 + len(alphabet))
    left = random_strings(rng, ALPHABETS[alphabet] + "xyz", 150, 12)
    # near copies of left values with their first character changed, so that different first characters agree
    right = sorted(set(random_strings(rng, ALPHABETS[alphabet] + "xyz", 100, 12)
                       + ["z" + v[1:] for v in left[:40] if len(v) > 3]))
    pairs = jaro_winkler_level_pairs(left, right, thresholds)
    assert np.all(np.diff(pairs.x.astype(np.int64) * len(right) + pairs.y) > 0)
    got = {(int(x), int(y)): int(lv) for x, y, lv in zip(pairs.x, pairs.y, pairs.level)}
    expected = _brute_levels(left, right, thresholds)
    assert got == expected
    if thresholds[0] < 0.9:
        assert any(left[x][0] != right[y][0] for x, y in expected)  # the bound had pairs to admit
    assert pairs.level.dtype == np.uint8 and pairs.x.dtype == pairs.y.dtype == np.int32
    # a threshold too low to prune falls back to the dense path
    assert fs_comparisons._jaro_winkler_pruned(left, right, (0.6,), -1) is None


def test_jaro_winkler_handles_more_rows_than_one_block(monkeypatch):
    import linkage_pipeline.probabilistic.comparisons as comparisons

    monkeypatch.setattr(comparisons, "_BLOCK_CELLS", 64)  # 8 rows per block, odd widths: exercises the tail scan
    rng = np.random.default_rng(3)
    left = random_strings(rng, "abcd", 61)
    right = random_strings(rng, "abcd", 37)
    pairs = jaro_winkler_level_pairs(left, right, (0.88, 0.94))
    got = {(int(x), int(y)): int(lv) for x, y, lv in zip(pairs.x, pairs.y, pairs.level)}
    assert got == _brute_levels(left, right, (0.88, 0.94))


@pytest.mark.parametrize(
    ("sim", "thresholds", "expected"),
    [
        ([0.0, 0.8799, 0.88, 0.9399, 0.94, 1.0], (0.88, 0.94), [1, 1, 2, 2, 3, 3]),  # at a threshold: upper level
        ([0.5, 0.69, 0.7, 0.95], (0.7,), [1, 1, 2, 2]),
        ([0.1, 0.3, 0.5, 0.9], (0.2, 0.4, 0.6, 0.8), [1, 2, 3, 5]),
    ],
)
def test_level_discretisation_at_the_thresholds(sim, thresholds, expected):
    assert level_of_similarity(np.array(sim), thresholds).tolist() == expected


@pytest.mark.parametrize(("a", "b"), [("martha", "marhta"), ("dwayne", "duane"), ("東京会社", "東京會社")])
def test_similarity_exactly_at_a_threshold_reaches_the_upper_level(a, b):
    # the uint8-quantised cdist path must recompute cells near a threshold exactly
    s = JaroWinkler.normalized_similarity(a, b)
    at = jaro_winkler_level_pairs([a], [b], (0.3, s))
    above = jaro_winkler_level_pairs([a], [b], (0.3, math.nextafter(s, 2.0)))
    assert at.level.tolist() == [3]
    assert above.level.tolist() == [2]


@pytest.mark.parametrize("max_edits", [(1,), (2,), (2, 1)])
@pytest.mark.parametrize("alphabet", ["abc12", "東京会社株式"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("hashed", [True, False])  # numpy hashes of deletion variants / Python sets of them
def test_levenshtein_levels_from_deletion_variants_equal_brute_force(monkeypatch, max_edits, alphabet, symmetric,
                                                                     hashed):
    if not hashed:
        monkeypatch.setattr(fs_comparisons, "_MAX_HASHED_LENGTH", 0)
    rng = np.random.default_rng(7)
    left = random_strings(rng, alphabet, 100, 6)
    right = left if symmetric else random_strings(rng, alphabet, 80, 6)
    pairs = levenshtein_level_pairs(left, right, max_edits, symmetric=symmetric)
    assert np.all(np.diff(pairs.x.astype(np.int64) * len(right) + pairs.y) > 0)  # sorted by (x, y), each once
    got = {(int(x), int(y)): int(lv) for x, y, lv in zip(pairs.x, pairs.y, pairs.level)}
    expected = {}
    for (i, a), (j, b) in itertools.product(enumerate(left), enumerate(right)):
        d = Levenshtein.distance(a, b)
        level = 1 + sum(d <= m for m in max_edits) + (d == 0)
        if level >= 2:
            expected[(i, j)] = level
    assert got == expected


@pytest.mark.parametrize("max_edits", [(1,), (2, 1)])  # the vectorised one-edit check / rapidfuzz
def test_levenshtein_levels_of_given_pairs_equal_rapidfuzz(max_edits):
    rng = np.random.default_rng(21)
    left = random_strings(rng, "abc12東京", 50, 6)
    right = random_strings(rng, "abc12東京", 40, 6) + left[:10]
    x = rng.integers(0, len(left), 3000)
    y = rng.integers(0, len(right), 3000)
    x[:10], y[:10] = np.arange(10), np.arange(len(right) - 10, len(right))  # equal values
    got = fs_comparisons.levenshtein_levels_of_pairs(left, right, x, y, max_edits)
    expected = [1 + sum(d <= m for m in max_edits) + (d == 0)
                for d in (Levenshtein.distance(left[i], right[j]) for i, j in zip(x.tolist(), y.tolist()))]
    assert got.dtype == np.uint8 and got.tolist() == expected
    assert set(expected) == set(range(1, len(max_edits) + 3))  # every level occurs


@pytest.mark.parametrize("alphabet", ["ab", "abc12", "東京会社株式", "a\x00b"])  # NUL is a character like any other
def test_distance_up_to_one_equals_rapidfuzz_on_every_pair(alphabet):
    rng = np.random.default_rng(len(alphabet))

    def strings(n):  # by index into the alphabet: numpy string arrays would drop NUL
        return sorted({"".join(alphabet[k] for k in rng.integers(0, len(alphabet), int(rng.integers(1, 8))))
                       for _ in range(n)})

    left = strings(60)
    right = strings(50) + [v[::-1] for v in left[:10]] + [v + v[-1] for v in left[:10]]
    x, y = (g.reshape(-1) for g in np.meshgrid(np.arange(len(left)), np.arange(len(right)), indexing="ij"))
    got = fs_comparisons._distance_up_to_one(left, right, x, y, chunk=257)
    expected = [min(Levenshtein.distance(left[i], right[j]), 2) for i, j in zip(x.tolist(), y.tolist())]
    assert got.tolist() == expected
    assert {0, 1, 2} <= set(expected)


@pytest.mark.parametrize(
    ("values", "codes", "uniques"),
    [
        (["東京", " 東京 ", None, "", "  ", "大阪"], [0, 0, -1, -1, -1, 1], ["東京", "大阪"]),
        (["e\u0301", "\u00e9", float("nan")], [0, 0, -1], ["\u00e9"]),  # NFC: decomposed == composed
        ([4223.0, None, 12.0], [0, -1, 1], ["4223", "12"]),  # integer floats lose ".0"
        ([pd.NA, "x"], [-1, 0], ["x"]),
    ],
)
def test_prepare_values_normalises_and_marks_missing(values, codes, uniques):
    got_codes, got_uniques = prepare_values(pd.Series(values))
    assert got_codes.tolist() == codes
    assert got_uniques == uniques


def test_code_points_not_bytes():
    codes, lengths = encode_code_points(["東京", "a😀", ""])
    assert lengths.tolist() == [2, 2, 0]
    assert codes[0, :2].tolist() == [ord("東"), ord("京")]
    assert codes[1, :2].tolist() == [ord("a"), ord("😀")]
    assert (codes[2] == -1).all()
