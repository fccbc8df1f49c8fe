"""Field comparisons for Fellegi-Sunter: field specs, value preparation, comparison levels between unique values.

A field is compared on its *unique* values, never row by row: a column of 100k surnames holds perhaps 30k
distinct strings, and every pair of rows that shares a pair of values shares its comparison level. The result of
comparing two columns is therefore a sparse list of *agreeing* unique-value pairs ``(x, y, level)``; every pair not
listed disagrees (level 1), and a pair where either value is missing gets the missing level 0.

Levels of a field (``n_levels`` in all):

- ``0``: missing on either side. It has no m or u parameter: it neither rewards nor punishes a pair.
- ``1``: disagree (Jaro-Winkler below the lowest threshold, or not equal).
- ``2 .. n_levels - 1``: agreement, one level per Jaro-Winkler threshold (``s >= thresholds[k]`` gives level
  ``k + 2``); an exact-match field has the single agreement level 2; a Levenshtein field with edit-distance
  thresholds ``(d_0 > d_1 > ...)`` has level ``k + 2`` for ``distance <= d_k`` and a last level for equality.

Levenshtein fields (dates, identifiers, postcodes: short codes where one typo is one edit) never compare all
pairs: two strings within ``d`` edits share a string obtained by deleting at most ``d`` characters from each
(symmetric deletion), so candidate pairs come from joining the deletion variants of the unique values, and only
those candidates are scored by rapidfuzz. Cost grows with the number of unique values times ``len**d``, not with
their square.

Values are compared as Python ``str`` (Unicode code points), after NFC normalisation and stripping surrounding
whitespace, so CJK and other non-ASCII text compares character by character, never byte by byte. Numbers are
compared through their decimal text (``4223``, not ``4223.0``).
"""

from __future__ import annotations

import itertools
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from rapidfuzz import process
from rapidfuzz.distance import JaroWinkler

#: Comparison kinds accepted by :class:`FieldSpec`.
COMPARISONS = ("jaro_winkler", "exact", "levenshtein")

#: Default edit-distance thresholds of a Levenshtein field: levels "more than 1 edit", "1 edit", "equal".
DEFAULT_MAX_EDITS = (1,)

#: Fast-ER's Jaro-Winkler thresholds: below 0.88 disagree, [0.88, 0.94) partial agreement, >= 0.94 agreement.
DEFAULT_THRESHOLDS = (0.88, 0.94)

#: Level of a pair whose value is missing on either side.
MISSING_LEVEL = 0
#: Level of a pair whose values disagree.
DISAGREE_LEVEL = 1

# Cells of one dense uint8 similarity block from rapidfuzz (64 MiB): unique values are compared in row blocks so
# that memory stays flat however many unique values a field has.
_BLOCK_CELLS = 1 << 26
# rapidfuzz stores a similarity s as round(s * _QUANT) in uint8 (a quarter of float32's memory and scan time);
# levels are read off that, and the few cells within rounding distance of a threshold are recomputed in float64.
_QUANT = 255
_CUTOFF_MARGIN = 1e-6
# Unique-value pairs from which Jaro-Winkler first bounds similarities by character counts (a matrix product) and
# compares only the pairs the bound admits; and the widest character code that bound may use.
_PRUNE_MIN_PAIRS = 1 << 21
_PRUNE_MAX_WIDTH = 512


@dataclass(frozen=True)
class FieldSpec:
    """How one field (column) is compared.

    Attributes:
        name: Column name in the left table (and in the right table unless ``right_name`` is given).
        comparison: ``"jaro_winkler"`` (similarity levels at ``thresholds``), ``"exact"`` (equal or not) or
            ``"levenshtein"`` (edit distance at most ``thresholds[k]``, then equal).
        thresholds: For ``"jaro_winkler"``: similarity thresholds, strictly increasing in ``(0, 1]``; ``None``
            takes the model's default. For ``"levenshtein"``: edit distances, strictly decreasing ints in
            ``{1, 2}``; ``None`` is ``(1,)``. Must be ``None`` for ``"exact"``.
        right_name: Column name in the right table when it differs from ``name``.
    """

    name: str
    comparison: Literal["jaro_winkler", "exact"] = "jaro_winkler"
    thresholds: tuple[float, ...] | None = None
    right_name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"FieldSpec.name must be a non-empty column name, got {self.name!r}")
        if self.comparison not in COMPARISONS:
            raise ValueError(
                f"FieldSpec({self.name!r}).comparison must be one of {', '.join(COMPARISONS)}, got {self.comparison!r}"
            )
        if self.right_name is not None and (not isinstance(self.right_name, str) or not self.right_name):
            raise ValueError(
                f"FieldSpec({self.name!r}).right_name must be a non-empty str or None, got {self.right_name!r}"
            )
        if self.thresholds is not None:
            if self.comparison == "exact":
                raise ValueError(
                    f"FieldSpec({self.name!r}) is an exact-match field and takes no thresholds, got {self.thresholds!r}"
                )
            what = f"FieldSpec({self.name!r}).thresholds"
            if self.comparison == "levenshtein":
                object.__setattr__(self, "thresholds", check_max_edits(self.thresholds, what))
            else:
                object.__setattr__(self, "thresholds", check_thresholds(self.thresholds, what))

    @property
    def right(self) -> str:
        """Column name in the right table."""
        return self.right_name or self.name


