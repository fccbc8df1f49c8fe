"""Agreement patterns of record pairs: compact integer codes, chunked counts over all pairs, and pair emission.

A pair's *pattern* is its vector of comparison levels, one per field, stored as one mixed-radix integer
``code = sum_f level_f * radix_f`` (``radix_0 = 1``, ``radix_f = radix_{f-1} * n_levels_{f-1}``).

All-pairs counting never visits the n_a x n_b pairs one by one. Each row gets a *profile*: its values of the
few low-cardinality fields (state, sex: agreement is common there) and which of the other fields are missing.
Every pair's *base* pattern (low-cardinality fields compared, the other fields at disagree or missing) depends on
the two profiles only, so base counts come from the profile histograms alone. The other (*sparse*) fields agree
on a small fraction of pairs. Pairs agreeing on exactly one sparse field are counted from histograms too: per
field and level, (left values x profiles)^T . (agreeing value pairs) . (right values x profiles) gives the pairs
per profile pair, moved from the base code to base + that level. Only pairs agreeing on two or more sparse fields
are enumerated (they agree on some field other than the densest, so that field is never expanded, only looked
up), block by block of left rows, and put right (moved from their single-field codes to their true one). A block's
pairs agreeing on some field come from one scipy sparse product, (left rows x agreeing right values) times (right
values x right rows), which merges each left row's pairs in compiled code. Dependent sparse fields (suburb and
postcode: same town) are enumerated as one unit over their value combinations, so that same-town pairs count as
agreeing on one unit, not on two fields. Work and memory scale with the pairs agreeing on some sparse field other
than the densest, not with n_a x n_b.

Prediction reuses the pairs kept by counting (those agreeing on several units) and enumerates pairs agreeing on
one unit alone only for the units whose single agreement can reach an accepted pattern: an exact bound read off
the accepted patterns, with a fall-back to enumerating every pair that could be accepted.

Dedup (a table against itself) counts each unordered pair ``i < j`` once and never a row with itself.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from linkage_pipeline.probabilistic.comparisons import (
    DISAGREE_LEVEL,
    MISSING_LEVEL,
    LevelPairs,
)

logger = logging.getLogger(__name__)

#: Largest number of distinct patterns (product of the fields' level counts) a model may have.
MAX_PATTERNS = 1 << 24
# A field becomes a profile field when it has at most this many distinct values per side and its values agree on
# at least _PROFILE_MIN_DENSITY of all pairs (as a sparse field it would expand to that many pairs)...
_PROFILE_MAX_UNIQUE = 255
_PROFILE_MIN_DENSITY = 0.005
# ... as long as each side keeps at most this many distinct profiles.
_MAX_PROFILES = 2048
# The profile x profile table of base codes may hold at most this many cells.
_MAX_PROFILE_CELLS = 1 << 25
# A sparse field whose (left values + 1) x (right values + 1) table has at most this many cells is looked up
# densely (uint8 level per value pair) when its level is needed for pairs found through other fields; up to
# _BIT_LOOKUP_CELLS, a bit per value pair says whether it agrees (the level is then found by binary search, for
# agreeing pairs only); beyond, binary search alone.
_DENSE_LOOKUP_CELLS = 1 << 26
_BIT_LOOKUP_CELLS = 1 << 31
# Up to this many sparse fields the cheapest set of driver fields is found by trying every subset.
_EXHAUSTIVE_DRIVERS = 12
# A pair's cell in the sparse product (int32) holds its summed code deltas (< MAX_PATTERNS) in its low 24 bits and
# the number of sparse units it agrees on above them (at most 24 units: MAX_PATTERNS allows no more fields).
_AGREE_SHIFT = 24
_AGREE_UNIT = 1 << _AGREE_SHIFT
# Pairs agreeing on two or more sparse fields are kept (int32 rows and codes) for prediction up to this many.
_MAX_KEPT_PAIRS = 1 << 25
# Two sparse fields are enumerated jointly when both agree on at least this share of all pairs, pairs agreeing on
# both make at least this share of the rarer one's agreeing pairs, and their value-combination pair list has at
# most this many entries...
_MIN_FUSION_DENSITY = 1e-4
_MIN_FUSION_SHARE = 0.5
_MAX_FUSED_ENTRIES = 1 << 22
# ... or at most 1/256 of the co-agreeing pairs the fusion saves enumerating, up to this many entries
_MAX_FUSED_ENTRIES_SCALED = 1 << 25
_FUSION_SAMPLE = 512
# Pairs corrected per call when pairs agreeing on several sparse fields are counted.
_TERMS_CHUNK = 1 << 22
# Rows of pairs listed per chunk when kept pairs are filtered for emission.
_EMIT_CHUNK = 1 << 22


@dataclass(frozen=True)
class FieldLevels:
    """One field's comparison, ready for pattern counting.

    Attributes:
        name: Field name (for messages and tables).
        n_levels: Number of levels, the missing level 0 included.
        codes_a: Left rows' unique-value index, shape (n_a,) int32, ``-1`` for missing.
        codes_b: Right rows' unique-value index, shape (n_b,) int32, ``-1`` for missing.
        n_x: Number of distinct left values.
        n_y: Number of distinct right values.
        pairs: Agreeing unique-value pairs (level >= 2); all other non-missing pairs disagree.
    """

    name: str
    n_levels: int
    codes_a: np.ndarray
    codes_b: np.ndarray
    n_x: int
    n_y: int
    pairs: LevelPairs


def pattern_radix(n_levels: Sequence[int]) -> np.ndarray:
    """Mixed-radix place values of the fields: shape (K,) int64.

    Raises:
        ValueError: If the product of level counts exceeds :data:`MAX_PATTERNS`.
    """
    radix = np.ones(len(n_levels), dtype=np.int64)
    total = 1
    for f, n in enumerate(n_levels):
        radix[f] = total
        total *= int(n)
    if total > MAX_PATTERNS:
        raise ValueError(
            f"{len(n_levels)} fields with {list(n_levels)} levels make {total} possible patterns, more than "
            f"{MAX_PATTERNS}; expected fewer fields or fewer thresholds per field"
        )
    return radix


def decode_patterns(codes: np.ndarray, n_levels: Sequence[int]) -> np.ndarray:
    """Levels of pattern codes.

    Args:
        codes: Pattern codes, shape (n,) integer.
        n_levels: Level counts of the K fields.

    Returns:
        Levels, shape (n, K) int16.
    """
    radix = pattern_radix(n_levels)
    codes = np.asarray(codes, dtype=np.int64)
    return ((codes[:, None] // radix[None, :]) % np.asarray(n_levels, dtype=np.int64)[None, :]).astype(np.int16)


def encode_patterns(levels: np.ndarray, n_levels: Sequence[int]) -> np.ndarray:
    """Pattern codes of level vectors: ``levels`` (n, K) integer -> codes (n,) int64."""
    levels = np.asarray(levels, dtype=np.int64)
    return levels @ pattern_radix(n_levels)


# Threads counting at most (each holds about a block of pairs: bounded memory on many-core machines).
_MAX_THREADS = 8


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _Unit(NamedTuple):
    """A sparse field, or sparse fields enumerated jointly, as CSR over left values (``n_x``: no value)."""

    fields: list[int]
    codes_a: np.ndarray  # (n_a,) int64, value (combination) id per left row, n_x when missing
    codes_b: np.ndarray  # (n_b,) int64, -1 when missing
    n_x: int
    n_y: int
    x_entry: np.ndarray  # (k,) left value of each agreeing value pair, sorted
    ys: np.ndarray  # (k,) right value
    delta: np.ndarray  # (k,) int32, code delta of the pair
    n_agree_entry: np.ndarray  # (k,) fields of the unit that agree there
    indptr: np.ndarray  # (n_x + 2,) CSR over x_entry
    order_b: np.ndarray  # right rows sorted by value (missing left out)
    start_b: np.ndarray  # (n_y + 1,) first position of each right value in order_b
    density: float


def _bit_set(bits: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Bits ``key`` of a little-endian bit set, as uint8 0/1."""
    return (bits[key >> 3] >> (key & 7).astype(np.uint8)) & np.uint8(1)


