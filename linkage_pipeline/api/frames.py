"""The dataframe API: merge, merge_knn, dedup_rows, cluster_rows, aggregate_rows."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from linkage_pipeline.api.text import (
    DEFAULT_BATCH_SIZE,
    TextEncoder,
    as_column_list,
    check_frame,
    check_has,
    check_k,
    check_threshold,
    load_text_encoder,
    row_texts,
)
from linkage_pipeline.device import resolve_device
from linkage_pipeline.linking.index import knn
from linkage_pipeline.linking.strings import STRING_METHODS, topk_string_matches
from linkage_pipeline.probabilistic import (
    DEFAULT_MATCH_THRESHOLD,
    FellegiSunter,
    FieldSpec,
    clusters_from_links,
)

logger = logging.getLogger(__name__)


#: Names accepted by ``method``.
METHODS = ("auto", "embedding", "fellegi_sunter", *STRING_METHODS)

#: Thresholds used by :func:`dedup_rows` and :func:`cluster_rows` when none is given, per method.
DEFAULT_CLUSTER_THRESHOLDS: dict[str, float] = {
    "fellegi_sunter": DEFAULT_MATCH_THRESHOLD,
    "embedding": 0.9,
    "jaro_winkler": 0.95,
    "levenshtein": 0.9,
    "ngram": 0.9,
}

#: Column added by :func:`cluster_rows`.
CLUSTER_COLUMN = "cluster_id"


def _resolve_on(
    left: pd.DataFrame, right: pd.DataFrame, on: object, left_on: object, right_on: object
) -> tuple[list[str], list[str]]:
    if on is not None:
        if left_on is not None or right_on is not None:
            raise ValueError("give either on=..., or left_on=... and right_on=..., not both")
        lcols = rcols = as_column_list(on, "on")
    else:
        if left_on is None or right_on is None:
            raise ValueError("the columns to compare are missing: give on=..., or both left_on=... and right_on=...")
        lcols = as_column_list(left_on, "left_on")
        rcols = as_column_list(right_on, "right_on")
        if len(lcols) != len(rcols):
            raise ValueError(
                f"left_on and right_on must name the same number of columns, got {len(lcols)} and {len(rcols)}"
            )
    check_has(left, lcols, "left")
    check_has(right, rcols, "right")
    return lcols, rcols


def _resolve_method(method: str, n_columns: int, model: object) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if method == "auto":
        if n_columns >= 2:
            return "fellegi_sunter"
        return "embedding" if model is not None else "jaro_winkler"
    if method == "embedding" and model is None:
        raise ValueError("method='embedding' needs model=<a local sentence-transformers directory or TextEncoder>")
    return method


# ---------------------------------------------------------------------------------------------- candidate pairs
@dataclass
class _Options:
    method: str
    model: object = None
    device: str = "auto"
    batch_size: int = DEFAULT_BATCH_SIZE
    sep: str = " "
    fs_options: Mapping[str, Any] = field(default_factory=dict)


def _pairs(
    left: pd.DataFrame,
    right: pd.DataFrame | None,
    lcols: list[str],
    rcols: list[str],
    k: int,
    threshold: float | None,
    opt: _Options,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``k`` best right rows per left row, at or above ``threshold``.

    ``right=None`` pairs ``left`` with itself and drops each row's pair with itself.

    A row whose compared values are all missing (None, NaN, NA, empty or blank strings: an empty
    :func:`row_texts`) has nothing to compare and is never a candidate, on either side: two nameless rows are not
    the same firm. (Fellegi-Sunter compares field by field: a field missing on either side contributes no
    evidence, and a pair missing every field is never linked.)

    Returns:
        ``(i, j, score)``: left positions, right positions (int64) and scores (float64), sorted by left row,
        then by descending score, then by right row.
    """
    self_join = right is None
    other = left if self_join else right
    if opt.method == "fellegi_sunter":
        i, j, s = _fs_pairs(left, None if self_join else right, lcols, rcols, threshold, opt)
    else:
        a_txt = row_texts(left, lcols, opt.sep)
        b_txt = a_txt if self_join else row_texts(other, rcols, opt.sep)
        # only rows with something to compare are searched (and searched for): positions into the full tables
        a_pos = np.asarray([p for p, t in enumerate(a_txt) if t], dtype=np.int64)
        b_pos = a_pos if self_join else np.asarray([p for p, t in enumerate(b_txt) if t], dtype=np.int64)
        a_txt, b_txt = [a_txt[p] for p in a_pos], [b_txt[p] for p in b_pos]
        k_search = min(k + 1 if self_join else k, len(b_pos))
        if len(a_pos) == 0 or k_search == 0:
            idx, sc = np.zeros((len(a_pos), 0), np.int64), np.zeros((len(a_pos), 0), np.float32)
        elif opt.method == "embedding":
            enc = load_text_encoder(opt.model, opt.device)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            a = enc.encode(a_txt, opt.batch_size)
            b = a if self_join else enc.encode(b_txt, opt.batch_size)
            logger.info("embedded %d + %d rows in %.2f s", len(a_pos), 0 if self_join else len(b_pos),
                        time.perf_counter() - t0)
            sc, idx = knn(a, b, k_search)  # exact inner product (cosine) in a flat index
        else:
            a_low = [t.casefold() for t in a_txt]
            b_low = a_low if self_join else [t.casefold() for t in b_txt]
            idx, sc = topk_string_matches(a_low, b_low, method=opt.method, k=k_search)
        i = np.repeat(a_pos, idx.shape[1])
        flat = idx.reshape(-1)
        j = np.full(flat.shape, -1, dtype=np.int64)
        j[flat >= 0] = b_pos[flat[flat >= 0]]
        s = sc.reshape(-1).astype(np.float64)
        keep = j >= 0  # FAISS pads with -1
        if self_join:
            keep &= j != i
        if threshold is not None:
            keep &= s >= threshold - 1e-6  # float32 scores: an exact copy scores 0.99999994 in cosine
        i, j, s = i[keep], j[keep], s[keep]
    order = np.lexsort((j, -s, i))
    i, j, s = i[order], j[order], s[order]
    # at most k per left row (rank within the row's run)
    starts = np.r_[0, np.flatnonzero(np.diff(i)) + 1] if i.size else np.zeros(0, np.int64)
    run_start = np.repeat(starts, np.diff(np.r_[starts, i.size]))
    keep = (np.arange(i.size) - run_start) < k
    return i[keep], j[keep], s[keep]