def check_thresholds(thresholds: Sequence[float], what: str = "thresholds") -> tuple[float, ...]:
    """Validate Jaro-Winkler thresholds: a non-empty, strictly increasing sequence of floats in ``(0, 1]``.

    Args:
        thresholds: The thresholds.
        what: Name used in the error message.

    Returns:
        The thresholds as a tuple of floats.

    Raises:
        ValueError: If ``thresholds`` is empty, not numeric, out of ``(0, 1]`` or not strictly increasing.
    """
    if isinstance(thresholds, (str, bytes)):
        raise ValueError(f"{what} must be a sequence of floats in (0, 1], got {thresholds!r}")
    try:
        values = tuple(float(t) for t in thresholds)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a sequence of floats in (0, 1], got {thresholds!r}") from exc
    if not values:
        raise ValueError(f"{what} must hold at least one threshold, got an empty sequence")
    if len(values) > 8:
        raise ValueError(f"{what} may hold at most 8 thresholds, got {len(values)}")
    if any(not (0.0 < t <= 1.0) or math.isnan(t) for t in values):
        raise ValueError(f"{what} must lie in (0, 1], got {values!r}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{what} must be strictly increasing, got {values!r}")
    return values


def check_max_edits(max_edits: Sequence[int], what: str = "max_edits") -> tuple[int, ...]:
    """Validate Levenshtein thresholds: a non-empty, strictly decreasing sequence of ints in ``{1, 2}``.

    Raises:
        ValueError: If ``max_edits`` is empty, not integral, outside ``{1, 2}`` or not strictly decreasing.
    """
    if isinstance(max_edits, (str, bytes)):
        raise ValueError(f"{what} must be a sequence of edit distances in {{1, 2}}, got {max_edits!r}")
    try:
        values = tuple(max_edits)
    except TypeError as exc:
        raise ValueError(f"{what} must be a sequence of edit distances in {{1, 2}}, got {max_edits!r}") from exc
    if not values or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v not in (1, 2) for v in values
    ):
        raise ValueError(f"{what} must be a non-empty sequence of edit distances in {{1, 2}}, got {max_edits!r}")
    if any(b >= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{what} must be strictly decreasing (e.g. (2, 1)), got {values!r}")
    return tuple(int(v) for v in values)


def n_levels_of(spec: FieldSpec, default_thresholds: tuple[float, ...]) -> int:
    """Number of comparison levels of a field, the missing level included."""
    if spec.comparison == "exact":
        return 3
    if spec.comparison == "levenshtein":
        return len(spec.thresholds or DEFAULT_MAX_EDITS) + 3
    return len(spec.thresholds or default_thresholds) + 2


def prepare_values(values: pd.Series | Sequence[object], what: str = "values") -> tuple[np.ndarray, list[str]]:
    """Map a column to codes into its unique, normalised string values.

    Values are stripped of surrounding whitespace and NFC-normalised; ``None``, NaN, ``pd.NA`` and empty strings
    are missing. Floats that are whole numbers (an integer column with missing values) are written without
    ``.0``.

    Args:
        values: The column, length n.
        what: Name used in error messages.

    Returns:
        ``(codes, uniques)``: codes of shape (n,) int32, ``-1`` for missing, else an index into ``uniques``, the
        distinct normalised non-empty strings in order of first appearance.

    Raises:
        ValueError: If ``values`` is a single string.
    """
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{what} must be a column (sequence of values), got a single {type(values).__name__}")
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    if pd.api.types.is_float_dtype(series.dtype):
        finite = series.dropna()
        if len(finite) and np.all(np.mod(finite.to_numpy(dtype=np.float64), 1.0) == 0.0):
            series = series.astype("Int64")
    raw_codes, raw_uniques = pd.factorize(series, use_na_sentinel=True)
    # normalise the (few) distinct raw values, then merge raw values that normalise to the same string
    raw = raw_uniques.tolist() if hasattr(raw_uniques, "tolist") else list(raw_uniques)
    if all(type(v) is str for v in raw) and "".join(raw).isascii():
        # ASCII strings (most tables): NFC is the identity, only surrounding whitespace goes
        normalised = [v.strip() or None for v in raw]
    else:
        normalised = [_normalise(v) for v in raw]
    uniq_index: dict[str, int] = {}
    remap = np.empty(len(normalised) + 1, dtype=np.int32)
    for k, text in enumerate(normalised):
        if text is None:
            remap[k] = -1
        else:
            remap[k] = uniq_index.setdefault(text, len(uniq_index))
    remap[-1] = -1  # pd.factorize's -1 sentinel indexes the last slot
    codes = remap[raw_codes]
    return codes.astype(np.int32, copy=False), list(uniq_index)


def _normalise(value: object) -> str | None:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, bytes):
        raise ValueError(f"bytes values are not compared (decode them to str first), got {value!r}")
    text = value if type(value) is str else str(value)
    if not text.isascii():  # ASCII is its own NFC form
        text = unicodedata.normalize("NFC", text)
    text = text.strip()
    return text or None


