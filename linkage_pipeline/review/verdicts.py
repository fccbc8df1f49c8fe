"""Verdicts of the link review: which one is in force per query crop, how they override record links, and how
they become labels for the tuning of the threshold, the pooling weight and the method.

``link_reviews`` is append-only (:data:`~linkage_pipeline.schema.LINK_REVIEWS`): an ``undo`` row takes back an
earlier row, and the latest remaining row of a query crop is in force. Only ``accept``, ``pick`` and ``none`` are
decisions; ``skip`` means "not now" and decides nothing.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import re
import uuid

import numpy as np
import pandas as pd

from linkage_pipeline.schema import LINK_REVIEWS, RECORD_LINKS, require_columns

logger = logging.getLogger(__name__)

#: Every verdict a review row can carry.
VERDICTS = ("accept", "pick", "none", "skip", "undo")
#: The verdicts that decide a link.
DECISIONS = ("accept", "pick", "none")
#: Longest reviewer name kept.
MAX_REVIEWER = 80
_CROP_ID = re.compile(r"^[0-9a-f]{8,64}$")
#: Share of the reviews a fine-tune learns from (the "fit" half); the others ("check") stay labels for choosing
#: the pooling weight and threshold of the fine-tuned model, which would otherwise be chosen on its own training
#: pairs (and favour whatever memorised them).
FIT_SHARE = 0.5


def check_crop_id(value: object, what: str) -> str:
    """``value`` when it is a crop id (lower-case hex, as :func:`documents.crops` makes them), else ValueError."""
    if not isinstance(value, str) or not _CROP_ID.match(value):
        raise ValueError(f"{what} must be a crop id (8-64 lower-case hex digits), got {str(value)[:80]!r}")
    return value


def review_row(
    *,
    query_crop_id: str,
    verdict: str,
    reviewer: str,
    query_source: str = "",
    target_crop_id: str | None = None,
    target_source: str | None = None,
    score: float = float("nan"),
    top_score: float = float("nan"),
    model_target_crop_id: str | None = None,
    method: str = "",
    ocr: str = "",
    model_id: str = "",
    undoes: str = "",
    now: _dt.datetime | None = None,
) -> pd.DataFrame:
    """One ``link_reviews`` row, checked: a known verdict, crop ids that are crop ids, a target exactly for
    ``accept`` and ``pick``, the undone review for ``undo``, and a reviewer name (trimmed to
    :data:`MAX_REVIEWER` characters).

    Raises:
        ValueError: Naming the field that is wrong and what was expected.
    """
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    check_crop_id(query_crop_id, "query_crop_id")
    if verdict in ("accept", "pick"):
        check_crop_id(target_crop_id, f"target_crop_id of a {verdict!r} verdict")
    elif target_crop_id:
        raise ValueError(f"a {verdict!r} verdict names no target crop, got target_crop_id {target_crop_id!r}")
    if verdict == "undo" and not undoes:
        raise ValueError("an 'undo' verdict must name the review_id it takes back (undoes)")
    name = " ".join(str(reviewer or "").split())[:MAX_REVIEWER]
    if not name:
        raise ValueError("reviewer must be a non-empty name")
    when = (now or _dt.datetime.now(_dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    row = {
        "review_id": uuid.uuid4().hex, "query_crop_id": query_crop_id, "query_source": query_source,
        "target_crop_id": target_crop_id if verdict in ("accept", "pick") else None,
        "target_source": target_source if verdict in ("accept", "pick") else None, "verdict": verdict,
        "reviewer": name, "reviewed_at": when, "score": float(score), "top_score": float(top_score),
        "model_target_crop_id": model_target_crop_id, "method": method, "ocr": ocr, "model_id": model_id,
        "undoes": undoes,
    }
    return pd.DataFrame([row], columns=list(LINK_REVIEWS))


def _standing(link_reviews: pd.DataFrame) -> pd.DataFrame:
    """The rows that are neither an undo nor taken back by one."""
    undone = set(link_reviews.loc[link_reviews["verdict"] == "undo", "undoes"])
    return link_reviews[(link_reviews["verdict"] != "undo") & ~link_reviews["review_id"].isin(undone)]


def in_force(link_reviews: pd.DataFrame | None, *, decisions_only: bool = True) -> pd.DataFrame:
    """The review in force for each query crop: its latest row not taken back by an ``undo``.

    Args:
        link_reviews: ``link_reviews`` rows (any order), or ``None`` when the table does not exist.
        decisions_only: Drop queries whose row in force is a ``skip``.

    Returns:
        One row per query crop (:data:`LINK_REVIEWS` columns), ordered by ``reviewed_at``.
    """
    if link_reviews is None or link_reviews.empty:
        return pd.DataFrame(columns=list(LINK_REVIEWS))
    require_columns(link_reviews, LINK_REVIEWS, "link_reviews")
    rows = _standing(link_reviews).sort_values(["reviewed_at", "review_id"], kind="stable").drop_duplicates("query_crop_id", keep="last")
    if decisions_only:
        rows = rows[rows["verdict"].isin(DECISIONS)]
    return rows.reset_index(drop=True)


def last_undoable(link_reviews: pd.DataFrame | None, reviewer: str) -> pd.Series | None:
    """The latest row of ``reviewer`` that is in force and not an undo (what the undo key takes back), or None."""
    if link_reviews is None or link_reviews.empty:
        return None
    rows = _standing(link_reviews)
    rows = rows[rows["reviewer"] == reviewer]
    if rows.empty:
        return None
    return rows.sort_values(["reviewed_at", "review_id"], kind="stable").iloc[-1]


def apply_reviews(
    links: pd.DataFrame, reviews: pd.DataFrame, candidates: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Record links with the verdicts in force put in place of the model's choice.

    A query with an ``accept`` or ``pick`` gets one matched row to the chosen target (its score and rank among
    the candidates of the links' method and OCR condition when it is one of them, else NaN and rank 0); a
    ``none`` one unmatched row (its best candidate, as every no-match row). Both are marked ``reviewed``. A
    verdict on a query crop that is not among the links' queries (its crop changed, or its source is no longer
    linked) changes nothing and is counted.

    Args:
        links: ``record_links`` rows (:data:`RECORD_LINKS` columns; ``reviewed`` may be missing).
        reviews: Reviews in force (:func:`in_force`).
        candidates: ``string_links``-shaped candidate rows of the links' method and OCR condition.

    Returns:
        The links (:data:`RECORD_LINKS` columns, ``reviewed`` set) and counts: applied, accepted, corrected
        (the verdict differs from the model's link), not_applied.
    """
    links = links.assign(reviewed=False) if "reviewed" not in links.columns else links.copy()
    stats = {"reviews_applied": 0, "reviews_accepted": 0, "reviews_corrected": 0, "reviews_not_applied": 0}
    if reviews.empty or links.empty:
        stats["reviews_not_applied"] = len(reviews) if not reviews.empty else 0
        return links[list(RECORD_LINKS)], stats
    by_query = {q: g for q, g in links.groupby("query_crop_id", sort=False)}
    cand = candidates.sort_values(["query_crop_id", "rank"]) if not candidates.empty else candidates
    cand_of = {q: g for q, g in cand.groupby("query_crop_id", sort=False)} if not cand.empty else {}
    replaced, new_rows = set(), []
    for review in reviews.itertuples(index=False):
        q = review.query_crop_id
        if q not in by_query:
            stats["reviews_not_applied"] += 1
            continue
        old = by_query[q]
        base = old.iloc[0].to_dict()
        model_targets = set(old.loc[old["matched"].fillna(False).astype(bool), "target_crop_id"])
        options = cand_of.get(q)
        if review.verdict == "none":
            row = {**base, "matched": False, "reviewed": True}
            if options is not None and len(options):
                top = options.iloc[0]
                row.update(target_crop_id=top["target_crop_id"], target_source=top["target_source"],
                           rank=int(top["rank"]), score=float(top["score"]))
            corrected = bool(model_targets)
        else:
            hit = options[options["target_crop_id"] == review.target_crop_id] if options is not None else None
            found = hit is not None and len(hit) > 0
            row = {**base, "target_crop_id": review.target_crop_id,
                   "target_source": review.target_source or base["target_source"], "matched": True, "reviewed": True,
                   "rank": int(hit["rank"].iloc[0]) if found else 0,
                   "score": float(hit["score"].iloc[0]) if found else float("nan")}
            corrected = model_targets != {review.target_crop_id}
        replaced.add(q)
        new_rows.append(row)
        stats["reviews_applied"] += 1
        stats["reviews_corrected" if corrected else "reviews_accepted"] += 1
    kept = links[~links["query_crop_id"].isin(replaced)]
    out = pd.concat([kept, pd.DataFrame(new_rows, columns=links.columns)], ignore_index=True)
    out["reviewed"] = out["reviewed"].fillna(False).astype(bool)
    out = out.sort_values(["query_crop_id", "rank"]).reset_index(drop=True)
    return out[list(RECORD_LINKS)], stats


