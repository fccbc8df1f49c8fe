"""Evaluation tables (layout, OCR, linkage) and the paper's Table 1 / S-2 as markdown."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from linkage_pipeline.evaluation import metrics as evaluation_metrics
from linkage_pipeline.linking.strings import normalize

if TYPE_CHECKING:  # training imports torch; this module must stay light
    pass

logger = logging.getLogger(__name__)


def layout_evaluation_table(
    regions: pd.DataFrame, pages: pd.DataFrame, labels: pd.DataFrame, matched: pd.DataFrame
) -> pd.DataFrame:
    """One row per labelled source: detection precision/recall at IoU >= 0.5 and kind accuracy.

    Args:
        regions: ``layout_regions`` rows (all sources).
        pages: ``page_images`` rows (for the page file names labels refer to).
        labels: ``region_labels`` rows (all sources).
        matched: ``labelled_regions`` rows (all sources).
    """
    regions = regions.merge(pages[["page_id", "file"]], on="page_id", how="left").rename(columns={"file": "page"})
    rows = []
    for source, src_labels in labels.groupby("source", sort=True):
        src_regions = regions[regions["source"] == source]
        metrics = evaluation_metrics.layout_metrics(src_regions, src_labels, matched[matched["source"] == source])
        rows.append({"source": source, **metrics})
    columns = ["source", "precision", "recall", "f1", "mean_iou", "n_detected", "n_labelled", "n_matched", "kind_accuracy"]
    return pd.DataFrame(rows, columns=columns)


def ocr_evaluation_table(crops: pd.DataFrame, ocr: pd.DataFrame, matched: pd.DataFrame) -> pd.DataFrame:
    """One row per labelled source and OCR engine: character error rate and exact-match share on matched regions."""
    joined = (
        matched[["region_id", "source", "text", "role"]]
        .rename(columns={"text": "true_text"})
        .merge(crops[["region_id", "crop_id"]], on="region_id")
        .merge(ocr[["crop_id", "ocr", "text"]], on="crop_id")
    )
    joined = joined[joined["role"] != "heading"]
    rows = []
    for (source, engine), g in joined.groupby(["source", "ocr"], sort=True):
        pred = g["text"].fillna("").tolist()
        truth = g["true_text"].fillna("").tolist()
        rows.append(
            {
                "source": source,
                "ocr": engine,
                "cer": evaluation_metrics.character_error_rate(pred, truth),
                "exact_match": float(np.mean([normalize(p) == normalize(t) for p, t in zip(pred, truth, strict=True)])),
                "n": len(g),
            }
        )
    return pd.DataFrame(rows, columns=["source", "ocr", "cer", "exact_match", "n"])


def _truth_frames(regions: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str], set[str]]:
    """Query rows (query_id, entity_id, split), target crop -> entity map, and the entity ids in the targets."""
    labelled = regions[regions["crop_id"].notna() & regions["kind"].isin(["title", "entry"])]
    q = labelled[labelled["source_role"] == "query"]
    t = labelled[labelled["source_role"] == "target"]
    entity = q["true_entity_id"].fillna("").astype(str)
    queries = pd.DataFrame(
        {
            "query_id": q["crop_id"].to_numpy(),
            "entity_id": entity.replace("", None).to_numpy(),
            "split": evaluation_metrics.assign_split(entity.to_numpy()),
        }
    )
    target_entity = {
        str(c): str(e) for c, e in zip(t["crop_id"], t["true_entity_id"], strict=True) if isinstance(e, str) and e
    }
    return queries, target_entity, set(target_entity.values())


def linkage_evaluation_table(
    links: pd.DataFrame,
    regions: pd.DataFrame,
    *,
    training: str = "none",
    report_splits: Sequence[str] = ("test", "all"),
) -> pd.DataFrame:
    """Rows of ``linkage_evaluation`` for every method and text condition in ``links`` (top-1 of each query).

    Args:
        links: ``string_links``-shaped rows (query_crop_id, target_crop_id, method, ocr, rank, score).
        regions: ``stg_regions`` rows (crop ids with source role and true entity ids).
        training: what the method was trained with (``none`` for string matching).
        report_splits: splits to report (the no-match threshold is always tuned on ``val``).
    """
    columns = list(evaluation_metrics.LINKAGE_EVALUATION_COLUMNS)
    queries, target_entity, target_ids = _truth_frames(regions)
    if links.empty or queries["entity_id"].isna().all():
        return pd.DataFrame(columns=columns)
    top1 = links[links["rank"] == 1]
    top1 = top1[top1["query_crop_id"].isin(set(queries["query_id"]))]
    frame = pd.DataFrame(
        {
            "query_id": top1["query_crop_id"].to_numpy(),
            "target_entity_id": top1["target_crop_id"].map(target_entity).to_numpy(),
            "score": top1["score"].to_numpy(),
            "method": top1["method"].to_numpy(),
            "training": training,
            "ocr": top1["ocr"].to_numpy(),
        }
    )
    return evaluation_metrics.linkage_evaluation_rows(queries, frame, target_ids, report_splits=report_splits)[columns]


_TRAINING_ORDER = {"none": 0, "self_supervised": 1, "supervised": 2}
_METHOD_ORDER = {"levenshtein": 0, "jaro_winkler": 1, "ngram": 2, "vision": 3, "language": 4, "multimodal": 5}


def table_one_markdown(table: pd.DataFrame, split: str = "test", value: str = "top1_accuracy") -> str:
    """The paper's Table 1 layout of ``linkage_evaluation`` rows: method x training down, text condition across."""
    rows = table[table["split"] == split]
    if rows.empty:
        return "_no labelled queries in this split_"
    pivot = rows.pivot_table(index=["training", "method"], columns="ocr", values=value, aggfunc="first")
    order = sorted(pivot.index, key=lambda k: (_TRAINING_ORDER.get(k[0], 9), _METHOD_ORDER.get(k[1], 9), k))
    pivot = pivot.loc[order].round(3)
    n = int(rows["n" if value == "top1_accuracy" else "n_with_nomatch"].max())
    return f"{split} split, {value} (n = {n} queries)\n\n" + pivot.reset_index().to_markdown(index=False)