def level_of_similarity(sim: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Discretise Jaro-Winkler similarities into levels: 1 below ``thresholds[0]``, ``k + 2`` from ``thresholds[k]``.

    Args:
        sim: Similarities, any shape, float.
        thresholds: Strictly increasing thresholds.

    Returns:
        Levels, same shape as ``sim``, uint8 (never 0: missing values are handled by the caller).
    """
    levels = np.ones(np.shape(sim), dtype=np.uint8)
    for t in thresholds:
        levels += np.asarray(sim) >= t
    return levels


@dataclass(frozen=True)
class LevelPairs:
    """Agreeing unique-value pairs of one field: every pair not listed disagrees (level 1).

    Attributes:
        x: Left unique-value index, shape (k,) int32.
        y: Right unique-value index, shape (k,) int32.
        level: Level of the pair, shape (k,) uint8, each >= 2.
    """

    x: np.ndarray
    y: np.ndarray
    level: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])


def exact_level_pairs(left: Sequence[str], right: Sequence[str]) -> LevelPairs:
    """Pairs of equal unique values (level 2).

    Args:
        left: Distinct left values, length n_x.
        right: Distinct right values, length n_y.

    Returns:
        The equal pairs; at most ``min(n_x, n_y)`` of them.
    """
    y = pd.Index(list(right), dtype=object).get_indexer(list(left))
    x = np.flatnonzero(y >= 0).astype(np.int32)
    return LevelPairs(x, y[x].astype(np.int32), np.full(x.shape[0], 2, dtype=np.uint8))


def jaro_winkler_level_pairs(
    left: Sequence[str],
    right: Sequence[str],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    symmetric: bool = False,
    workers: int = -1,
) -> LevelPairs:
    """Jaro-Winkler levels of all pairs of unique values that reach the lowest threshold (CPU, rapidfuzz).

    Similarities come from ``rapidfuzz.process.cdist`` (``JaroWinkler``, prefix weight 0.1) on blocks of left
    values against all right values, quantised to uint8 with the lowest threshold as score cutoff; cells within
    rounding distance of a threshold are recomputed in float64 (``rapidfuzz.process.cpdist``), so levels equal
    those of the exact similarity ``s >= threshold``.

    Args:
        left: Distinct left values, length n_x.
        right: Distinct right values, length n_y.
        thresholds: Strictly increasing thresholds in (0, 1].
        symmetric: ``left`` and ``right`` are the same list (dedup): only ``x <= y`` is computed and the result
            mirrored, so that the level of ``(x, y)`` equals that of ``(y, x)``.
        workers: rapidfuzz threads, ``-1`` for all cores.

    Returns:
        The agreeing pairs (level >= 2), sorted by ``x`` then ``y``.
    """
    thresholds = check_thresholds(thresholds)
    n_x, n_y = len(left), len(right)
    if symmetric and n_x != n_y:
        raise ValueError(f"symmetric comparison needs left and right of equal length, got {n_x} and {n_y}")
    if n_x == 0 or n_y == 0:
        return _empty_pairs()
    left = list(left)
    right = list(right)
    if not symmetric and n_x * n_y >= _PRUNE_MIN_PAIRS:
        pruned = _jaro_winkler_pruned(left, right, thresholds, workers)
        if pruned is not None:
            return pruned
    return _jaro_winkler_dense(left, right, thresholds, symmetric, workers)


def _jaro_winkler_pruned(left: list[str], right: list[str], thresholds: tuple[float, ...], workers: int
                         ) -> LevelPairs | None:
    """Jaro-Winkler levels of all pairs, computing similarities only where the lowest threshold can be reached.

    Pairs whose first characters differ get no Winkler prefix boost, so their similarity is their Jaro
    similarity ``(m / l_a + m / l_b + (m - t) / m) / 3 <= (M / l_a + M / l_b + 1) / 3``, where ``M`` (at least the
    number of matching characters ``m``) is the size of the two strings' character multiset intersection. ``M``
    of every pair is one matrix product of "thermometer" codes (a row holds ``[count(c) >= k]`` for each character
    ``c`` and ``k``: the dot product of two rows is ``sum_c min(count_a(c), count_b(c))``), in which a large
    negative weight on equal first characters removes those pairs. Pairs whose bound reaches the lowest threshold
    are compared exactly (``rapidfuzz.process.cpdist``); pairs sharing their first character are compared by the
    dense path, one first character at a time (about 1/15 of all pairs for Latin names: cheaper there than a
    prefix-aware bound, which admits too many of them). Exact: no pair that reaches a threshold is skipped.

    Returns:
        The agreeing pairs as :func:`jaro_winkler_level_pairs`, or ``None`` when the bound cannot prune (low
        threshold, or too many distinct characters for a compact code).
    """
    need = 3.0 * thresholds[0] - 1.0
    if need <= 1.0:
        return None
    n_a = len(left)
    if max(map(len, itertools.chain(left, right))) > _PRUNE_MAX_WIDTH:
        return None  # its characters alone would need more columns
    rows_all, columns, n_columns, first = _thermometer_columns(left + right)
    width = n_columns + int(first.max()) + 1
    if width > _PRUNE_MAX_WIDTH:
        return None

    def codes(lo: int, hi: int, first_weight: float) -> np.ndarray:
        out = np.zeros((hi - lo, width), dtype=np.float32)
        sel = slice(*np.searchsorted(rows_all, [lo, hi]))
        out[rows_all[sel] - lo, columns[sel]] = 1.0
        out[np.arange(hi - lo), n_columns + first[lo:hi]] = first_weight
        return out

    len_a = np.fromiter((len(v) for v in left), dtype=np.float64, count=len(left))
    len_b = np.fromiter((len(v) for v in right), dtype=np.float64, count=len(right))
    # right values by length: M <= min(l_a, l_b), so only l_b in [(need - 1) l_a, l_a / (need - 1)] can pass
    order_b = np.argsort(len_b, kind="stable")
    len_b = len_b[order_b]
    # equal first characters add -4096 to the product: those pairs never pass the bound (compared below)
    code_a = codes(0, n_a, 1.0)
    code_b_t = np.ascontiguousarray(codes(n_a, n_a + len(right), -4096.0)[order_b].T)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    order_a = np.argsort(len_a, kind="stable")
    # one product and one mask buffer for every block: fresh 64 MiB arrays per block cost page faults
    cells = _BLOCK_CELLS // 4
    product_buf = np.empty(max(cells, 8 * len(right)), dtype=np.float32)
    hit_buf = np.empty(product_buf.shape[0], dtype=bool)
    for la in np.unique(len_a):
        members = order_a[len_a[order_a] == la]
        c0 = int(np.searchsorted(len_b, (need - 1.0) * la - 1e-6, side="left"))
        c1 = int(np.searchsorted(len_b, la / (need - 1.0) + 1e-6, side="right"))
        if c1 <= c0:
            continue
        lb = len_b[c0:c1]
        # M * (1/la + 1/lb) >= need  <=>  M >= need * la * lb / (la + lb); a margin keeps float error safe
        bound = (need * la * lb / (la + lb) - 1e-3).astype(np.float32)
        rows = max(8, cells // (c1 - c0))
        for start in range(0, members.shape[0], rows):
            idx = members[start:start + rows]
            shape = (idx.shape[0], c1 - c0)
            product = product_buf[:shape[0] * shape[1]].reshape(shape)
            np.matmul(code_a[idx], code_b_t[:, c0:c1], out=product)
            hit = np.greater_equal(product, bound[None, :], out=hit_buf[:product.size].reshape(shape))
            flat = _flat_nonzero_u8(hit.view(np.uint8))
            xs.append(idx[flat // shape[1]])
            ys.append(order_b[c0 + flat % shape[1]])
    x = np.concatenate(xs) if xs else np.empty(0, np.int64)
    y = np.concatenate(ys) if ys else np.empty(0, np.int64)
    sim = jaro_winkler_pair_similarity([left[i] for i in x], [right[j] for j in y], workers)
    level = level_of_similarity(sim, thresholds)
    keep = level >= 2
    parts_x, parts_y, parts_l = [x[keep]], [y[keep]], [level[keep]]
    # pairs with equal first characters: the dense path, per first character
    first_a, first_b = first[:n_a], first[n_a:]
    by_first_b = {int(k): np.flatnonzero(first_b == k) for k in np.unique(first_b)}
    for k in np.unique(first_a).tolist():
        rows_b = by_first_b.get(k)
        if rows_b is None:
            continue
        rows_a = np.flatnonzero(first_a == k)
        sub = _jaro_winkler_dense([left[i] for i in rows_a], [right[j] for j in rows_b], thresholds, False, workers)
        parts_x.append(rows_a[sub.x])
        parts_y.append(rows_b[sub.y])
        parts_l.append(sub.level)
    x = np.concatenate(parts_x).astype(np.int32)
    y = np.concatenate(parts_y).astype(np.int32)
    level = np.concatenate(parts_l).astype(np.uint8)
    order = np.lexsort((y, x))
    return LevelPairs(x[order], y[order], level[order])


def _thermometer_columns(values: list[str]) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Thermometer code of each string's character multiset, as the positions of its ones, and first characters.

    Character ``c`` owns ``cap(c)`` columns (its largest count in any string); a string with ``k`` copies of
    ``c`` has ones in the first ``k`` of them. Vectorised over code points (UTF-32), so any script works.

    Returns:
        ``(rows, columns, n_columns, first)``: the ones as (row, column) sorted by row, the number of columns, and
        a small id of each string's first character, shape (len(values),).
    """
    n = len(values)
    lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=n)
    longest = int(lengths.max())
    points = np.array(values, dtype=f"<U{longest}").view(np.uint32).reshape(n, longest)
    inside = np.arange(longest)[None, :] < lengths[:, None]
    rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
    chars, char_id = np.unique(points[inside], return_inverse=True)
    char_id = char_id.reshape(-1).astype(np.int64)
    # k-th copy of a character within its string: rank within equal (row, character) runs
    key = rows * chars.shape[0] + char_id
    order = np.argsort(key, kind="stable")
    run_start = np.flatnonzero(np.concatenate([[True], key[order][1:] != key[order][:-1]]))
    rank = np.empty(key.shape[0], dtype=np.int64)
    rank[order] = np.arange(key.shape[0]) - np.repeat(run_start, np.diff(np.append(run_start, key.shape[0])))
    cap = np.zeros(chars.shape[0], dtype=np.int64)
    np.maximum.at(cap, char_id, rank + 1)
    offset = np.concatenate([[0], np.cumsum(cap)])
    _, first = np.unique(points[:, 0], return_inverse=True)
    return rows, offset[char_id] + rank, int(offset[-1]), first.reshape(-1).astype(np.int64)


