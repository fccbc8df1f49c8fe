"""Known-answer tests of the Fellegi-Sunter engine (linkage_pipeline.probabilistic)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from rapidfuzz.distance import JaroWinkler, Levenshtein

from linkage_pipeline.probabilistic import (
    FellegiSunter,
    FieldSpec,
    clusters_from_links,
    dedup,
    link,
    resolve_one_to_one,
)
from linkage_pipeline.probabilistic import comparisons as fs_comparisons
from linkage_pipeline.probabilistic import em as fs_em
from linkage_pipeline.probabilistic import patterns as fs_patterns
from linkage_pipeline.probabilistic.comparisons import (
    jaro_winkler_level_pairs,
    level_of_similarity,
    levenshtein_level_pairs,
    prepare_values,
)
from linkage_pipeline.probabilistic.gpu import encode_code_points

# Alphabets mixing ASCII, accented Latin (composed), CJK, Hangul and an astral-plane character: small, so that
# random strings share characters and reach every Jaro-Winkler level.
ALPHABETS = {
    "ascii": "abcde",
    "latin": "aeéèêç",
    "cjk": "東京会社會株式販売賣",
    "mixed": "a東é社한글😀",
}


def _random_strings(rng: np.random.Generator, alphabet: str, n: int, max_len: int = 9) -> list[str]:
    chars = list(alphabet)
    out = {"".join(rng.choice(chars, int(rng.integers(1, max_len + 1)))) for _ in range(n)}
    return sorted(out)


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
    left = _random_strings(rng, ALPHABETS[alphabet], 120)
    right = left if symmetric else _random_strings(rng, ALPHABETS[alphabet], 90)
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
    left = _random_strings(rng, ALPHABETS[alphabet] + "xyz", 150, 12)
    # near copies of left values with their first character changed, so that different first characters agree
    right = sorted(set(_random_strings(rng, ALPHABETS[alphabet] + "xyz", 100, 12)
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
    left = _random_strings(rng, "abcd", 61)
    right = _random_strings(rng, "abcd", 37)
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
    left = _random_strings(rng, alphabet, 100, 6)
    right = left if symmetric else _random_strings(rng, alphabet, 80, 6)
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
    left = _random_strings(rng, "abc12東京", 50, 6)
    right = _random_strings(rng, "abc12東京", 40, 6) + left[:10]
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


# ---------------------------------------------------------------------------------------------------- patterns
def _column(rng: np.random.Generator, n: int, vocab: list[str], p_missing: float) -> np.ndarray:
    """``n`` values drawn from ``vocab``, each missing (None) with probability ``p_missing``."""
    v = rng.choice(np.array(vocab, dtype=object), n)
    v[rng.random(n) < p_missing] = None
    return v


def _small_tables(rng: np.random.Generator, n_a: int, n_b: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    names = ["anna", "anne", "annie", "bob", "bobby", "robert", "東京会社", "東京會社", "株式会社三井", "maria",
             "mario"]

    def col(n, vocab, p_missing):
        return _column(rng, n, vocab, p_missing)

    def table(n):
        return pd.DataFrame({
            "name": col(n, names, 0.1),
            "state": col(n, ["nsw", "vic", "qld"], 0.2),
            "code": col(n, ["1201", "1202", "1210", "2201", "9999", "12"], 0.1),
        })

    return table(n_a), table(n_b)


FIELDS = [FieldSpec("name"), FieldSpec("state", "exact"), FieldSpec("code", "levenshtein")]


def _direct_codes(
    model: FellegiSunter, a: pd.DataFrame, b: pd.DataFrame, dedup_mode: bool
) -> dict[tuple[int, int], int]:
    out = {}
    for i, j in itertools.product(range(len(a)), range(len(b))):
        if dedup_mode and j <= i:
            continue
        code = 0
        for f, spec in enumerate(model.fields):
            va, vb = a[spec.name].iloc[i], b[spec.name].iloc[j]
            if pd.isna(va) or pd.isna(vb):
                level = 0
            elif spec.comparison == "exact":
                level = 1 + (va == vb)
            elif spec.comparison == "levenshtein":
                d = Levenshtein.distance(va, vb)
                level = 1 + (d <= 1) + (d == 0)
            else:
                s = JaroWinkler.normalized_similarity(va, vb)
                level = 1 + sum(s >= t for t in model.thresholds)
            code += level * int(model.radix[f])
        out[(i, j)] = code
    return out


@pytest.mark.parametrize("dedup_mode", [False, True])
@pytest.mark.parametrize("block_pairs", [1, 7, 1 << 22])
@pytest.mark.parametrize("profile_unique", [0, 5, 255])  # no profile fields / only 'state' / all small fields
def test_chunked_pattern_counts_equal_direct_computation(monkeypatch, dedup_mode, block_pairs, profile_unique):
    monkeypatch.setattr(fs_patterns, "_PROFILE_MAX_UNIQUE", profile_unique)
    monkeypatch.setattr(fs_patterns, "_PROFILE_MIN_DENSITY", 0.0)
    a, b = _small_tables(np.random.default_rng(11), 37, 29)
    if dedup_mode:
        b = a
    model = FellegiSunter(FIELDS, block_pairs=block_pairs, max_iter=5).fit(a, None if dedup_mode else b)
    direct = _direct_codes(model, a, b, dedup_mode)
    expected = np.bincount(list(direct.values()), minlength=model.n_patterns)
    assert model.pattern_counts_.sum() == len(direct) == (37 * 36 // 2 if dedup_mode else 37 * 29)
    np.testing.assert_array_equal(model.pattern_counts_, expected)
    space = model._data["space"]
    assert (len(space.profile_fields) > 0) == (profile_unique > 0)

    # emission: every pair whose code is accepted, once, with its code (random mask also accepts base patterns)
    accept = np.random.default_rng(0).random(model.n_patterns) < 0.3
    got = {}
    for i, j, code in space.iter_pairs_with_codes(accept):
        for ii, jj, cc in zip(i.tolist(), j.tolist(), code.tolist()):
            assert (ii, jj) not in got
            got[(ii, jj)] = cc
    assert got == {k: c for k, c in direct.items() if accept[c]}


def _wide_tables(rng: np.random.Generator, n_a: int, n_b: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Five fields, CJK and Latin values, 10-25 % missing: every sparse-counting case (pairs agreeing on none, one
    or several sparse fields, missing values in and out of profiles) occurs."""
    given = ["anna", "anne", "annie", "bob", "bobby", "東京", "東亰", "maria", "mario", "한글"]
    surname = ["smith", "smyth", "東京会社", "東京會社", "株式会社三井", "jones", "johns", "li", "lee", "müller"]

    def col(n, vocab, p_missing):
        return _column(rng, n, vocab, p_missing)

    def table(n):
        return pd.DataFrame({
            "name": col(n, given, 0.1),
            "surname": col(n, surname, 0.15),
            "state": col(n, ["nsw", "vic", "qld"], 0.2),
            "code": col(n, ["1201", "1202", "1210", "2201", "9999", "12"], 0.1),
            "id": col(n, [f"{k:03d}" for k in range(40)], 0.25),
        })

    return table(n_a), table(n_b)


