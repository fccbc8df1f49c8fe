"""Known-answer tests of the agreement-pattern counts (linkage_pipeline.probabilistic.patterns)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from rapidfuzz.distance import JaroWinkler, Levenshtein

from linkage_pipeline.probabilistic import FellegiSunter, FieldSpec
from linkage_pipeline.probabilistic import patterns as fs_patterns


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


def test_links_of_many_sparse_fields_do_not_depend_on_the_kept_pairs(monkeypatch):
    # four sparse fields (hundreds of values each): pairs agreeing on several are enumerated again when not kept
    rng = np.random.default_rng(9)
    people = pd.DataFrame({
        "name": [f"n{k}" for k in rng.integers(0, 300, 500)], "surname": [f"s{k}" for k in rng.integers(0, 400, 500)],
        "born": [f"19{k:04d}" for k in rng.integers(0, 900, 500)], "id": [f"{k:05d}" for k in rng.integers(0, 5000, 500)],
    })
    a = people.iloc[:400].reset_index(drop=True)
    b = pd.concat([people.iloc[200:], people.iloc[:50]], ignore_index=True)
    fields = [FieldSpec("name", "exact"), FieldSpec("surname", "exact"), FieldSpec("born", "levenshtein"),
              FieldSpec("id", "exact")]
    for left, right in ((a, b), (pd.concat([a, a.iloc[:60]], ignore_index=True), None)):
        fitted = FellegiSunter(fields, threshold=0.3).fit(left, right)
        links = fitted.predict(one_to_one=False)
        assert fitted._data["space"]._kept is not None and len(links) > 40
        with monkeypatch.context() as m:
            m.setattr(fs_patterns, "_MAX_KEPT_PAIRS", 0)
            again = FellegiSunter(fields, threshold=0.3).fit(left, right)
            space = again._data["space"]
            assert space._kept is None and space._multi_drivers is not None and space.n_multi_agreeing_pairs > 0
            pd.testing.assert_frame_equal(links, again.predict(one_to_one=False))
