"""Frame-level functions of the multimodal chain: embed crops, index targets, link queries by nearest neighbours.

``crop_embeddings`` rows hold, per crop and text condition (OCR engine or ``ground_truth``), the L2-normalised
image embedding of the crop and text embedding of its reading, with the id of the model that made them. The
vision-only, language-only and pooled (CLIPPINGS: ``L2norm(w * img + (1 - w) * txt)``) embeddings used for
linking are derived from these two at link time, so the pooling weight is a linking choice, not a re-embedding.
Embedding is incremental: rows already embedded with the same model, crop and text are reused.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from linkage_pipeline.linking.hybrid import SIGNIFICANCE
from linkage_pipeline.linking.index import (
    IndexMeta,
    IndexSpec,
    build_index,
    exact_scores,
    knn,
    load_index,
    save_index,
    search,
)
from linkage_pipeline.linking.topk import (
    Search,
    hashes_by_source,
    incremental_topk,
    reusable_queries,
    text_hashes,
    topk_frame_arrays,
    topk_rows,
)
from linkage_pipeline.multimodal.embed import (
    EMBEDDING_METHODS,
    check_one_model,
    embed_crops,
    method_embeddings,
)
from linkage_pipeline.multimodal.encoder import MultimodalEncoder
from linkage_pipeline.schema import (
    CROP_EMBEDDINGS,
    EMBEDDING_LINK_INPUTS,
    EMBEDDING_LINKS,
    FAISS_INDEXES,
    LINKED_TARGETS,
    empty_frame,
)

logger = logging.getLogger(__name__)


#: Candidates fetched from an index beyond the ``k`` kept, then rescored exactly (:func:`matching.exact_scores`):
#: FAISS's float32 scores of near-ties (one firm listed twice) differ in the last bits with the batch they were
#: computed in, so the k-th and the next targets could swap between an incremental and a full run.
EXTRA_CANDIDATES = 16


def usable_embeddings(
    partitions: Mapping[str, pd.DataFrame | None], model_id: str
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The ``crop_embeddings`` rows made with ``model_id``, and why each source left out was left out.

    A source whose partition is missing (``None``: crop_embeddings never materialized for it, or failed) or was
    embedded with another model is left out: its linkages are skipped, the others still run. A source with an
    empty partition (no usable page) is not left out: it has no rows, so its linkages yield zero links.

    Args:
        partitions: ``{source: its crop_embeddings partition, or None when there is none}``.
        model_id: The linkage model's id.

    Returns:
        The rows of the usable sources (:data:`CROP_EMBEDDINGS` columns; in ``partitions`` order) and
        ``{source: reason}`` for each source left out, in ``partitions`` order.
    """
    frames, skipped = [], {}
    for name, part in partitions.items():
        if part is None:
            skipped[name] = "no crop_embeddings partition; materialize crop_embeddings for it"
            continue
        stale = set(part["model_id"]) - {model_id}
        if stale:
            skipped[name] = (f"crop_embeddings made with model(s) {[m[:12] for m in stale]}, not the linkage model "
                             f"{model_id[:12]}; re-materialize crop_embeddings for it")
        elif not part.empty:
            frames.append(part)
    out = pd.concat(frames, ignore_index=True) if frames else empty_frame(CROP_EMBEDDINGS)
    return out, skipped


def load_target_indexes(
    index_rows: pd.DataFrame, model_id: str, *, device: str = "cpu"
) -> dict[tuple[str, str, str], tuple[object, list[str]]]:
    """The saved indexes of ``faiss_indexes`` rows, in the shape :func:`relink` takes.

    Args:
        index_rows: ``faiss_indexes`` rows (target_source, ocr, method, model_id, path); none is a result (every
            target source is empty).
        model_id: The linkage model's id; every row must have been built with it.
        device: Where the indexes are searched (``cpu`` or ``cuda[:N]``).

    Returns:
        ``{(target source, ocr, method): (index, target crop ids in index order)}``.

    Raises:
        ValueError: If a row was built with another model (a stale index).
    """
    if set(index_rows["model_id"]) - {model_id}:
        raise ValueError(f"faiss_indexes were not built with the linkage model {model_id[:12]}; re-materialize faiss_index")
    indexes = {}
    for r in index_rows.itertuples(index=False):
        index, meta = load_index(r.path, model_id=model_id, device=device)
        indexes[(r.target_source, r.ocr, r.method)] = (index, meta.ids)
    return indexes


#: The image weight of the pooled embedding: one for every text condition, or one per condition (OCR engine).
Weight = float | Mapping[str, float]


def weight_of(weight: Weight, condition: str) -> float:
    """The image weight ``weight`` gives text condition ``condition``.

    Raises:
        ValueError: If a per-condition mapping lacks ``condition`` or a weight is outside [0, 1].
    """
    if isinstance(weight, Mapping):
        if condition not in weight:
            raise ValueError(f"no pooling weight for text condition {condition!r}; weights are given for {sorted(weight)}")
        w = float(weight[condition])
    else:
        w = float(weight)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {w} for {condition!r}")
    return w


def index_weights(index_rows: pd.DataFrame, model_id: str) -> dict[str, float]:
    """The image weight per text condition that ``model_id``'s indexes were built with (``faiss_indexes`` rows)."""
    rows = index_rows[index_rows["model_id"] == model_id]
    return rows.groupby("ocr")["weight"].first().astype(float).to_dict()


