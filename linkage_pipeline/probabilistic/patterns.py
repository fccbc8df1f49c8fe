"""Agreement patterns of record pairs: compact integer codes, chunked counts over all pairs, and pair emission.

A pair's *pattern* is its vector of comparison levels, one per field, stored as one mixed-radix integer
``code = sum_f level_f * radix_f`` (``radix_0 = 1``, ``radix_f = radix_{f-1} * n_levels_{f-1}``).

All-pairs counting never visits the n_a x n_b pairs one by one. Each row gets a *profile*: its values of the
few low-cardinality fields (state, sex: agreement is common there) and which of the other fields are missing.
Every pair's *base* pattern (low-cardinality fields compared, the other fields at disagree or missing) depends on
the two profiles only, so base counts come from the profile histograms alone. The other (*sparse*) fields agree
on a small fraction of pairs: those pairs are expanded from the agreeing unique-value pairs in blocks of left
rows, their level deltas summed in a reusable dense accumulator (no sort, no per-pair float), and their counts
moved from the base pattern to the true one. Work and memory scale with the number of pairs that agree on some
sparse field, not with n_a x n_b; memory is bounded by ``block_cells``.

Dedup (a table against itself) counts each unordered pair ``i < j`` once and never a row with itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from linkage_pipeline.probabilistic.comparisons import DISAGREE_LEVEL, MISSING_LEVEL, LevelPairs

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


class AllPairsSpace:
    """All n_a x n_b pairs (or n(n-1)/2 for dedup) of two tables, compared on K fields, counted in blocks.

    Args:
        fields: The fields' comparisons (same n_a, n_b for all).
        n_a: Left rows.
        n_b: Right rows.
        dedup: Left and right are the same table: pairs ``i < j`` only. Requires ``codes_a == codes_b`` and
            symmetric ``pairs`` for every field.
        block_cells: Left rows per block times n_b; the dense accumulator has this many int32 cells.
    """

    def __init__(
        self, fields: Sequence[FieldLevels], n_a: int, n_b: int, *, dedup: bool = False, block_cells: int = 1 << 22
    ) -> None:
        if not fields:
            raise ValueError("at least one field is needed to compare records, got none")
        if dedup and n_a != n_b:
            raise ValueError(f"dedup compares a table with itself: n_a must equal n_b, got {n_a} and {n_b}")
        if block_cells < 1:
            raise ValueError(f"block_cells must be positive, got {block_cells}")
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
        self.block_rows = max(1, min(self.n_a, block_cells // max(self.n_b, 1)))
        self._choose_profile_fields()
        self._build_profiles()
        self._build_sparse()

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
        self.p_a, self.p_b = p_a, p_b

    def _build_sparse(self) -> None:
        self._sparse: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for f in self.sparse_fields:
            fl = self.fields[f]
            p = fl.pairs
            order = np.lexsort((p.y, p.x))
            x, y = p.x[order].astype(np.int64), p.y[order].astype(np.int32)
            delta = ((p.level[order].astype(np.int64) - DISAGREE_LEVEL) * self.radix[f]).astype(np.int32)
            # CSR over left unique values, with an empty extra row for missing (-1 -> n_x)
            indptr = np.zeros(fl.n_x + 2, dtype=np.int64)
            np.cumsum(np.bincount(x, minlength=fl.n_x + 1), out=indptr[1:])
            present_b = fl.codes_b >= 0
            order_b = np.argsort(fl.codes_b, kind="stable")[np.count_nonzero(~present_b):].astype(np.int64)
            cnt_b = np.bincount(fl.codes_b[present_b], minlength=fl.n_y).astype(np.int64)
            start_b = np.zeros(fl.n_y + 1, dtype=np.int64)
            np.cumsum(cnt_b, out=start_b[1:])
            codes_a = np.where(fl.codes_a >= 0, fl.codes_a, fl.n_x).astype(np.int64)
            self._sparse.append((f, codes_a, indptr, y, delta, order_b, start_b))

    # ------------------------------------------------------------------ counting
    def base_counts(self) -> np.ndarray:
        """Pattern counts if every sparse field disagreed (or was missing): shape (n_patterns,) int64."""
        weights = np.outer(self.hist_a, self.hist_b).astype(np.float64)
        if self.dedup:
            weights[np.diag_indices_from(weights)] -= self.hist_a
            weights /= 2.0  # the base table is symmetric: (p, q) and (q, p) share a code
        counts = np.bincount(self._base_flat, weights=weights.reshape(-1), minlength=self.n_patterns)
        return np.rint(counts).astype(np.int64)

    def iter_agreeing_pairs(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Pairs that agree on at least one sparse field, block by block of left rows.

        Yields:
            ``(i, j, code, base)``: left rows (k,) int64, right rows (k,) int64, the pairs' pattern codes (k,) int64
            and their base codes (k,) int64. In dedup mode ``i < j``.
        """
        yield from (blk[:4] for blk in self._iter_blocks(keep_acc=False))

    def _iter_blocks(self, keep_acc: bool) -> Iterator[tuple]:
        n_b = self.n_b
        rows = self.block_rows
        acc = np.zeros(rows * n_b, dtype=np.int32)
        for r0 in range(0, self.n_a, rows):
            r1 = min(r0 + rows, self.n_a)
            distinct: list[np.ndarray] = []
            for _, codes_a, indptr, ys, delta, order_b, start_b in self._sparse:
                xa = codes_a[r0:r1]
                lo = indptr[xa]
                nnz = indptr[xa + 1] - lo
                n_ent = int(nnz.sum())
                if n_ent == 0:
                    continue
                ent_row = np.repeat(np.arange(r1 - r0, dtype=np.int64), nnz)
                ent = np.repeat(lo - (np.cumsum(nnz) - nnz), nnz) + np.arange(n_ent, dtype=np.int64)
                y = ys[ent]
                c = start_b[y + 1] - start_b[y]
                n_out = int(c.sum())
                if n_out == 0:
                    continue
                src = np.repeat(np.arange(n_ent, dtype=np.int64), c)
                j = order_b[np.repeat(start_b[y] - (np.cumsum(c) - c), c) + np.arange(n_out, dtype=np.int64)]
                i_loc = ent_row[src]
                val = delta[ent[src]]
                if self.dedup:
                    keep = j > i_loc + r0
                    j, i_loc, val = j[keep], i_loc[keep], val[keep]
                key = i_loc * n_b + j
                prev = acc[key]
                distinct.append(key[prev == 0])
                acc[key] = prev + val
            if not distinct:
                yield (np.empty(0, np.int64),) * 4 + ((r0, r1, acc),)
                continue
            keys = np.concatenate(distinct)
            delta_sum = acc[keys].astype(np.int64)
            i_loc = keys // n_b
            j = keys - i_loc * n_b
            i = i_loc + r0
            base = self._base_flat[self.prof_a[i] * self.p_b + self.prof_b[j]]
            if keep_acc:
                yield i, j, base + delta_sum, base, (r0, r1, acc)
            else:
                yield i, j, base + delta_sum, base
            acc[keys] = 0

    def pattern_counts(self) -> np.ndarray:
        """Number of pairs with each pattern: shape (n_patterns,) int64, summing to :attr:`total_pairs`."""
        counts = self.base_counts()
        use_bincount = self.n_patterns <= (1 << 20)
        n_agree = 0
        for _, _, code, base in self.iter_agreeing_pairs():
            if code.size == 0:
                continue
            n_agree += code.size
            if use_bincount:
                counts += np.bincount(code, minlength=self.n_patterns)
                counts -= np.bincount(base, minlength=self.n_patterns)
            else:
                for arr, sign in ((code, 1), (base, -1)):
                    uniq, cnt = np.unique(arr, return_counts=True)
                    np.add.at(counts, uniq, sign * cnt)
        self.n_agreeing_pairs = n_agree
        logger.info("counted %d pairs: %d agree on some sparse field", self.total_pairs, n_agree)
        return counts

    # ------------------------------------------------------------------ emission
    def iter_pairs_with_codes(self, accept: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Pairs whose pattern code is accepted, block by block of left rows.

        Args:
            accept: Boolean mask over pattern codes, shape (n_patterns,).

        Yields:
            ``(i, j, code)``: left rows, right rows and pattern codes, each (k,) int64; ``i < j`` in dedup mode.
        """
        accept = np.asarray(accept, dtype=bool)
        if accept.shape != (self.n_patterns,):
            raise ValueError(f"accept must have shape ({self.n_patterns},), got {accept.shape}")
        base_ok = accept[self.base_code]
        any_base = bool(base_ok.any())
        if any_base:
            n_base = int((np.outer(self.hist_a, self.hist_b) * base_ok).sum())
            logger.warning(
                "%d pairs are accepted on their base pattern alone (no sparse field agrees): all are emitted", n_base
            )
            rows_b_of = [np.flatnonzero(self.prof_b == q) for q in range(self.p_b)]
        for i, j, code, _, (r0, r1, acc) in self._iter_blocks(keep_acc=True):
            keep = accept[code]
            out_i, out_j, out_c = [i[keep]], [j[keep]], [code[keep]]
            if any_base:
                for row in range(r0, r1):
                    qs = np.flatnonzero(base_ok[self.prof_a[row]])
                    if qs.size == 0:
                        continue
                    cand = np.concatenate([rows_b_of[q] for q in qs])
                    if self.dedup:
                        cand = cand[cand > row]
                    cand = cand[acc[(row - r0) * self.n_b + cand] == 0]
                    out_i.append(np.full(cand.shape[0], row, dtype=np.int64))
                    out_j.append(cand)
                    out_c.append(self._base_flat[self.prof_a[row] * self.p_b + self.prof_b[cand]])
            yield np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_c)