def _fs_pairs(
    left: pd.DataFrame,
    right: pd.DataFrame | None,
    lcols: list[str],
    rcols: list[str],
    threshold: float | None,
    opt: _Options,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    thr = DEFAULT_MATCH_THRESHOLD if threshold is None else threshold
    options = dict(opt.fs_options)
    comparisons = list(options.pop("comparisons", ["jaro_winkler"] * len(lcols)))
    if len(comparisons) != len(lcols):
        raise ValueError(
            f"fs_options['comparisons'] must name one comparison per column ({len(lcols)}), got {comparisons}"
        )
    fields = [FieldSpec(lc, comparison=cmp, right_name=None if rc == lc else rc)
              for lc, rc, cmp in zip(lcols, rcols, comparisons)]
    options.setdefault("device", opt.device)
    model = FellegiSunter(fields, threshold=thr, **options)
    a = _casefold_text(left[lcols])
    if right is None:
        links = model.fit(a).predict()
        # dedup links come once per pair (left row < right row): list both directions
        li, rj = links.attrs["left_row"], links.attrs["right_row"]
        p = links["match_probability"].to_numpy(np.float64)
        return np.r_[li, rj].astype(np.int64), np.r_[rj, li].astype(np.int64), np.r_[p, p]
    b = _casefold_text(right[rcols])
    links = model.fit(a, b).predict()
    return (np.asarray(links.attrs["left_row"], np.int64), np.asarray(links.attrs["right_row"], np.int64),
            links["match_probability"].to_numpy(np.float64))


def _casefold_text(df: pd.DataFrame) -> pd.DataFrame:
    """Case-fold the text columns (FS compares strings as they are; "ACME" and "Acme" are the same firm)."""
    out = df.reset_index(drop=True).copy()
    for c in out.columns:
        if pd.api.types.is_string_dtype(out[c].dtype) or out[c].dtype == object:
            out[c] = out[c].map(lambda v: v.casefold() if isinstance(v, str) else v)
    return out


def _options(
    method: str, n_columns: int, model: object, device: str, batch_size: int, sep: str,
    fs_options: Mapping[str, Any] | None,
) -> _Options:
    resolved = _resolve_method(method, n_columns, model)
    if resolved == "embedding":
        resolve_device(device)  # fail early on a bad or unavailable device
    if not isinstance(sep, str):
        raise ValueError(f"sep must be a str, got {sep!r}")
    if fs_options is not None and not isinstance(fs_options, Mapping):
        raise ValueError(f"fs_options must be a mapping of FellegiSunter arguments, got {fs_options!r}")
    logger.info("method=%s (asked %s) on %d column(s) per side", resolved, method, n_columns)
    return _Options(resolved, model, device, check_k(batch_size, "batch_size"), sep, dict(fs_options or {}))


def _assemble(
    left: pd.DataFrame,
    right: pd.DataFrame,
    li: np.ndarray,
    rj: np.ndarray,
    extra: dict[str, Any],
    suffixes: tuple[str, str],
) -> pd.DataFrame:
    """Rows ``left.iloc[li]`` beside ``right.iloc[rj]`` (NaN where ``rj == -1``), then the ``extra`` columns."""
    if not (isinstance(suffixes, tuple) and len(suffixes) == 2 and all(isinstance(s, str) for s in suffixes)):
        raise ValueError(f"suffixes must be a pair of strings, got {suffixes!r}")
    overlap = set(left.columns) & set(right.columns)
    if overlap and suffixes[0] == suffixes[1]:
        raise ValueError(f"suffixes must differ to tell overlapping columns {sorted(overlap)} apart, got {suffixes}")
    lpart = left.iloc[li].reset_index(drop=True)
    rpart = right.reset_index(drop=True).reindex(rj).reset_index(drop=True)
    lpart.columns = [f"{c}{suffixes[0]}" if c in overlap else c for c in lpart.columns]
    rpart.columns = [f"{c}{suffixes[1]}" if c in overlap else c for c in rpart.columns]
    out = pd.concat([lpart, rpart], axis=1)
    for name, values in extra.items():
        if name in out.columns:
            raise ValueError(f"output column {name!r} already exists; pass another name (e.g. score_column=...)")
        out[name] = values
    return out


def _table_pairs(
    left: pd.DataFrame,
    right: pd.DataFrame,
    on: object,
    left_on: object,
    right_on: object,
    k: object,
    *,
    method: str,
    model: object,
    threshold: float | None,
    device: str,
    batch_size: int,
    sep: str,
    fs_options: Mapping[str, Any] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check the arguments of a two-table call, then its ``k`` best right rows per left row (see :func:`_pairs`)."""
    lcols, rcols = _resolve_on(left, right, on, left_on, right_on)
    k = check_k(k)
    opt = _options(method, len(lcols), model, device, batch_size, sep, fs_options)
    thr = check_threshold(threshold, opt.method)
    return _pairs(left, right, lcols, rcols, k, thr, opt)


def _best_per_left(n_left: int, i: np.ndarray, j: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 pairs as arrays over all left rows: right position (int64, -1 for none) and score (NaN for none)."""
    best = np.full(n_left, -1, dtype=np.int64)
    score = np.full(n_left, np.nan)
    best[i], score[i] = j, s
    return best, score


# ---------------------------------------------------------------------------------------------- public API
def merge(
    left: pd.DataFrame,
    right: pd.DataFrame,
    on: str | Sequence[str] | None = None,
    *,
    left_on: str | Sequence[str] | None = None,
    right_on: str | Sequence[str] | None = None,
    method: str = "auto",
    model: str | os.PathLike[str] | TextEncoder | None = None,
    threshold: float | None = None,
    suffixes: tuple[str, str] = ("_x", "_y"),
    score_column: str = "score",
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    sep: str = " ",
    fs_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Left join of ``left`` to its most similar ``right`` row (top-1), with the score.

    Args:
        left: Left table (kept whole: one output row per left row, in order, with its index).
        right: Right table.
        on: Column(s) compared, present on both sides; or give ``left_on`` and ``right_on``.
        left_on: Left column(s), paired in order with ``right_on``.
        right_on: Right column(s).
        method: One of :data:`METHODS` (see the module docstring).
        model: Local sentence-transformers directory (or a :class:`TextEncoder`) for ``"embedding"``.
        threshold: Rows whose best score is below it keep NaN on the right side (and in the score). ``None``
            keeps every top-1 for embedding/string methods; for ``"fellegi_sunter"`` it means 0.5.
        suffixes: Added to column names present in both tables, left then right.
        score_column: Name of the added score column (float64).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``, for the embedding model and Fellegi-Sunter.
        batch_size: Texts per embedding batch.
        sep: Separator when several columns are joined into one text (see :func:`row_texts`).
        fs_options: Extra :class:`~linkage_pipeline.probabilistic.FellegiSunter` arguments (``thresholds``,
            ``dependent_fields``, ``blocking``, ...), and ``comparisons``: one of ``"jaro_winkler"`` (default),
            ``"exact"``, ``"levenshtein"`` per compared column.

    Returns:
        ``len(left)`` rows: left's columns, right's columns (NaN where unmatched), ``score_column``.

    Raises:
        ValueError: On a missing column, unknown method, bad threshold/device, or CUDA asked for without it.

    Example:
        >>> merge(firms, register, on=["name", "city"], method="fellegi_sunter")  # doctest: +SKIP
        >>> merge(firms, register, left_on="name", right_on="firm", model=minilm_dir)  # doctest: +SKIP
    """
    left, right = check_frame(left, "left"), check_frame(right, "right")
    i, j, s = _table_pairs(left, right, on, left_on, right_on, 1, method=method, model=model, threshold=threshold,
                           device=device, batch_size=batch_size, sep=sep, fs_options=fs_options)
    best, score = _best_per_left(len(left), i, j, s)
    out = _assemble(left, right, np.arange(len(left)), best, {score_column: score}, suffixes)
    out.index = left.index
    logger.info("merge: %d of %d left rows matched", int((best >= 0).sum()), len(left))
    return out


def merge_knn(
    left: pd.DataFrame,
    right: pd.DataFrame,
    on: str | Sequence[str] | None = None,
    *,
    left_on: str | Sequence[str] | None = None,
    right_on: str | Sequence[str] | None = None,
    k: int = 5,
    method: str = "auto",
    model: str | os.PathLike[str] | TextEncoder | None = None,
    threshold: float | None = None,
    suffixes: tuple[str, str] = ("_x", "_y"),
    score_column: str = "score",
    rank_column: str = "rank",
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    sep: str = " ",
    fs_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """The ``k`` most similar ``right`` rows of every ``left`` row, one output row each, with rank and score.

    Arguments as :func:`merge`, plus ``k`` (neighbours per left row) and ``rank_column``. With a threshold (or
    with ``"fellegi_sunter"``, whose candidates are the pairs at or above it), a left row may have fewer than
    ``k`` neighbours; a left row with none appears once with NaN on the right side and a missing rank.

    Returns:
        Rows ordered by left row then rank: left's columns, right's columns, ``rank_column`` (Int64, 1 = best),
        ``score_column`` (float64, non-increasing within a left row). The index is a fresh RangeIndex.

    Example:
        >>> merge_knn(firms, register, on="name", k=3, method="levenshtein")  # doctest: +SKIP
    """
    left, right = check_frame(left, "left"), check_frame(right, "right")
    i, j, s = _table_pairs(left, right, on, left_on, right_on, k, method=method, model=model, threshold=threshold,
                           device=device, batch_size=batch_size, sep=sep, fs_options=fs_options)
    rank = np.ones(i.size, dtype=np.int64)
    if i.size:
        starts = np.r_[0, np.flatnonzero(np.diff(i)) + 1]
        rank = np.arange(i.size) - np.repeat(starts, np.diff(np.r_[starts, i.size])) + 1
    unmatched = np.setdiff1d(np.arange(len(left)), i)
    li = np.r_[i, unmatched]
    rj = np.r_[j, np.full(unmatched.size, -1, np.int64)]
    sc = np.r_[s, np.full(unmatched.size, np.nan)]
    rk = pd.array(np.r_[rank, np.zeros(unmatched.size, np.int64)], dtype="Int64")
    rk[i.size :] = pd.NA
    order = np.lexsort((np.r_[rank, np.zeros(unmatched.size, np.int64)], li))
    out = _assemble(left, right, li[order], rj[order], {rank_column: rk[order], score_column: sc[order]}, suffixes)
    return out


def _cluster_labels(
    df: pd.DataFrame, on: object, method: str, model: object, threshold: float | None, k_neighbours: int,
    device: str, batch_size: int, sep: str, fs_options: Mapping[str, Any] | None,
) -> np.ndarray:
    df = check_frame(df, "df")
    cols = as_column_list(on, "on")
    check_has(df, cols, "df")
    opt = _options(method, len(cols), model, device, batch_size, sep, fs_options)
    thr = check_threshold(threshold, opt.method)
    if thr is None:
        thr = DEFAULT_CLUSTER_THRESHOLDS[opt.method]
    k = check_k(k_neighbours, "k_neighbours")
    i, j, _ = _pairs(df, None, cols, cols, k, thr, opt)
    clusters = clusters_from_links(len(df), i, j)
    return clusters["cluster_id"].to_numpy(np.int64)


def cluster_rows(
    df: pd.DataFrame,
    on: str | Sequence[str],
    *,
    method: str = "auto",
    model: str | os.PathLike[str] | TextEncoder | None = None,
    threshold: float | None = None,
    k_neighbours: int = 10,
    cluster_column: str = CLUSTER_COLUMN,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    sep: str = " ",
    fs_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Add a cluster id to every row: connected components of the rows' links at ``threshold``.

    Links are, for embedding/string methods, each row's ``k_neighbours`` nearest other rows scoring at least
    ``threshold``; for ``"fellegi_sunter"``, all pairs with match probability at least ``threshold`` (a dedup
    fit on all pairs). ``threshold=None`` takes :data:`DEFAULT_CLUSTER_THRESHOLDS` for the method.

    Returns:
        A copy of ``df`` with ``cluster_column`` (int64) added: clusters are numbered 0, 1, ... in order of their
        first row, and a row linked to nothing is a cluster of its own.

    Example:
        >>> df = pd.DataFrame({"n": ["Acme", "ACME", "Zeta"]})
        >>> cluster_rows(df, on="n", method="jaro_winkler")["cluster_id"].tolist()
        [0, 0, 1]
    """
    labels = _cluster_labels(df, on, method, model, threshold, k_neighbours, device, batch_size, sep, fs_options)
    if cluster_column in df.columns:
        raise ValueError(f"df already has a column {cluster_column!r}; pass another cluster_column")
    out = df.copy()
    out[cluster_column] = labels
    return out


def dedup_rows(
    df: pd.DataFrame,
    on: str | Sequence[str],
    *,
    method: str = "auto",
    model: str | os.PathLike[str] | TextEncoder | None = None,
    threshold: float | None = None,
    k_neighbours: int = 10,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    sep: str = " ",
    fs_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Drop noisy duplicates: keep the first row of every cluster of :func:`cluster_rows`, and every singleton.

    Unlike LinkTransformer's ``dedup_rows``, rows that duplicate nothing are all kept.

    Returns:
        The kept rows of ``df`` (columns and index unchanged), in their original order; as many rows as clusters.

    Example:
        >>> df = pd.DataFrame({"n": ["Acme", "ACME", "Zeta", "Omega"]})
        >>> dedup_rows(df, on="n", method="jaro_winkler")["n"].tolist()
        ['Acme', 'Zeta', 'Omega']
    """
    labels = _cluster_labels(df, on, method, model, threshold, k_neighbours, device, batch_size, sep, fs_options)
    _, first = np.unique(labels, return_index=True)
    keep = np.sort(first)
    logger.info("dedup_rows: kept %d of %d rows", keep.size, len(df))
    return df.iloc[keep]


def aggregate_rows(
    left: pd.DataFrame,
    right: pd.DataFrame,
    on: str | Sequence[str] | None = None,
    *,
    right_key: str,
    left_on: str | Sequence[str] | None = None,
    right_on: str | Sequence[str] | None = None,
    key_column: str | None = None,
    method: str = "auto",
    model: str | os.PathLike[str] | TextEncoder | None = None,
    threshold: float | None = None,
    score_column: str = "score",
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    sep: str = " ",
    fs_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Map every fine ``left`` row to its best coarse ``right`` row's key (e.g. product -> industry code).

    Args:
        left: Fine-grained table.
        right: Coarse reference table, one row per category.
        on: Compared column(s); or ``left_on``/``right_on``.
        right_key: Column of ``right`` whose value is carried to ``left``.
        key_column: Name of the new column (default ``right_key``).
        threshold: Below it the key is missing (see :func:`merge`).
        Others: as :func:`merge`.

    Returns:
        A copy of ``left`` (same index) with ``key_column`` and ``score_column`` added.

    Example:
        >>> aggregate_rows(products, industries, left_on="product", right_on="industry", right_key="code",
        ...                model=minilm_dir)  # doctest: +SKIP
    """
    left, right = check_frame(left, "left"), check_frame(right, "right")
    if not isinstance(right_key, str) or right_key not in right.columns:
        raise ValueError(f"right_key must be a column of right, got {right_key!r}; right has {list(right.columns)}")
    key_column = right_key if key_column is None else key_column
    for name in (key_column, score_column):
        if name in left.columns:
            raise ValueError(f"left already has a column {name!r}; pass another key_column/score_column")
    i, j, s = _table_pairs(left, right, on, left_on, right_on, 1, method=method, model=model, threshold=threshold,
                           device=device, batch_size=batch_size, sep=sep, fs_options=fs_options)
    best, score = _best_per_left(len(left), i, j, s)
    keys = right[right_key].reset_index(drop=True).reindex(best)
    out = left.copy()
    out[key_column] = keys.to_numpy()
    out[score_column] = score
    return out