def _check_weight(weight: Weight) -> None:
    for condition in weight if isinstance(weight, Mapping) else ("",):
        weight_of(weight, condition)


def _index_name(target_source: str, condition: str, method: str) -> str:
    return f"{target_source}__{condition}__{method}.faiss"


def _target_groups(embeddings: pd.DataFrame, target_sources: Sequence[str]):
    """(source, condition, rows sorted by crop id, crop ids) of every target source and text condition."""
    for source in dict.fromkeys(target_sources):
        t_all = embeddings[embeddings["source"] == source]
        for condition in sorted(set(t_all["ocr"])):
            t = t_all[t_all["ocr"] == condition].sort_values("crop_id")
            yield source, condition, t, t["crop_id"].tolist()


def index_targets(
    embeddings: pd.DataFrame,
    target_sources: Sequence[str],
    *,
    methods: Sequence[str] = EMBEDDING_METHODS,
    weight: Weight = 0.5,
    spec: IndexSpec | None = None,
    out_dir: Path | None = None,
) -> tuple[dict[tuple[str, str, str], tuple[object, list[str]]], pd.DataFrame]:
    """Build one FAISS index per target source, text condition and method.

    Args:
        embeddings: ``crop_embeddings`` rows (one model).
        target_sources: Sources linked to.
        methods: Subset of :data:`EMBEDDING_METHODS`.
        weight: Image weight of the ``multimodal`` embedding, or one per text condition.
        spec: Index kind and device (default exact flat on the CPU).
        out_dir: When given, every index is saved there with its metadata (:func:`save_index`).

    Returns:
        ``{(source, condition, method): (index, crop ids in index order)}`` and one ``faiss_indexes`` row per
        index (target_source, ocr, method, model_id, kind, weight, n, dim, path).
    """
    _check_weight(weight)
    spec = spec or IndexSpec()
    out: dict[tuple[str, str, str], tuple[object, list[str]]] = {}
    rows = []
    if embeddings.empty:
        return out, pd.DataFrame(rows, columns=list(FAISS_INDEXES))
    model_id = check_one_model(embeddings)
    for source, condition, t, ids in _target_groups(embeddings, target_sources):
        w = weight_of(weight, condition)
        for method in methods:
            vectors = method_embeddings(t, method, w)
            index = build_index(vectors, spec)
            path = ""
            if out_dir is not None:
                meta = IndexMeta(
                    model_id,
                    ids,
                    spec.kind,
                    int(index.d),
                    {"source": source, "ocr": condition, "method": method, "weight": w,
                     "vectors_sha256": _vectors_sha256(vectors)},
                )
                path = str(save_index(index, out_dir / _index_name(source, condition, method), meta))
            out[(source, condition, method)] = (index, ids)
            rows.append((source, condition, method, model_id, spec.kind, w, len(ids), int(index.d), path))
    return out, pd.DataFrame(rows, columns=list(FAISS_INDEXES))


def link_with_indexes(
    embeddings: pd.DataFrame,
    linkages: Sequence[tuple[str, str]],
    indexes: dict[tuple[str, str, str], tuple[object, list[str]]],
    *,
    methods: Sequence[str] = EMBEDDING_METHODS,
    weight: Weight = 0.5,
    k: int = 5,
    training: str = "supervised",
) -> pd.DataFrame:
    """Top-k target crops of every query crop, per linkage, text condition and method, from built indexes.

    Args:
        embeddings: ``crop_embeddings`` rows of the query sources (the model the indexes were built with).
        linkages: (query source, target source) pairs.
        indexes: From :func:`index_targets` (or loaded indexes in the same shape).
        methods: Methods to link with; each needs its index.
        weight: Image weight of the ``multimodal`` embedding, or one per condition (the index's weights).
        k: Neighbours kept per query.
        training: Recorded in the ``training`` column.

    Returns:
        ``embedding_links`` rows (:data:`EMBEDDING_LINKS`), best first.
    """
    links, _, _ = relink(embeddings, embeddings, linkages, indexes, methods=methods, weight=weight, k=k,
                         training=training)
    return links


def embedding_links(
    embeddings: pd.DataFrame,
    linkages: Sequence[tuple[str, str]],
    *,
    methods: Sequence[str] = EMBEDDING_METHODS,
    weight: Weight = 0.5,
    k: int = 5,
    training: str = "supervised",
    spec: IndexSpec | None = None,
) -> pd.DataFrame:
    """:func:`index_targets` then :func:`link_with_indexes`, in memory (nothing written)."""
    indexes, _ = index_targets(embeddings, [t for _, t in linkages], methods=methods, weight=weight, spec=spec)
    return link_with_indexes(embeddings, linkages, indexes, methods=methods, weight=weight, k=k, training=training)


