"""Top-k rows from score matrices, as frames, and the one incremental top-k shared by every linking method."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import numpy as np
import pandas as pd

from linkage_pipeline.documents.crops import content_id

#: ``{(source, ocr): {crop_id: text hash}}``: the texts a set of top-k lists was computed from.
TextHashes = dict[tuple[str, str], dict[str, str]]


def text_hashes(texts: pd.Series) -> list[str]:
    """:func:`~linkage_pipeline.documents.crops.content_id` of each text (a missing text hashes as ``""``)."""
    return [content_id(t.encode("utf-8")) for t in texts.fillna("").astype(str)]


def hashes_by_source(inputs: pd.DataFrame | None) -> TextHashes:
    """:data:`TextHashes` of link-input rows (source, ocr, crop_id, text_hash); ``{}`` for none."""
    if inputs is None or inputs.empty:
        return {}
    return {key: dict(zip(g["crop_id"], g["text_hash"], strict=True))
            for key, g in inputs.groupby(["source", "ocr"], sort=False)}


def reusable_queries(before: TextHashes, now: TextHashes, query: tuple[str, str], target: tuple[str, str]
                     ) -> set[str] | None:
    """The query crops whose earlier top-k lists against ``target`` (source, ocr) may be reused: those whose text is
    the one they were linked with. ``None`` when no list may be: nothing was recorded for the target side, or a
    target's text changed or it is gone (a changed target may now rank anywhere)."""
    t_before, t_now = before.get(target), now.get(target, {})
    if t_before is None or any(t_now.get(c) != h for c, h in t_before.items()):
        return None
    q_before = before.get(query, {})
    return {c for c, h in now.get(query, {}).items() if q_before.get(c) == h}


def topk_frame_arrays(
    scores: np.ndarray, ids: np.ndarray, query_ids: Sequence[str], target_ids: Sequence[str]
) -> dict[str, np.ndarray]:
    """Flatten a search result into columns query_id, target_id, rank (1-based), score (row-major)."""
    m, kk = ids.shape
    if len(query_ids) != m:
        raise ValueError(f"got {len(query_ids)} query ids for {m} result rows; expected one per row")
    t = np.asarray(target_ids, dtype=object)
    flat = ids.reshape(-1)
    valid = flat >= 0  # FAISS pads with -1 when fewer than k results exist (IVF with few probed lists)
    return {
        "query_id": np.repeat(np.asarray(query_ids, dtype=object), kk)[valid],
        "target_id": t[flat[valid]],
        "rank": np.tile(np.arange(1, kk + 1), m)[valid],
        "score": scores.reshape(-1)[valid].astype(np.float64),
    }


def topk_rows(found: pd.DataFrame, k: int) -> pd.DataFrame:
    """Best ``k`` rows per ``query_crop_id`` by ``score``, ties by ``target_crop_id`` (the order of a full search
    over targets sorted by id), ``rank`` renumbered from 1; a target listed twice for a query counts once (a run
    stopped between writing links and what they were computed from lists it again)."""
    found = found.sort_values(["query_crop_id", "score", "target_crop_id"], ascending=[True, False, True],
                              kind="stable")
    found = found.drop_duplicates(["query_crop_id", "target_crop_id"])
    found = found.groupby("query_crop_id", sort=False).head(k).copy()
    found["rank"] = found.groupby("query_crop_id", sort=False).cumcount() + 1
    return found


#: Columns of the rows a :data:`Search` callback returns and :func:`incremental_topk` merges.
TOPK_COLUMNS = ["query_crop_id", "target_crop_id", "score"]

#: ``search(query_ids, target_ids, k)``: the best ``k`` targets among ``target_ids`` (``None``: every target, so the
#: caller can use a prebuilt index) of each query, as rows with :data:`TOPK_COLUMNS`; ids in the order given.
Search = Callable[[list[str], "list[str] | None", int], pd.DataFrame]


def incremental_topk(
    query_ids: Sequence[str],
    target_ids: Sequence[str],
    search: Search,
    k: int,
    *,
    previous: pd.DataFrame | None = None,
    previous_targets: Collection[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Top-``k`` targets of every query, searching only what new queries or new targets can change.

    A query with an earlier full list (``min(k, len(previous_targets))`` rows in ``previous``) is searched against
    the targets added since only, and its list merged with the new hits; every other query is searched against
    every target. When a target of ``previous_targets`` is gone, or nothing was stored, every query is searched.
    Scores depend on a query and a target alone, so the result equals a full search: ordered by score, ties by
    target id (:func:`topk_rows`).

    Args:
        query_ids: The queries now, in the order ``search`` receives them.
        target_ids: The targets now, in the order ``search`` receives them (e.g. index order).
        search: Scores queries against targets (:data:`Search`).
        k: Targets kept per query.
        previous: Earlier rows (:data:`TOPK_COLUMNS`) that may be reused; the caller leaves out lists it knows are
            stale (a query whose text changed). Rows of queries not in ``query_ids`` are dropped.
        previous_targets: The targets ``previous`` was computed against; ``None``: nothing is reused.

    Returns:
        Rows ``query_crop_id, target_crop_id, score, rank`` (rank from 1) and counts ``{"queries_searched",
        "queries_checked", "queries_changed", "queries_kept"}``: queries searched against every target, against
        the new targets only, whose list changed by that, and reused untouched.

    Raises:
        ValueError: If ``k`` is not positive.
    """
    if k < 1:
        raise ValueError(f"k must be a positive number of targets per query, got {k}")
    stats = {"queries_searched": 0, "queries_checked": 0, "queries_changed": 0, "queries_kept": 0}
    old = None
    before = set(previous_targets) if previous_targets is not None else None
    if previous is not None and before is not None and before <= set(target_ids):
        old = previous[previous["query_crop_id"].isin(set(query_ids))]
        # a list shorter than k (k was raised since) is searched again
        old = old[old.groupby("query_crop_id")["target_crop_id"].transform("size") == min(k, len(before))]
    seen = set(old["query_crop_id"]) if old is not None else set()
    fresh = [q for q in query_ids if q not in seen]
    parts = []
    if fresh:
        parts.append(search(fresh, None, k)[TOPK_COLUMNS])
        stats["queries_searched"] += len(fresh)
    if seen:
        kept = topk_rows(old[TOPK_COLUMNS], k)
        added = [t for t in target_ids if t not in before]
        if added:
            checked = [q for q in query_ids if q in seen]
            merged = topk_rows(pd.concat([kept, search(checked, added, k)[TOPK_COLUMNS]], ignore_index=True), k)
            before_lists = kept.groupby("query_crop_id")["target_crop_id"].apply(tuple)
            after_lists = merged.groupby("query_crop_id")["target_crop_id"].apply(tuple)
            stats["queries_checked"] += len(checked)
            stats["queries_changed"] += int((before_lists.reindex(after_lists.index) != after_lists).sum())
            parts.append(merged[TOPK_COLUMNS])
        else:
            stats["queries_kept"] += len(seen)
            parts.append(kept)
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=[*TOPK_COLUMNS, "rank"]), stats
    return topk_rows(pd.concat(parts, ignore_index=True), k), stats