WIDE_FIELDS = [FieldSpec("name"), FieldSpec("surname"), FieldSpec("state", "exact"),
               FieldSpec("code", "levenshtein"), FieldSpec("id", "exact")]


def _emitted(space, accept) -> dict[tuple[int, int], int]:
    got = {}
    for i, j, code in space.iter_pairs_with_codes(accept):
        for ii, jj, cc in zip(i.tolist(), j.tolist(), code.tolist()):
            assert (ii, jj) not in got
            got[(ii, jj)] = cc
    return got


@pytest.mark.parametrize("dedup_mode", [False, True])
@pytest.mark.parametrize("lookup", ["dense", "bits", "search"])  # how looked-up fields find a pair's level
def test_sparse_counts_and_every_emission_path_equal_full_enumeration(monkeypatch, dedup_mode, lookup):
    if lookup != "dense":
        monkeypatch.setattr(fs_patterns, "_DENSE_LOOKUP_CELLS", 0)
    if lookup == "search":
        monkeypatch.setattr(fs_patterns, "_BIT_LOOKUP_CELLS", 0)
    monkeypatch.setattr(fs_patterns, "_PROFILE_MAX_UNIQUE", 5)  # 'state' is the one profile field
    monkeypatch.setattr(fs_patterns, "_PROFILE_MIN_DENSITY", 0.0)
    a, b = _wide_tables(np.random.default_rng(5), 61, 47)
    if dedup_mode:
        b = a
    model = FellegiSunter(WIDE_FIELDS, block_pairs=300, max_iter=20, dependent_fields=None).fit(
        a, None if dedup_mode else b)
    direct = _direct_codes(model, a, b, dedup_mode)
    np.testing.assert_array_equal(model.pattern_counts_, np.bincount(list(direct.values()),
                                                                     minlength=model.n_patterns))
    space = model._data["space"]
    looked_up = list(space._lookups.values())
    assert looked_up and all((lk.dense is not None) == (lookup == "dense") for lk in looked_up)
    assert any(lk.bits is not None for lk in looked_up) == (lookup == "bits")
    assert [space.fields[f].name for f in space.sparse_fields] == ["name", "surname", "code", "id"]
    levels = fs_patterns.decode_patterns(np.arange(model.n_patterns), model.n_levels)
    n_sparse_agree = (levels[:, space.sparse_fields] >= 2).sum(axis=1)
    several = n_sparse_agree >= 2
    # pairs agreeing on two or more units (a field, or fields the space enumerates jointly) are enumerated
    units_agreeing = sum((levels[:, u.fields] >= 2).any(axis=1) for u in space._sparse)
    assert space.n_multi_agreeing_pairs == sum(units_agreeing[c] >= 2 for c in direct.values()) > 0
    id_alone = (n_sparse_agree == 1) & (levels[:, 4] == 2)
    masks = {
        "several": several,                                         # kept pairs only
        "several or id alone": several | id_alone,                  # kept pairs + pairs agreeing on 'id' alone
        "random": np.random.default_rng(0).random(model.n_patterns) < 0.3,  # base codes too: every pair
        "fitted": model.pattern_probabilities() >= 0.5,
    }
    threaded = fs_patterns.AllPairsSpace(space.fields, space.n_a, space.n_b, dedup=dedup_mode, block_pairs=300,
                                         threads=2)
    np.testing.assert_array_equal(threaded.pattern_counts(), model.pattern_counts_)
    assert space.single_field_accepted(masks["several"]) == []
    assert space.single_field_accepted(masks["several or id alone"]) == [4]
    for name, accept in masks.items():
        expected = {k: c for k, c in direct.items() if accept[c]}
        assert _emitted(space, accept) == expected, name
    # without the kept pairs (too many of them), emission enumerates driver fields: same pairs
    kept, space._kept = space._kept, None
    for name, accept in masks.items():
        assert _emitted(space, accept) == {k: c for k, c in direct.items() if accept[c]}, name
    space._kept = kept


