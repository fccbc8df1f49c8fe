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

import logging
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from rapidfuzz import process
from rapidfuzz.distance import JaroWinkler

logger = logging.getLogger(__name__)

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
    normalised = [_normalise(v) for v in raw_uniques]
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
    text = unicodedata.normalize("NFC", str(value)).strip()
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
    from rapidfuzz.distance import Levenshtein

    max_edits = check_max_edits(max_edits)
    left, right = list(left), list(right)
    if symmetric and len(left) != len(right):
        raise ValueError(f"symmetric comparison needs left and right of equal length, got {len(left)} and {len(right)}")
    if not left or not right:
        return _empty_pairs()
    depth = max_edits[0]
    var_a, own_a = _deletion_variants(left, depth)
    if symmetric:
        var_b, own_b = var_a, own_a
    else:
        var_b, own_b = _deletion_variants(right, depth)
    codes, _ = pd.factorize(pd.Series(var_a + ([] if symmetric else var_b), dtype=object))
    ka = codes[: len(var_a)].astype(np.int64)
    kb = ka if symmetric else codes[len(var_a):].astype(np.int64)
    # join on variant: sort both sides by variant and expand the groups present on both
    oa, ob = np.argsort(ka, kind="stable"), np.argsort(kb, kind="stable")
    ka_s, kb_s, xa, yb = ka[oa], kb[ob], own_a[oa], own_b[ob]
    ua, sa, ca = np.unique(ka_s, return_index=True, return_counts=True)
    ub, sb, cb = np.unique(kb_s, return_index=True, return_counts=True)
    _, pa, pb = np.intersect1d(ua, ub, assume_unique=True, return_indices=True)
    n_pairs = ca[pa] * cb[pb]
    total = int(n_pairs.sum())
    grp = np.repeat(np.arange(pa.shape[0]), n_pairs)
    pos = np.arange(total) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    x = xa[sa[pa][grp] + pos // cb[pb][grp]]
    y = yb[sb[pb][grp] + pos % cb[pb][grp]]
    if symmetric:
        keep = x <= y
        x, y = x[keep], y[keep]
    key = np.unique(x * len(right) + y)
    x, y = key // len(right), key % len(right)
    dist = process.cpdist([left[i] for i in x], [right[j] for j in y], scorer=Levenshtein.distance,
                          dtype=np.int32, workers=workers) if key.size else np.empty(0, np.int32)
    level = np.ones(x.shape[0], dtype=np.uint8)
    for d in max_edits:
        level += dist <= d
    level += dist == 0
    keep = level >= 2
    x, y, level = x[keep].astype(np.int32), y[keep].astype(np.int32), level[keep]
    if symmetric:
        off = x != y
        x, y, level = np.concatenate([x, y[off]]), np.concatenate([y, x[off]]), np.concatenate([level, level[off]])
    order = np.lexsort((y, x))
    return LevelPairs(x[order], y[order], level[order])
