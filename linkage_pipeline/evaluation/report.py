"""Evaluation tables (layout, OCR, linkage) and the paper's Table 1 / S-2 as markdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from linkage_pipeline.evaluation import metrics as evaluation_metrics
from linkage_pipeline.linking.strings import normalize
from linkage_pipeline.review.verdicts import review_labels

if TYPE_CHECKING:  # the encoder imports torch; this module must stay light
    from linkage_pipeline.multimodal.encoder import MultimodalEncoder


def layout_evaluation_table(
    regions: pd.DataFrame, pages: pd.DataFrame, labels: pd.DataFrame, matched: pd.DataFrame
) -> pd.DataFrame:
    """One row per labelled source: detection precision/recall at IoU >= 0.5, kind accuracy, and the detector and
    line classifier that produced the regions.

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
        rows.append({"source": source, **metrics, "detector": _which(src_regions, "detector"),
                     "classifier": _which(src_regions, "classifier")})
    columns = ["source", "precision", "recall", "f1", "mean_iou", "n_detected", "n_labelled", "n_matched", "kind_accuracy",
               "detector", "classifier"]
    return pd.DataFrame(rows, columns=columns)


def _which(regions: pd.DataFrame, column: str) -> str | None:
    """The distinct values of a column of a source's regions, joined (None when it has no regions)."""
    if column not in regions.columns or regions.empty:
        return None
    return ", ".join(sorted({str(v) for v in regions[column].dropna()})) or None