@pytest.mark.parametrize("dedup_mode", [False, True])
def test_dependent_sparse_fields_enumerated_jointly_give_the_same_counts_and_links(monkeypatch, dedup_mode):
    monkeypatch.setattr(fs_patterns, "_PROFILE_MAX_UNIQUE", 5)
    monkeypatch.setattr(fs_patterns, "_PROFILE_MIN_DENSITY", 0.0)
    rng = np.random.default_rng(9)
    a, b = _wide_tables(rng, 57, 43)
    towns = np.array(["緑町", "midori", "kita", "minami", "higashi", "nishi", "chuo", "sakae"], dtype=object)
    posts = np.array(["4601", "4602", "4603", "4604", "4605", "4606", "4607", "4608"], dtype=object)
    for df in (a, b):
        k = rng.integers(0, 8, len(df))
        df["town"], df["post"] = towns[k], posts[k]  # same town, same postcode
        df.loc[rng.random(len(df)) < 0.1, "town"] = None
        df.loc[rng.random(len(df)) < 0.1, "post"] = None
    if dedup_mode:
        b = a
    fields = WIDE_FIELDS + [FieldSpec("town"), FieldSpec("post", "exact")]
    model = FellegiSunter(fields, block_pairs=200, max_iter=20, dependent_fields=None).fit(
        a, None if dedup_mode else b)
    space = model._data["space"]
    assert [u.fields for u in space._sparse if len(u.fields) > 1] == [[5, 6]]  # town + post
    direct = _direct_codes(model, a, b, dedup_mode)
    np.testing.assert_array_equal(model.pattern_counts_, np.bincount(list(direct.values()),
                                                                     minlength=model.n_patterns))
    levels = fs_patterns.decode_patterns(np.arange(model.n_patterns), model.n_levels)
    n_agree = (levels[:, space.sparse_fields] >= 2).sum(axis=1)
    town_alone = (levels[:, 5] >= 2) & (n_agree == 1)
    for accept in (n_agree >= 2, (n_agree >= 3) | town_alone, model.pattern_probabilities() >= 0.5,
                   np.random.default_rng(1).random(model.n_patterns) < 0.2):
        expected = {k: c for k, c in direct.items() if accept[c]}
        assert _emitted(space, accept) == expected
        kept, space._kept = space._kept, None
        assert _emitted(space, accept) == expected
        space._kept = kept


def test_driver_fields_drop_fields_only_when_exact(monkeypatch):
    monkeypatch.setattr(fs_patterns, "_PROFILE_MAX_UNIQUE", 5)
    monkeypatch.setattr(fs_patterns, "_PROFILE_MIN_DENSITY", 0.0)
    a, b = _wide_tables(np.random.default_rng(6), 40, 30)
    model = FellegiSunter(WIDE_FIELDS, max_iter=5, dependent_fields=None).fit(a, b)
    space = model._data["space"]
    assert space.sparse_fields == [0, 1, 3, 4]
    levels = fs_patterns.decode_patterns(np.arange(model.n_patterns), model.n_levels)
    agree = levels[:, space.sparse_fields] >= 2
    # accepted patterns all agree on 'id' (and something else): 'id' alone drives the enumeration
    accept = agree.sum(axis=1) >= 2
    accept &= levels[:, 4] == 2
    assert space.driver_fields(accept) == [4]
    # accepted patterns that agree on two sparse fields: all but one field must stay drivers
    drivers = space.driver_fields(agree.sum(axis=1) >= 2)
    assert len(drivers) == len(space.sparse_fields) - 1
    # a base code is accepted: every pair may be a link, nothing is dropped
    accept = np.zeros(model.n_patterns, dtype=bool)
    accept[space.base_code.reshape(-1)[0]] = True
    assert space.driver_fields(accept) == space.sparse_fields


def test_links_do_not_depend_on_the_kept_pairs(monkeypatch):
    a, b = _wide_tables(np.random.default_rng(8), 80, 70)
    fitted = FellegiSunter(WIDE_FIELDS, threshold=0.3).fit(a, b)
    links = fitted.predict()
    monkeypatch.setattr(fs_patterns, "_MAX_KEPT_PAIRS", 0)
    again = FellegiSunter(WIDE_FIELDS, threshold=0.3).fit(a, b)
    assert again._data["space"]._kept is None
    assert len(links) > 0
    pd.testing.assert_frame_equal(links, again.predict())
    np.testing.assert_array_equal(fitted.pattern_counts_, again.pattern_counts_)