def tune_linking(
    encoder: MultimodalEncoder,
    inputs: pd.DataFrame,
    regions: pd.DataFrame,
    linkages: Sequence[tuple[str, str]],
    *,
    ocr: str,
    also: Sequence[str] = (),
    weights: Sequence[float] = tuple(np.round(np.linspace(0.0, 1.0, 11), 2)),
) -> dict[str, float | str | int]:
    """Choose the pooling weight and no-match threshold on the validation split of labelled firms.

    Only validation-split queries are scored (firms hashed as in the evaluation); test firms never influence
    the choice. The weight maximises the mean validation top-1 accuracy over ``ocr`` and the ``also``
    conditions (e.g. every OCR engine, so the weight does not overfit the cleanest reading); ties go to the
    weight closest to 0.5. The threshold is the one tuned for ``ocr`` at that weight.

    Args:
        encoder: The model.
        inputs: :func:`embedding_inputs` rows of the linked sources.
        regions: ``stg_regions`` rows (truth).
        linkages: (query, target) source pairs.
        ocr: The OCR condition the pipeline links with (its threshold is returned).
        also: Further conditions that count in the choice of the weight.
        weights: Candidate image weights.

    Returns:
        pooling_weight, nomatch_threshold, val_top1 and val_top1_with_nomatch (of ``ocr``), val_top1_mean
        (over the conditions), ocrs (the conditions that counted, comma-separated), n_val, ocr, and
        pooling_weight_rule (:data:`POOLING_DEFAULT_RULE`).

    Raises:
        ValueError: If the validation split has no labelled query for ``ocr``.
    """
    from linkage_pipeline.evaluation import report

    conditions = list(dict.fromkeys([ocr, *also]))
    emb, _ = embed_crops(encoder, inputs[inputs["ocr"].isin(conditions)])
    best: dict[str, float | str | int] | None = None
    best_key: tuple[float, float, float] | None = None
    for w in weights:
        links = embedding_links(emb, linkages, methods=("multimodal",), weight=float(w))
        ev = report.linkage_evaluation_table(links, regions, report_splits=("val",))
        ev = ev[ev["top1_accuracy"].notna()].set_index("ocr")
        if ocr not in ev.index:
            raise ValueError(f"no labelled validation queries for OCR condition {ocr!r}; cannot tune")
        row = ev.loc[ocr]
        mean = float(ev.loc[[c for c in conditions if c in ev.index], "top1_accuracy"].mean())
        cand = {
            "pooling_weight": float(w),
            "nomatch_threshold": float(row["nomatch_threshold"]),
            "val_top1": float(row["top1_accuracy"]),
            "val_top1_with_nomatch": float(row["top1_accuracy_with_nomatch"]),
            "val_top1_mean": mean,
            "ocrs": ",".join(c for c in conditions if c in ev.index),
            "n_val": int(row["n"]),
            "ocr": ocr,
            "pooling_weight_rule": POOLING_DEFAULT_RULE,
        }
        key = (mean, cand["val_top1_with_nomatch"], -abs(float(w) - 0.5))
        if best_key is None or key > best_key:
            best, best_key = cand, key
        logger.info("pooling weight %.1f: mean val top-1 %.3f over %s", w, mean, cand["ocrs"])
    assert best is not None
    return best


#: How :func:`tune_linking` chooses the default pooling weight of a model card (written into the card).
POOLING_DEFAULT_RULE = (
    "highest mean top-1 accuracy over the OCR conditions on the validation firms of the training corpus, ties to "
    "0.5; the default for sources without labels (with labels, faiss_index chooses a weight per OCR condition on "
    "their validation firms)"
)
#: Candidate image weights when the pooling weight is chosen on labels.
WEIGHT_GRID: tuple[float, ...] = tuple(float(w) for w in np.round(np.linspace(0.0, 1.0, 11), 2))
#: Validation queries a text condition needs before its weight is chosen on them (fewer: the model's default).
MIN_VALIDATION_QUERIES = 20


#: Columns of the table of :func:`choose_pooling_weights` (one row per text condition).
POOLING_TABLE_COLUMNS: tuple[str, ...] = (
    "ocr", "weight", "chosen_by", "val_top1", "n_val", "val_top1_by_weight", "val_mrr_by_weight",
    "val_margin_by_weight", "mutual_by_weight", "mutual_gained", "mutual_lost", "mutual_p",
)


def pooling_row(ocr: str, weight: float, chosen_by: str) -> dict:
    """One row of the pooling table before any candidate is scored: no validation or mutual-neighbour evidence."""
    return {"ocr": ocr, "weight": float(weight), "chosen_by": chosen_by, "val_top1": float("nan"), "n_val": 0,
            "val_top1_by_weight": {}, "val_mrr_by_weight": {}, "val_margin_by_weight": {}, "mutual_by_weight": {},
            "mutual_gained": 0, "mutual_lost": 0, "mutual_p": float("nan")}


def pooling_table(rows: Sequence[Mapping]) -> pd.DataFrame:
    """The pooling table of ``rows`` (:func:`pooling_row`, updated with the evidence), in its column order."""
    return pd.DataFrame(list(rows), columns=list(POOLING_TABLE_COLUMNS))