def _jaro_winkler_dense(left: list[str], right: list[str], thresholds: tuple[float, ...], symmetric: bool,
                        workers: int) -> LevelPairs:
    """Jaro-Winkler levels of all pairs from dense rapidfuzz ``cdist`` blocks (see
    :func:`jaro_winkler_level_pairs`)."""
    n_x, n_y = len(left), len(right)
    rows = max(8, (_BLOCK_CELLS // n_y) // 8 * 8)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    qs: list[np.ndarray] = []
    for start in range(0, n_x, rows):
        stop = min(start + rows, n_x)
        col0 = start if symmetric else 0
        block = process.cdist(
            left[start:stop],
            right[col0:],
            scorer=JaroWinkler.normalized_similarity,
            # rapidfuzz's cutoff test can drop a score equal to the cutoff: cut a little lower, recompute the band
            score_cutoff=max(thresholds[0] - _CUTOFF_MARGIN, 0.0),
            score_multiplier=_QUANT,
            dtype=np.uint8,
            workers=workers,
        )
        flat = _flat_nonzero_u8(block)
        width = n_y - col0
        bx = (flat // width).astype(np.int32) + start
        by = (flat % width).astype(np.int32) + col0
        if symmetric:
            keep = by >= bx
            bx, by, flat = bx[keep], by[keep], flat[keep]
        xs.append(bx)
        ys.append(by)
        qs.append(block.reshape(-1)[flat])
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    q = np.concatenate(qs)
    level = _levels_from_quantised(q, x, y, left, right, thresholds)
    agree = level >= 2
    x, y, level = x[agree], y[agree], level[agree]
    if symmetric:
        off = x != y
        x, y, level = np.concatenate([x, y[off]]), np.concatenate([y, x[off]]), np.concatenate([level, level[off]])
        order = np.lexsort((y, x))
        x, y, level = x[order], y[order], level[order]
    return LevelPairs(x, y, level)


def _empty_pairs() -> LevelPairs:
    return LevelPairs(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.uint8))


def _flat_nonzero_u8(block: np.ndarray) -> np.ndarray:
    """Flat indices of the non-zero cells of a C-contiguous uint8 array; fast when few cells are non-zero."""
    flat = block.reshape(-1)
    n = flat.shape[0]
    n8 = n // 8 * 8
    # scan 8 cells per 64-bit word; only words holding a non-zero cell are opened
    words = np.flatnonzero(flat[:n8].view(np.uint64))
    if words.size:
        cells = flat[:n8].reshape(-1, 8)[words]
        w, k = np.nonzero(cells)
        idx = words[w] * 8 + k
    else:
        idx = np.empty(0, dtype=np.int64)
    if n8 < n:
        idx = np.concatenate([idx, n8 + np.flatnonzero(flat[n8:])])
    return idx.astype(np.int64, copy=False)


def _levels_from_quantised(
    q: np.ndarray, x: np.ndarray, y: np.ndarray, left: list[str], right: list[str], thresholds: tuple[float, ...]
) -> np.ndarray:
    """Levels (1 = disagree) of cells whose quantised similarity is ``q = round(s * _QUANT)``, q > 0."""
    level = np.ones(q.shape[0], dtype=np.uint8)
    if q.size == 0:
        return level
    qf = q.astype(np.float64)
    ambiguous = np.zeros(q.shape[0], dtype=bool)
    for t in thresholds:
        # round(s * Q) = q puts s * Q in [q - 0.5, q + 0.5]; allow [q - 0.5, q + 1) so truncation is safe too
        tq = t * _QUANT
        level += qf - 0.5 > tq + 1e-9
        ambiguous |= (qf - 0.5 - 1e-9 <= tq) & (tq <= qf + 1.0 + 1e-9)
    idx = np.flatnonzero(ambiguous)
    if idx.size:
        sim = np.fromiter(
            (JaroWinkler.normalized_similarity(left[i], right[j]) for i, j in zip(x[idx].tolist(), y[idx].tolist())),
            dtype=np.float64, count=idx.size,
        )
        level[idx] = level_of_similarity(sim, thresholds)
    return level


def jaro_winkler_pair_similarity(left: Sequence[str], right: Sequence[str], workers: int = -1) -> np.ndarray:
    """Jaro-Winkler similarity of aligned pairs ``(left[k], right[k])``: shape (k,) float64."""
    if len(left) != len(right):
        raise ValueError(f"left and right must have equal length, got {len(left)} and {len(right)}")
    if len(left) == 0:
        return np.empty(0, dtype=np.float64)
    return process.cpdist(list(left), list(right), scorer=JaroWinkler.normalized_similarity, dtype=np.float64,
                          workers=workers)


def _deletion_variants(values: Sequence[str], depth: int) -> tuple[list[str], np.ndarray]:
    """All strings obtained by deleting at most ``depth`` characters from each value, with the value's index."""
    variants: list[str] = []
    owners: list[int] = []
    for idx, text in enumerate(values):
        current = {text}
        seen = {text}
        for _ in range(depth):
            nxt = {v[:k] + v[k + 1:] for v in current for k in range(len(v))}
            nxt -= seen
            seen |= nxt
            current = nxt
        variants.extend(seen)
        owners.extend([idx] * len(seen))
    return variants, np.asarray(owners, dtype=np.int64)


# Odd multiplier of the polynomial hash of deletion variants (odd: invertible modulo 2**64).
_HASH_BASE = 0x9E3779B97F4A7C15
_HASH_BASE_INV = pow(_HASH_BASE, -1, 1 << 64)
# Longest value (code points) whose deletion variants are hashed in numpy; longer ones use Python sets.
_MAX_HASHED_LENGTH = 64


def _deletion_hashes(values: Sequence[str], depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """64-bit hashes of the deletion variants (at most ``depth`` in {1, 2} characters deleted) of each value.

    Hashes are polynomial in the code points (wrapping uint64 arithmetic), computed for every deletion position at
    once from prefix sums: deleting position ``k`` divides the suffix's terms by the (odd, so invertible) base.
    Equal variants always get equal hashes; distinct ones rarely do, and candidates are verified by their true edit
    distance, so collisions cost time, never correctness.

    Args:
        values: Distinct strings, each at most :data:`_MAX_HASHED_LENGTH` code points.
        depth: Largest number of deleted characters.

    Returns:
        ``(hashes, owners, position)``: shape (k,) uint64, the index of each variant's value, shape (k,) int64,
        and the deleted position of one-deletion variants (``-1`` for the value itself, ``-2`` for two deletions).
    """
    n = len(values)
    width = max((len(v) for v in values), default=0) + 1
    lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=n)
    points = np.array(values, dtype=f"<U{width}").view(np.uint32).reshape(n, width).astype(np.uint64)
    pos = np.arange(width)
    inside = pos[None, :] < lengths[:, None]
    base, inv = np.uint64(_HASH_BASE), np.uint64(_HASH_BASE_INV)
    powers = np.ones(width, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(1, width):
            powers[k] = powers[k - 1] * base
        terms = np.where(inside, (points + np.uint64(1)) * powers[None, :], np.uint64(0))
        prefix = np.zeros((n, width + 1), dtype=np.uint64)
        np.cumsum(terms, axis=1, out=prefix[:, 1:])
        total = prefix[:, -1:]
        hashes = [total[:, 0]]
        owners = [np.arange(n, dtype=np.int64)]
        position = [np.full(n, -1, dtype=np.int64)]
        row = np.broadcast_to(np.arange(n, dtype=np.int64)[:, None], (n, width - 1))
        # one deletion at k < len: prefix before k + (everything after k) / base
        one = prefix[:, :-2] + (total - prefix[:, 1:-1]) * inv
        hashes.append(one[inside[:, :-1]])
        owners.append(row[inside[:, :-1]])
        position.append(np.broadcast_to(pos[None, :-1], (n, width - 1))[inside[:, :-1]])
        if depth >= 2:
            inv2 = inv * inv
            for k1 in range(width - 2):
                # second deletion at k2 in (k1, len)
                k2 = np.arange(k1 + 1, width - 1)
                two = (prefix[:, k1:k1 + 1] + (prefix[:, k2] - prefix[:, k1 + 1:k1 + 2]) * inv
                       + (total - prefix[:, k2 + 1]) * inv2)
                ok = inside[:, k2]
                hashes.append(two[ok])
                owners.append(np.broadcast_to(np.arange(n, dtype=np.int64)[:, None], two.shape)[ok])
                position.append(np.full(int(ok.sum()), -2, dtype=np.int64))
    return np.concatenate(hashes), np.concatenate(owners), np.concatenate(position)


def _join_on_variants(ka: np.ndarray, own_a: np.ndarray, kb: np.ndarray, own_b: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Owner pairs ``(x, y)`` of all left and right variants with equal keys (with repeats), int64."""
    oa = np.argsort(ka)
    ua, sa, ca = _sorted_groups(ka[oa])
    xa = own_a[oa]
    ob = np.argsort(kb)
    ub, sb, cb = _sorted_groups(kb[ob])
    yb = own_b[ob]
    _, pa, pb = np.intersect1d(ua, ub, assume_unique=True, return_indices=True)
    n_pairs = ca[pa] * cb[pb]
    total = int(n_pairs.sum())
    grp = np.repeat(np.arange(pa.shape[0]), n_pairs)
    pos = np.arange(total) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    return xa[sa[pa][grp] + pos // cb[pb][grp]], yb[sb[pb][grp] + pos % cb[pb][grp]]


def _candidate_pairs(left: list[str], right: list[str], depth: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of unique values that may lie within ``depth`` edits (all that do, with repeats), int64 ``(x, y)``.

    Two values within ``d`` edits share a variant with at most ``d`` characters deleted from each. For ``d = 1``
    the join is narrowed to the variants that can witness one edit: the value itself against the other's value or
    one-deletion variants (equality, insertion, deletion), and one-deletion variants deleted *at the same position*
    (substitution); a shared variant deleted at different positions (a transposition, two edits) is no candidate.
    Hash collisions only add candidates; the caller verifies each by its edit distance.
    """
    longest = max(max(map(len, left)), max(map(len, right)))
    if longest > _MAX_HASHED_LENGTH:
        var_a, own_a = _deletion_variants(left, depth)
        var_b, own_b = (var_a, own_a) if symmetric else _deletion_variants(right, depth)
        codes, _ = pd.factorize(pd.Series(var_a + ([] if symmetric else var_b), dtype=object))
        ka = codes[: len(var_a)].astype(np.int64)
        kb = ka if symmetric else codes[len(var_a):].astype(np.int64)
        return _join_on_variants(ka, own_a, kb, own_b)
    ha, own_a, pos_a = _deletion_hashes(left, depth)
    hb, own_b, pos_b = (ha, own_a, pos_a) if symmetric else _deletion_hashes(right, depth)
    if depth != 1:
        return _join_on_variants(ha, own_a, hb, own_b)
    whole_a, whole_b = pos_a < 0, pos_b < 0
    with np.errstate(over="ignore"):
        at_a = ha[~whole_a] * np.uint64(_HASH_BASE) + pos_a[~whole_a].astype(np.uint64)
        at_b = hb[~whole_b] * np.uint64(_HASH_BASE) + pos_b[~whole_b].astype(np.uint64)
    parts = [
        _join_on_variants(ha[whole_a], own_a[whole_a], hb, own_b),  # equal, or left = right minus a character
        _join_on_variants(ha[~whole_a], own_a[~whole_a], hb[whole_b], own_b[whole_b]),  # right = left minus one
        _join_on_variants(at_a, own_a[~whole_a], at_b, own_b[~whole_b]),  # one substitution
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def levenshtein_levels_of_pairs(
    left: Sequence[str],
    right: Sequence[str],
    x: np.ndarray,
    y: np.ndarray,
    max_edits: Sequence[int] = DEFAULT_MAX_EDITS,
    *,
    workers: int = -1,
) -> np.ndarray:
    """Levenshtein levels (as :func:`levenshtein_level_pairs`, 1 for "more edits") of given value pairs
    ``(left[x], right[y])``: shape (k,) uint8. One-edit levels use the vectorised exact check, others rapidfuzz."""
    from rapidfuzz.distance import Levenshtein

    max_edits = check_max_edits(max_edits)
    if x.shape[0] == 0:
        return np.empty(0, dtype=np.uint8)
    left, right = list(left), list(right)
    if max_edits[0] == 1 and max(map(len, itertools.chain(left, right))) <= _MAX_HASHED_LENGTH:
        dist = _distance_up_to_one(left, right, np.asarray(x), np.asarray(y))
    else:
        dist = process.cpdist([left[i] for i in x], [right[j] for j in y], scorer=Levenshtein.distance,
                              dtype=np.int32, workers=workers)
    level = np.ones(x.shape[0], dtype=np.uint8)
    for d in max_edits:
        level += dist <= d
    level += dist == 0
    return level


def _code_points(values: list[str], width: int, reverse: bool = False) -> np.ndarray:
    """Code points of each string (reversed: last character first), padded to ``width`` with a value no code
    point has: shape (n, width) uint32."""
    n = len(values)
    points = np.array([v[::-1] for v in values] if reverse else values, dtype=f"<U{width}").view(np.uint32)
    points = points.reshape(n, width).copy()
    lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=n)
    points[np.arange(width)[None, :] >= lengths[:, None]] = 0xFFFFFFFF
    return points


def _distance_up_to_one(left: list[str], right: list[str], x: np.ndarray, y: np.ndarray,
                        chunk: int = 1 << 20) -> np.ndarray:
    """Levenshtein distance of the pairs ``(left[x], right[y])`` where it is 0 or 1, else 2 (meaning "more"): exact,
    vectorised over code points. Equal lengths: the distance is at most one exactly when the Hamming distance is;
    lengths one apart: when the common prefix and the common suffix together cover the shorter string."""
    width = max(map(len, itertools.chain(left, right))) + 1
    len_a = np.fromiter((len(v) for v in left), dtype=np.int64, count=len(left))
    len_b = np.fromiter((len(v) for v in right), dtype=np.int64, count=len(right))
    fwd_a, fwd_b = _code_points(left, width), _code_points(right, width)
    out = np.full(x.shape[0], 2, dtype=np.int32)
    rev_a = rev_b = None
    for k0 in range(0, x.shape[0], chunk):
        xs, ys = x[k0:k0 + chunk], y[k0:k0 + chunk]
        la, lb = len_a[xs], len_b[ys]
        part = out[k0:k0 + chunk]
        same = np.flatnonzero(la == lb)
        part[same] = np.minimum(np.count_nonzero(fwd_a[xs[same]] != fwd_b[ys[same]], axis=1), 2)
        near = np.flatnonzero(np.abs(la - lb) == 1)
        if near.size:
            if rev_a is None:
                rev_a, rev_b = _code_points(left, width, reverse=True), _code_points(right, width, reverse=True)
            xn, yn = xs[near], ys[near]
            # padding never equals a character: both scans stop by the shorter string's end + 1
            prefix = np.argmax(fwd_a[xn] != fwd_b[yn], axis=1)
            suffix = np.argmax(rev_a[xn] != rev_b[yn], axis=1)
            part[near[prefix + suffix >= np.minimum(la[near], lb[near])]] = 1
    return out


def _sorted_groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct values of sorted ``keys``, the index of each one's first occurrence and its count."""
    if keys.shape[0] == 0:
        return keys, np.empty(0, np.int64), np.empty(0, np.int64)
    start = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    counts = np.diff(np.append(start, keys.shape[0]))
    return keys[start], start, counts


def levenshtein_level_pairs(
    left: Sequence[str],
    right: Sequence[str],
    max_edits: Sequence[int] = DEFAULT_MAX_EDITS,
    *,
    symmetric: bool = False,
    workers: int = -1,
) -> LevelPairs:
    """Levels of all pairs of unique values within ``max(max_edits)`` Levenshtein edits, without comparing all pairs.

    Candidates share a deletion variant (at most ``max(max_edits)`` characters deleted from each side); their edit
    distance is then computed by ``rapidfuzz.process.cpdist`` (``Levenshtein``). Levels: ``k + 2`` for
    ``distance <= max_edits[k]``, ``len(max_edits) + 2`` for equal values.

    Args:
        left: Distinct left values, length n_x.
        right: Distinct right values, length n_y.
        max_edits: Strictly decreasing edit distances in ``{1, 2}``.
        symmetric: ``left`` and ``right`` are the same list (dedup): the result is symmetric.
        workers: rapidfuzz threads, ``-1`` for all cores.

    Returns:
        The agreeing pairs (level >= 2), sorted by ``x`` then ``y``.
    """
    max_edits = check_max_edits(max_edits)
    left, right = list(left), list(right)
    if symmetric and len(left) != len(right):
        raise ValueError(f"symmetric comparison needs left and right of equal length, got {len(left)} and {len(right)}")
    if not left or not right:
        return _empty_pairs()
    x, y = _candidate_pairs(left, right, max_edits[0], symmetric)
    if symmetric:
        keep = x <= y
        x, y = x[keep], y[keep]
    key = np.sort(x * len(right) + y)
    key = _sorted_groups(key)[0]  # np.unique hashes first: slower here
    x, y = key // len(right), key % len(right)
    level = levenshtein_levels_of_pairs(left, right, x, y, max_edits, workers=workers)
    keep = level >= 2
    x, y, level = x[keep].astype(np.int32), y[keep].astype(np.int32), level[keep]
    if not symmetric:
        return LevelPairs(x, y, level)  # candidates came sorted by (x, y)
    off = x != y
    x, y, level = np.concatenate([x, y[off]]), np.concatenate([y, x[off]]), np.concatenate([level, level[off]])
    order = np.argsort(x.astype(np.int64) * len(right) + y, kind="stable")
    return LevelPairs(x[order], y[order], level[order])
