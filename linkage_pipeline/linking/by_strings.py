"""String-baseline links between sources (Levenshtein, Jaro-Winkler, character n-grams), incremental."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from linkage_pipeline.linking.strings import topk_string_matches
from linkage_pipeline.linking.topk import (
    Search,
    hashes_by_source,
    incremental_topk,
    reusable_queries,
    text_hashes,
)
from linkage_pipeline.schema import (
    STRING_LINK_INPUTS,
    STRING_LINKS,
    empty_frame,
)


def string_links(
    queries: pd.DataFrame,
    targets: pd.DataFrame,
    *,
    methods: Sequence[str],
    ocr: str,
    k: int = 5,
    workers: int = -1,
) -> pd.DataFrame:
    """Top-k target crops for every query crop by each string method.

    Args:
        queries: rows with query_crop_id/crop_id, source and text.
        targets: rows with crop_id, source and text.
        methods: string methods (``strings.STRING_METHODS``).
        ocr: the OCR condition recorded in the ``ocr`` column (engine name or ``ground_truth``).
    """
    frames = []
    q_ids = queries["crop_id"].to_numpy()
    t_ids = targets["crop_id"].to_numpy()
    q_src = queries["source"].iloc[0] if len(queries) else ""
    t_src = targets["source"].iloc[0] if len(targets) else ""
    for method in methods:
        idx, scores = topk_string_matches(
            queries["text"].fillna("").tolist(), targets["text"].fillna("").tolist(), method=method, k=k, workers=workers
        )
        n_q, kk = idx.shape
        if kk == 0:
            continue
        frames.append(
            pd.DataFrame(
                {
                    "query_crop_id": np.repeat(q_ids, kk),
                    "target_crop_id": t_ids[idx.reshape(-1)],
                    "query_source": q_src,
                    "target_source": t_src,
                    "method": method,
                    "ocr": ocr,
                    "rank": np.tile(np.arange(1, kk + 1), n_q),
                    "score": scores.reshape(-1).astype(float),
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else empty_frame(STRING_LINKS)


def empty_linkages(sources: Iterable[str], linkages: Sequence[tuple[str, str]], *, what: str) -> list[str]:
    """One line for every linkage with no rows on its query or target side, naming the empty side(s).

    Such a linkage yields zero links (a source without a usable page, a list without a title): a result, not a
    failure, and these lines say so in the metadata.

    Args:
        sources: The ``source`` column of the rows to link (``stg_crop_texts``, ``crop_embeddings``, ...).
        linkages: (query source, target source) pairs.
        what: What a row is, for the message (``"OCR texts"``, ``"crop embeddings"``).

    Returns:
        ``"<query> -> <target>: no <what> in query source '<query>'"`` (or target, or both), in linkage order.
    """
    have = set(sources)
    lines = []
    for query, target in linkages:
        sides = [f"{role} source {name!r}" for role, name in (("query", query), ("target", target)) if name not in have]
        if sides:
            lines.append(f"{query} -> {target}: no {what} in {' or '.join(sides)}")
    return lines


def runnable_linkages(
    linkages: Sequence[tuple[str, str]], skipped: Mapping[str, str]
) -> tuple[list[tuple[str, str]], list[str]]:
    """The linkages whose two sources are both usable, and one line for each that is skipped.

    Args:
        linkages: (query source, target source) pairs.
        skipped: Why each unusable source is left out (e.g. its embeddings are missing or of another model).

    Raises:
        ValueError: If linkages exist and every one of them is skipped (nothing could be linked).
    """
    run, lines = [], []
    for query, target in linkages:
        why = [f"{name}: {skipped[name]}" for name in (query, target) if name in skipped]
        if why:
            lines.append(f"{query} -> {target} skipped ({'; '.join(why)})")
        else:
            run.append((query, target))
    if linkages and not run:
        raise ValueError("no linkage can run: " + "; ".join(lines))
    return run, lines


def link_sources_by_strings(
    crop_texts: pd.DataFrame,
    linkages: Sequence[tuple[str, str]],
    *,
    methods: Sequence[str],
    k: int = 5,
    workers: int = -1,
) -> pd.DataFrame:
    """String links for every (query source, target source) linkage and every text condition both sides have.

    Args:
        crop_texts: rows of ``stg_crop_texts`` (crop_id, source, ocr, text).
        linkages: (query source, target source) pairs.
    """
    frames = []
    for query_source, target_source in linkages:
        q_all = crop_texts[crop_texts["source"] == query_source]
        t_all = crop_texts[crop_texts["source"] == target_source]
        for condition in sorted(set(q_all["ocr"]) & set(t_all["ocr"])):
            q = q_all[q_all["ocr"] == condition].sort_values("crop_id")
            t = t_all[t_all["ocr"] == condition].sort_values("crop_id")
            frames.append(string_links(q, t, methods=methods, ocr=condition, k=k, workers=workers))
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else empty_frame(STRING_LINKS)


def _text_search(queries: pd.DataFrame, targets: pd.DataFrame, method: str, ocr: str, workers: int) -> Search:
    """The :data:`topk.Search` of one string method over rows of one OCR condition (ids are their crop ids)."""

    def search(query_ids: list[str], target_ids: list[str] | None, k: int) -> pd.DataFrame:
        q = queries[queries["crop_id"].isin(set(query_ids))]
        t = targets if target_ids is None else targets[targets["crop_id"].isin(set(target_ids))]
        return string_links(q, t, methods=[method], ocr=ocr, k=k, workers=workers)

    return search


def relink_sources_by_strings(
    crop_texts: pd.DataFrame,
    linkages: Sequence[tuple[str, str]],
    *,
    methods: Sequence[str],
    k: int = 5,
    workers: int = -1,
    previous: pd.DataFrame | None = None,
    previous_inputs: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """:func:`link_sources_by_strings`, recomputing only what new or changed texts can change.

    For each linkage, text condition and method, when ``previous`` holds its top-k lists and ``previous_inputs``
    the texts they were computed from: a query whose text is unchanged is compared with the targets added since
    only, and its list merged with the new hits; a new or changed query is compared with every target; a query
    that is gone is dropped. When a target was removed or its text changed, every query is compared again. Scores
    depend on the two texts alone, so the result equals a full :func:`link_sources_by_strings`.

    Args:
        crop_texts: rows of ``stg_crop_texts`` (crop_id, source, ocr, text).
        linkages: (query source, target source) pairs.
        methods: string methods (``strings.STRING_METHODS``).
        previous: earlier ``string_links`` rows.
        previous_inputs: earlier :data:`STRING_LINK_INPUTS` rows.

    Returns:
        ``string_links`` rows, the :data:`STRING_LINK_INPUTS` rows for the next call, and counts
        ``{"queries_searched", "queries_checked", "queries_changed", "queries_kept"}`` per method: compared with
        every target, with the new targets only, whose top-k list changed by that, and reused untouched
        (:func:`topk.incremental_topk`).
    """
    stats = {"queries_searched": 0, "queries_checked": 0, "queries_changed": 0, "queries_kept": 0}
    texts = crop_texts.assign(text_hash=text_hashes(crop_texts["text"]))
    before, now = hashes_by_source(previous_inputs), hashes_by_source(texts)
    prev = previous if previous is not None and not previous.empty else None
    frames, used = [], set()
    for query_source, target_source in linkages:
        q_all = texts[texts["source"] == query_source]
        t_all = texts[texts["source"] == target_source]
        for condition in sorted(set(q_all["ocr"]) & set(t_all["ocr"])):
            used |= {(query_source, condition), (target_source, condition)}
            q = q_all[q_all["ocr"] == condition].sort_values("crop_id")
            t = t_all[t_all["ocr"] == condition].sort_values("crop_id")
            t_before = before.get((target_source, condition))
            reusable = reusable_queries(before, now, (query_source, condition), (target_source, condition))
            old = None
            if prev is not None and reusable is not None:
                old = prev[(prev["query_source"] == query_source) & (prev["target_source"] == target_source)
                           & (prev["ocr"] == condition) & prev["query_crop_id"].isin(reusable)]
            for method in methods:
                out, counts = incremental_topk(
                    q["crop_id"].tolist(), t["crop_id"].tolist(), _text_search(q, t, method, condition, workers), k,
                    previous=old[old["method"] == method] if old is not None else None,
                    previous_targets=list(t_before) if old is not None else None,
                )
                stats = {key: stats[key] + counts[key] for key in stats}
                if len(out):
                    frames.append(out.assign(query_source=query_source, target_source=target_source, method=method,
                                             ocr=condition))
    links = pd.concat(frames, ignore_index=True)[list(STRING_LINKS)] if frames else empty_frame(STRING_LINKS)
    # a bool array, not a list: an empty list would select no columns instead of no rows
    keep = np.array([(src, cond) in used for src, cond in zip(texts["source"], texts["ocr"])], dtype=bool)
    inputs = texts[keep][list(STRING_LINK_INPUTS)].reset_index(drop=True)
    return links, inputs, stats