def choose_pooling_weights(
    embeddings: pd.DataFrame,
    regions: pd.DataFrame | None,
    linkages: Sequence[tuple[str, str]],
    *,
    default: float,
    weights: Sequence[float] = WEIGHT_GRID,
    min_queries: int = MIN_VALIDATION_QUERIES,
    unlabelled: str = "default",
) -> tuple[dict[str, float], pd.DataFrame]:
    """The image weight of each text condition: the best on the labelled validation firms, else ``default`` or, where
    it is clearly better, the weight whose links agree most with the reverse links (``unlabelled="mutual"``).

    As the no-match threshold is, the weight is chosen on the validation split of labelled firms (a stable hash
    of the entity id, as the evaluation splits them); test firms never count. For each condition (OCR engine or
    ``ground_truth``) with at least ``min_queries`` labelled validation queries, the weight with the highest
    top-1 accuracy there is taken. A hundred validation queries often leave two weights level on top-1, so ties go
    to the higher mean reciprocal rank of the true firm among each query's ``k`` links (a miss at rank 2 counts
    for more than one at rank 5 or none), then, where every validation query is linked right at several weights,
    to the higher mean margin (:func:`_mean_margin`: how far each query's true firm scores above the best other
    firm, rounded to 1e-4), and only then to the weight nearest ``default``. Since 0 (language only)
    and 1 (vision only) are candidates, the pooled embedding is chosen over a single modality only where it does
    at least as well on the validation firms. A condition without enough labels gets ``default`` (the model card's),
    or with ``unlabelled="mutual"`` the weight of :func:`mutual_neighbour_weight`: the one with the most mutual
    nearest neighbours between the sources where it finds more of them than ``default`` by a sign test over the
    queries, else ``default``; chosen on the sources themselves, without any label.

    Args:
        embeddings: ``crop_embeddings`` rows of the query and target sources (one model).
        regions: ``stg_regions`` rows (truth), or ``None`` when there are no labels.
        linkages: (query source, target source) pairs.
        default: The weight without labels, in [0, 1].
        weights: Candidate weights.
        min_queries: Validation queries needed to choose.
        unlabelled: ``"default"`` or ``"mutual"``: the rule for conditions without enough labels.

    Returns:
        ``{condition: weight}`` for every condition of ``embeddings``, and one row per condition: ocr, weight,
        chosen_by (``validation``, ``mutual_neighbours`` or ``default``), val_top1 (at the weight; NaN unless
        ``validation``), n_val, val_top1_by_weight, val_mrr_by_weight, val_margin_by_weight and mutual_by_weight
        (JSON-able dicts), and the mutual rule's sign test: mutual_gained, mutual_lost and mutual_p (0, 0 and NaN
        where it did not run).

    Raises:
        ValueError: If ``default`` or a candidate weight is outside [0, 1], or ``unlabelled`` is unknown.
    """
    from linkage_pipeline.evaluation import report

    _check_weight(default)
    for w in weights:
        _check_weight(w)
    if unlabelled not in UNLABELLED_RULES:
        raise ValueError(f"unlabelled must be one of {UNLABELLED_RULES}, got {unlabelled!r}")
    conditions = sorted(set(embeddings["ocr"])) if not embeddings.empty else []
    chosen = {c: float(default) for c in conditions}
    rows = {c: pooling_row(c, default, "default") for c in conditions}
    if regions is not None and not regions.empty and conditions and linkages:
        truth = report._truth_frames(regions)
        queries = truth[0]
        val = set(queries.loc[(queries["split"] == "val") & queries["entity_id"].notna(), "query_id"])
        query_sources = {q for q, _ in linkages}
        is_query = embeddings["source"].isin(query_sources)
        subset = embeddings[~is_query | embeddings["crop_id"].isin(val)]
        if is_query.any() and subset["crop_id"].isin(val).any():
            per_weight, mrr, margin = {}, {}, {}
            for w in weights:
                links = embedding_links(subset, linkages, methods=("multimodal",), weight=float(w))
                table = report.linkage_evaluation_table(links, regions, report_splits=("val",))
                per_weight[float(w)] = table.set_index("ocr")
                mrr[float(w)] = _mean_reciprocal_rank(links, regions, val, truth=truth)
                margin[float(w)] = _mean_margin(links, val, truth=truth)
            for c in conditions:
                accs = {w: float(t.loc[c, "top1_accuracy"]) for w, t in per_weight.items()
                        if c in t.index and pd.notna(t.loc[c, "top1_accuracy"])}
                mrrs = {w: float(mrr[w].get(c, 0.0)) for w in accs}
                margins = {w: float(margin[w].get(c, -1.0)) for w in accs}
                n_val = max((int(t.loc[c, "n"]) for t in per_weight.values() if c in t.index), default=0)
                rows[c]["n_val"], rows[c]["val_top1_by_weight"], rows[c]["val_mrr_by_weight"] = n_val, accs, mrrs
                rows[c]["val_margin_by_weight"] = margins
                if n_val < min_queries or not accs:
                    continue
                best = max(accs, key=lambda w: (accs[w], round(mrrs[w], 9), round(margins[w], 4), -abs(w - default)))
                chosen[c] = best
                rows[c].update(weight=best, chosen_by="validation", val_top1=accs[best])
    if unlabelled == "mutual":
        for c in conditions:
            if rows[c]["chosen_by"] != "default":
                continue
            weight, rates, test = mutual_neighbour_weight(embeddings[embeddings["ocr"] == c], linkages,
                                                          default=default, weights=weights)
            rows[c]["mutual_by_weight"] = rates
            if test:
                rows[c].update(mutual_gained=test["gained"], mutual_lost=test["lost"], mutual_p=test["p_value"])
            if rates and weight != float(default):
                chosen[c] = weight
                rows[c].update(weight=weight, chosen_by="mutual_neighbours")
    return chosen, pooling_table(list(rows.values()))


