"""Fine-tuning on reviews: reviewed pairs as positives, the candidates a reviewer rejected as hard negatives.

The model errs on a corpus because its typefaces, scans or names differ from what it was trained on; a few dozen
verdicts on that corpus show it the difference. Each ``accept``/``pick`` makes one class of the query crop and the
chosen target (with every OCR engine's reading of each); every candidate the reviewer saw and did not choose is a
class of its own, so the supervised contrastive loss pushes it away from the query it was confused with. The
fine-tune starts from the model the links were made with and runs the recipe's SupCon stage with a small learning
rate and few steps (a continuation, not a new training).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from linkage_pipeline.multimodal.training.data import TrainingSet
from linkage_pipeline.schema import require_columns
from linkage_pipeline.synthetic.firms import Firm

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FineTuneConfig:
    """The SupCon continuation on reviews.

    Attributes:
        min_pairs: Fewest reviewed positive pairs to fine-tune on (fewer: no fine-tune, said in the metadata).
        lr: Peak learning rate (a tenth of the recipe's SupCon stage: the model is adjusted, not retrained).
        max_steps: Optimiser steps.
        batch_size, m, k: As in the recipe's SupCon stage (``m`` views of ``k`` neighbouring classes).
        seed: Seed of batch order and view sampling.
    """

    min_pairs: int = 20
    lr: float = 2e-4
    max_steps: int = 150
    batch_size: int = 63
    m: int = 3
    k: int = 3
    seed: int = 0


def review_training_set(
    reviews: pd.DataFrame, candidates: pd.DataFrame, regions: pd.DataFrame, crop_texts: pd.DataFrame
) -> tuple[TrainingSet, dict[str, int]]:
    """The reviewed pairs and rejected candidates as training rows.

    Crops chosen for several queries (or a query chosen as another's target) are merged into one class; a crop
    that is a positive anywhere is never a negative.

    Args:
        reviews: Reviews in force (:func:`~linkage_pipeline.review.verdicts.in_force`).
        candidates: ``string_links``-shaped rows the reviewers saw (query_crop_id, target_crop_id, rank).
        regions: ``stg_regions`` rows (crop_id, crop_path, direction).
        crop_texts: ``stg_crop_texts`` rows (crop_id, ocr, text); ``ground_truth`` rows are not used.

    Returns:
        The :class:`TrainingSet` (one row per crop and OCR reading) and counts: pairs, negatives, classes, rows.
    """
    require_columns(regions, ["crop_id", "crop_path", "direction"], "regions")
    require_columns(crop_texts, ["crop_id", "ocr", "text"], "crop_texts")
    positive = reviews[reviews["verdict"].isin(["accept", "pick"])]
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for q, t in zip(positive["query_crop_id"], positive["target_crop_id"], strict=True):
        parent[find(q)] = find(t)
    in_pairs = set(parent)
    seen = candidates[candidates["query_crop_id"].isin(set(reviews["query_crop_id"]))]
    negatives = sorted(set(seen["target_crop_id"]) - in_pairs)
    for crop in negatives:
        find(crop)
    for q in reviews.loc[reviews["verdict"] == "none", "query_crop_id"]:
        find(q)  # a query with no match is a class of its own, a negative to the candidates it was shown
    groups = sorted({find(c) for c in parent})
    label_of = {g: i for i, g in enumerate(groups)}
    info_regions = regions.dropna(subset=["crop_id"]).drop_duplicates("crop_id").set_index("crop_id")
    texts = crop_texts[(crop_texts["ocr"] != "ground_truth") & crop_texts["crop_id"].isin(set(parent))]
    texts = texts.drop_duplicates(["crop_id", "ocr"]).sort_values(["crop_id", "ocr"])
    images, directions, readings, labels = [], [], [], []
    cache: dict[str, Image.Image] = {}
    for crop, text in zip(texts["crop_id"], texts["text"].fillna(""), strict=True):
        if crop not in info_regions.index:
            continue
        path = str(info_regions.loc[crop, "crop_path"])
        if path not in cache:
            with Image.open(path) as im:
                cache[path] = im.convert("L")
        images.append(cache[path])
        directions.append(str(info_regions.loc[crop, "direction"]))
        readings.append(str(text))
        labels.append(label_of[find(crop)])
    firms = [Firm(entity_id=f"review:{g}", canonical=g) for g in groups]
    data = TrainingSet(images, directions, readings, list(readings), np.asarray(labels, dtype=np.int64), firms,
                       {"origin": "link reviews", "pairs": len(positive), "negatives": len(negatives)})
    return data, {"pairs": len(positive), "negatives": len(negatives), "classes": len(groups), "rows": len(images)}


def fine_tune_on_reviews(
    start_from: str | Path, data: TrainingSet, work_dir: str | Path, *, config: FineTuneConfig = FineTuneConfig(),
    device: str = "cpu", card: dict[str, Any] | None = None,
) -> Path:
    """The model at ``start_from`` after the SupCon continuation on ``data``; saved as ``work_dir/supcon``.

    The start's ``pretrained/`` companion (the label-free model the evaluation's self-supervised rows use) is
    copied along, so the fine-tuned folder has the shipped layout. Resumable through ``work_dir/checkpoints``.

    Raises:
        ValueError: When ``data`` has fewer than ``config.min_pairs`` pairs.
    """
    from dataclasses import replace

    from linkage_pipeline.multimodal import registry
    from linkage_pipeline.multimodal.training.recipe import Recipe, train_recipe
    from linkage_pipeline.multimodal.training.trainer import TrainConfig

    pairs = int(data.info.get("pairs", 0))
    if pairs < config.min_pairs:
        raise ValueError(f"{pairs} reviewed pairs; fine-tuning needs at least {config.min_pairs} (accept or pick "
                         "verdicts)")
    stage = TrainConfig(stage="supcon", lr=config.lr, batch_size=config.batch_size, m=config.m, k=config.k,
                        epochs=10_000, max_steps=config.max_steps, unimodal_weight=1.0, seed=config.seed,
                        log_every=25, checkpoint_every=50)
    recipe = replace(Recipe(), supcon=stage)
    out = train_recipe(data, recipe, work_dir, device=device, stages=("supcon",), start_from=start_from,
                       card={**(card or {}), "fine_tuned_on": "link reviews"})
    folder = out["supcon"]
    pretrained = Path(start_from) / registry.PRETRAINED_SUBDIR
    if (pretrained / "model.safetensors").is_file():
        registry.attach_pretrained(folder, pretrained)
    return folder


def score_on_reviews(
    encoder: Any,
    inputs: pd.DataFrame,
    regions: pd.DataFrame,
    linkages: list[tuple[str, str]],
    reviews: pd.DataFrame,
    *,
    default_weight: float,
    min_queries: int = 5,
) -> dict[str, Any]:
    """Top-1 accuracy of ``encoder``'s multimodal links on the reviewed queries, the verdicts as the truth.

    The pooling weight per OCR condition is chosen on the same reviews (:func:`choose_pooling_weights`), so two
    models compared on one set of reviews are both given their best weight. Ground-truth text is left out.

    Args:
        encoder: A :class:`~linkage_pipeline.multimodal.encoder.MultimodalEncoder`.
        inputs: Embedding inputs (:func:`~linkage_pipeline.multimodal.embed.embedding_inputs`) of every source.
        regions: ``stg_regions`` rows.
        linkages: (query source, target source) pairs.
        reviews: The reviews to score on (in force).
        default_weight: The weight where a condition has fewer than ``min_queries`` reviewed queries.

    Returns:
        ``top1`` (mean over OCR conditions, NaN without any), ``n`` (reviewed queries whose chosen target exists),
        ``by_ocr`` and ``weights``.
    """
    from linkage_pipeline.evaluation.report import linkage_evaluation_table
    from linkage_pipeline.linking.by_embeddings import (
        choose_pooling_weights,
        embedding_links,
    )
    from linkage_pipeline.multimodal.embed import embed_crops
    from linkage_pipeline.review.verdicts import review_labels

    targets = {t for _, t in linkages}
    wanted = inputs[inputs["source"].isin(targets) | inputs["crop_id"].isin(set(reviews["query_crop_id"]))]
    wanted = wanted[wanted["ocr"] != "ground_truth"]
    emb, _ = embed_crops(encoder, wanted)
    labels = review_labels(regions, reviews, split="val", reviews_only=True)
    weights, _ = choose_pooling_weights(emb, labels, linkages, default=default_weight, min_queries=min_queries)
    links = embedding_links(emb, linkages, methods=("multimodal",), weight=weights, training="supervised")
    table = linkage_evaluation_table(links, labels, report_splits=("val",))
    by_ocr = {str(r.ocr): float(r.top1_accuracy) for r in table.itertuples()}
    return {"top1": float(np.mean(list(by_ocr.values()))) if by_ocr else float("nan"),
            "n": int(table["n"].max()) if len(table) else 0, "by_ocr": by_ocr,
            "weights": {str(k): float(v) for k, v in (weights.items() if isinstance(weights, dict) else [])}}


def check_fine_tune(
    before: Any,
    after: Any,
    folder: str | Path,
    inputs: pd.DataFrame,
    regions: pd.DataFrame,
    linkages: list[tuple[str, str]],
    reviews: pd.DataFrame,
    *,
    default_weight: float,
) -> dict[str, Any]:
    """Scores the model a fine-tune started from and the fine-tuned one on the *check* half of ``reviews`` (which
    the fine-tune never learnt from), each at its best weight (:func:`score_on_reviews`), and records the outcome
    as ``review_check`` in ``folder/model_card.json``. The fine-tune is adopted only when it links them better.

    Returns:
        ``adopted``, ``why``, ``n`` and, with any check review, the ``before`` and ``after`` scores.
    """
    from linkage_pipeline.multimodal import registry
    from linkage_pipeline.review.verdicts import reviews_for_tuning

    check = reviews_for_tuning(reviews, fine_tuned=True)
    if check.empty:
        result: dict[str, Any] = {"adopted": False, "why": "no review in the check half", "n": 0}
    else:
        scores = {name: score_on_reviews(encoder, inputs, regions, linkages, check, default_weight=default_weight)
                  for name, encoder in (("before", before), ("after", after))}
        adopted = bool(scores["after"]["top1"] > scores["before"]["top1"])
        result = {"adopted": adopted, "n": scores["after"]["n"], **scores,
                  "why": "better on the check half" if adopted else "not better on the check half"}
    registry.update_card(folder, review_check=result)
    logger.info("fine-tune check on %d held-back reviews: %s", result["n"], result["why"])
    return result