def review_labels(regions: pd.DataFrame, reviews: pd.DataFrame, *, split: str = "val",
                  reviews_only: bool = False) -> pd.DataFrame:
    """``stg_regions`` with the verdicts in force as labels, for tuning and scoring.

    A reviewed query's ``true_entity_id`` becomes that of its chosen target (the target's own label when it has
    one, else ``review:<target crop id>``, given to the target too), or for ``none`` an entity found in no target
    (``review-none:<query crop id>``): the right answer is "no match". Its ``split`` column is set to ``split``,
    which the evaluation reads before the hash of the entity id, so reviews count as validation labels
    (``split="val"``) or form their own split (``"reviewed"``).

    Args:
        regions: ``stg_regions`` rows (crop_id, source_role, true_entity_id).
        reviews: Reviews in force (:func:`in_force`).
        split: The split reviewed queries are put in.
        reviews_only: Clear every other query's label first (the reviewed-only evaluation row).

    Returns:
        A copy of ``regions`` with ``true_entity_id`` changed as above and a ``split`` column (None elsewhere).
    """
    require_columns(regions, ["crop_id", "source_role", "true_entity_id"], "regions")
    out = regions.copy()
    out["true_entity_id"] = out["true_entity_id"].astype(object)
    if "split" not in out.columns:
        out["split"] = None
    is_query = out["source_role"] == "query"
    if reviews_only:
        out.loc[is_query, "true_entity_id"] = None
    if reviews.empty:
        return out
    target_rows = out[~is_query & out["crop_id"].notna()]
    target_entity = {c: e for c, e in zip(target_rows["crop_id"], target_rows["true_entity_id"], strict=True)
                     if isinstance(e, str) and e}
    for review in reviews.itertuples(index=False):
        rows = is_query & (out["crop_id"] == review.query_crop_id)
        if not rows.any():
            continue
        if review.verdict == "none":
            entity = f"review-none:{review.query_crop_id}"
        else:
            entity = target_entity.get(review.target_crop_id) or f"review:{review.target_crop_id}"
            target = ~is_query & (out["crop_id"] == review.target_crop_id)
            out.loc[target & out["true_entity_id"].isna(), "true_entity_id"] = entity
            target_entity.setdefault(review.target_crop_id, entity)
        out.loc[rows, "true_entity_id"] = entity
        out.loc[rows, "split"] = split
    return out