# ---------------------------------------------------------------------------------------------------- EM
def _simulate_counts(rng, n_pairs, lam, m, u, p_missing):
    """Pattern counts of n_pairs pairs drawn from a Fellegi-Sunter model (missingness independent of class)."""
    n_m = rng.binomial(n_pairs, lam)
    levels = []
    for cls_n, probs in ((n_m, m), (n_pairs - n_m, u)):
        cols = []
        for f, p in enumerate(probs):
            lv = rng.choice(np.arange(1, len(p) + 1), size=cls_n, p=p)
            lv[rng.random(cls_n) < p_missing[f]] = 0
            cols.append(lv)
        levels.append(np.stack(cols, axis=1))
    n_levels = [len(p) + 1 for p in m]
    codes = fs_patterns.encode_patterns(np.concatenate(levels), n_levels)
    counts = np.bincount(codes)
    observed = np.flatnonzero(counts)
    return fs_patterns.decode_patterns(observed, n_levels), counts[observed], n_levels


# m and u over the non-missing levels (disagree, ..., top agreement); missing rate per field
EM_CASES = [
    pytest.param(
        0.01,
        [[0.1, 0.1, 0.8], [0.05, 0.15, 0.8], [0.2, 0.8], [0.1, 0.9]],
        [[0.95, 0.03, 0.02], [0.97, 0.02, 0.01], [0.9, 0.1], [0.99, 0.01]],
        [0.05, 0.0, 0.1, 0.02],
        id="lambda=1e-2",
    ),
    pytest.param(
        0.002,
        [[0.15, 0.05, 0.8], [0.1, 0.1, 0.8], [0.3, 0.7], [0.05, 0.95], [0.1, 0.9]],
        [[0.98, 0.015, 0.005], [0.99, 0.008, 0.002], [0.75, 0.25], [0.999, 0.001], [0.95, 0.05]],
        [0.1, 0.05, 0.0, 0.05, 0.2],
        id="lambda=2e-3",
    ),
]


@pytest.mark.parametrize(("lam", "m", "u", "p_missing"), EM_CASES)
def test_em_recovers_known_parameters(lam, m, u, p_missing):
    """Tolerances: lambda within 5 % relative; m within 0.02 and u within 0.003 absolute (sampling error on
    ~10^4 matches and ~10^6 non-matches is several times smaller)."""
    rng = np.random.default_rng(42)
    levels, counts, n_levels = _simulate_counts(rng, 2_000_000, lam, m, u, p_missing)
    lam0, m0, u0 = fs_em.initial_parameters(levels, counts, n_levels, expected_match_share=1e-3)
    fit = fs_em.expectation_maximisation(levels, counts, n_levels, lambda_init=lam0, m_init=m0, u_init=u0)
    assert fit.converged
    assert fit.lambda_ == pytest.approx(lam, rel=0.05)
    for f in range(len(m)):
        assert np.isnan(fit.m[f][0]) and np.isnan(fit.u[f][0])  # missing level: no parameter
        np.testing.assert_allclose(fit.m[f][1:], m[f], atol=0.02)
        np.testing.assert_allclose(fit.u[f][1:], u[f], atol=0.003)


def test_em_with_u_fixed_at_all_pair_frequencies_recovers_m():
    """u fixed at the all-pair level frequencies (matches included) is biased by lambda * m / u, here under 2 %;
    with ~1,000 matches: lambda within 15 %, m within 0.05."""
    lam, m, u, p_missing = 2e-4, [[0.1, 0.1, 0.8], [0.2, 0.8], [0.1, 0.9], [0.15, 0.85]], [
        [0.95, 0.03, 0.02], [0.9, 0.1], [0.98, 0.02], [0.97, 0.03]], [0.0, 0.1, 0.0, 0.05]
    levels, counts, n_levels = _simulate_counts(np.random.default_rng(5), 5_000_000, lam, m, u, p_missing)
    lam0, m0, u0 = fs_em.initial_parameters(levels, counts, n_levels, expected_match_share=1e-3)
    fit = fs_em.expectation_maximisation(levels, counts, n_levels, lambda_init=lam0, m_init=m0, u_init=u0,
                                         fix_u=True)
    assert fit.converged
    assert fit.lambda_ == pytest.approx(lam, rel=0.15)
    for f in range(len(m)):
        np.testing.assert_allclose(fit.u[f][1:], u0[f][1:])  # held fixed
        np.testing.assert_allclose(fit.m[f][1:], m[f], atol=0.05)


def test_em_reports_non_convergence():
    levels, counts, n_levels = _simulate_counts(np.random.default_rng(1), 100_000, 0.01, [[0.1, 0.9]] * 3,
                                                [[0.9, 0.1]] * 3, [0.0] * 3)
    lam0, m0, u0 = fs_em.initial_parameters(levels, counts, n_levels, expected_match_share=0.01)
    fit = fs_em.expectation_maximisation(levels, counts, n_levels, lambda_init=lam0, m_init=m0, u_init=u0,
                                         max_iter=1)
    assert not fit.converged and fit.n_iter == 1