def ocr_evaluation_table(crops: pd.DataFrame, ocr: pd.DataFrame, matched: pd.DataFrame) -> pd.DataFrame:
    """One row per labelled source and OCR engine: character error rate and exact-match share on matched regions
    (regions matched to ``heading`` or ``body`` labels are left out)."""
    joined = (
        matched[["region_id", "source", "text", "role"]]
        .rename(columns={"text": "true_text"})
        .merge(crops[["region_id", "crop_id"]], on="region_id")
        .merge(ocr[["crop_id", "ocr", "text"]], on="crop_id")
    )
    # Headings are not names; body text is never cropped, but a body line detected as a name would be read
    # against a label without text (layout-only labels, e.g. PASCAL VOC), so neither is scored.
    joined = joined[~joined["role"].isin(("heading", "body"))]
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
    """Query rows (query_id, entity_id, split), target crop -> entity map, and the entity ids in the targets.

    The split of a query is the hash of its entity id (:func:`~linkage_pipeline.evaluation.metrics.assign_split`),
    unless ``regions`` has a ``split`` column with a value for its row.
    """
    labelled = regions[regions["crop_id"].notna() & regions["kind"].isin(["title", "entry"])]
    q = labelled[labelled["source_role"] == "query"]
    t = labelled[labelled["source_role"] == "target"]
    entity = q["true_entity_id"].fillna("").astype(str)
    split = evaluation_metrics.assign_split(entity.to_numpy()).astype(object)
    if "split" in q.columns:
        # a split given per row (reviewed queries: review.labels) wins over the hash of the entity id
        given = q["split"].to_numpy(dtype=object)
        split = np.where(pd.notna(given), given, split)
    queries = pd.DataFrame(
        {
            "query_id": q["crop_id"].to_numpy(),
            "entity_id": entity.replace("", None).to_numpy(),
            "split": split,
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
    weights: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Rows of ``linkage_evaluation`` for every method and text condition in ``links`` (top-1 of each query).

    Args:
        links: ``string_links``-shaped rows (query_crop_id, target_crop_id, method, ocr, rank, score).
        regions: ``stg_regions`` rows (crop ids with source role and true entity ids).
        training: what the method was trained with (``none`` for string matching).
        report_splits: splits to report (the no-match threshold is always tuned on ``val``).
        weights: The image weight of each text condition the multimodal links were made with, recorded in the
            ``pooling_weight`` column of multimodal rows (NaN for other methods, or when not given).

    Returns:
        Rows with the columns of ``schema.LINKAGE_EVALUATION``.
    """
    columns = [*evaluation_metrics.LINKAGE_EVALUATION_COLUMNS, "pooling_weight"]
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
    rows = evaluation_metrics.linkage_evaluation_rows(queries, frame, target_ids, report_splits=report_splits)
    weight = rows["ocr"].map(dict(weights or {})).astype(float)
    return rows.assign(pooling_weight=weight.where(rows["method"] == "multimodal"))[columns]


def linkage_evaluation_report(
    string_links: pd.DataFrame,
    regions: pd.DataFrame,
    *,
    embedding_links: pd.DataFrame | None = None,
    model: Mapping[str, Any] | None = None,
    linkages: Sequence[tuple[str, str]] = (),
    pretrained: MultimodalEncoder | None = None,
    inputs: pd.DataFrame | None = None,
    cached: pd.DataFrame | None = None,
    weights: Mapping[str, float] | None = None,
    reviews: pd.DataFrame | None = None,
    unlabelled: str = "mutual",
    unlabelled_string_weight: str = "votes",
    choices: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The ``linkage_evaluation`` table: string baselines, the supervised model and, optionally, its pretrained start.

    Args:
        string_links: ``string_links`` rows.
        regions: ``stg_regions`` rows (crop ids with source role and true entity ids).
        embedding_links: ``embedding_links`` rows (every model and training); ``None`` when there are none.
        model: The ``linkage_model`` row (``model_id``, ``pooling_weight``, ``pretrained_path``); ``None`` when no
            model is chosen, in which case only the string rows are reported.
        linkages: (query source, target source) pairs, as in sources.yaml.
        pretrained: The model at ``model["pretrained_path"]`` (before supervised training); with it the
            ``self_supervised`` rows are added. ``None``: they are not.
        inputs: Embedding inputs of every source (:func:`~linkage_pipeline.multimodal.embed.embedding_inputs`);
            required with ``pretrained``.
        cached: Earlier ``crop_embeddings``-shaped rows of the pretrained model; only crops new to it are embedded.
        weights: The image weight of each text condition the supervised links were made with (``faiss_indexes``);
            recorded in the ``pooling_weight`` column of its multimodal rows. The pretrained model's weights are
            chosen here the same way (:func:`~linkage_pipeline.linking.by_embeddings.choose_pooling_weights`:
            on the validation firms, else by the rule ``unlabelled`` names).
        reviews: Verdicts in force (:func:`~linkage_pipeline.review.verdicts.in_force`). With any, rows of split
            ``reviewed`` score the string and supervised links on the reviewed queries alone, the reviewers'
            verdicts as the truth (the accuracy a user can quote for their own corpus, with its ``n``; the queue
            puts uncertain links first, so it is a hard sample, not a random one).
        unlabelled: How the pretrained model's weight is chosen for a condition with too few validation queries,
            as ``faiss_index``'s ``unlabelled_weight``: ``"mutual"`` (the mutual-neighbour rule) or ``"card"``
            (the linkage model's ``pooling_weight``).
        unlabelled_string_weight: How the string weight of the pretrained model's ``hybrid`` rows is chosen for a
            condition with too few validation queries, as ``embedding_links``' (``votes`` or ``none``; see
            :func:`~linkage_pipeline.linking.hybrid.choose_string_weights`).
        choices: A dict that receives, with ``pretrained``, the weights its rows used: ``self_supervised_pooling``
            and ``self_supervised_string`` (``{condition: weight}``) and ``self_supervised_string_table`` (the
            rows of :func:`~linkage_pipeline.linking.hybrid.choose_string_weights`).

    Returns:
        ``linkage_evaluation`` rows (the string rows' frame, possibly empty, when no method has a labelled query)
        and the pretrained model's ``crop_embeddings`` rows to keep for the next run (``None`` without
        ``pretrained``).

    Raises:
        ValueError: If ``pretrained`` is given without ``model`` or ``inputs``, or ``unlabelled`` is unknown.
    """
    from linkage_pipeline.linking.by_embeddings import UNLABELLED_WEIGHT_CONFIG

    if unlabelled not in UNLABELLED_WEIGHT_CONFIG:
        raise ValueError(f"unlabelled must be 'mutual' or 'card', got {unlabelled!r}")
    from linkage_pipeline.linking.hybrid import UNLABELLED_STRING_RULES

    if unlabelled_string_weight not in UNLABELLED_STRING_RULES:
        raise ValueError(f"unlabelled_string_weight must be one of {list(UNLABELLED_STRING_RULES)}, "
                         f"got {unlabelled_string_weight!r}")
    if pretrained is not None and (model is None or inputs is None):
        raise ValueError("pretrained needs the linkage_model row (model) and the embedding inputs (inputs); got None")
    frames = [linkage_evaluation_table(string_links, regions)]
    if reviews is not None and len(reviews):
        frames.append(linkage_evaluation_table(
            string_links, review_labels(regions, reviews, split="reviewed", reviews_only=True),
            report_splits=("reviewed",)))
    embedded = None
    if model is not None and embedding_links is not None:
        supervised = embedding_links[
            (embedding_links["model_id"] == str(model["model_id"])) & (embedding_links["training"] == "supervised")
        ]
        frames.append(linkage_evaluation_table(supervised, regions, training="supervised", weights=weights))
        if reviews is not None and len(reviews):
            reviewed = review_labels(regions, reviews, split="reviewed", reviews_only=True)
            frames.append(linkage_evaluation_table(supervised, reviewed, training="supervised", weights=weights,
                                                   report_splits=("reviewed",)))
        if pretrained is not None:
            # torch-heavy imports only when the pretrained model is scored
            from linkage_pipeline.linking import hybrid
            from linkage_pipeline.linking.by_embeddings import choose_pooling_weights
            from linkage_pipeline.linking.by_embeddings import (
                embedding_links as link_embeddings,
            )
            from linkage_pipeline.multimodal.embed import embed_crops

            embedded, _ = embed_crops(pretrained, inputs, existing=cached)
            chosen, pooling_table = choose_pooling_weights(embedded, regions, list(linkages),
                                               default=float(model["pooling_weight"]),
                                               unlabelled=UNLABELLED_WEIGHT_CONFIG[unlabelled])
            links = link_embeddings(embedded, list(linkages), weight=chosen, training="self_supervised")
            # the pretrained model's hybrid rows, its string weight chosen by the supervised model's rules
            links, betas, string_table = hybrid.with_hybrid_links(
                links, string_links, embedded, list(linkages), chosen, regions, model_id=str(pretrained.model_id or ""),
                training="self_supervised", unlabelled=unlabelled_string_weight)
            frames.append(linkage_evaluation_table(links, regions, training="self_supervised", weights=chosen))
            if choices is not None:
                choices.update(self_supervised_pooling=dict(chosen), self_supervised_pooling_table=pooling_table,
                               self_supervised_string=dict(betas), self_supervised_string_table=string_table)
    scored = [f for f in frames if not f.empty]
    table = pd.concat(scored, ignore_index=True) if scored else frames[0]
    return table, embedded


_TRAINING_ORDER = {"none": 0, "self_supervised": 1, "supervised": 2}
_METHOD_ORDER = {"levenshtein": 0, "jaro_winkler": 1, "ngram": 2, "vision": 3, "language": 4, "multimodal": 5,
                 "hybrid": 6}


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
