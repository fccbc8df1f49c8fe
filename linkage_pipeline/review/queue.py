"""The review queue: which links a human should look at first, each with its candidates.

A link is worth a look when the model was unsure: a small margin between its first and second candidate, a top
score close to the no-match threshold, two best candidates with near-identical names (明治製菓 / 明治製藥: the
model must tell them apart by a stroke), or no link at all. Each query gets

    uncertainty = min(margin, |top score - threshold|), halved when the two best names are near-identical,

and the queue is sorted by it, smallest first. The rule orders; it decides nothing, so it has no constant tuned
on any corpus (the near-identical cut-off is a reading of "differs by a character or two" on names of 4-12
characters).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from rapidfuzz.distance import Levenshtein

from linkage_pipeline.linking.strings import normalize
from linkage_pipeline.schema import require_columns

logger = logging.getLogger(__name__)

#: Normalised Levenshtein similarity at or above which two different names count as near-identical.
NEAR_IDENTICAL = 0.75
#: Queue columns, one row per query crop.
QUEUE_COLUMNS = [
    "query_crop_id", "query_source", "matched", "model_target_crop_id", "top_score", "second_score", "margin",
    "to_threshold", "near_identical", "uncertainty", "reasons",
]


def review_queue(
    links: pd.DataFrame,
    candidates: pd.DataFrame,
    texts: pd.DataFrame,
    *,
    threshold: float,
    exclude: set[str] | frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """Every query of ``links`` not in ``exclude``, most worth a look first.

    Args:
        links: ``record_links`` rows (query_crop_id, query_source, target_crop_id, matched).
        candidates: ``string_links``-shaped rows of the links' method and OCR condition (top-k per query).
        texts: crop_id -> text of that OCR condition (columns crop_id, text).
        threshold: The links' no-match threshold (NaN: the threshold term is left out).
        exclude: Query crops already reviewed (or skipped).

    Returns:
        :data:`QUEUE_COLUMNS` rows sorted by uncertainty, then query crop id (a stable order).
    """
    require_columns(links, ["query_crop_id", "query_source", "target_crop_id", "matched"], "links")
    require_columns(candidates, ["query_crop_id", "target_crop_id", "rank", "score"], "candidates")
    if links.empty:
        return pd.DataFrame(columns=QUEUE_COLUMNS)
    text_of = dict(zip(texts["crop_id"], texts["text"].fillna(""), strict=True))
    matched = links[links["matched"].fillna(False).astype(bool)]
    model_target = matched.sort_values("rank").drop_duplicates("query_crop_id").set_index("query_crop_id")
    queries = links.drop_duplicates("query_crop_id")[["query_crop_id", "query_source"]]
    queries = queries[~queries["query_crop_id"].isin(exclude)]
    cand = candidates[candidates["query_crop_id"].isin(set(queries["query_crop_id"]))]
    cand = cand.sort_values(["query_crop_id", "rank"]).drop_duplicates(["query_crop_id", "target_crop_id"])
    rows = []
    for q, g in cand.groupby("query_crop_id", sort=False):
        scores = g["score"].to_numpy(dtype=float)
        top, second = scores[0], scores[1] if len(scores) > 1 else float("nan")
        margin = top - second if len(scores) > 1 else float("inf")
        names = [normalize(text_of.get(t, "")) for t in g["target_crop_id"].iloc[:2]]
        near = len(names) == 2 and names[0] != names[1] and min(map(len, names)) > 0 \
            and Levenshtein.normalized_similarity(names[0], names[1]) >= NEAR_IDENTICAL
        to_threshold = abs(top - threshold) if np.isfinite(threshold) else float("inf")
        uncertainty = min(margin, to_threshold) * (0.5 if near else 1.0)
        is_matched = q in model_target.index
        reasons = []
        if margin <= to_threshold and np.isfinite(margin):
            reasons.append(f"margin {margin:.3f} to the second candidate")
        if np.isfinite(to_threshold) and to_threshold < margin:
            reasons.append(f"score {top:.3f} is {to_threshold:.3f} from the threshold {threshold:.3f}")
        if near:
            reasons.append("the two best candidates have near-identical names")
        if not is_matched:
            reasons.append("no match: below the threshold")
        rows.append({
            "query_crop_id": q, "matched": is_matched,
            "model_target_crop_id": model_target.loc[q, "target_crop_id"] if is_matched else None,
            "top_score": top, "second_score": second, "margin": margin, "to_threshold": to_threshold,
            "near_identical": near, "uncertainty": uncertainty, "reasons": "; ".join(reasons),
        })
    scored = pd.DataFrame(rows, columns=[c for c in QUEUE_COLUMNS if c != "query_source"])
    out = queries.merge(scored, on="query_crop_id", how="inner")
    return out.sort_values(["uncertainty", "query_crop_id"], kind="stable").reset_index(drop=True)[QUEUE_COLUMNS]