def test_dependent_fields_are_detected_and_independent_ones_are_not():
    rng = np.random.default_rng(9)
    levels, counts, n_levels = _simulate_counts(
        rng, 1_000_000, 0.002, [[0.1, 0.9]] * 4, [[0.9, 0.1], [0.9, 0.1], [0.99, 0.01], [0.99, 0.01]], [0.0] * 4)
    assert fs_em.detect_dependent_groups(levels, counts, n_levels, min_pairs=2000) == [[0], [1], [2], [3]]
    # make field 3 a copy of field 2 (say postcode of suburb): dependent among non-matches too
    dep = levels.copy()
    dep[:, 3] = dep[:, 2]
    codes = fs_patterns.encode_patterns(dep, n_levels)
    merged = np.bincount(codes, weights=counts)
    observed = np.flatnonzero(merged)
    dep_levels = fs_patterns.decode_patterns(observed, n_levels)
    groups = fs_em.detect_dependent_groups(dep_levels, merged[observed], n_levels, min_pairs=2000)
    assert groups == [[0], [1], [2, 3]]


# ---------------------------------------------------------------------------------------------------- the model
def _people(rng: np.random.Generator, n: int) -> pd.DataFrame:
    letters = list("abcdefghijklmnopqrstuvwxyz")
    firsts = ["".join(rng.choice(letters, int(rng.integers(4, 8)))) for _ in range(150)]
    lasts = ["".join(rng.choice(letters, int(rng.integers(5, 9)))) for _ in range(400)]
    return pd.DataFrame({
        "first": rng.choice(firsts, n),
        "last": rng.choice(lasts, n),
        "dob": [f"19{rng.integers(30, 99)}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}" for _ in range(n)],
        "city": rng.choice(["tokyo", "osaka", "kyoto", "nagoya", "sendai"], n),
    })


def _typo(rng: np.random.Generator, s: str) -> str:
    k = int(rng.integers(len(s)))
    return s[:k] + "x" + s[k + 1:]


PEOPLE_FIELDS = [FieldSpec("first"), FieldSpec("last"), FieldSpec("dob", "levenshtein"), FieldSpec("city", "exact")]


def test_link_finds_perturbed_copies():
    rng = np.random.default_rng(0)
    a = _people(rng, 600)
    b = a.iloc[:300].copy()
    b["last"] = [_typo(rng, s) if rng.random() < 0.3 else s for s in b["last"]]
    b["dob"] = [None if rng.random() < 0.1 else s for s in b["dob"]]
    b = pd.concat([b, _people(rng, 300)], ignore_index=True)
    b.index = [f"b{k}" for k in range(len(b))]
    links = link(a, b, PEOPLE_FIELDS)
    assert list(links.columns) == ["left_id", "right_id", "match_probability", "match_weight", "pattern"]
    pred = set(zip(links["left_id"], links["right_id"]))
    truth = {(k, f"b{k}") for k in range(300)}
    assert len(pred & truth) >= 295 and len(pred - truth) <= 3
    assert (links["match_probability"] >= 0.5).all()
    np.testing.assert_allclose(links["match_probability"], 1 / (1 + np.exp2(-links["match_weight"])))


def test_missing_values_neither_reward_nor_punish():
    rng = np.random.default_rng(1)
    a = _people(rng, 400)
    b = a.iloc[:200].copy()
    model = FellegiSunter(PEOPLE_FIELDS).fit(a, b)
    weights = model.match_weights()
    assert (weights.loc[weights["level"] == 0, "match_weight"] == 0).all()
    assert weights.loc[weights["level"] == 0, ["m", "u"]].isna().all().all()
    # a pattern with 'dob' missing weighs exactly the prior plus the other fields' weights
    table = {(r.field, r.level): r.match_weight for r in weights.itertuples()}
    prior = math.log2(model.lambda_ / (1 - model.lambda_))
    levels = {"first": 3, "last": 2, "dob": 0, "city": 2}
    code = int(sum(levels[s.name] * model.radix[f] for f, s in enumerate(model.fields)))
    expected = prior + sum(table[(name, lv)] for name, lv in levels.items())
    assert model.pattern_weights()[code] == pytest.approx(expected)
    # and a missing value on one side gives a different pattern than a disagreement
    with_missing = model.pattern_weights()[code]
    disagree = code + 1 * int(model.radix[2])
    assert model.pattern_weights()[disagree] < with_missing


def test_dedup_keeps_every_singleton_and_emits_each_pair_once():
    rng = np.random.default_rng(2)
    base = _people(rng, 400)
    dups = base.iloc[:60].copy()
    dups["first"] = [_typo(rng, s) if rng.random() < 0.5 else s for s in dups["first"]]
    table = pd.concat([base, dups, base.iloc[:10]], ignore_index=True)  # 10 records three times
    table["rid"] = [f"r{k}" for k in range(len(table))]
    model = FellegiSunter(PEOPLE_FIELDS, id_column="rid").fit(table)
    links = model.predict()
    left, right = links.attrs["left_row"], links.attrs["right_row"]
    assert (left < right).all()  # no self pairs, each unordered pair once
    assert len(set(zip(left.tolist(), right.tolist()))) == len(links)
    clusters = model.clusters()
    assert list(clusters.columns) == ["id", "cluster_id", "cluster_size"]
    assert len(clusters) == len(table) and clusters["id"].tolist() == table["rid"].tolist()
    sizes = clusters.groupby("cluster_id").size()
    assert (sizes.to_numpy() == clusters.drop_duplicates("cluster_id")["cluster_size"].to_numpy()).all()
    # rows 60..399 of the base table have no duplicate: each is its own cluster
    singles = clusters.iloc[60:400]
    assert (singles["cluster_size"] == 1).all() and singles["cluster_id"].is_unique
    # the triplicated records form clusters of 3
    for k in range(10):
        ids = clusters["cluster_id"].iloc[[k, 400 + k, 460 + k]]
        assert ids.nunique() == 1 and clusters["cluster_size"].iloc[k] == 3
    out = dedup(table, PEOPLE_FIELDS, id_column="rid")
    assert out.index.equals(table.index) and out["cluster_id"].tolist() == clusters["cluster_id"].tolist()