class _Lookup(NamedTuple):
    """A sparse unit's code delta for any row pair ``(i, j)``: key ``row_a[i] + col_b[j]`` (a missing right value
    maps to a key that never agrees)."""

    dense: np.ndarray | None  # uint8 delta id per key (0: disagree), or None: ``table`` holds sorted keys
    table: np.ndarray  # dense: delta per id (id 0 -> 0); else the sorted keys of the agreeing value pairs
    delta: np.ndarray  # not dense: the delta of each key in ``table``
    bits: np.ndarray | None  # not dense: bit ``key`` (little-endian in bytes) is set when the pair agrees
    row_a: np.ndarray  # (n_a,) left value * key width (missing: the last, empty row)
    col_b: np.ndarray  # (n_b,) right value (missing: the last column)


class AllPairsSpace:
    """All n_a x n_b pairs (or n(n-1)/2 for dedup) of two tables, compared on K fields, counted in blocks.

    Args:
        fields: The fields' comparisons (same n_a, n_b for all).
        n_a: Left rows.
        n_b: Right rows.
        dedup: Left and right are the same table: pairs ``i < j`` only. Requires ``codes_a == codes_b`` and
            symmetric ``pairs`` for every field.
        block_pairs: Pairs listed per block of left rows, about: a block holds as many left rows as, at the
            agreement rate of the fields it enumerates, agree with about this many right rows. Bounds the memory
            of counting and emission (about 16 bytes per pair).
        threads: Threads counting row ranges in parallel (``-1``: one per CPU); scipy's sparse products and
            numpy's array loops release the GIL (50k x 50k on 2 cores: 0.74 s with one thread, 0.47 s with two).
    """

    def __init__(
        self, fields: Sequence[FieldLevels], n_a: int, n_b: int, *, dedup: bool = False, block_pairs: int = 1 << 21,
        threads: int = -1,
    ) -> None:
        if not fields:
            raise ValueError("at least one field is needed to compare records, got none")
        if dedup and n_a != n_b:
            raise ValueError(f"dedup compares a table with itself: n_a must equal n_b, got {n_a} and {n_b}")
        if block_pairs < 1:
            raise ValueError(f"block_pairs must be positive, got {block_pairs}")
        for fl in fields:
            if fl.codes_a.shape != (n_a,) or fl.codes_b.shape != (n_b,):
                raise ValueError(
                    f"field {fl.name!r}: codes have shapes {fl.codes_a.shape}, {fl.codes_b.shape}, "
                    f"expected ({n_a},), ({n_b},)"
                )
        self.fields = list(fields)
        self.n_a, self.n_b, self.dedup = int(n_a), int(n_b), bool(dedup)
        self.n_levels = [fl.n_levels for fl in self.fields]
        self.radix = pattern_radix(self.n_levels)
        self.n_patterns = int(np.prod(self.n_levels, dtype=np.int64))
        self.total_pairs = self.n_a * (self.n_a - 1) // 2 if dedup else self.n_a * self.n_b
        self.block_pairs = int(block_pairs)
        self.threads = min(_usable_cpus(), _MAX_THREADS) if threads == -1 else max(1, int(threads))
        self._choose_profile_fields()
        self._build_profiles()
        self._lookups: dict[tuple[int, ...], _Lookup] = {}
        self._matrices: dict[tuple, tuple[sp.csr_matrix | None, sp.csr_matrix]] = {}
        self._build_sparse()
        self._kept: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._multi_drivers: list[int] | None = None

    # ------------------------------------------------------------------ set-up
    def _density(self, fl: FieldLevels) -> float:
        if len(fl.pairs) == 0 or self.total_pairs == 0:
            return 0.0
        cnt_a = np.bincount(fl.codes_a[fl.codes_a >= 0], minlength=fl.n_x).astype(np.float64)
        cnt_b = np.bincount(fl.codes_b[fl.codes_b >= 0], minlength=fl.n_y).astype(np.float64)
        return float(np.dot(cnt_a[fl.pairs.x], cnt_b[fl.pairs.y])) / (self.n_a * self.n_b)

    def _choose_profile_fields(self) -> None:
        density = [self._density(fl) for fl in self.fields]
        candidates = sorted(
            (f for f, fl in enumerate(self.fields)
             if max(fl.n_x, fl.n_y) <= _PROFILE_MAX_UNIQUE and density[f] >= _PROFILE_MIN_DENSITY),
            key=lambda f: -density[f],
        )
        chosen: list[int] = []
        for f in candidates:
            trial = chosen + [f]
            if max(self._count_profiles(trial, "a"), self._count_profiles(trial, "b")) <= _MAX_PROFILES:
                chosen.append(f)
        self.profile_fields = sorted(chosen)
        self.sparse_fields = [f for f in range(len(self.fields)) if f not in chosen]
        self.density = density
        logger.info(
            "pattern space: %d fields, %d patterns; profile fields %s; sparse fields %s (agreement density %s)",
            len(self.fields), self.n_patterns, [self.fields[f].name for f in self.profile_fields],
            [self.fields[f].name for f in self.sparse_fields],
            {self.fields[f].name: round(density[f], 5) for f in range(len(self.fields))},
        )

    def _profile_keys(self, profile_fields: Sequence[int], side: str) -> tuple[np.ndarray, int]:
        n = self.n_a if side == "a" else self.n_b
        key = np.zeros(n, dtype=np.int64)
        card = 1
        for f, fl in enumerate(self.fields):
            codes = fl.codes_a if side == "a" else fl.codes_b
            if f in profile_fields:
                key = key * (max(fl.n_x, fl.n_y) + 1) + (codes.astype(np.int64) + 1)
            else:
                key = key * 2 + (codes < 0)
            # re-number after each field so that the key never overflows
            uniq, key = np.unique(key, return_inverse=True)
            card = uniq.shape[0]
        return key.reshape(-1), card

    def _count_profiles(self, profile_fields: Sequence[int], side: str) -> int:
        return self._profile_keys(profile_fields, side)[1]

    def _build_profiles(self) -> None:
        self.prof_a, p_a = self._profile_keys(self.profile_fields, "a")
        if self.dedup:
            self.prof_b, p_b = self.prof_a, p_a
        else:
            self.prof_b, p_b = self._profile_keys(self.profile_fields, "b")
        if p_a * p_b > _MAX_PROFILE_CELLS:
            raise ValueError(
                f"the rows form {p_a} x {p_b} distinct profiles (combinations of missing fields and low-cardinality "
                f"values), more than {_MAX_PROFILE_CELLS} cells; expected fewer fields with missing values"
            )
        self.hist_a = np.bincount(self.prof_a, minlength=p_a).astype(np.int64)
        self.hist_b = np.bincount(self.prof_b, minlength=p_b).astype(np.int64)
        # one representative row per profile gives the profile's values
        rep_a = np.zeros(p_a, dtype=np.int64)
        rep_a[self.prof_a[::-1]] = np.arange(self.n_a)[::-1]
        rep_b = np.zeros(p_b, dtype=np.int64)
        rep_b[self.prof_b[::-1]] = np.arange(self.n_b)[::-1]
        base = np.zeros((p_a, p_b), dtype=np.int64)
        for f, fl in enumerate(self.fields):
            ca = fl.codes_a[rep_a]
            cb = fl.codes_b[rep_b]
            missing = (ca < 0)[:, None] | (cb < 0)[None, :]
            if f in self.profile_fields:
                dense = np.full((fl.n_x + 1, fl.n_y + 1), DISAGREE_LEVEL, dtype=np.int64)
                dense[fl.pairs.x, fl.pairs.y] = fl.pairs.level
                level = dense[ca[:, None], cb[None, :]]
            else:
                level = np.full((p_a, p_b), DISAGREE_LEVEL, dtype=np.int64)
            level[missing] = MISSING_LEVEL
            base += level * self.radix[f]
        self.base_code = base
        self._base_flat = base.reshape(-1)
        # int32 copies for per-pair arithmetic (codes < MAX_PATTERNS, profile cells < _MAX_PROFILE_CELLS)
        self._base_flat32 = self._base_flat.astype(np.int32)
        self._prof_a32, self._prof_b32 = self.prof_a.astype(np.int32), self.prof_b.astype(np.int32)
        self.p_a, self.p_b = p_a, p_b

    def _build_sparse(self) -> None:
        self._lookups = {}
        self._matrices = {}
        self._sparse: list[_Unit] = [self._make_unit([f]) for f in self.sparse_fields]
        fusions = self._fusions()
        if fusions:
            fused = {f for pair in fusions for f in pair}
            self._sparse = sorted([u for u in self._sparse if u.fields[0] not in fused]
                                  + [self._make_unit(list(pair)) for pair in fusions], key=lambda u: u.fields[0])
            logger.info("sparse fields enumerated jointly: %s",
                        [[self.fields[f].name for f in pair] for pair in fusions])

    def _fusions(self) -> list[tuple[int, int]]:
        """Pairs of sparse fields to enumerate as one unit: fields that agree together on most of their agreeing
        pairs (suburb and postcode: same town) make many pairs that agree on "several" fields, each enumerated
        and corrected; as one unit over their value combinations they count as one field agreeing, counted from
        histograms. Co-agreement is estimated on a fixed sample of left rows (the choice only affects speed, never
        the counts); fused only when the combined value-pair list stays small."""
        if len(self._sparse) < 2:
            return []
        sample = np.unique(np.random.default_rng(0).integers(0, self.n_a, size=min(self.n_a, _FUSION_SAMPLE)))
        pos_of = {u.fields[0]: pos for pos, u in enumerate(self._sparse)}
        cands = []
        dense_enough = [f for f in self.sparse_fields if self.density[f] >= _MIN_FUSION_DENSITY]
        agreeing = {f: self._driver_product([pos_of[f]], sample) for f in dense_enough}
        for f, g in itertools.combinations(dense_enough, 2):
            both = agreeing[f].multiply(agreeing[g]).tocoo()
            if self.dedup:
                # a row agrees with itself on everything; ordered pairs otherwise, as the densities
                n_both = int(np.count_nonzero(both.col != sample[both.row]))
            else:
                n_both = both.nnz
            co = n_both / (sample.shape[0] * self.n_b)
            if co >= _MIN_FUSION_SHARE * min(self.density[f], self.density[g]):
                size = self._combined_size(f, g)
                logger.info("fields %s and %s agree together on %.2g of all pairs; their value-combination pair "
                            "list would hold %d entries", self.fields[f].name, self.fields[g].name, co, size)
                # a larger list is worth it when it saves enumerating many more co-agreeing pairs
                if size <= max(_MAX_FUSED_ENTRIES, min(_MAX_FUSED_ENTRIES_SCALED, co * self.n_a * self.n_b / 256)):
                    cands.append((co, f, g))
        out: list[tuple[int, int]] = []
        used: set[int] = set()
        for _, f, g in sorted(cands, reverse=True):
            if f not in used and g not in used:
                out.append((f, g))
                used |= {f, g}
        return out

    def _combined_codes(self, fields: Sequence[int], side: str) -> tuple[np.ndarray, list[np.ndarray]]:
        """Per row, the id of its combination of the fields' values (``-1`` for a missing value inside it), and
        per field the value of each combination."""
        key = np.zeros(self.n_a if side == "a" else self.n_b, dtype=np.int64)
        for f in fields:
            fl = self.fields[f]
            codes = fl.codes_a if side == "a" else fl.codes_b
            key = key * (max(fl.n_x, fl.n_y) + 1) + (codes.astype(np.int64) + 1)
        uniq, comb = np.unique(key, return_inverse=True)
        values = []
        for f in reversed(fields):
            fl = self.fields[f]
            uniq, v = np.divmod(uniq, max(fl.n_x, fl.n_y) + 1)
            values.append(v - 1)
        return comb.reshape(-1).astype(np.int64), values[::-1]

    def _combined_size(self, f: int, g: int) -> int:
        """Entries of the value-combination pair list of fields f and g (before merging), without building it."""
        total = 0
        comb_a, vals_a = self._combined_codes([f, g], "a")
        comb_b, vals_b = self._combined_codes([f, g], "b")
        for k, h in enumerate((f, g)):
            hl = self.fields[h]
            ca = np.bincount(vals_a[k][vals_a[k] >= 0], minlength=hl.n_x)
            cb = np.bincount(vals_b[k][vals_b[k] >= 0], minlength=hl.n_y)
            total += int(np.dot(ca[hl.pairs.x].astype(np.float64), cb[hl.pairs.y].astype(np.float64)))
        return total

    def _make_unit(self, fields: list[int]) -> _Unit:
        """The agreeing value pairs of one sparse field, or of a combination of fields, as CSR structures."""
        if len(fields) == 1:
            f = fields[0]
            fl = self.fields[f]
            p = fl.pairs
            n_x, n_y = fl.n_x, fl.n_y
            codes_a_raw, codes_b = fl.codes_a, fl.codes_b.astype(np.int64)
            x, y = p.x.astype(np.int64), p.y.astype(np.int64)
            delta = (p.level.astype(np.int64) - DISAGREE_LEVEL) * self.radix[f]
            n_agree = np.ones(x.shape[0], dtype=np.int64)
        else:
            comb_a, vals_a = self._combined_codes(fields, "a")
            comb_b, vals_b = (comb_a, vals_a) if self.dedup else self._combined_codes(fields, "b")
            n_x, n_y = int(comb_a.max()) + 1, int(comb_b.max()) + 1
            codes_a_raw, codes_b = comb_a, comb_b
            keys, deltas = [], []
            for k, h in enumerate(fields):
                hl = self.fields[h]
                # combinations holding each value of field h, on each side
                oa = np.argsort(vals_a[k], kind="stable")
                sa = np.searchsorted(vals_a[k][oa], np.arange(hl.n_x + 1))
                ob = np.argsort(vals_b[k], kind="stable")
                sb = np.searchsorted(vals_b[k][ob], np.arange(hl.n_y + 1))
                ca, cb = sa[hl.pairs.x + 1] - sa[hl.pairs.x], sb[hl.pairs.y + 1] - sb[hl.pairs.y]
                n_pairs = ca * cb
                total = int(n_pairs.sum())
                grp = np.repeat(np.arange(len(hl.pairs)), n_pairs)
                pos = np.arange(total) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
                cx = oa[sa[hl.pairs.x][grp] + pos // cb[grp]]
                cy = ob[sb[hl.pairs.y][grp] + pos % cb[grp]]
                keys.append(cx * n_y + cy)
                deltas.append((hl.pairs.level[grp].astype(np.int64) - DISAGREE_LEVEL) * self.radix[h])
            key = np.concatenate(keys)
            order = np.argsort(key, kind="stable")
            key, dsum = key[order], np.concatenate(deltas)[order]
            first = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]])) if key.size else np.empty(0, int)
            delta = np.add.reduceat(dsum, first) if key.size else np.empty(0, np.int64)
            n_agree = np.diff(np.append(first, key.shape[0]))
            x, y = np.divmod(key[first], n_y) if key.size else (np.empty(0, np.int64), np.empty(0, np.int64))
        if x.shape[0] > 1 and not bool(np.all(np.diff(x * n_y + y) > 0)):  # comparisons list them sorted
            order = np.lexsort((y, x))
            x, y, delta, n_agree = x[order], y[order], delta[order], n_agree[order]
        delta = delta.astype(np.int32)
        # CSR over left values, with an empty extra row for missing (-1 -> n_x)
        indptr = np.zeros(n_x + 2, dtype=np.int64)
        np.cumsum(np.bincount(x, minlength=n_x + 1), out=indptr[1:])
        present_b = codes_b >= 0
        order_b = np.argsort(codes_b, kind="stable")[np.count_nonzero(~present_b):].astype(np.int64)
        cnt_b = np.bincount(codes_b[present_b], minlength=n_y).astype(np.int64)
        start_b = np.zeros(n_y + 1, dtype=np.int64)
        np.cumsum(cnt_b, out=start_b[1:])
        codes_a = np.where(codes_a_raw >= 0, codes_a_raw, n_x).astype(np.int64)
        return _Unit(fields, codes_a, codes_b, n_x, n_y, x, y, delta, n_agree, indptr, order_b, start_b,
                     float(sum(self.density[f] for f in fields)))

    def _unit_factors(self, pos: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """Sparse factors of the pairs agreeing on sparse unit ``self._sparse[pos]``, built once.

        ``agree`` ((n_x + 1) x n_y) holds the right values each left value agrees with, valued ``delta +
        _AGREE_UNIT`` (the last row, a missing left value, is empty); ``right`` (n_y x n_b) maps each right value
        to the right rows holding it. For left rows ``r``, ``agree[codes_a[r]] @ right`` lists exactly the pairs
        agreeing on the unit, and a sum of such products over several units (one product of their side-by-side
        factors) gives each pair the sum of ``delta + _AGREE_UNIT`` over the units it agrees on: scipy's sparse
        product merges each left row's pairs in compiled code.
        """
        u = self._sparse[pos]
        key = tuple(u.fields)  # by fields, not position: positions change when fields are fused
        if key not in self._matrices:
            agree = sp.csr_matrix((u.delta.astype(np.int32) + np.int32(_AGREE_UNIT), u.ys, u.indptr),
                                  shape=(u.n_x + 1, u.n_y))
            right = sp.csr_matrix((np.ones(u.order_b.shape[0], dtype=np.int32), u.order_b, u.start_b),
                                  shape=(u.n_y, self.n_b))
            self._matrices[key] = (agree, right)
        return self._matrices[key]

    def _driver_product(self, drivers: Sequence[int], rows: np.ndarray | slice) -> sp.csr_matrix:
        """Pairs of left ``rows`` agreeing on some driver unit, as a CSR matrix (len(rows) x n_b): each pair's cell
        is the sum over the drivers it agrees on of ``delta + _AGREE_UNIT`` (see :meth:`_unit_factors`)."""
        lefts, rights = [], []
        for pos in drivers:
            agree, right = self._unit_factors(pos)
            lefts.append(agree[self._sparse[pos].codes_a[rows]])
            rights.append(right)
        if len(drivers) == 1:
            return lefts[0] @ rights[0]
        key = tuple(tuple(self._sparse[pos].fields) for pos in drivers)
        if key not in self._matrices:
            self._matrices[key] = (None, sp.vstack(rights, format="csr"))
        return sp.hstack(lefts, format="csr") @ self._matrices[key][1]

    def _rows_per_block(self, drivers: Sequence[int]) -> int:
        """Left rows per block such that a block lists about ``block_pairs`` pairs agreeing on some driver."""
        per_row = sum(self._sparse[pos].density for pos in drivers) * self.n_b
        return int(max(1, min(max(self.n_a, 1), self.block_pairs // max(per_row, 1e-9))))

    # ------------------------------------------------------------------ counting
    def base_counts(self) -> np.ndarray:
        """Pattern counts if every sparse field disagreed (or was missing): shape (n_patterns,) int64."""
        weights = np.outer(self.hist_a, self.hist_b).astype(np.float64)
        if self.dedup:
            weights[np.diag_indices_from(weights)] -= self.hist_a
            weights /= 2.0  # the base table is symmetric: (p, q) and (q, p) share a code
        counts = np.bincount(self._base_flat, weights=weights.reshape(-1), minlength=self.n_patterns)
        return np.rint(counts).astype(np.int64)

    def _lookup(self, pos: int, bits: bool = False) -> _Lookup:
        """Code-delta lookup of one sparse unit for arbitrary row pairs (see :meth:`_deltas_of`), built once;
        ``bits``: with its agreement bit set, when not dense (for units looked up for many pairs)."""
        u = self._sparse[pos]
        name = tuple(u.fields)  # by fields, not position: positions change when fields are fused
        if name not in self._lookups:
            distinct, which = np.unique(u.delta, return_inverse=True)
            width = u.n_y + 1  # a last column for a missing right value: never agrees
            if (u.n_x + 1) * width <= _DENSE_LOOKUP_CELLS and distinct.shape[0] < 255:
                # small value sets (names): a dense table of delta ids (0: disagree), one gather per pair; the
                # last row (missing left value) and last column stay 0
                dense = np.zeros((u.n_x + 1) * width, dtype=np.uint8)
                dense[u.x_entry * width + u.ys] = which.reshape(-1).astype(np.uint8) + 1
                self._lookups[name] = _Lookup(
                    dense, np.concatenate([[0], distinct]).astype(np.int64), np.empty(0, np.int32), None,
                    (u.codes_a * width).astype(np.int32), np.where(u.codes_b >= 0, u.codes_b, u.n_y).astype(np.int32),
                )
            else:
                # entries are sorted by x then y, so the keys are sorted: binary search (behind a bit set on request)
                keys = u.x_entry * width + u.ys
                self._lookups[name] = _Lookup(None, keys, u.delta, None, u.codes_a * width,
                                              np.where(u.codes_b >= 0, u.codes_b, u.n_y))
        lk = self._lookups[name]
        if bits and lk.dense is None and lk.bits is None and (u.n_x + 1) * (u.n_y + 1) <= _BIT_LOOKUP_CELLS:
            keys = lk.table
            packed = np.zeros(((u.n_x + 1) * (u.n_y + 1) + 7) // 8, dtype=np.uint8)
            if keys.shape[0]:
                byte = keys >> 3
                start = np.flatnonzero(np.concatenate([[True], byte[1:] != byte[:-1]]))
                packed[byte[start]] = np.bitwise_or.reduceat(np.left_shift(1, keys & 7).astype(np.uint8), start)
            lk = self._lookups[name] = lk._replace(bits=packed)
        return lk

    def _deltas_of(self, pos: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Code delta of sparse unit ``self._sparse[pos]`` for row pairs ``(i, j)``: the sum of ``(level - 1) *
        radix`` over its agreeing fields, 0 where none agrees or values are missing (the base code says which)."""
        lk = self._lookup(pos)
        key = lk.row_a[i].astype(np.int64) + lk.col_b[j]
        if lk.dense is not None:
            return lk.table[lk.dense[key]]
        out = np.zeros(key.shape[0], dtype=np.int64)
        if lk.table.shape[0] == 0:
            return out
        if lk.bits is not None:
            hit = np.flatnonzero(_bit_set(lk.bits, key))
            out[hit] = lk.delta[np.searchsorted(lk.table, key[hit])]
            return out
        at = np.minimum(np.searchsorted(lk.table, key), lk.table.shape[0] - 1)
        return np.where(lk.table[at] == key, lk.delta[at], 0).astype(np.int64)

    def _iter_blocks(self, drivers: Sequence[int] | None = None, lookup: bool = True,
                     rows_from: int = 0, rows_to: int | None = None, max_rows: int | None = None) -> Iterator[tuple]:
        """Pairs agreeing on at least one *driver* sparse unit (positions in ``self._sparse``; ``None``: all), with
        their full codes: the other units' levels are looked up per listed pair (``lookup=False``: not, codes and
        ``n_agree`` then cover the drivers only), for left rows ``rows_from:rows_to`` (default all), at most
        ``max_rows`` left rows per block.

        Yields ``(i, j, code, base, n_agree, (r0, r1, indptr))`` per block of left rows ``r0:r1``, each array (k,)
        int32 (codes are below MAX_PATTERNS; half the memory traffic of int64): ``n_agree`` is the number of units
        the pair agrees on; the pairs of left row ``r`` are ``indptr[r - r0]:indptr[r - r0 + 1]`` (int64). In dedup
        mode ``i < j``.
        """
        drivers = list(range(len(self._sparse))) if drivers is None else list(drivers)
        others = [pos for pos in range(len(self._sparse)) if pos not in drivers]
        stop = self.n_a if rows_to is None else rows_to
        rows = self._rows_per_block(drivers) if drivers else max(stop - rows_from, 1)
        rows = rows if max_rows is None else max(1, min(rows, max_rows))
        if not drivers:
            for r0 in range(rows_from, stop, rows):
                r1 = min(r0 + rows, stop)
                yield (np.empty(0, np.int32),) * 5 + ((r0, r1, np.zeros(r1 - r0 + 1, np.int64)),)
            return
        for r0 in range(rows_from, stop, rows):
            r1 = min(r0 + rows, stop)
            block = self._driver_product(drivers, slice(r0, r1))
            per_row = np.diff(block.indptr)
            i = np.repeat(np.arange(r0, r1, dtype=np.int32), per_row)
            j = block.indices.astype(np.int32, copy=False)
            tally = block.data
            if self.dedup:
                keep = j > i
                i, j, tally = i[keep], j[keep], tally[keep]
                per_row = np.bincount(i - r0, minlength=r1 - r0)
            indptr = np.zeros(r1 - r0 + 1, dtype=np.int64)
            np.cumsum(per_row, out=indptr[1:])
            delta_sum = tally & np.int32(_AGREE_UNIT - 1)
            n_agree = tally >> np.int32(_AGREE_SHIFT)
            for pos in others if lookup else ():
                d = self._deltas_of(pos, i, j).astype(np.int32)
                delta_sum += d
                n_agree += d > 0
            base = self._base_flat32[self._prof_a32[i] * np.int32(self.p_b) + self._prof_b32[j]]
            yield i, j, base + delta_sum, base, n_agree, (r0, r1, indptr)

    def _iter_multi_agreeing(self, drivers: Sequence[int], rows_from: int, rows_to: int
                             ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Pairs agreeing on two or more sparse units, for left rows ``rows_from:rows_to``: those agreeing on some
        driver unit are listed (:meth:`_driver_product`), the other units are looked up, and only the pairs that
        agree on several units get their full code. Yields ``(i, j, code)``, each (k,) int32."""
        others = [pos for pos in range(len(self._sparse)) if pos not in drivers]
        lookups = [self._lookup(pos, bits=True) for pos in others]
        rows = self._rows_per_block(drivers)
        for r0 in range(rows_from, rows_to, rows):
            r1 = min(r0 + rows, rows_to)
            block = self._driver_product(drivers, slice(r0, r1))
            i = np.repeat(np.arange(r0, r1, dtype=np.int32), np.diff(block.indptr))
            j = block.indices.astype(np.int32, copy=False)
            tally = block.data
            if self.dedup:
                keep = j > i
                i, j, tally = i[keep], j[keep], tally[keep]
            n_agree = tally >> _AGREE_SHIFT
            ids = []
            for pos, lk in zip(others, lookups):
                if lk.dense is not None:
                    found = lk.dense[lk.row_a[i] + lk.col_b[j]]
                    n_agree += found > 0
                    ids.append(found)
                else:
                    ids.append(None)
                    if lk.bits is not None:  # whether it agrees now, its level for the pairs kept below
                        n_agree += _bit_set(lk.bits, lk.row_a[i].astype(np.int64) + lk.col_b[j])
                    else:
                        n_agree += self._deltas_of(pos, i, j) > 0
            multi = np.flatnonzero(n_agree >= 2)
            if multi.shape[0] == 0:
                continue
            i, j = i[multi], j[multi]
            code = (tally[multi] & (_AGREE_UNIT - 1)).astype(np.int64)
            code += self._base_flat[self.prof_a[i].astype(np.int64) * self.p_b + self.prof_b[j]]
            for pos, lk, found in zip(others, lookups, ids):
                code += lk.table[found[multi]] if found is not None else self._deltas_of(pos, i, j)
            yield i, j, code.astype(np.int32)

    def _value_profile_matrix(self, codes: np.ndarray, n_values: int, prof: np.ndarray, n_prof: int) -> sp.csr_matrix:
        """Rows per (value, profile): sparse (n_values, n_prof) float64; missing values are not counted."""
        present = codes >= 0
        return sp.csr_matrix(
            (np.ones(int(present.sum())), (codes[present], prof[present])), shape=(n_values, n_prof)
        )

    def _single_field_terms(self, counts: np.ndarray) -> None:
        """Move, for every sparse unit (a field, or fields enumerated jointly), each pair agreeing on it from its base
        code to base + the unit's delta, counted per profile pair from value x profile histograms (no pair is
        enumerated). Pairs agreeing on two or more units are moved once per unit here and put right by
        :meth:`_multi_field_terms`."""
        base = self.base_code.reshape(-1)
        for u in self._sparse:
            if u.x_entry.shape[0] == 0:
                continue
            h_a = self._value_profile_matrix(np.where(u.codes_a < u.n_x, u.codes_a, -1), u.n_x, self.prof_a,
                                             self.p_a)
            h_b = h_a if self.dedup else self._value_profile_matrix(u.codes_b, u.n_y, self.prof_b, self.p_b)
            for delta in np.unique(u.delta).tolist():
                sel = u.delta == delta
                agree = sp.csr_matrix((np.ones(int(sel.sum())), (u.x_entry[sel], u.ys[sel])), shape=(u.n_x, u.n_y))
                t = np.asarray((h_a.T @ agree @ h_b).todense(), dtype=np.float64)
                if self.dedup:
                    # ordered pairs (i, j) and (j, i) share a code: drop i == j, then halve
                    selfs = u.x_entry[sel & (u.x_entry == u.ys)]
                    rows = np.isin(u.codes_a, selfs)
                    t[np.diag_indices_from(t)] -= np.bincount(self.prof_a[rows], minlength=self.p_a)
                    t /= 2.0
                w = t.reshape(-1)
                nz = np.flatnonzero(w)
                np.add.at(counts, base[nz] + int(delta), w[nz])
                np.add.at(counts, base[nz], -w[nz])

    def _multi_field_terms_in_chunks(self, counts: np.ndarray,
                                     parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """:meth:`_multi_field_terms` over ``(i, j, code)`` parts, about ``_TERMS_CHUNK`` pairs at a time (its int64
        temporaries take some 40 bytes a pair)."""
        batch: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        size = 0
        for k, part in enumerate(parts):
            batch.append(part)
            size += part[0].shape[0]
            if size >= _TERMS_CHUNK or k == len(parts) - 1:
                self._multi_field_terms(counts, *(np.concatenate(p) for p in zip(*batch)))
                batch, size = [], 0

    def _multi_field_terms(self, counts: np.ndarray, i: np.ndarray, j: np.ndarray, code: np.ndarray) -> None:
        """Put right the pairs ``(i, j)`` with pattern ``code`` that agree on several sparse fields: +1 at the true
        code, -1 at each single-field code :meth:`_single_field_terms` moved them to, and (fields - 1) back at the
        base code."""
        n = self.n_patterns
        code = code.astype(np.int64)
        base = self._base_flat[self.prof_a[i] * self.p_b + self.prof_b[j]]
        counts += np.bincount(code, minlength=n)
        # code - base spells, in mixed radix, the level rise of each agreeing field: histogram the (rise, base)
        # combinations (few distinct), then correct once per combination
        rise = code - base
        rise_u = np.flatnonzero(np.bincount(rise, minlength=n))
        base_u = np.flatnonzero(np.bincount(base, minlength=n))
        if rise_u.shape[0] * base_u.shape[0] <= (1 << 24):
            # dense ids through lookup tables (np.unique's inverse would sort)
            ids = np.zeros(n, dtype=np.int64)
            ids[rise_u] = np.arange(rise_u.shape[0]) * base_u.shape[0]
            joint = ids[rise]
            ids[base_u] = np.arange(base_u.shape[0])
            joint += ids[base]
            mult = np.bincount(joint, minlength=rise_u.shape[0] * base_u.shape[0])
            nz = np.flatnonzero(mult)
            r, b, mult = rise_u[nz // base_u.shape[0]], base_u[nz % base_u.shape[0]], mult[nz].astype(np.float64)
        else:
            key, mult = np.unique(rise * n + base, return_counts=True)
            r, b = np.divmod(key, n)
            mult = mult.astype(np.float64)
        n_agree = np.zeros(r.shape[0], dtype=np.int64)
        for u in self._sparse:
            step = np.zeros(r.shape[0], dtype=np.int64)
            for f in u.fields:
                step += (r // self.radix[f]) % self.n_levels[f] * self.radix[f]
            agree = step > 0
            n_agree += agree
            counts -= np.bincount(b[agree] + step[agree], weights=mult[agree], minlength=n)
        counts += np.bincount(b, weights=mult * (n_agree - 1), minlength=n)

    def pattern_counts(self) -> np.ndarray:
        """Number of pairs with each pattern: shape (n_patterns,) int64, summing to :attr:`total_pairs`.

        Exact, without visiting every pair: base counts from the profile histograms; for each sparse field, the
        pairs agreeing on it from value x profile histograms; only pairs agreeing on two or more sparse fields are
        enumerated (through every sparse field but the densest, whose level is looked up), and kept for
        :meth:`iter_pairs_with_codes` when there are at most ``_MAX_KEPT_PAIRS`` of them.
        """
        counts = self.base_counts().astype(np.float64)
        self._single_field_terms(counts)
        self._kept = None
        self._multi_drivers = None
        n_multi = 0
        if len(self._sparse) >= 2:
            densest = max(range(len(self._sparse)), key=lambda pos: self._sparse[pos].density)
            drivers = [pos for pos in range(len(self._sparse)) if pos != densest]
            self._multi_drivers = drivers
            for pos in range(len(self._sparse)):
                if pos not in drivers:
                    self._lookup(pos, bits=True)  # built before the threads share it
            lock = threading.Lock()
            state = {"n_multi": 0, "keep": True, "pending": [], "n_pending": 0}

            def count_rows(r_from: int, r_to: int) -> None:
                for part in self._iter_multi_agreeing(drivers, r_from, r_to):
                    with lock:
                        state["n_multi"] += part[0].shape[0]
                        state["n_pending"] += part[0].shape[0]
                        state["pending"].append(part)
                        if state["keep"] and state["n_multi"] > _MAX_KEPT_PAIRS:
                            state["keep"] = False
                            logger.info("more than %d pairs agree on several sparse fields: prediction "
                                        "re-enumerates", _MAX_KEPT_PAIRS)
                        if not state["keep"] and state["n_pending"] >= _MAX_KEPT_PAIRS // 8:
                            self._multi_field_terms_in_chunks(counts, state["pending"])
                            state["pending"], state["n_pending"] = [], 0

            self._in_row_ranges(drivers, count_rows)
            n_multi = state["n_multi"]
            pending = state["pending"]
            self._multi_field_terms_in_chunks(counts, pending)
            if state["keep"]:
                parts = [np.concatenate(p) for p in zip(*pending)] if pending else [np.empty(0, np.int32)] * 3
                self._kept = (parts[0], parts[1], parts[2])
        self.n_agreeing_pairs = int(round(self.total_pairs - counts[np.unique(self.base_code)].sum()))
        self.n_multi_agreeing_pairs = n_multi
        logger.info("counted %d pairs: %d agree on some sparse field, %d on several", self.total_pairs,
                    self.n_agreeing_pairs, n_multi)
        out = np.rint(counts).astype(np.int64)
        if np.any(out < 0) or int(out.sum()) != self.total_pairs:
            raise RuntimeError(f"pattern counts are inconsistent: sum {int(out.sum())}, expected {self.total_pairs}")
        return out

    def _in_row_ranges(self, drivers: Sequence[int], work) -> None:
        """Run ``work(row_from, row_to)`` over the left rows split into one range per thread (scipy's sparse
        product and numpy's array loops release the GIL, so the ranges run in parallel)."""
        rows = self._rows_per_block(drivers)
        n_threads = max(1, min(self.threads, -(-self.n_a // rows)))
        bounds = [self.n_a * t // n_threads // rows * rows for t in range(n_threads)]
        bounds.append(self.n_a)
        if n_threads == 1:
            work(0, self.n_a)
        else:
            with ThreadPoolExecutor(n_threads) as pool:
                for fut in [pool.submit(work, lo, hi) for lo, hi in zip(bounds, bounds[1:])]:
                    fut.result()

    def _accepted_multi_agreeing(self, accept: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pairs agreeing on several sparse units whose code is accepted, enumerated again as in counting (when
        there were too many to keep): ``(i, j, code)`` int32 arrays."""
        lock = threading.Lock()
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

        def emit_rows(r_from: int, r_to: int) -> None:
            for i, j, code in self._iter_multi_agreeing(self._multi_drivers, r_from, r_to):
                sel = accept[code]
                with lock:
                    parts.append((i[sel], j[sel], code[sel]))

        self._in_row_ranges(self._multi_drivers, emit_rows)
        if not parts:
            return (np.empty(0, np.int32),) * 3
        parts.sort(key=lambda p: (int(p[0][0]) if p[0].size else -1))
        return tuple(np.concatenate(p) for p in zip(*parts))  # type: ignore[return-value]

    # ------------------------------------------------------------------ emission
    def driver_fields(self, accept: np.ndarray) -> list[int]:
        """Sparse fields (indices into :attr:`fields`) on one of which every pair with an accepted pattern agrees.

        A pair that disagrees (or is missing) on every driver field has a pattern in which all drivers are at level
        0 or 1; if no such pattern is accepted, emission only needs to enumerate pairs agreeing on some driver, and
        the other sparse fields' levels are looked up for those pairs alone. The drivers are chosen so that every
        accepted pattern that some pair can have agrees on one of them, at the least total agreement density (all
        subsets are tried for up to 12 sparse fields; beyond, fields are dropped greedily, densest first). Patterns
        with no sparse field agreeing are base patterns: only accepted when some base code is (then every sparse
        field stays a driver and base pairs are emitted too).

        Args:
            accept: Boolean mask over pattern codes, shape (n_patterns,).

        Returns:
            The driver fields, a subset of :attr:`sparse_fields` (all of them when nothing can be dropped).
        """
        accept = np.asarray(accept, dtype=bool)
        if not self.sparse_fields or bool(accept[self.base_code].any()):
            return list(self.sparse_fields)
        codes = np.flatnonzero(accept)
        levels = decode_patterns(codes, self.n_levels)
        # per unit (a sparse field, or fields enumerated jointly): does the pattern agree on it
        agree = np.stack([(levels[:, u.fields] > DISAGREE_LEVEL).any(axis=1) for u in self._sparse], axis=1)
        # a pattern with no sparse agreement is not a realised base code (checked above): no pair has it
        agree = agree[agree.any(axis=1)]
        n_s = len(self._sparse)
        cost = np.array([u.density for u in self._sparse])
        if agree.shape[0] == 0:
            return []
        if n_s <= _EXHAUSTIVE_DRIVERS:
            # the cheapest cover: every subset of units, as bit masks
            masks = np.unique(agree.astype(np.int64) @ (1 << np.arange(n_s, dtype=np.int64)))
            subsets = np.arange(1, 1 << n_s, dtype=np.int64)
            valid = np.ones(subsets.shape[0], dtype=bool)
            for m in masks.tolist():
                valid &= (subsets & m) != 0
            bits = (subsets[:, None] >> np.arange(n_s)) & 1
            best = int(subsets[valid][np.argmin(bits[valid] @ cost)])
            keep = [t for t in range(n_s) if best >> t & 1]
        else:
            keep = list(range(n_s))
            for t in sorted(keep, key=lambda t: -cost[t]):
                trial = [v for v in keep if v != t]
                if trial and bool(agree[:, trial].any(axis=1).all()):
                    keep = trial
        return sorted(f for t in keep for f in self._sparse[t].fields)

    def single_field_accepted(self, accept: np.ndarray) -> list[int]:
        """Sparse fields (indices into :attr:`fields`) such that a pair agreeing on that field alone (or on its
        unit alone, for fields enumerated jointly) can have an accepted pattern: some base code raised by one of
        the unit's code deltas, on fields present in both records, is accepted."""
        base = self.base_code.reshape(-1)
        out = []
        for u in self._sparse:
            for delta in np.unique(u.delta).tolist():
                ok = np.ones(base.shape[0], dtype=bool)
                for f in u.fields:
                    if (delta // self.radix[f]) % self.n_levels[f]:
                        ok &= (base // self.radix[f]) % self.n_levels[f] == DISAGREE_LEVEL
                if bool(accept[base[ok] + int(delta)].any()):
                    out.extend(u.fields)
                    break
        return sorted(out)

    def iter_pairs_with_codes(self, accept: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Pairs whose pattern code is accepted, block by block of left rows.

        After :meth:`pattern_counts` (and unless a base code is accepted), the pairs kept there (those agreeing on
        several sparse fields) are filtered, and only pairs agreeing on a field of :meth:`single_field_accepted` are
        enumerated, keeping those that agree on it alone. Otherwise only pairs agreeing on a :meth:`driver_fields`
        field are enumerated (exact: no other pair can have an accepted pattern); when base patterns are accepted,
        every pair is considered.

        Args:
            accept: Boolean mask over pattern codes, shape (n_patterns,).

        Yields:
            ``(i, j, code)``: left rows, right rows and pattern codes, each (k,) int64; ``i < j`` in dedup mode.
        """
        accept = np.asarray(accept, dtype=bool)
        if accept.shape != (self.n_patterns,):
            raise ValueError(f"accept must have shape ({self.n_patterns},), got {accept.shape}")
        if not accept.any():
            return
        multi_known = self._kept is not None or self._multi_drivers is not None
        if multi_known and not bool(accept[self.base_code].any()):
            singles = self.single_field_accepted(accept)
            if self._kept is not None:
                logger.info("emission filters the %d kept pairs that agree on several sparse fields; enumerates "
                            "pairs agreeing on %s alone", len(self._kept[0]), [self.fields[f].name for f in singles])
                i, j, code = self._kept
            else:
                logger.info("emission enumerates the pairs that agree on several sparse fields again (too many to "
                            "keep), and pairs agreeing on %s alone", [self.fields[f].name for f in singles])
                i, j, code = self._accepted_multi_agreeing(accept)
            for k0 in range(0, i.shape[0], _EMIT_CHUNK):
                sel = accept[code[k0:k0 + _EMIT_CHUNK]]
                yield (i[k0:k0 + _EMIT_CHUNK][sel].astype(np.int64), j[k0:k0 + _EMIT_CHUNK][sel].astype(np.int64),
                       code[k0:k0 + _EMIT_CHUNK][sel].astype(np.int64))
            for pos in [p for p, u in enumerate(self._sparse) if u.fields[0] in singles]:
                for i, j, code, _, _, _ in self._iter_blocks(drivers=[pos], lookup=False):
                    # agreeing on this unit alone, a pair has exactly base + the unit's delta; look the others up
                    # for those whose code is accepted (if another unit agrees, the pair is among the kept ones)
                    sel = np.flatnonzero(accept[code])
                    i, j, code = i[sel], j[sel], code[sel]
                    alone = np.ones(i.shape[0], dtype=bool)
                    for other in range(len(self._sparse)):
                        if other != pos:
                            alone &= self._deltas_of(other, i, j) == 0
                    yield i[alone].astype(np.int64), j[alone].astype(np.int64), code[alone].astype(np.int64)
            return
        base_ok = accept[self.base_code]
        any_base = bool(base_ok.any())
        drivers = self.driver_fields(accept)
        logger.info("emission enumerates pairs agreeing on %s (of sparse fields %s)",
                    [self.fields[f].name for f in drivers], [self.fields[f].name for f in self.sparse_fields])
        if any_base:
            n_base = int((np.outer(self.hist_a, self.hist_b) * base_ok).sum())
            logger.warning(
                "%d pairs are accepted on their base pattern alone (no sparse field agrees): all are emitted", n_base
            )
            rows_b_of = [np.flatnonzero(self.prof_b == q) for q in range(self.p_b)]
        positions = [pos for pos, u in enumerate(self._sparse) if u.fields[0] in drivers]
        # with base pairs emitted too, a block may list every pair of its rows
        max_rows = max(1, self.block_pairs // max(self.n_b, 1)) if any_base else None
        listed = np.zeros(self.n_b, dtype=bool)
        for i, j, code, _, _, (r0, r1, indptr) in self._iter_blocks(drivers=positions, max_rows=max_rows):
            keep = accept[code]
            out_i, out_j, out_c = [i[keep].astype(np.int64)], [j[keep].astype(np.int64)], [code[keep].astype(np.int64)]
            if any_base:
                for row in range(r0, r1):
                    qs = np.flatnonzero(base_ok[self.prof_a[row]])
                    if qs.size == 0:
                        continue
                    cand = np.concatenate([rows_b_of[q] for q in qs])
                    if self.dedup:
                        cand = cand[cand > row]
                    own = j[indptr[row - r0]:indptr[row - r0 + 1]]
                    listed[own] = True
                    cand = cand[~listed[cand]]
                    listed[own] = False
                    out_i.append(np.full(cand.shape[0], row, dtype=np.int64))
                    out_j.append(cand)
                    out_c.append(self._base_flat[self.prof_a[row] * self.p_b + self.prof_b[cand]])
            yield np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_c)
