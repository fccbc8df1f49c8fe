"""Record links: the method, text condition and no-match threshold chosen, then one row per accepted link."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pandas as pd

from linkage_pipeline.evaluation.report import linkage_evaluation_table
from linkage_pipeline.schema import RECORD_LINKS, empty_frame

if TYPE_CHECKING:  # training imports torch; this module must stay light
    pass

logger = logging.getLogger(__name__)


_MODEL_METHODS = ("vision", "language", "multimodal")


def select_record_links(
    links: pd.DataFrame,
    regions: pd.DataFrame,
    *,
    method: str = "auto",
    condition: str = "auto",
    threshold: float | None = None,
    margin: float = 0.0,
    default_threshold: float = 0.0,
    default_method: str = "jaro_winkler",
    default_condition: str | None = None,
    model_id: str = "",
) -> tuple[pd.DataFrame, dict[str, object]]:
    """Chooses one method/condition and turns its candidates into accepted links.

    ``auto`` picks the method/condition with the best validation-split accuracy (including no-match) when labels
    exist; the ground-truth text condition is never picked. A query is linked to its top-1 target when the score
    reaches the threshold (tuned on the validation split unless given), and also to further candidates within
    ``margin`` of the top-1 score (one firm listed more than once). A query with no accepted link gets one row
    with ``matched = False`` and its best candidate, so every query is accounted for. Without labels the
    ``default_method`` on ``default_condition`` (else the last condition name) is used with ``default_threshold``
    (for the model's methods, the threshold stored with the model).

    Returns:
        ``record_links`` rows and a dict describing the choice (method, condition, threshold, how chosen,
        validation scores). No candidate links (every linkage has an empty side) give no rows and a choice whose
        ``chosen_by`` says so, with NaN threshold and scores.
    """
    if links.empty:
        nan = float("nan")
        return empty_frame(RECORD_LINKS), {
            "method": method, "ocr": condition, "threshold": nan if threshold is None else float(threshold),
            "chosen_by": "no candidate links", "threshold_from": "no candidate links",
            "val_top1": nan, "val_top1_with_nomatch": nan,
        }
    usable = links[links["ocr"] != "ground_truth"]
    evaluated = linkage_evaluation_table(usable, regions, report_splits=("val",))
    val = evaluated.dropna(subset=["top1_accuracy_with_nomatch"])
    chosen_by = "configuration"
    if method == "auto" or condition == "auto":
        cands = val
        if method != "auto":
            cands = cands[cands["method"] == method]
        if condition != "auto":
            cands = cands[cands["ocr"] == condition]
        if not cands.empty:
            # Ranked on the validation split only, never on test firms.
            best = cands.sort_values(["top1_accuracy_with_nomatch", "method", "ocr"], ascending=[False, True, True]).iloc[0]
            method, condition = str(best["method"]), str(best["ocr"])
            chosen_by = "best validation accuracy"
        else:
            method = default_method if method == "auto" else method
            if condition == "auto":
                conditions = sorted(set(usable["ocr"]))
                condition = default_condition if default_condition in conditions else conditions[-1]
            chosen_by = "default (no labels)"
    chosen = usable[(usable["method"] == method) & (usable["ocr"] == condition)]
    if chosen.empty:
        raise ValueError(
            f"no string links for method {method!r} and OCR condition {condition!r}; available: "
            f"{sorted(set(zip(usable['method'], usable['ocr'], strict=True)))}"
        )
    if threshold is None:
        row = evaluated[(evaluated["method"] == method) & (evaluated["ocr"] == condition)]
        t = row["nomatch_threshold"].dropna()
        threshold = float(t.iloc[0]) if len(t) else default_threshold
        chosen_by_threshold = "tuned on the validation split" if len(t) else "default (no validation labels)"
    else:
        chosen_by_threshold = "configuration"
    chosen = chosen.sort_values(["query_crop_id", "rank"])
    best_score = chosen.groupby("query_crop_id")["score"].transform("max")
    accept = (chosen["score"] >= threshold) & (chosen["score"] >= best_score - margin)
    accepted = chosen[accept]
    unmatched_ids = set(chosen["query_crop_id"]) - set(accepted["query_crop_id"])
    unmatched = chosen[chosen["query_crop_id"].isin(unmatched_ids) & (chosen["rank"] == 1)]
    out = pd.concat([accepted.assign(matched=True), unmatched.assign(matched=False)], ignore_index=True)
    out = out.assign(threshold=threshold, model_id=model_id if method in _MODEL_METHODS else "", run_id="")
    out = out.sort_values(["query_crop_id", "rank"]).reset_index(drop=True)
    return out[list(RECORD_LINKS)], {
        "method": method,
        "ocr": condition,
        "threshold": threshold,
        "chosen_by": chosen_by,
        "threshold_from": chosen_by_threshold,
        **_validation_scores(evaluated, method, condition),
    }


def _validation_scores(evaluated: pd.DataFrame, method: str, condition: str) -> dict[str, float]:
    """Validation top-1 (and with no-match) of the chosen method and condition; NaN without labels."""
    row = evaluated[(evaluated["method"] == method) & (evaluated["ocr"] == condition)] if len(evaluated) else evaluated
    if len(row) == 0:
        return {"val_top1": float("nan"), "val_top1_with_nomatch": float("nan")}
    return {
        "val_top1": float(row["top1_accuracy"].iloc[0]),
        "val_top1_with_nomatch": float(row["top1_accuracy_with_nomatch"].iloc[0]),
    }