def review_half(query_crop_ids: pd.Series | list[str]) -> np.ndarray:
    """``fit`` or ``check`` per query crop: a stable hash of the crop id, :data:`FIT_SHARE` of them ``fit``.

    The same crop is always in the same half, whatever else was reviewed, so a later fine-tune never learns from
    a review an earlier choice of the weight was made on, and the other way round.
    """
    def fraction(crop: str) -> float:
        return int.from_bytes(hashlib.sha256(f"review-half:{crop}".encode()).digest()[:8], "big") / 2**64

    return np.asarray(["fit" if fraction(str(c)) < FIT_SHARE else "check" for c in query_crop_ids], dtype=object)


def reviews_for_fitting(reviews: pd.DataFrame) -> pd.DataFrame:
    """The reviews a fine-tune learns from (the ``fit`` half of :func:`review_half`)."""
    return reviews[review_half(reviews["query_crop_id"]) == "fit"] if len(reviews) else reviews


def reviews_for_tuning(reviews: pd.DataFrame, *, fine_tuned: bool) -> pd.DataFrame:
    """The reviews that may choose the pooling weight, the threshold and the method, and score the model.

    All of them for a model that never learnt from reviews; for one fine-tuned on reviews only the ``check``
    half, which it never saw.
    """
    if not fine_tuned or reviews.empty:
        return reviews
    return reviews[review_half(reviews["query_crop_id"]) == "check"]


def tuning_labels(regions: pd.DataFrame, reviews: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The labels the pooling weight, threshold and method are chosen on, and how many reviews are among them.

    A corpus with labelled validation firms keeps them alone: they are a random sample of its firms, the reviews
    the hardest links first, and tuning on those would trade accuracy on the many for the few (and the accuracy
    history of ``record_links`` compares runs on the labelled firms). A corpus without any (a user's own scans)
    is tuned on its reviews (:func:`review_labels`, split ``val``).
    """
    from linkage_pipeline.evaluation.report import _truth_frames

    if reviews.empty:
        return regions, 0
    queries, _, _ = _truth_frames(regions)
    if ((queries["split"] == "val") & queries["entity_id"].notna()).any():
        return regions, 0
    return review_labels(regions, reviews, split="val"), len(reviews)


def review_progress(link_reviews: pd.DataFrame | None) -> dict[str, int]:
    """Counts for the page's progress line: reviewed (decisions in force), corrections (decisions that differ
    from the link the model had), skipped, and by verdict."""
    force = in_force(link_reviews, decisions_only=False)
    decided = force[force["verdict"].isin(DECISIONS)]
    model = decided["model_target_crop_id"].astype(object)
    chosen = decided["target_crop_id"].astype(object)
    same = np.where(decided["verdict"] == "none", model.isna() | (model == ""), chosen.to_numpy() == model.to_numpy())
    return {
        "reviewed": len(decided),
        "corrections": int((~np.asarray(same, dtype=bool)).sum()),
        "skipped": int((force["verdict"] == "skip").sum()),
        **{v: int((decided["verdict"] == v).sum()) for v in DECISIONS},
    }