@pytest.mark.parametrize(
    ("n", "links", "cluster_id", "cluster_size"),
    [
        (6, [(0, 1), (1, 2)], [0, 0, 0, 1, 2, 3], [3, 3, 3, 1, 1, 1]),
        (4, [], [0, 1, 2, 3], [1, 1, 1, 1]),  # no links: every row its own cluster (never one big cluster)
        (5, [(4, 3), (2, 0)], [0, 1, 0, 2, 2], [2, 1, 2, 2, 2]),  # numbered by each cluster's first row
        (3, [(0, 1), (1, 0), (0, 1)], [0, 0, 1], [2, 2, 1]),  # repeated links are harmless
    ],
)
def test_clusters_from_links(n, links, cluster_id, cluster_size):
    left = np.array([p[0] for p in links], dtype=np.int64)
    right = np.array([p[1] for p in links], dtype=np.int64)
    out = clusters_from_links(n, left, right)
    assert out["cluster_id"].tolist() == cluster_id
    assert out["cluster_size"].tolist() == cluster_size
    assert out["id"].tolist() == list(range(n))


@pytest.mark.parametrize(
    ("left", "right", "prob", "keep"),
    [
        ([0, 0, 1], [0, 1, 0], [0.9, 0.8, 0.85], [True, False, False]),
        ([0, 0, 1, 1], [0, 1, 0, 1], [0.9, 0.95, 0.6, 0.7], [False, True, True, False]),
        ([0, 1, 2], [5, 5, 5], [0.7, 0.7, 0.7], [True, False, False]),  # tie: lowest left row wins
        ([], [], [], []),
    ],
)
def test_resolve_one_to_one(left, right, prob, keep):
    assert resolve_one_to_one(np.array(left, dtype=np.int64), np.array(right, dtype=np.int64),
                              np.array(prob)).tolist() == keep


def test_predict_one_to_one_uses_each_record_at_most_once():
    rng = np.random.default_rng(4)
    a = _people(rng, 300)
    b = pd.concat([a.iloc[:150], a.iloc[:50]], ignore_index=True)  # 50 left records have two partners
    model = FellegiSunter(PEOPLE_FIELDS).fit(a, b)
    many = model.predict()
    one = model.predict(one_to_one=True)
    assert many["left_id"].duplicated().any()
    assert not one["left_id"].duplicated().any() and not one["right_id"].duplicated().any()
    assert set(range(150)) <= set(one["left_id"]) and len(one) < len(many)


def test_blocking_compares_only_candidate_pairs():
    rng = np.random.default_rng(6)
    a = _people(rng, 300)
    b = a.iloc[:150].copy()
    model = FellegiSunter(PEOPLE_FIELDS, blocking=[["city"]]).fit(a, b)
    cand_i, cand_j = model._data["cand_i"], model._data["cand_j"]
    assert (a["city"].to_numpy()[cand_i] == b["city"].to_numpy()[cand_j]).all()
    assert model.pattern_counts_.sum() == int((a["city"].to_numpy()[:, None] == b["city"].to_numpy()[None, :]).sum())
    links = model.predict()
    assert {(k, k) for k in range(150)} <= set(zip(links["left_id"], links["right_id"]))


def test_blocked_model_fits_m_per_rule_and_keeps_matches_whose_address_moved():
    # FEBRL-style tables (bench/febrl_like.py): some true pairs moved (suburb, postcode and address differ). EM on
    # the union of the candidates once gave those almost no m and lost 10 % of the matches (F1 0.949 here);
    # one EM session per rule with u fixed, leaving out the rule's own fields, keeps them
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from febrl_like import generate_pair, true_pairs

    a, b = generate_pair(3000, seed=1)
    names = ["given_name", "surname", "street_number", "address_1", "suburb", "postcode", "state", "date_of_birth",
             "soc_sec_id"]
    for df in (a, b):
        for c in names:
            df[c] = df[c].astype(object).where(df[c].notna(), None)
    kinds = {"street_number": "exact", "postcode": "exact", "state": "exact", "address_1": "levenshtein",
             "date_of_birth": "levenshtein", "soc_sec_id": "levenshtein"}
    fields = [FieldSpec(c, kinds.get(c, "jaro_winkler")) for c in names]
    truth = true_pairs(a, b)

    def f1(model):
        links = model.predict()
        found = set(zip(links.attrs["left_row"].tolist(), links.attrs["right_row"].tolist()))
        tp = len(found & truth)
        return 2 * tp / (len(found) + len(truth))

    rules = [["given_name", "surname"], ["date_of_birth"], ["soc_sec_id"], ["surname", "postcode"]]
    blocked = FellegiSunter(fields, blocking=rules).fit(a, b)
    all_pairs = FellegiSunter(fields).fit(a, b)
    assert f1(blocked) >= 0.985
    assert f1(blocked) >= f1(all_pairs) - 0.01
    # averaged over sessions, every group's m is still a distribution over its non-missing levels
    weights = blocked.match_weights()
    assert np.isclose(weights.groupby("field")["m"].sum(), 1.0).all()


