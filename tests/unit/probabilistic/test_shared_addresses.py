"""Fellegi-Sunter on registers where unrelated people share addresses: the default fit must not take "same
household" for "same person", and a fit whose lambda is impossible must say so and fall back."""

from __future__ import annotations

import functools
import logging

import numpy as np
import pandas as pd
import pytest

from linkage_pipeline.probabilistic import FellegiSunter, FieldSpec

FIELDS = [
    FieldSpec("given"), FieldSpec("surname"), FieldSpec("number", "exact"), FieldSpec("street", "levenshtein"),
    FieldSpec("town"), FieldSpec("postcode", "exact"), FieldSpec("region", "exact"),
    FieldSpec("born", "levenshtein"), FieldSpec("ssn", "levenshtein"),
]


def _words(rng: np.random.Generator, n: int, lo: int, hi: int) -> np.ndarray:
    consonants, vowels = list("bdfghjklmnprstvwz"), list("aeiou")
    out: set[str] = set()
    while len(out) < n:
        k = int(rng.integers(lo, hi + 1))
        out.add("".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(k)))
    return np.array(sorted(out), dtype=object)


def _register(n_people: int, per_address: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, set]:
    """Two registers of the same town-sized population: about ``per_address`` unrelated people per address (half
    of them sharing the household's surname), about ``per_address`` addresses per town/postcode/region; each
    person is on one side or both: 80 % on the left, 60 % on the right, 40 % on both; with typos, missing values and
    5 % moved."""
    rng = np.random.default_rng(seed)
    given, surnames, streets, towns = (_words(rng, 300, 2, 3), _words(rng, 1500, 2, 4), _words(rng, 400, 2, 3),
                                       _words(rng, 2000, 2, 3))
    n_addr = max(1, n_people // per_address)
    n_geo = max(1, n_addr // per_address)
    geo_town = rng.choice(towns, n_geo, replace=False)
    geo_post = rng.choice(np.arange(1000, 9999), n_geo, replace=False).astype(str)
    geo_region = rng.choice(["n", "s", "e", "w", "c"], n_geo)
    addr_geo = rng.integers(0, n_geo, n_addr)
    addr_number = rng.integers(1, 300, n_addr).astype(str)
    addr_street = rng.choice(streets, n_addr)
    addr_surname = rng.choice(surnames, n_addr)
    home = rng.integers(0, n_addr, n_people)
    family = rng.random(n_people) < 0.5
    people = pd.DataFrame({
        "given": rng.choice(given, n_people, p=np.r_[1.0 / np.arange(1, 301)] / np.sum(1.0 / np.arange(1, 301))),
        "surname": np.where(family, addr_surname[home], rng.choice(surnames, n_people)),
        "number": addr_number[home], "street": addr_street[home] + " st",
        "town": geo_town[addr_geo[home]], "postcode": geo_post[addr_geo[home]],
        "region": geo_region[addr_geo[home]],
        "born": [f"19{y:02d}{m:02d}{d:02d}" for y, m, d in zip(rng.integers(20, 99, n_people),
                                                              rng.integers(1, 13, n_people),
                                                              rng.integers(1, 29, n_people))],
        "ssn": [f"{v:07d}" for v in rng.integers(0, 10_000_000, n_people)],
    })

    def noisy(rows: np.ndarray, rate: float) -> pd.DataFrame:
        df = people.iloc[rows].reset_index(drop=True).copy()
        moved = rng.random(len(df)) < 0.05 * rate
        new = rng.integers(0, n_addr, int(moved.sum()))
        df.loc[moved, "number"], df.loc[moved, "street"] = addr_number[new], addr_street[new] + " st"
        df.loc[moved, "town"] = geo_town[addr_geo[new]]
        df.loc[moved, "postcode"] = geo_post[addr_geo[new]]
        df.loc[moved, "region"] = geo_region[addr_geo[new]]
        for col in df.columns:
            vals = df[col].to_numpy(dtype=object)
            for k in np.flatnonzero(rng.random(len(df)) < 0.1 * rate):
                s, at = vals[k], int(rng.integers(len(vals[k])))
                vals[k] = s[:at] + "q" + s[at + 1:]
            vals[rng.random(len(df)) < 0.05 * rate] = None
            df[col] = vals
        return df

    order = rng.permutation(n_people)
    left_rows = order[: int(0.8 * n_people)]
    right_rows = rng.permutation(np.r_[order[: int(0.4 * n_people)], order[int(0.8 * n_people):]])
    left, right = noisy(left_rows, 0.5), noisy(right_rows, 1.0)
    position = {p: i for i, p in enumerate(left_rows.tolist())}
    truth = {(position[p], j) for j, p in enumerate(right_rows.tolist()) if p in position}
    return left, right, truth


def _f1(links: pd.DataFrame, truth: set) -> tuple[float, float, float]:
    pred = set(zip(links.attrs["left_row"].tolist(), links.attrs["right_row"].tolist()))
    tp = len(pred & truth)
    p, r = tp / max(len(pred), 1), tp / len(truth)
    return p, r, 2 * p * r / max(p + r, 1e-12)


@functools.lru_cache(maxsize=1)
def _register_of_ten() -> tuple[pd.DataFrame, pd.DataFrame, set]:
    return _register(6000, 10, seed=11)


@pytest.fixture()
def register():
    return _register_of_ten()


@pytest.mark.parametrize("per_address", [3, 5, 10, 20])
def test_shared_addresses_are_one_dependent_group_and_the_default_fit_links_people_not_households(per_address):
    left, right, truth = _register(6000, per_address, seed=11) if per_address != 10 else _register_of_ten()
    same_address = left.merge(right, on=["number", "street", "town"]).shape[0]
    assert same_address > (per_address / 3) * len(truth)  # most pairs at one address are not the same person
    model = FellegiSunter(FIELDS).fit(left, right)
    p, r, f1 = _f1(model.predict(), truth)
    assert f1 >= 0.98, (p, r, f1, model.diagnostics_["dependent_groups"])
    groups = model.diagnostics_["dependent_groups"]
    address = next(g for g in groups if "street" in g.split("+"))
    assert {"number", "street", "town", "postcode"} <= set(address.split("+"))
    assert model.diagnostics_["estimate"] == "em" and model.diagnostics_["fallback_reason"] is None
    assert model.diagnostics_["expected_matches"] <= model.diagnostics_["feasible_matches"] == len(right)
    # lambda's expected matches are near the true 2,400 (typos and missing values leave some unlinkable)
    assert 0.85 * len(truth) <= model.diagnostics_["expected_matches"] <= 1.1 * len(truth)


def test_a_fit_with_an_impossible_lambda_warns_falls_back_and_says_so(register, caplog):
    left, right, truth = register
    with caplog.at_level(logging.WARNING, logger="linkage_pipeline.probabilistic.model"):
        # assuming independence, the same-address pairs look like matches: EM puts lambda at its bound
        model = FellegiSunter(FIELDS, dependent_fields=None).fit(left, right)
    d = model.diagnostics_
    assert d["estimate"] == "robust"
    assert "lambda reached its bound" in d["fallback_reason"] or "reach the threshold" in d["fallback_reason"]
    assert any("not feasible" in rec.getMessage() and "falling back" in rec.getMessage() for rec in caplog.records)
    assert d["em_trace"][-1][0] == pytest.approx(len(right) / (len(left) * len(right)), rel=1e-3)
    assert "EM fell back" in model.summary()


def test_summary_reports_lambda_against_the_feasible_maximum_and_the_dependent_fields(register):
    left, right, _ = register
    model = FellegiSunter(FIELDS).fit(left, right)
    text = model.summary()
    assert f"feasible maximum {len(right):,}" in text
    assert "dependent fields (compared jointly): " in text and "street" in text
    assert "iteration 1: lambda" in text
    lambdas = [lam for lam, _ in model.diagnostics_["em_trace"]]
    lls = [ll for _, ll in model.diagnostics_["em_trace"]]
    assert len(lambdas) == model.n_iter_
    # EM never lowers the likelihood (up to rounding of sums over ~10^7 pairs)
    assert all(b >= a - 1e-6 * abs(a) for a, b in zip(lls, lls[1:]))


def test_one_to_one_auto_keeps_a_duplicate_within_a_table_and_drops_a_household_member(register):
    base_left, base_right, _ = register
    anna = {"given": "annabel", "surname": "katoyama", "number": "1", "street": "pine st", "town": "akita",
            "postcode": "0101", "region": "n", "born": "19500101", "ssn": "7654321"}
    # anne lives with anna: same surname and address, a similar name, another birth date and ssn
    anne = {**anna, "given": "annabelle", "born": "19720914", "ssn": "1234567"}
    left = pd.concat([pd.DataFrame([anna, anne]), base_left], ignore_index=True)
    # the right table holds anna twice (a duplicate within it), once without the birth date and ssn that tell
    # her from anne
    right = pd.concat([pd.DataFrame([anna, {**anna, "born": None, "ssn": None}]), base_right], ignore_index=True)
    model = FellegiSunter(FIELDS).fit(left, right)
    every = model.predict(one_to_one=False)
    pairs_every = set(zip(every.attrs["left_row"].tolist(), every.attrs["right_row"].tolist()))
    # without resolution anne takes the record that lacks what tells her from anna
    assert {(0, 0), (0, 1), (1, 1)} <= pairs_every and (1, 0) not in pairs_every
    auto = model.predict()
    pairs_auto = set(zip(auto.attrs["left_row"].tolist(), auto.attrs["right_row"].tolist()))
    # anna's two right records are one entity: both links stay; anne is not anna: her link goes
    assert {(0, 0), (0, 1)} <= pairs_auto and (1, 1) not in pairs_auto
    assert (1, 1) in pairs_every - pairs_auto and auto.attrs["resolved"] == len(pairs_every - pairs_auto)
    # strict one-to-one keeps one link per record, losing anna's duplicate
    strict = model.predict(one_to_one=True)
    pairs_strict = set(zip(strict.attrs["left_row"].tolist(), strict.attrs["right_row"].tolist()))
    assert len({i for i, _ in pairs_strict}) == len(pairs_strict) == len({j for _, j in pairs_strict})
    assert not {(0, 0), (0, 1)} <= pairs_strict
