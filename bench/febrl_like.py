"""Perturbed FEBRL-style person records for linkage benchmarks, deterministic by seed.

Usage:
    .venv/bin/python bench/febrl_like.py --n 20000 --seed 0 --out /tmp/febrl20k   # writes a.csv, b.csv

or from Python: ``a, b = generate_pair(20_000, seed=0)``; both frames carry ``entity_id`` (ground truth:
rows with the same id are the same person) and FEBRL's columns ``rec_id, given_name, surname, street_number,
address_1, address_2, suburb, postcode, state, date_of_birth, soc_sec_id``.

The population. Vocabularies are synthetic (built from syllables by the seed, so nothing is downloaded): 1,500
given names, 8,000 surnames, 3,000 street names, 2,500 suburbs each with a postcode and one of 8 states (skewed
like Australia's), all drawn with Zipf-like frequencies, so common names and towns are very common and random
pairs agree on them often. Dates of birth span 1920-2005; social-security ids are 7 random digits.

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
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = (
    "rec_id", "given_name", "surname", "street_number", "address_1", "address_2", "suburb", "postcode", "state",
    "date_of_birth", "soc_sec_id", "entity_id",
)
_STATES = ("nsw", "vic", "qld", "wa", "sa", "tas", "act", "nt")
_STATE_P = np.array([0.32, 0.26, 0.20, 0.10, 0.07, 0.02, 0.02, 0.01])
_STREET_TYPES = ("street", "road", "avenue", "crescent", "place", "circuit", "close", "drive", "court", "parade")
_BUILDINGS = ("flat", "unit", "villa", "house", "cottage", "apartment", "lodge")
_ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "br", "ch",
           "cl", "dr", "gr", "st", "th", "tr", "sh", "")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ie", "ou", "y")
_CODAS = ("", "", "", "n", "r", "s", "l", "th", "ck", "m", "nd", "tt", "ll", "rt")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


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


def _vocab(rng: np.random.Generator, size: int, syllables: tuple[int, int]) -> list[str]:
    out: set[str] = set()
    words: list[str] = []
    while len(words) < size:
        k = int(rng.integers(syllables[0], syllables[1] + 1))
        w = "".join(
            _ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))] for _ in range(k)
        ) + _CODAS[rng.integers(len(_CODAS))]
        if 3 <= len(w) <= 14 and w not in out:
            out.add(w)
            words.append(w)
    return words


def _zipf(rng: np.random.Generator, n_vocab: int, size: int, s: float = 1.0) -> np.ndarray:
    p = 1.0 / np.arange(1, n_vocab + 1) ** s
    return rng.choice(n_vocab, size=size, p=p / p.sum())


def _entities(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, tuple]:
    given = _vocab(rng, 1500, (1, 3))
    surnames = _vocab(rng, 8000, (2, 3))
    streets = _vocab(rng, 3000, (1, 3))
    suburbs = _vocab(rng, 2500, (2, 3))
    sub_state = rng.choice(len(_STATES), size=len(suburbs), p=_STATE_P)
    sub_postcode = rng.integers(800, 7999, size=len(suburbs))
    df = pd.DataFrame({
        "given_name": np.array(given, dtype=object)[_zipf(rng, len(given), n, 0.9)],
        "surname": np.array(surnames, dtype=object)[_zipf(rng, len(surnames), n, 0.8)],
    })
    df = pd.concat([df, _addresses(rng, n, streets, suburbs, sub_state, sub_postcode)], axis=1)
    start = np.datetime64("1920-01-01")
    days = rng.integers(0, 365 * 85, size=n)
    dob = pd.to_datetime(start + days.astype("timedelta64[D]"))
    df["date_of_birth"] = dob.strftime("%Y%m%d").to_numpy(dtype=object)
    df["soc_sec_id"] = np.char.zfill(rng.integers(0, 10_000_000, size=n).astype(str), 7).astype(object)
    return df, (streets, suburbs, sub_state, sub_postcode)


def _addresses(rng, n, streets, suburbs, sub_state, sub_postcode) -> pd.DataFrame:
    sub = _zipf(rng, len(suburbs), n, 0.7)
    street = rng.integers(len(streets), size=n)
    stype = rng.integers(len(_STREET_TYPES), size=n)
    addr2 = np.array(
        [f"{_BUILDINGS[rng.integers(len(_BUILDINGS))]} {rng.integers(1, 60)}" for _ in range(n)], dtype=object
    )
    addr2[rng.random(n) < 0.6] = None
    return pd.DataFrame({
        "street_number": rng.integers(1, 400, size=n).astype(str).astype(object),
        "address_1": np.array([f"{streets[s]} {_STREET_TYPES[t]}" for s, t in zip(street, stype)], dtype=object),
        "address_2": addr2,
        "suburb": np.array(suburbs, dtype=object)[sub],
        "postcode": sub_postcode[sub].astype(str).astype(object),
        "state": np.array(_STATES, dtype=object)[sub_state[sub]],
    })


def _typo(rng: np.random.Generator, s: str, alphabet: str) -> str:
    if not s:
        return s
    k = int(rng.integers(len(s)))
    op = rng.integers(3)
    c = alphabet[rng.integers(len(alphabet))]
    if op == 0:
        return s[:k] + c + s[k + 1:]
    if op == 1:
        return s[:k] + c + s[k:]
    return s[:k] + s[k + 1:] if len(s) > 1 else s


def _transpose(rng: np.random.Generator, s: str) -> str:
    if len(s) < 2:
        return s
    k = int(rng.integers(len(s) - 1))
    return s[:k] + s[k + 1] + s[k] + s[k + 2:]


def _perturb(rng: np.random.Generator, ent: pd.DataFrame, noise: Noise, vocab) -> pd.DataFrame:
    n = len(ent)
    rec = ent.copy()
    u = lambda: rng.random(n)  # noqa: E731
    moved = np.flatnonzero(u() < noise.moved)
    if moved.size:
        new = _addresses(rng, moved.size, *vocab)
        for col in new.columns:
            rec.loc[rec.index[moved], col] = new[col].to_numpy()
    swap = u() < noise.swap_names
    g, s = rec["given_name"].to_numpy(copy=True), rec["surname"].to_numpy(copy=True)
    g[swap], s[swap] = s[swap], g[swap]
    nick = np.flatnonzero(u() < noise.nickname)
    for i in nick:
        g[i] = g[i][: int(rng.integers(3, 5))]
    rec["given_name"], rec["surname"] = g, s
    for col in ("given_name", "surname", "address_1", "suburb"):
        vals = rec[col].to_numpy(copy=True)
        for i in np.flatnonzero(u() < noise.typo):
            vals[i] = _typo(rng, vals[i], _LETTERS)
        for i in np.flatnonzero(u() < noise.transposition):
            vals[i] = _transpose(rng, vals[i])
        rec[col] = vals
    for col in ("postcode", "street_number", "soc_sec_id"):
        vals = rec[col].to_numpy(copy=True)
        for i in np.flatnonzero(u() < noise.digit_typo):
            k = int(rng.integers(len(vals[i])))
            vals[i] = vals[i][:k] + str(rng.integers(10)) + vals[i][k + 1:]
        rec[col] = vals
    dob = rec["date_of_birth"].to_numpy(copy=True)
    for i in np.flatnonzero(u() < noise.date_typo):
        k = int(rng.integers(2, 8))
        dob[i] = dob[i][:k] + str(rng.integers(10)) + dob[i][k + 1:]
    for i in np.flatnonzero(u() < noise.day_month_swap):
        if int(dob[i][6:8]) <= 12:
            dob[i] = dob[i][:4] + dob[i][6:8] + dob[i][4:6]
    rec["date_of_birth"] = dob
    for col in ("given_name", "surname", "street_number", "address_1", "suburb", "postcode", "state",
                "date_of_birth", "soc_sec_id"):
        vals = rec[col].to_numpy(copy=True)
        vals[u() < noise.missing] = None
        rec[col] = vals
    return rec


def generate_pair(
    n: int,
    seed: int = 0,
    *,
    overlap: float = 0.5,
    dup_rate: float = 0.05,
    noise: Noise | None = None,
    a_noise: float = 0.3,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two tables of ``n`` perturbed person records each, with ground truth in ``entity_id``.

    Args:
        n: Rows per side.
        seed: Random seed; the same seed gives the same tables.
        overlap: Share of each side's entities that also appear on the other side.
        dup_rate: Share of each side's rows that are extra records of an entity already on that side.
        noise: Noise rates of ``b`` (default :class:`Noise`()).
        a_noise: ``a``'s rates as a multiple of ``b``'s.

    Returns:
        ``(a, b)``, columns :data:`COLUMNS`, index 0..n-1.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= overlap <= 1.0 or not 0.0 <= dup_rate < 1.0:
        raise ValueError(f"overlap must lie in [0, 1] and dup_rate in [0, 1), got {overlap}, {dup_rate}")
    noise = noise or Noise()
    rng = np.random.default_rng(seed)
    n_ent_side = n - int(round(dup_rate * n))
    n_shared = int(round(overlap * n_ent_side))
    n_total = 2 * n_ent_side - n_shared
    ent, vocab = _entities(rng, n_total)
    ids = rng.permutation(n_total)
    side_a = ids[:n_ent_side]
    side_b = np.concatenate([ids[:n_shared], ids[n_ent_side:n_total]])
    tables = []
    for side, side_noise, tag in ((side_a, noise.scaled(a_noise), "a"), (side_b, noise, "b")):
        extra = rng.choice(side, size=n - side.size, replace=True)
        rows = rng.permutation(np.concatenate([side, extra]))
        rec = _perturb(rng, ent.iloc[rows].reset_index(drop=True), side_noise, vocab)
        rec["entity_id"] = rows
        rec["rec_id"] = [f"rec-{tag}-{k}" for k in range(n)]
        tables.append(rec.loc[:, list(COLUMNS)].reset_index(drop=True))
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
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    a, b = generate_pair(args.n, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    a.to_csv(args.out / "a.csv", index=False)
    b.to_csv(args.out / "b.csv", index=False)
    print(f"wrote {len(a)} + {len(b)} records, {len(true_pairs(a, b))} true pairs, to {args.out}")


if __name__ == "__main__":
    main()