#: Rules for the pooling weight of a condition without enough labels (:func:`choose_pooling_weights`).
UNLABELLED_RULES: tuple[str, ...] = ("default", "mutual")
#: The configs' names of those rules (``unlabelled_weight`` of ``faiss_index`` and ``linkage_evaluation``, the
#: benches' ``--unlabelled``): ``mutual``, or ``card`` for the model card's weight.
UNLABELLED_WEIGHT_CONFIG: Mapping[str, str] = MappingProxyType({"mutual": "mutual", "card": "default"})
#: Queries per linkage scored by :func:`mutual_neighbour_rate` (a deterministic sample above it).
MUTUAL_MAX_QUERIES = 2000


def mutual_neighbours(queries: np.ndarray, targets: np.ndarray, *, max_queries: int = MUTUAL_MAX_QUERIES) -> np.ndarray:
    """Per query, whether its nearest target has it as its nearest query (mutual nearest neighbours).

    A label-free measure of how well an embedding separates two sources that print many of the same entities:
    where it confuses names, a query's nearest target is often nearer to another query. Above ``max_queries``
    queries a fixed sample of them is scored (each against every target, its target against every query), by exact
    FAISS search (:func:`~linkage_pipeline.linking.index.knn`).

    Returns:
        One boolean per scored query (in query order; empty when either side is empty).
    """
    if len(queries) == 0 or len(targets) == 0:
        return np.zeros(0, dtype=bool)
    rows = np.arange(len(queries))
    if len(rows) > max_queries:
        rows = np.sort(np.random.default_rng(0).choice(len(queries), max_queries, replace=False))
    forward = knn(queries[rows], targets, 1)[1][:, 0]  # exact (flat) search
    back = knn(targets[forward], queries, 1)[1][:, 0]
    return np.asarray(back == rows, dtype=bool)


def mutual_neighbour_rate(queries: np.ndarray, targets: np.ndarray, *, max_queries: int = MUTUAL_MAX_QUERIES) -> float:
    """Share of queries whose nearest target has them as its nearest query (:func:`mutual_neighbours`).

    Returns:
        The share in [0, 1]; NaN when either side is empty.
    """
    mutual = mutual_neighbours(queries, targets, max_queries=max_queries)
    return float(mutual.mean()) if len(mutual) else float("nan")


def mutual_neighbour_choice(
    mutual: Mapping[float, np.ndarray], default: float, *, significance: float = SIGNIFICANCE
) -> tuple[float, dict[str, float]]:
    """The rule of :func:`mutual_neighbour_weight`, for callers that score the candidates themselves.

    The candidate with the most mutual nearest neighbours (ties, to 9 decimals of the rate, to the one nearest
    ``default``) replaces the candidate nearest ``default`` only where it wins a one-sided exact sign test at
    ``significance`` over the queries on which the two disagree (mutual at one weight and not at the other). The
    highest rate alone moves with a handful of queries: with the labels of our benches' corpora hidden, it picked
    weights that cost test accuracy about as often as they gained it; a weight that truly separates the sources
    better gains mutual pairs on many queries and loses them on few.

    Args:
        mutual: Per candidate weight, :func:`mutual_neighbours` of the same queries.
        default: The weight kept unless another wins (the model card's).
        significance: Level of the sign test.

    Returns:
        The weight, and the test: ``best`` (the weight with the highest rate), ``gained``, ``lost`` (queries mutual
        only at ``best``, only at the kept weight) and ``p_value`` (1 when they never disagree).

    Raises:
        ValueError: If there is no candidate or the candidates scored different numbers of queries.
    """
    if not mutual:
        raise ValueError("mutual_neighbour_choice needs at least one candidate weight")
    if len({len(v) for v in mutual.values()}) != 1:
        raise ValueError("every candidate weight must score the same queries, got "
                         f"{ {float(w): len(v) for w, v in mutual.items()} } queries")
    rates = {w: float(np.mean(v)) if len(v) else 0.0 for w, v in mutual.items()}
    best = max(rates, key=lambda w: (round(rates[w], 9), -abs(w - default)))
    kept = min(mutual, key=lambda w: (abs(w - default), w))
    gained = int((mutual[best] & ~mutual[kept]).sum())
    lost = int((~mutual[best] & mutual[kept]).sum())
    p = float(binomtest(gained, gained + lost, 0.5, alternative="greater").pvalue) if gained + lost else 1.0
    test = {"best": float(best), "gained": gained, "lost": lost, "p_value": p}
    return (float(best) if p < significance else float(kept)), test