def test_match_weights_and_pattern_table():
    rng = np.random.default_rng(8)
    a = _people(rng, 200)
    model = FellegiSunter(PEOPLE_FIELDS).fit(a, a.iloc[:100])
    w = model.match_weights()
    assert list(w.columns) == ["field", "level", "label", "m", "u", "match_weight"]
    assert w.loc[(w["field"] == "first") & (w["level"] == 3), "label"].item() == "jaro_winkler >= 0.94"
    assert w.loc[(w["field"] == "dob") & (w["level"] == 2), "label"].item() == "1 edit"
    assert set(model.m) == {"first", "last", "dob", "city"}
    pt = model.pattern_table()
    assert pt["count"].sum() == 200 * 100 and pt["match_weight"].is_monotonic_decreasing


# ---------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fields": []}, "at least one column"),
        ({"fields": "name"}, "sequence of FieldSpec"),
        ({"fields": ["a", "a"]}, "distinct"),
        ({"fields": [3]}, "FieldSpec or a column name"),
        ({"fields": ["a"], "thresholds": (0.94, 0.88)}, "strictly increasing"),
        ({"fields": ["a"], "thresholds": (0.5, 1.2)}, r"\(0, 1\]"),
        ({"fields": ["a"], "thresholds": ()}, "at least one threshold"),
        ({"fields": ["a"], "threshold": 1.5}, "threshold must be a probability"),
        ({"fields": ["a"], "u_estimate": "magic"}, "u_estimate must be"),
        ({"fields": ["a"], "device": "tpu"}, "device must be"),
        ({"fields": ["a"], "blocking": ["a"]}, "blocking must be None or"),
        ({"fields": ["a"], "dependent_fields": [["b"]]}, "not a field"),
        ({"fields": ["a", "b"], "dependent_fields": [["a"], ["a", "b"]]}, "more than one group"),
        ({"fields": ["a"], "workers": 0}, "workers must be"),
    ],
)
def test_bad_model_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FellegiSunter(**kwargs)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (lambda: FieldSpec(""), "non-empty column name"),
        (lambda: FieldSpec("a", "soundex"), "must be one of jaro_winkler, exact, levenshtein"),
        (lambda: FieldSpec("a", "exact", thresholds=(0.9,)), "takes no thresholds"),
        (lambda: FieldSpec("a", thresholds=(0.9, 0.9)), "strictly increasing"),
        (lambda: FieldSpec("a", "levenshtein", thresholds=(3,)), r"edit distances in \{1, 2\}"),
        (lambda: FieldSpec("a", "levenshtein", thresholds=(1, 2)), "strictly decreasing"),
    ],
)
def test_bad_field_specs_raise_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        spec()


def test_bad_calls_raise_clear_errors():
    a = pd.DataFrame({"name": ["x", "y"]})
    model = FellegiSunter(["name"])
    with pytest.raises(ValueError, match="not fitted"):
        model.predict()
    with pytest.raises(ValueError, match=r"lacks columns \['surname'\]"):
        FellegiSunter(["name", "surname"]).fit(a, a)
    with pytest.raises(ValueError, match="pandas DataFrame"):
        model.fit([["x"]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nothing to compare"):
        model.fit(a.iloc[:1])
    model.fit(a)
    with pytest.raises(ValueError, match="one_to_one applies to linking"):
        model.predict(one_to_one=True)


# ---------------------------------------------------------------------------------------------------- GPU
try:
    import torch

    _CUDA = bool(torch.cuda.is_available())
except ImportError:  # the CPU path never needs torch
    _CUDA = False


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason="needs CUDA")
@pytest.mark.parametrize("alphabet", sorted(ALPHABETS))
def test_cuda_jaro_winkler_equals_rapidfuzz(alphabet):
    from linkage_pipeline.probabilistic.gpu import jaro_winkler_similarity_cuda

    rng = np.random.default_rng(13)
    left = _random_strings(rng, ALPHABETS[alphabet], 200, 20)
    right = _random_strings(rng, ALPHABETS[alphabet], 150, 20)
    got = jaro_winkler_similarity_cuda(left, right)
    expected = np.array([[JaroWinkler.normalized_similarity(x, y) for y in right] for x in left], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason="needs CUDA")
@pytest.mark.parametrize("symmetric", [False, True])
def test_cuda_level_pairs_equal_cpu_level_pairs(symmetric):
    from linkage_pipeline.probabilistic.gpu import jaro_winkler_level_pairs_cuda

    rng = np.random.default_rng(14)
    left = _random_strings(rng, ALPHABETS["mixed"], 300, 12) + ["a" * 70 + "東"]  # one string for the CPU fallback
    right = left if symmetric else _random_strings(rng, ALPHABETS["mixed"], 250, 12) + ["a" * 69]
    cpu = jaro_winkler_level_pairs(left, right, (0.88, 0.94), symmetric=symmetric)
    gpu = jaro_winkler_level_pairs_cuda(left, right, (0.88, 0.94), symmetric=symmetric)
    for name in ("x", "y", "level"):
        np.testing.assert_array_equal(getattr(gpu, name), getattr(cpu, name))


def _triton_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None


# Triton reads TRITON_INTERPRET when it is imported: the interpreter runs in a fresh process, so that a Triton
# imported earlier in the test session (by torch, for instance) cannot leave it off.
_INTERPRETED = """
import json, sys
from linkage_pipeline.probabilistic import gpu
args = json.load(sys.stdin)
if args["what"] == "similarity":
    out = gpu.jaro_winkler_similarity_cuda(args["left"], args["right"], device="cpu").tolist()
else:
    p = gpu.jaro_winkler_level_pairs_cuda(args["left"], args["right"], args["thresholds"],
                                          symmetric=args["symmetric"], device="cpu")
    out = [p.x.tolist(), p.y.tolist(), p.level.tolist(), str(p.x.dtype), str(p.level.dtype)]
print(json.dumps(out))
"""


def _interpreted(**args):
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", _INTERPRETED], input=json.dumps(args), capture_output=True,
                          text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not _triton_importable(), reason="needs Triton (its interpreter runs the kernel on the CPU)")
