"""Hybrid links: the model's multimodal candidates and the character n-gram candidates, ranked by one score.

Where OCR is good and names differ by a character, character n-grams can link better than the model (on a corpus
drawn by independent code the best string method linked 0.970 of rapidocr's readings where the multimodal model
linked 0.962), and the two make different mistakes. The ``hybrid`` method scores each query's candidates from both
lists (the union of the multimodal top-k and the n-gram top-k) by

    (1 - beta) * cosine of the pooled embeddings + beta * character n-gram similarity

and keeps the top k. ``beta`` (the string weight) is chosen per OCR condition on the labelled validation firms,
as the pooling weight is (:func:`choose_string_weights`): the best validation top-1 among 0, 0.1, ..., 1, taken
only when it links significantly more validation queries than ``beta = 0`` (the model alone) by a one-sided exact
sign test on the queries where the two disagree (McNemar's test, level 0.05); else 0.

Without enough labels the **image tower votes** (``unlabelled="votes"``): the model's vision-only embedding sees
the crop, not the OCR text, so it is a judge the text-side errors of the model and of the n-grams do not reach. For
each weight, the share of queries whose top hybrid candidate is the vision tower's own nearest target; the weight
with the highest share (ties to the smaller) is taken when, on the queries where it and ``beta = 0`` pick different
targets, the vision tower sides with it significantly more often than with the model alone (the same one-sided
sign test at the same level). The pooled embedding holds the image too, so the vision tower leans towards the
model alone: the rule errs towards ``beta = 0``. With ``unlabelled="none"`` (or no vision links) ``beta`` is 0
without labels, so the hybrid links are the model's own. Both scores are computed for every candidate, so the
ranking does not depend on which list found it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from linkage_pipeline.linking.strings import pairwise_string_similarity
from linkage_pipeline.multimodal.embed import method_embeddings
from linkage_pipeline.schema import EMBEDDING_LINKS, empty_frame

HYBRID_METHOD = "hybrid"
#: The string method the hybrid score adds to the model's.
HYBRID_STRING_METHOD = "ngram"
#: Candidate string weights.
STRING_WEIGHT_GRID: tuple[float, ...] = tuple(float(w) for w in np.round(np.linspace(0.0, 1.0, 11), 1))
#: Level of the sign test a string weight above 0 must pass on the validation firms.
SIGNIFICANCE = 0.05
#: Labelled validation queries a condition needs before a string weight above 0 is considered.
MIN_VALIDATION_QUERIES = 20
#: Rules for a condition without enough labels: ``votes`` (the image tower votes) or ``none`` (``beta = 0``).
UNLABELLED_STRING_RULES: tuple[str, ...] = ("votes", "none")
#: The model method whose top-1 links are the judge of the ``votes`` rule.
JUDGE_METHOD = "vision"
_QUERY_KEY = ["query_source", "target_source", "ocr", "query_crop_id"]


def hybrid_candidates(
    model_links: pd.DataFrame,
    string_links: pd.DataFrame,
    embeddings: pd.DataFrame,
    linkages: Sequence[tuple[str, str]],
    pooling_weight: float | Mapping[str, float],
) -> pd.DataFrame:
    """Every (query, target, condition) pair found by the model's multimodal links or the n-gram string links, with
    both scores.

    Args:
        model_links: ``embedding_links`` rows of one model (its ``multimodal`` rows are used).
        string_links: ``string_links`` rows (its ``ngram`` rows are used).
        embeddings: ``crop_embeddings`` rows of the query and target sources (that model), with their texts.
        linkages: (query source, target source) pairs.
        pooling_weight: Image weight of the pooled embedding, one for all conditions or one per condition (the
            weights the model's indexes were built with).

    Returns:
        One row per pair: query_crop_id, target_crop_id, query_source, target_source, ocr, cosine, ngram. Pairs
        whose query or target has no embedding in that condition are left out.
    """
    columns = ["query_crop_id", "target_crop_id", "query_source", "target_source", "ocr", "cosine", "ngram"]
    keys = ["query_crop_id", "target_crop_id", "query_source", "target_source", "ocr"]
    mm = model_links.loc[model_links["method"] == "multimodal", keys]
    ng = string_links.loc[string_links["method"] == HYBRID_STRING_METHOD, keys]
    pairs = pd.concat([mm, ng], ignore_index=True).drop_duplicates(ignore_index=True)
    wanted = set(linkages)
    keep = np.fromiter(((q, t) in wanted for q, t in zip(pairs["query_source"], pairs["target_source"], strict=True)),
                       dtype=bool, count=len(pairs))
    pairs = pairs[keep]
    frames = []
    for condition, group in pairs.groupby("ocr", sort=True):
        rows = embeddings[embeddings["ocr"] == condition].drop_duplicates("crop_id").reset_index(drop=True)
        if rows.empty:
            continue
        if isinstance(pooling_weight, Mapping) and condition not in pooling_weight:
            continue  # no index of the model for this condition: no multimodal score
        w = float(pooling_weight[condition]) if isinstance(pooling_weight, Mapping) else float(pooling_weight)
        position = pd.Series(np.arange(len(rows)), index=rows["crop_id"])
        group = group[group["query_crop_id"].isin(position.index) & group["target_crop_id"].isin(position.index)]
        if group.empty:
            continue
        vectors = method_embeddings(rows, "multimodal", w)
        qi = position.loc[group["query_crop_id"]].to_numpy()
        ti = position.loc[group["target_crop_id"]].to_numpy()
        cosine = np.einsum("ij,ij->i", vectors[qi], vectors[ti]).astype(np.float64)
        texts = rows["text"].fillna("").astype(str).to_numpy()
        ngram = pairwise_string_similarity(texts[qi].tolist(), texts[ti].tolist(), method=HYBRID_STRING_METHOD)
        frames.append(group.assign(cosine=cosine, ngram=ngram.astype(np.float64)))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c in ("cosine", "ngram") else "object")
                             for c in columns})
    return pd.concat(frames, ignore_index=True)[columns]


def _fused(candidates: pd.DataFrame, beta: float) -> np.ndarray:
    return (1.0 - beta) * candidates["cosine"].to_numpy() + beta * candidates["ngram"].to_numpy()


def _ranked(candidates: pd.DataFrame, beta: float) -> pd.DataFrame:
    """Candidates with their fused score, best first per query (ties by target id), with a 1-based rank."""
    scored = candidates.assign(score=_fused(candidates, beta))
    scored = scored.sort_values(["query_source", "target_source", "ocr", "query_crop_id", "score", "target_crop_id"],
                                ascending=[True, True, True, True, False, True], kind="mergesort")
    rank = scored.groupby(["query_source", "target_source", "ocr", "query_crop_id"], sort=False).cumcount() + 1
    return scored.assign(rank=rank.astype(np.int64))


def hybrid_links(
    candidates: pd.DataFrame,
    string_weight: float | Mapping[str, float],
    *,
    model_id: str,
    k: int = 5,
    training: str = "supervised",
) -> pd.DataFrame:
    """``embedding_links`` rows of method ``hybrid``: each query's candidates ranked by the fused score, top ``k``.

    Args:
        candidates: :func:`hybrid_candidates` rows.
        string_weight: ``beta``, one for all conditions or one per condition (a condition not named gets 0).
        model_id: The model whose embeddings gave the cosines.
        k: Links kept per query.
    """
    if candidates.empty:
        return empty_frame(EMBEDDING_LINKS)
    frames = []
    for condition, group in candidates.groupby("ocr", sort=True):
        beta = float(string_weight.get(condition, 0.0)) if isinstance(string_weight, Mapping) else float(string_weight)
        ranked = _ranked(group, beta)
        frames.append(ranked[ranked["rank"] <= k])
    out = pd.concat(frames, ignore_index=True).assign(method=HYBRID_METHOD, training=training, model_id=model_id)
    out["score"] = out["score"].astype(np.float64)
    return out[list(EMBEDDING_LINKS)].reset_index(drop=True)


def with_hybrid_links(
    model_links: pd.DataFrame,
    string_links: pd.DataFrame,
    embeddings: pd.DataFrame,
    linkages: Sequence[tuple[str, str]],
    pooling_weight: float | Mapping[str, float],
    regions: pd.DataFrame | None,
    *,
    model_id: str,
    training: str = "supervised",
    k: int = 5,
    unlabelled: str = "votes",
) -> tuple[pd.DataFrame, dict[str, float], pd.DataFrame]:
    """``model_links`` plus their ``hybrid`` rows: the candidates of :func:`hybrid_candidates`, the string weight
    of :func:`choose_string_weights` (on ``regions``' validation firms, else by the votes of ``model_links``' vision
    links) and the links of :func:`hybrid_links`.

    Returns:
        The links, ``{condition: beta}`` and :func:`choose_string_weights`' table.
    """
    candidates = hybrid_candidates(model_links, string_links, embeddings, linkages, pooling_weight)
    betas, table = choose_string_weights(candidates, regions, judge=judge_links(model_links), unlabelled=unlabelled)
    rows = hybrid_links(candidates, betas, model_id=model_id, k=k, training=training)
    return pd.concat([model_links, rows], ignore_index=True), betas, table


def _top1(candidates: pd.DataFrame, beta: float) -> pd.Series:
    """Each query's best candidate at ``beta`` (ties by target id), indexed by :data:`_QUERY_KEY`."""
    if candidates.empty:
        return pd.Series(dtype=object, index=pd.MultiIndex.from_arrays([[]] * len(_QUERY_KEY), names=_QUERY_KEY))
    ranked = _ranked(candidates, beta)
    best = ranked[ranked["rank"] == 1]
    return pd.Series(best["target_crop_id"].to_numpy(), index=pd.MultiIndex.from_frame(best[_QUERY_KEY]))


def judge_links(model_links: pd.DataFrame) -> pd.DataFrame:
    """The top-1 links of the model's vision-only embedding (the judge of the ``votes`` rule)."""
    rows = model_links[(model_links["method"] == JUDGE_METHOD) & (model_links["rank"] == 1)]
    return rows[[*_QUERY_KEY, "target_crop_id"]].drop_duplicates(_QUERY_KEY).reset_index(drop=True)


def _image_votes(group: pd.DataFrame, judge: pd.DataFrame, weights: Sequence[float]
                 ) -> tuple[dict[float, float], dict[float, pd.Series], pd.Series]:
    """Per weight: the share of judged queries whose top candidate is the judge's pick, and each query's pick."""
    verdict = pd.Series(judge["target_crop_id"].to_numpy(), index=pd.MultiIndex.from_frame(judge[_QUERY_KEY]))
    grid = [float(w) for w in weights]
    picks = {w: _top1(group, w) for w in {*grid, 0.0}}
    judged = verdict.reindex(picks[0.0].index)
    agree = {w: float((picks[w].reindex(judged.index) == judged).mean()) for w in grid}
    return agree, picks, judged


def _top1_correct(candidates: pd.DataFrame, beta: float, truth: Mapping[str, str],
                  target_entity: Mapping[str, str]) -> pd.Series:
    """Per query crop in ``truth``: whether its best candidate at ``beta`` is a crop of its firm."""
    best = _top1(candidates, beta).groupby(level="query_crop_id", sort=False).first()
    ids = list(truth)
    return pd.Series([target_entity.get(str(best.get(q, "")), None) == truth[q] for q in ids], index=ids)


def choose_string_weights(
    candidates: pd.DataFrame,
    regions: pd.DataFrame | None,
    *,
    weights: Sequence[float] = STRING_WEIGHT_GRID,
    min_queries: int = MIN_VALIDATION_QUERIES,
    significance: float = SIGNIFICANCE,
    judge: pd.DataFrame | None = None,
    unlabelled: str = "votes",
) -> tuple[dict[str, float], pd.DataFrame]:
    """The string weight ``beta`` of each OCR condition, chosen on the labelled validation firms, else by the image
    tower's votes.

    For a condition with at least ``min_queries`` validation queries whose firm is among the targets, the weight
    with the best validation top-1 (ties to the smaller weight) is taken when it beats ``beta = 0`` significantly:
    of the queries where the two disagree, the share it gets right must pass a one-sided exact binomial test at
    ``significance`` (McNemar's test). A condition with fewer, with ``unlabelled="votes"`` and ``judge`` rows for
    it, gets the weight whose top candidates agree most with the judge's, taken when the judge sides with it
    significantly more often than with ``beta = 0`` where the two differ (the same test). Otherwise ``beta`` is 0:
    the model alone.

    Args:
        candidates: :func:`hybrid_candidates` rows.
        regions: ``stg_regions`` rows (truth), or ``None`` without labels.
        judge: :func:`judge_links` rows (the vision tower's top-1 of each query), or ``None``.
        unlabelled: ``votes`` or ``none`` (:data:`UNLABELLED_STRING_RULES`).

    Returns:
        ``{condition: beta}`` for every condition of ``candidates``, and one row per condition: ocr, weight,
        chosen_by (``validation``, ``image_votes`` or ``default``), n_val, val_top1_by_weight (a dict), n_votes
        (queries the judge picked a target for), agreement_by_weight (a dict), gained / lost (queries the chosen
        weight gets right and ``beta = 0`` wrong, and the reverse; by the judge's verdict under ``image_votes``)
        and p_value.
    """
    from linkage_pipeline.evaluation import report

    for w in weights:
        if not 0.0 <= float(w) <= 1.0:
            raise ValueError(f"string weights must be in [0, 1], got {w}")
    if not 0.0 < significance < 1.0:
        raise ValueError(f"significance must be in (0, 1), got {significance}")
    if unlabelled not in UNLABELLED_STRING_RULES:
        raise ValueError(f"unlabelled must be one of {list(UNLABELLED_STRING_RULES)}, got {unlabelled!r}")
    conditions = sorted(set(candidates["ocr"])) if not candidates.empty else []
    chosen = {c: 0.0 for c in conditions}
    rows = {c: {"ocr": c, "weight": 0.0, "chosen_by": "default", "n_val": 0, "val_top1_by_weight": {},
                "n_votes": 0, "agreement_by_weight": {}, "gained": 0, "lost": 0, "p_value": float("nan")}
            for c in conditions}
    labelled: set[str] = set()
    if regions is not None and not regions.empty and conditions:
        queries, target_entity, in_targets = report._truth_frames(regions)
        val = queries[(queries["split"] == "val") & queries["entity_id"].isin(in_targets)]
        truth_all = dict(zip(val["query_id"], val["entity_id"], strict=True))
        for c in conditions:
            group = candidates[candidates["ocr"] == c]
            present = set(group["query_crop_id"])
            truth = {q: e for q, e in truth_all.items() if q in present}
            rows[c]["n_val"] = len(truth)
            if len(truth) < min_queries:
                continue
            labelled.add(c)
            correct = {float(w): _top1_correct(group, float(w), truth, target_entity) for w in weights}
            accs = {w: float(s.mean()) for w, s in correct.items()}
            rows[c]["val_top1_by_weight"] = accs
            best = max(accs, key=lambda w: (accs[w], -w))
            base = correct[0.0] if 0.0 in correct else _top1_correct(group, 0.0, truth, target_entity)
            gained = int((correct[best] & ~base).sum())
            lost = int((~correct[best] & base).sum())
            p = float(binomtest(gained, gained + lost, 0.5, alternative="greater").pvalue) if gained + lost else 1.0
            rows[c].update(gained=gained, lost=lost, p_value=p)
            if best > 0.0 and p < significance:
                chosen[c] = best
                rows[c].update(weight=best, chosen_by="validation")
    if unlabelled == "votes" and judge is not None and not judge.empty:
        for c in conditions:
            votes = judge[judge["ocr"] == c]
            if c in labelled or votes.empty:
                continue
            agree, picks, judged = _image_votes(candidates[candidates["ocr"] == c], votes, weights)
            n_votes = int(judged.notna().sum())
            rows[c].update(n_votes=n_votes, agreement_by_weight=agree)
            if not n_votes:
                continue
            best = max(agree, key=lambda w: (round(agree[w], 9), -w))
            differ = picks[best] != picks[0.0]
            gained = int((differ & (picks[best] == judged)).sum())
            lost = int((differ & (picks[0.0] == judged)).sum())
            p = float(binomtest(gained, gained + lost, 0.5, alternative="greater").pvalue) if gained + lost else 1.0
            rows[c].update(gained=gained, lost=lost, p_value=p)
            if best > 0.0 and p < significance:
                chosen[c] = best
                rows[c].update(weight=best, chosen_by="image_votes")
    table = pd.DataFrame(list(rows.values()), columns=["ocr", "weight", "chosen_by", "n_val", "val_top1_by_weight",
                                                       "n_votes", "agreement_by_weight", "gained", "lost", "p_value"])
    return chosen, table