def mutual_neighbour_weight(
    embeddings: pd.DataFrame,
    linkages: Sequence[tuple[str, str]],
    *,
    default: float,
    weights: Sequence[float] = WEIGHT_GRID,
    significance: float = SIGNIFICANCE,
) -> tuple[float, dict[float, float], dict[str, float]]:
    """The pooling weight of one text condition chosen without labels, by mutual nearest neighbours between the
    query and target sources: the weight with the most of them replaces ``default`` only where a sign test over
    the queries says it finds more (:func:`mutual_neighbour_choice`; the queries of all linkages together).

    Args:
        embeddings: ``crop_embeddings`` rows of one condition, query and target sources.
        linkages: (query source, target source) pairs.
        default: The weight kept unless another wins (the model card's); always a candidate.
        weights: Further candidate weights.
        significance: Level of the sign test.

    Returns:
        The weight, the rate of each candidate and the test of :func:`mutual_neighbour_choice` (``default``, ``{}``
        and ``{}`` when no linkage has both sides).
    """
    sides = [(embeddings[embeddings["source"] == q], embeddings[embeddings["source"] == t]) for q, t in linkages]
    sides = [(q, t) for q, t in sides if len(q) and len(t)]
    if not sides:
        return float(default), {}, {}
    candidates = sorted({float(w) for w in weights} | {float(default)})
    mutual = {w: np.concatenate([mutual_neighbours(method_embeddings(q, "multimodal", w),
                                                   method_embeddings(t, "multimodal", w)) for q, t in sides])
              for w in candidates}
    weight, test = mutual_neighbour_choice(mutual, default, significance=significance)
    return weight, {w: float(v.mean()) for w, v in mutual.items()}, test


def _labelled_links(links: pd.DataFrame, queries: set[str], truth: tuple) -> pd.DataFrame:
    """The links of ``queries`` whose firm is among the targets, with ``hit``: whether the link's target crop is of
    the query's firm. ``truth``: ``report._truth_frames(regions)``."""
    truth_q, target_entity, target_ids = truth
    entity = {q: e for q, e in zip(truth_q["query_id"], truth_q["entity_id"], strict=True)
              if q in queries and e in target_ids}
    mine = links[links["query_crop_id"].isin(set(entity))]
    hit = mine["target_crop_id"].map(target_entity).to_numpy() == mine["query_crop_id"].map(entity).to_numpy()
    return mine.assign(hit=hit)


def _mean_margin(links: pd.DataFrame, queries: set[str], *, truth: tuple) -> dict[str, float]:
    """Per text condition, the mean over ``queries`` whose firm is among the targets of the score of the first link to
    a crop of that firm minus the score of the first link to a crop of another firm (positive: linked right, by that
    much). A query whose firm is not among its links counts its last link's score minus its first's (a bound)."""
    mine = _labelled_links(links, queries, truth)
    if mine.empty:
        return {}
    keys = ["ocr", "query_crop_id"]
    scores = mine.groupby(keys)["score"]
    frame = pd.DataFrame({"t": mine[mine["hit"]].groupby(keys)["score"].max(),
                          "o": mine[~mine["hit"]].groupby(keys)["score"].max(),
                          "first": scores.max(), "last": scores.min()})
    margin = np.where(frame["t"].isna(), frame["last"] - frame["first"],
                      frame["t"] - frame["o"].fillna(frame["last"]))
    return {str(c): float(v) for c, v in pd.Series(margin, index=frame.index).groupby(level="ocr").mean().items()}


def _mean_reciprocal_rank(
    links: pd.DataFrame, regions: pd.DataFrame, queries: set[str], *, truth: tuple | None = None
) -> dict[str, float]:
    """Per text condition, the mean over ``queries`` whose firm is among the targets of 1 / (rank of the first link
    to a crop of that firm), 0 when none of the query's links is. ``truth``: ``report._truth_frames(regions)`` when
    the caller has it already (it scores one set of links per candidate weight on the same regions)."""
    from linkage_pipeline.evaluation import report

    mine = _labelled_links(links, queries, truth if truth is not None else report._truth_frames(regions))
    if mine.empty:
        return {}
    first = mine[mine["hit"]].groupby(["ocr", "query_crop_id"])["rank"].min()
    asked = mine.groupby("ocr")["query_crop_id"].nunique()
    found = (1.0 / first.astype(float)).groupby(level="ocr").sum()
    return {str(c): float(found.get(c, 0.0)) / int(n) for c, n in asked.items()}