def test_triton_kernel_in_interpreter_mode_equals_rapidfuzz():
    """The kernel's algorithm, checked without a GPU: TRITON_INTERPRET=1 runs it with numpy on CPU tensors."""
    rng = np.random.default_rng(15)
    left = _random_strings(rng, ALPHABETS["mixed"], 25, 10)
    right = _random_strings(rng, ALPHABETS["cjk"] + "a", 20, 10)
    got = np.array(_interpreted(what="similarity", left=left, right=right), dtype=np.float32)
    expected = np.array([[JaroWinkler.normalized_similarity(x, y) for y in right] for x in left], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.skipif(not _triton_importable(), reason="needs Triton (its interpreter runs the kernel on the CPU)")
@pytest.mark.parametrize("symmetric", [False, True])
def test_triton_level_pairs_in_interpreter_mode_equal_cpu_level_pairs(symmetric):
    """The device path's levels (tiles, thresholds, symmetric halves, long strings sent to the CPU) without a GPU."""
    rng = np.random.default_rng(16)
    left = _random_strings(rng, ALPHABETS["mixed"], 40, 8)
    # strings longer than MAX_GPU_LENGTH go to the CPU (all of a symmetric comparison would: none there)
    left += [] if symmetric else ["a" * 70 + "東"]
    right = left if symmetric else _random_strings(rng, ALPHABETS["mixed"], 30, 8) + ["a" * 69]
    cpu = jaro_winkler_level_pairs(left, right, (0.7, 0.88), symmetric=symmetric)
    x, y, level, x_dtype, level_dtype = _interpreted(what="levels", left=left, right=right, thresholds=[0.7, 0.88],
                                                     symmetric=symmetric)
    assert len(cpu) > 40  # agreeing pairs at both levels
    assert (x, y, level) == (cpu.x.tolist(), cpu.y.tolist(), cpu.level.tolist())
    assert (x_dtype, level_dtype) == ("int32", "uint8")


def test_auto_dependence_does_not_mistake_the_true_matches_of_a_tiny_table_for_dependent_fields():
    # 16 firms and a noisy copy of each: every co-agreement of name, city and postcode comes from the 16 true
    # pairs, which is no evidence of dependence among non-matches (it once merged all three fields into one
    # composite field and left the true pairs near posterior 0.5)
    names = ["Acme Corporation", "Globex Industries", "Initech Software", "Umbrella Pharmaceuticals",
             "Stark Engineering", "Wayne Shipping", "Wonka Confectionery", "Tyrell Robotics", "Cyberdyne Systems",
             "Soylent Foods", "Hooli Networks", "Vandelay Imports", "Oscorp Chemicals", "Gringotts Banking",
             "Monarch Textiles", "Prestige Worldwide"]
    cities = ["Springfield", "Cypress Creek", "Austin", "Raccoon City", "New York", "Gotham", "Manchester",
              "Los Angeles", "Sunnyvale", "Chicago", "Palo Alto", "Queens", "Newark", "London", "Boston", "Denver"]
    codes = ["62701", "90210", "73301", "10001", "10012", "07001", "30301", "90001", "94085", "60601", "94301",
             "11101", "07101", "20001", "02108", "80201"]
    left = pd.DataFrame({"name": names, "city": cities, "postcode": codes})
    right = pd.DataFrame({"name": [n[:-1] for n in names], "city": [c.replace("o", "0", 1) for c in cities],
                          "postcode": codes}).iloc[::-1].reset_index(drop=True)
    fs = FellegiSunter(["name", "city", FieldSpec("postcode", comparison="exact")]).fit(left, right)
    assert fs.groups_ == [("name",), ("city",), ("postcode",)]
    links = fs.predict(one_to_one=True)
    assert len(links) == 16
    assert (links["left_id"] == 15 - links["right_id"]).all()
    assert links["match_probability"].min() > 0.9
