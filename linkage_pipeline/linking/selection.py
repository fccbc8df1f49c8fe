"""Record links: the method, text condition and no-match threshold chosen, then one row per accepted link."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from linkage_pipeline.evaluation.quality import CheckOutcome, accuracy_drop
from linkage_pipeline.evaluation.report import linkage_evaluation_table
from linkage_pipeline.review import verdicts as review_verdicts
from linkage_pipeline.schema import (
    LINK_REVIEWS,
    RECORD_LINK_RUNS,
    RECORD_LINKS,
    STRING_LINKS,
    empty_frame,
)

_MODEL_METHODS = ("vision", "language", "multimodal", "hybrid")


def select_record_links(
    links: pd.DataFrame,
    regions: pd.DataFrame,
    *,
    method: str = "auto",
    ocr: str = "auto",
    threshold: float | None = None,
    margin: float = 0.0,
    default_threshold: float = 0.0,
    default_method: str = "jaro_winkler",
    default_ocr: str | None = None,
    model_id: str = "",
    reviews: pd.DataFrame | None = None,
    tuning_reviews: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, dict[str, object]]:
    """Chooses one method/condition and turns its candidates into accepted links.

    ``auto`` picks the method/condition with the best validation-split accuracy (including no-match) when labels
    exist; the ground-truth text condition is never picked. A query is linked to its top-1 target when the score
    reaches the threshold (tuned on the validation split unless given), and also to further candidates within
    ``margin`` of the top-1 score (one firm listed more than once). A query with no accepted link gets one row
    with ``matched = False`` and its best candidate, so every query is accounted for. Without labels the
    ``default_method`` on ``default_ocr`` (else the last OCR condition name) is used with ``default_threshold``
    (for the model's methods, the threshold stored with the model).

    Args:
        links: Candidate ``string_links`` rows (string and model methods), top-k per query.
        regions: ``stg_regions`` rows (truth and split of each query).
        method: A method name, or ``auto``.
        ocr: An OCR condition (engine name), or ``auto`` (chosen with the method).
        threshold: The no-match threshold; ``None``: tuned on the validation split, else ``default_threshold``.
        margin: Further targets within this score of the best are also accepted.
        reviews: Verdicts in force (:func:`~linkage_pipeline.review.verdicts.in_force`). They decide their
            queries' links (``reviewed = True``), and on a corpus without labelled validation firms they are the
            labels the method, condition and threshold are chosen on
            (:func:`~linkage_pipeline.review.verdicts.tuning_labels`). The validation scores of the choice (what the accuracy history compares) are
            computed on the labelled validation firms alone, so a run with new reviews compares like with like.
        tuning_reviews: The reviews that count as labels, when not all of them may
            (:func:`~linkage_pipeline.review.verdicts.reviews_for_tuning`: a model fine-tuned on reviews is tuned
            on the half it never learnt from); ``None``: ``reviews``.

    Returns:
        ``record_links`` rows and a dict describing the choice (method, condition, threshold, how chosen,
        validation scores, and the review counts of :func:`~linkage_pipeline.review.verdicts.apply_reviews`). No candidate links (every linkage has an empty side) give no rows and a choice whose
        ``chosen_by`` says so, with NaN threshold and scores.
    """
    if links.empty:
        nan = float("nan")
        return empty_frame(RECORD_LINKS), {
            "method": method, "ocr": ocr, "threshold": nan if threshold is None else float(threshold),
            "chosen_by": "no candidate links", "threshold_from": "no candidate links",
            "val_top1": nan, "val_top1_with_nomatch": nan,
        }
    reviews = reviews if reviews is not None else pd.DataFrame(columns=list(LINK_REVIEWS))
    as_labels = reviews if tuning_reviews is None else tuning_reviews
    usable = links[links["ocr"] != "ground_truth"]
    labels, n_reviews = review_verdicts.tuning_labels(regions, as_labels)
    evaluated = linkage_evaluation_table(usable, labels, report_splits=("val",))
    labelled_only = linkage_evaluation_table(usable, regions, report_splits=("val",)) if n_reviews else evaluated
    val = evaluated.dropna(subset=["top1_accuracy_with_nomatch"])
    chosen_by = "configuration"
    if method == "auto" or ocr == "auto":
        cands = val
        if method != "auto":
            cands = cands[cands["method"] == method]
        if ocr != "auto":
            cands = cands[cands["ocr"] == ocr]
        if not cands.empty:
            # Ranked on the validation split only, never on test firms: accuracy with the no-match queries, then
            # top-1 alone (the better ranking where a threshold leaves two level). The hybrid links win only where
            # they are strictly better: with a string weight of 0 they are the multimodal links under another name.
            ranked = cands.assign(_hybrid=cands["method"] == "hybrid")
            best = ranked.sort_values(["top1_accuracy_with_nomatch", "top1_accuracy", "_hybrid", "method", "ocr"],
                                      ascending=[False, False, True, True, True]).iloc[0]
            method, ocr = str(best["method"]), str(best["ocr"])
            chosen_by = "best validation accuracy"
        else:
            method = default_method if method == "auto" else method
            if ocr == "auto":
                conditions = sorted(set(usable["ocr"]))
                ocr = default_ocr if default_ocr in conditions else conditions[-1]
            chosen_by = "default (no labels)"
    chosen = usable[(usable["method"] == method) & (usable["ocr"] == ocr)]
    if chosen.empty:
        raise ValueError(
            f"no string links for method {method!r} and OCR condition {ocr!r}; available: "
            f"{sorted(set(zip(usable['method'], usable['ocr'], strict=True)))}"
        )
    if threshold is None:
        row = evaluated[(evaluated["method"] == method) & (evaluated["ocr"] == ocr)]
        t = row["nomatch_threshold"].dropna()
        threshold = float(t.iloc[0]) if len(t) else default_threshold
        chosen_by_threshold = "tuned on the validation split" if len(t) else "default (no validation labels)"
        if len(t) and n_reviews:
            chosen_by_threshold = f"tuned on {n_reviews} review{'s' if n_reviews != 1 else ''}"
    else:
        chosen_by_threshold = "configuration"
    chosen = chosen.sort_values(["query_crop_id", "rank"])
    best_score = chosen.groupby("query_crop_id")["score"].transform("max")
    accept = (chosen["score"] >= threshold) & (chosen["score"] >= best_score - margin)
    accepted = chosen[accept]
    unmatched_ids = set(chosen["query_crop_id"]) - set(accepted["query_crop_id"])
    unmatched = chosen[chosen["query_crop_id"].isin(unmatched_ids) & (chosen["rank"] == 1)]
    out = pd.concat([accepted.assign(matched=True), unmatched.assign(matched=False)], ignore_index=True)
    out = out.assign(threshold=threshold, model_id=model_id if method in _MODEL_METHODS else "", run_id="",
                     reviewed=False)
    out = out.sort_values(["query_crop_id", "rank"]).reset_index(drop=True)
    out, review_stats = review_verdicts.apply_reviews(out, reviews, chosen)
    out = out.assign(threshold=threshold, model_id=model_id if method in _MODEL_METHODS else "", run_id="")
    return out[list(RECORD_LINKS)], {
        "method": method,
        "ocr": ocr,
        "threshold": threshold,
        "chosen_by": chosen_by + (f" (on {n_reviews} reviews)" if n_reviews and chosen_by.startswith("best")
                                  else ""),
        "threshold_from": chosen_by_threshold,
        **_validation_scores(labelled_only, method, ocr),
        **review_stats,
    }


def _validation_scores(evaluated: pd.DataFrame, method: str, ocr: str) -> dict[str, float]:
    """Validation top-1 (and with no-match) of the chosen method and OCR condition; NaN without labels."""
    row = evaluated[(evaluated["method"] == method) & (evaluated["ocr"] == ocr)] if len(evaluated) else evaluated
    if len(row) == 0:
        return {"val_top1": float("nan"), "val_top1_with_nomatch": float("nan")}
    return {
        "val_top1": float(row["top1_accuracy"].iloc[0]),
        "val_top1_with_nomatch": float(row["top1_accuracy_with_nomatch"].iloc[0]),
    }


@dataclass(frozen=True)
class RecordLinkDefaults:
    """What :func:`select_record_links` uses without validation labels (and the model id recorded with links)."""

    method: str = "jaro_winkler"
    ocr: str | None = None
    threshold: float = 0.0
    model_id: str = ""


def record_link_candidates(
    string_links: pd.DataFrame,
    embedding_links: pd.DataFrame | None,
    model: pd.Series | None,
    document_sources: pd.DataFrame | None,
) -> tuple[pd.DataFrame, RecordLinkDefaults]:
    """The candidate links record links are chosen from, and the defaults used without labels.

    The candidates are the string links plus the supervised ``embedding_links`` of the linkage model (rows of
    another model are stale and left out). With such rows the default is the model's ``multimodal`` method on the
    first query source's primary OCR engine, at the no-match threshold stored with the model (0 when it has none);
    else ``jaro_winkler`` on the last OCR condition, at threshold 0.

    Args:
        string_links: ``string_links`` rows.
        embedding_links: ``embedding_links`` rows, or ``None`` when the table does not exist.
        model: The ``linkage_model`` row (model_id, nomatch_threshold); needed with ``embedding_links``.
        document_sources: ``document_sources`` rows (name, role, primary_ocr); needed with ``embedding_links``.

    Returns:
        Candidate rows (:data:`STRING_LINKS` columns, index 0..n-1) and the :class:`RecordLinkDefaults`.
    """
    candidates, defaults = [string_links], RecordLinkDefaults()
    if embedding_links is not None:
        if model is None or document_sources is None:
            raise ValueError("embedding_links need the linkage_model row and document_sources; got None")
        emb = embedding_links[(embedding_links["training"] == "supervised")
                              & (embedding_links["model_id"] == model["model_id"])]
        if not emb.empty:
            candidates.append(emb[list(STRING_LINKS)])
            queries = document_sources[document_sources["role"] == "query"]["primary_ocr"].tolist()
            card_threshold = float(model["nomatch_threshold"])
            defaults = RecordLinkDefaults(
                method="multimodal", ocr=queries[0] if queries else None, model_id=str(model["model_id"]),
                threshold=card_threshold if not math.isnan(card_threshold) else 0.0,
            )
    return pd.concat(candidates, ignore_index=True), defaults


def record_link_run(
    history: pd.DataFrame | None,
    choice: dict[str, object],
    *,
    run_id: str,
    model_id: str,
    recorded_at: str,
    max_accuracy_drop: float = 0.02,
) -> tuple[pd.DataFrame, CheckOutcome]:
    """``record_link_runs`` with this run appended, and whether its validation accuracy dropped.

    The accuracy compared is the one the choice is made by, validation top-1 with the no-match queries (what the
    record links get right, declining to link included), against the last run whose check passed
    (:func:`quality.accuracy_drop`); top-1 without them can fall when the choice moves to another method of equal
    accuracy with them, which is no loss. The new row records the verdict, so a failed run is never the reference of
    a later one.

    Args:
        history: Earlier :data:`RECORD_LINK_RUNS` rows, or ``None`` when there are none.
        choice: The choice dict of :func:`select_record_links` (method, ocr, val_top1, val_top1_with_nomatch).
        run_id: The Dagster run id.
        model_id: The linkage model's id ("" when the links are string links only).
        recorded_at: UTC time stamp of the run (ISO 8601).
        max_accuracy_drop: Largest accepted drop of validation top-1 with no-match queries, in accuracy points.

    Returns:
        Every :data:`RECORD_LINK_RUNS` row (history first) and the check outcome.
    """
    accepted = history[history["passed"]] if history is not None else None
    previous = float(accepted["val_top1_with_nomatch"].iloc[-1]) if accepted is not None and len(accepted) else None
    drop = accuracy_drop(float(choice["val_top1_with_nomatch"]), previous, tolerance=max_accuracy_drop,
                         what="validation top-1 with no-match queries")
    row = pd.DataFrame([{
        "run_id": run_id, "model_id": model_id, "method": choice["method"], "ocr": choice["ocr"],
        "val_top1": float(choice["val_top1"]), "val_top1_with_nomatch": float(choice["val_top1_with_nomatch"]),
        "passed": drop.passed, "recorded_at": recorded_at,
    }], columns=list(RECORD_LINK_RUNS))
    return (pd.concat([history, row], ignore_index=True) if history is not None else row), drop


def record_links(
    string_links: pd.DataFrame,
    embedding_links: pd.DataFrame | None,
    model: pd.Series | None,
    document_sources: pd.DataFrame | None,
    regions: pd.DataFrame,
    history: pd.DataFrame | None,
    *,
    run_id: str,
    recorded_at: str,
    method: str = "auto",
    ocr: str = "auto",
    threshold: float | None = None,
    margin: float = 0.0,
    max_accuracy_drop: float = 0.02,
    reviews: pd.DataFrame | None = None,
    tuning_reviews: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, object], CheckOutcome]:
    """Record links of one run: candidates (:func:`record_link_candidates`), the choice
    (:func:`select_record_links`, with the verdicts in force of ``reviews``) and the run history with its accuracy
    check (:func:`record_link_run`).

    Returns:
        ``record_links`` rows (with ``run_id``), every ``record_link_runs`` row, the choice dict and the
        accuracy-drop check outcome.
    """
    candidates, defaults = record_link_candidates(string_links, embedding_links, model, document_sources)
    links, choice = select_record_links(
        candidates, regions, method=method, ocr=ocr, threshold=threshold, margin=margin,
        default_method=defaults.method, default_ocr=defaults.ocr, default_threshold=defaults.threshold,
        model_id=defaults.model_id, reviews=reviews, tuning_reviews=tuning_reviews,
    )
    links["run_id"] = run_id
    runs, drop = record_link_run(history, choice, run_id=run_id, model_id=defaults.model_id,
                                 recorded_at=recorded_at, max_accuracy_drop=max_accuracy_drop)
    return links, runs, choice, drop