def update_target_indexes(
    embeddings: pd.DataFrame,
    target_sources: Sequence[str],
    out_dir: Path,
    *,
    methods: Sequence[str] = EMBEDDING_METHODS,
    weight: Weight = 0.5,
    spec: IndexSpec | None = None,
    rebuild: bool = False,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Bring the saved indexes under ``out_dir`` up to date with ``embeddings``, adding only new targets.

    For every target source, text condition and method, the saved index (:func:`index_targets` with
    ``out_dir``) is kept when it already holds exactly these targets, extended with the new targets' vectors
    when it holds a subset of them (same model, kind and pooling weight, and the same vectors for the targets it
    holds: a hash of them is kept in its metadata), and rebuilt otherwise (a target removed or its text read
    again, another kind or weight, no file). An extended flat index answers every search exactly as a
    rebuilt one; an extended IVF index keeps its trained centroids. ``rebuild`` ignores the saved indexes
    (each is replaced atomically, so a stopped run leaves the old file or the new one).

    Returns:
        ``faiss_indexes`` rows and counts ``{"unchanged", "extended", "rebuilt", "vectors_added"}`` (vectors
        added to extended indexes; a rebuilt index adds all of its vectors).
    """
    _check_weight(weight)
    spec = spec or IndexSpec()
    stats = {"unchanged": 0, "extended": 0, "rebuilt": 0, "vectors_added": 0}
    rows = []
    if embeddings.empty:
        return pd.DataFrame(rows, columns=list(FAISS_INDEXES)), stats
    model_id = check_one_model(embeddings)
    for source, condition, t, ids in _target_groups(embeddings, target_sources):
        w = weight_of(weight, condition)
        for method in methods:
            path = Path(out_dir) / _index_name(source, condition, method)
            vectors = method_embeddings(t, method, w)
            at = {c: i for i, c in enumerate(t["crop_id"])}
            old = None
            if path.is_file() and not rebuild:
                try:
                    index, meta = load_index(path, model_id=model_id)
                    if meta.kind == spec.kind and float(meta.extra.get("weight", -1)) == w:
                        old = (index, meta.ids, meta.extra.get("vectors_sha256"))
                except (ValueError, FileNotFoundError, RuntimeError) as exc:
                    logger.info("rebuilding index %s: %s", path.name, exc)
            # kept or extended only while the targets it holds have the vectors it holds (a text read again by
            # another OCR reader changes a target's vector under the same crop id)
            if (old is not None and set(old[1]) <= set(ids)
                    and old[2] == _vectors_sha256(vectors[[at[c] for c in old[1]]])):
                index, have, _ = old
                new = t[~t["crop_id"].isin(set(have))]
                ordered, dirty = list(have) + new["crop_id"].tolist(), len(new) > 0
                if dirty:
                    index.add(vectors[[at[c] for c in new["crop_id"]]])
                    stats["extended"] += 1
                    stats["vectors_added"] += len(new)
                else:
                    stats["unchanged"] += 1
            else:
                index, ordered, dirty = build_index(vectors, spec), ids, True
                stats["rebuilt"] += 1
                stats["vectors_added"] += len(ids)
            if dirty:
                meta = IndexMeta(model_id, ordered, spec.kind, int(index.d),
                                 {"source": source, "ocr": condition, "method": method, "weight": w,
                                  "vectors_sha256": _vectors_sha256(vectors[[at[c] for c in ordered]])})
                save_index(index, path, meta)
            rows.append((source, condition, method, model_id, spec.kind, w, len(ordered), int(index.d), str(path)))
    return pd.DataFrame(rows, columns=list(FAISS_INDEXES)), stats


def _hits(index: object, target_ids: Sequence[str], target_vectors: np.ndarray, queries: pd.DataFrame, method: str,
          weight: float, k: int) -> pd.DataFrame:
    """query_crop_id, target_crop_id, score of the ``k`` best targets in ``index`` for each of ``queries``.

    ``k + EXTRA_CANDIDATES`` candidates are fetched and rescored exactly from ``target_vectors`` (the index's
    vectors, in index order), so scores and order (ties by target id) do not depend on which queries were searched
    together or on the index's size.
    """
    vectors = method_embeddings(queries, method, weight)
    _, ids = search(index, vectors, k + EXTRA_CANDIDATES)
    scores = exact_scores(vectors, target_vectors, ids)
    cols = topk_frame_arrays(scores, ids, queries["crop_id"].tolist(), target_ids)
    found = pd.DataFrame({"query_crop_id": cols["query_id"], "target_crop_id": cols["target_id"], "score": cols["score"]})
    return topk_rows(found, k)[["query_crop_id", "target_crop_id", "score"]]


def _target_vectors(targets: pd.DataFrame, source: str, condition: str, ids: Sequence[str], method: str,
                    weight: float) -> np.ndarray:
    """The ``method`` embeddings of target crops ``ids`` (index order) of one source and text condition."""
    rows = targets[(targets["source"] == source) & (targets["ocr"] == condition)].drop_duplicates("crop_id")
    rows = rows.set_index("crop_id").reindex(list(ids))
    missing = rows.index[rows["image_embedding"].isna()].tolist()
    if missing:
        raise ValueError(
            f"the index of {source!r} / {condition!r} / {method!r} lists {len(missing)} crop(s) without "
            f"crop_embeddings (first {missing[:3]}); re-materialize faiss_index"
        )
    return method_embeddings(rows.reset_index(), method, weight)


def _index_search(index: object, target_ids: Sequence[str], vectors: np.ndarray, queries: pd.DataFrame, method: str,
                  weight: float) -> Search:
    """The :data:`topk.Search` of one index: every target through ``index``, a subset through a small exact index."""
    position = {t: p for p, t in enumerate(target_ids)}

    def search(query_ids: list[str], subset: list[str] | None, k: int) -> pd.DataFrame:
        q = queries[queries["crop_id"].isin(set(query_ids))]
        if subset is None:
            return _hits(index, target_ids, vectors, q, method, weight, k)
        at = [position[t] for t in subset]
        return _hits(build_index(vectors[at], IndexSpec()), subset, vectors[at], q, method, weight, k)

    return search


def link_inputs(embeddings: pd.DataFrame) -> pd.DataFrame:
    """:data:`EMBEDDING_LINK_INPUTS` rows of ``crop_embeddings`` rows: the hash of each crop's text per condition
    (what :func:`relink` compares with the next run's; a crop's image is fixed by its id, its text is not)."""
    if embeddings.empty:
        return empty_frame(EMBEDDING_LINK_INPUTS)
    rows = embeddings[["source", "ocr", "crop_id", "text"]].drop_duplicates(["source", "ocr", "crop_id"])
    return rows.assign(text_hash=text_hashes(rows["text"]))[list(EMBEDDING_LINK_INPUTS)].sort_values(
        ["source", "ocr", "crop_id"], kind="stable").reset_index(drop=True)


def _vectors_sha256(vectors: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(vectors, dtype=np.float32).tobytes()).hexdigest()


def relink(
    queries: pd.DataFrame,
    targets: pd.DataFrame,
    linkages: Sequence[tuple[str, str]],
    indexes: dict[tuple[str, str, str], tuple[object, list[str]]],
    *,
    previous: pd.DataFrame | None = None,
    previous_targets: pd.DataFrame | None = None,
    previous_inputs: pd.DataFrame | None = None,
    methods: Sequence[str] = EMBEDDING_METHODS,
    weight: Weight = 0.5,
    k: int = 5,
    training: str = "supervised",
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Top-k links of every query crop, recomputing only what new queries or new targets can change.

    For each linkage, text condition and method: when ``previous`` holds its top-k lists (same model) and
    ``previous_targets`` says which targets they were computed against, a query seen before is only searched
    against the targets added since (a small exact index of them) and its list is merged with the new hits;
    a new query is searched against the whole index; a query that is gone is dropped. When a target was
    removed, or nothing was stored, every query is searched again. A crop's text (and so its vector) may change
    under the same crop id and model (read again by another OCR reader): ``previous_inputs``
    (:func:`link_inputs` of the earlier run) says which texts the lists were computed from; when a target's text
    changed every query of that condition is searched again, and a query whose text changed is searched again
    itself. Without ``previous_inputs`` no earlier list is trusted. The result equals a full search with
    :func:`link_with_indexes` (ranks ordered by score, ties by target id).

    Args:
        queries: ``crop_embeddings`` rows of the query sources.
        targets: ``crop_embeddings`` rows of the target sources (vectors of the new targets come from here).
        linkages: (query source, target source) pairs.
        indexes: ``{(target source, condition, method): (index, target ids in index order)}``.
        previous: Earlier ``embedding_links`` rows.
        previous_targets: Earlier :data:`LINKED_TARGETS` rows.
        previous_inputs: Earlier :data:`EMBEDDING_LINK_INPUTS` rows (:func:`link_inputs`).
        weight: Image weight of the ``multimodal`` embedding, or one per condition (the indexes' weights).

    Returns:
        ``embedding_links`` rows, the :data:`LINKED_TARGETS` rows for the next call, and counts
        ``{"queries_searched", "queries_checked", "queries_changed", "queries_kept"}``: queries searched
        against a whole index, searched against new targets only, whose top-k list changed by that, and
        reused untouched.
    """
    stats = {"queries_searched": 0, "queries_checked": 0, "queries_changed": 0, "queries_kept": 0}
    if queries.empty:
        return empty_frame(EMBEDDING_LINKS), empty_frame(LINKED_TARGETS), stats
    model_id = check_one_model(queries)
    frames, linked = [], []
    prev = previous if previous is not None and not previous.empty else None
    if prev is not None:
        prev = prev[(prev["model_id"] == model_id) & (prev["training"] == training)]
    before = hashes_by_source(previous_inputs)
    now = hashes_by_source(link_inputs(pd.concat([queries, targets], ignore_index=True)))
    # the targets each earlier top-k list was computed against, per index (same model and pooling weight)
    linked_before: dict[tuple[str, str, str], set[str]] = {}
    if previous_targets is not None and not previous_targets.empty:
        same = previous_targets[previous_targets["model_id"] == model_id]
        linked_before = {
            key: set(g["crop_id"]) for key, g in same.groupby(["target_source", "ocr", "method"])
            if not isinstance(weight, Mapping) or key[1] in weight
            if (g["weight"] == weight_of(weight, key[1])).all()
        }
    for query_source, target_source in linkages:
        q_all = queries[queries["source"] == query_source]
        for condition in sorted(set(q_all["ocr"])):
            q = q_all[q_all["ocr"] == condition].sort_values("crop_id")
            for method in methods:
                found = indexes.get((target_source, condition, method))
                if found is None or q.empty:
                    continue
                w = weight_of(weight, condition)
                index, target_ids = found
                vectors = _target_vectors(targets, target_source, condition, target_ids, method, w)
                linked.append(pd.DataFrame({"target_source": target_source, "ocr": condition, "method": method,
                                            "model_id": model_id, "weight": w, "crop_id": list(target_ids)}))
                old = None
                reusable = reusable_queries(before, now, (query_source, condition), (target_source, condition))
                if prev is not None and reusable is not None:
                    old = prev[(prev["query_source"] == query_source) & (prev["target_source"] == target_source)
                               & (prev["ocr"] == condition) & (prev["method"] == method)
                               & prev["query_crop_id"].isin(reusable)]
                out, counts = incremental_topk(
                    q["crop_id"].tolist(), list(target_ids), _index_search(index, target_ids, vectors, q, method, w), k,
                    previous=old, previous_targets=linked_before.get((target_source, condition, method)),
                )
                stats = {key: stats[key] + counts[key] for key in stats}
                if len(out):
                    frames.append(out.assign(query_source=query_source, target_source=target_source, method=method,
                                             ocr=condition, training=training, model_id=model_id))
    links = (pd.concat(frames, ignore_index=True)[list(EMBEDDING_LINKS)] if frames else empty_frame(EMBEDDING_LINKS))
    targets_out = pd.concat(linked, ignore_index=True) if linked else empty_frame(LINKED_TARGETS)
    return links, targets_out, stats
