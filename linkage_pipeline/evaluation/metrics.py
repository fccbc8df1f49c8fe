"""Scoring every stage against ``labels.csv``: layout (IoU matching), OCR (CER) and linkage (top-1 accuracy).

Conventions used throughout:

- Boxes are ``(x0, y0, x1, y1)`` in pixels with ``x1``/``y1`` exclusive, so a box's area is
  ``(x1 - x0) * (y1 - y0)``.
- Entity ids are compared as strings; missing ids (``None``/NaN, e.g. headings) never equal anything.
- Linkage accuracy follows the CLIPPINGS paper. ``top1_accuracy`` (its Table 1) is computed over queries whose
  firm appears in the target source; ``top1_accuracy_with_nomatch`` (its Table S-2) is computed over all
  queries, where a query whose firm is absent from the target is right when its best score falls below the
  no-match threshold. The threshold is tuned on the validation split of *firms* and applied elsewhere.
"""

from __future__ import annotations

import hashlib
import logging
import math
import unicodedata
from collections.abc import Collection, Iterable, Sequence

import numpy as np
import pandas as pd
from rapidfuzz.distance import Levenshtein

from linkage_pipeline.schema import LABEL_ROLES, require_columns

logger = logging.getLogger(__name__)


BOX_COLUMNS = ("x0", "y0", "x1", "y1")
REGION_COLUMNS = ("region_id", "page", *BOX_COLUMNS)
LABEL_COLUMNS = ("page", *BOX_COLUMNS, "text", "entity_id", "role")
MATCH_COLUMNS = ("region_id", "label_index", "iou", "text", "entity_id", "role")
SPLITS = ("train", "val", "test")
#: Columns of the ``linkage_evaluation`` table, in order.
LINKAGE_EVALUATION_COLUMNS = (
    "method",
    "training",
    "ocr",
    "split",
    "top1_accuracy",
    "top1_accuracy_with_nomatch",
    "nomatch_threshold",
    "n",
    "n_with_nomatch",
)
CONDITION_COLUMNS = ("method", "training", "ocr")
#: Detected-region kind that each ``labels.csv`` role should be detected as.
ROLE_TO_KIND = {
    "title": "title", "heading": "heading", "supplier": "entry", "customer": "entry", "entry": "entry", "body": "body"
}


# --------------------------------------------------------------------------------------------------- helpers
def _is_missing(value: object) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _ids(values: Iterable[object]) -> np.ndarray:
    """Entity ids as an object array of str, with None for missing values."""
    return np.array([None if _is_missing(v) else str(v) for v in values], dtype=object)


def _boxes(df: pd.DataFrame, name: str) -> np.ndarray:
    """(n, 4) float64 boxes from the x0, y0, x1, y1 columns, validated."""
    boxes = df.loc[:, list(BOX_COLUMNS)].to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(boxes).any(axis=1) | (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        rows = df.index[bad][:5].tolist()
        raise ValueError(
            f"{name} has {int(bad.sum())} invalid boxes (rows {rows}...); expected finite x0 <= x1 and y0 <= y1"
        )
    return boxes


# ------------------------------------------------------------------------------------------------- layout
def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes.

    Args:
        a: ``(x0, y0, x1, y1)`` with ``x0 <= x1`` and ``y0 <= y1``.
        b: Same format.

    Returns:
        IoU in ``[0, 1]``; 0 when the union has no area.

    Raises:
        ValueError: If a box does not have four coordinates or has ``x1 < x0`` / ``y1 < y0``.
    """
    m = iou_matrix(np.asarray([a], dtype=np.float64), np.asarray([b], dtype=np.float64))
    return float(m[0, 0])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two sets of boxes.

    Args:
        a: ``(n, 4)`` array of ``(x0, y0, x1, y1)``.
        b: ``(m, 4)`` array of ``(x0, y0, x1, y1)``.

    Returns:
        float64 array of shape ``(n, m)``.

    Raises:
        ValueError: If an input is not ``(k, 4)`` or has inverted coordinates.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    for name, arr in (("a", a), ("b", b)):
        if arr.ndim != 2 or arr.shape[1] != 4:
            raise ValueError(f"boxes {name} must have shape (n, 4) as (x0, y0, x1, y1), got shape {arr.shape}")
        if np.isnan(arr).any() or (arr[:, 2] < arr[:, 0]).any() or (arr[:, 3] < arr[:, 1]).any():
            raise ValueError(f"boxes {name} must be finite with x0 <= x1 and y0 <= y1")
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return out


def match_regions_to_labels(
    regions: pd.DataFrame, labels: pd.DataFrame, *, iou_threshold: float = 0.5
) -> pd.DataFrame:
    """One-to-one greedy matching of detected regions to labelled boxes, page by page.

    On each page, all (region, label) pairs with ``IoU >= iou_threshold`` are taken in order of decreasing IoU
    (ties: earlier region row, then earlier label row) and kept when neither side is already matched.

    Args:
        regions: Detected regions with columns ``region_id``, ``page`` (file name as in ``labels.csv``),
            ``x0, y0, x1, y1``.
        labels: Ground truth with columns ``page, x0, y0, x1, y1, text, entity_id, role``.
        iou_threshold: Minimum IoU of a match, in ``(0, 1]``.

    Returns:
        One row per matched pair, ordered as the regions: ``region_id``, ``label_index`` (the label's index
        value in ``labels``), ``iou`` (float64), and the label's ``text``, ``entity_id`` and ``role``.

    Raises:
        ValueError: On missing columns, invalid boxes, duplicated ``region_id`` or a threshold outside (0, 1].
    """
    require_columns(regions, REGION_COLUMNS, "regions")
    require_columns(labels, LABEL_COLUMNS, "labels")
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    if regions["region_id"].duplicated().any():
        dupes = regions.loc[regions["region_id"].duplicated(), "region_id"].head(5).tolist()
        raise ValueError(f"regions.region_id must be unique, found duplicates {dupes}")
    r_boxes = _boxes(regions, "regions")
    l_boxes = _boxes(labels, "labels")
    r_pages = regions["page"].astype(str).to_numpy()
    l_pages = labels["page"].astype(str).to_numpy()

    pairs: list[tuple[int, int, float]] = []  # (region position, label position, iou)
    for page in pd.unique(r_pages):
        ri = np.flatnonzero(r_pages == page)
        li = np.flatnonzero(l_pages == page)
        if len(li) == 0:
            continue
        m = iou_matrix(r_boxes[ri], l_boxes[li])
        cand_r, cand_l = np.nonzero(m >= iou_threshold)
        if len(cand_r) == 0:
            continue
        vals = m[cand_r, cand_l]
        order = np.lexsort((cand_l, cand_r, -vals))
        used_r: set[int] = set()
        used_l: set[int] = set()
        for o in order:
            r, lab = int(cand_r[o]), int(cand_l[o])
            if r in used_r or lab in used_l:
                continue
            used_r.add(r)
            used_l.add(lab)
            pairs.append((int(ri[r]), int(li[lab]), float(vals[o])))

    pairs.sort()
    r_pos = [p[0] for p in pairs]
    l_pos = [p[1] for p in pairs]
    out = pd.DataFrame(
        {
            "region_id": regions["region_id"].to_numpy()[r_pos] if pairs else np.array([], dtype=object),
            "label_index": labels.index.to_numpy()[l_pos] if pairs else np.array([], dtype=object),
            "iou": np.array([p[2] for p in pairs], dtype=np.float64),
            "text": labels["text"].to_numpy()[l_pos] if pairs else np.array([], dtype=object),
            "entity_id": labels["entity_id"].to_numpy()[l_pos] if pairs else np.array([], dtype=object),
            "role": labels["role"].to_numpy()[l_pos] if pairs else np.array([], dtype=object),
        },
        columns=list(MATCH_COLUMNS),
    )
    logger.debug("matched %d of %d regions to %d labels", len(out), len(regions), len(labels))
    return out


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def layout_metrics(
    regions: pd.DataFrame,
    labels: pd.DataFrame,
    matches: pd.DataFrame,
    *,
    only_labelled_pages: bool = True,
) -> dict[str, float | int]:
    """Detection precision/recall from the output of :func:`match_regions_to_labels`.

    Args:
        regions: Detected regions (``region_id``, ``page``, optional ``kind``).
        labels: Ground truth (``page``, ``role``).
        matches: Matched pairs from :func:`match_regions_to_labels` (``region_id``, ``role``).
        only_labelled_pages: Count only detections on pages that have at least one label, so that pages a
            corpus did not annotate do not count as false positives.

    Returns:
        ``precision`` = n_matched / n_detected, ``recall`` = n_matched / n_labelled, ``f1``, ``mean_iou`` of
        the matches, ``n_detected``, ``n_labelled``, ``n_matched``, and ``kind_accuracy``: the share of matches
        whose region ``kind`` equals the label role mapped by :data:`ROLE_TO_KIND` (supplier/customer/entry ->
        entry); NaN when ``regions`` has no ``kind`` column. Ratios with a zero denominator are NaN.

    Raises:
        ValueError: On missing columns or label roles outside ``schema.LABEL_ROLES``.
    """
    require_columns(regions, ("region_id", "page"), "regions")
    require_columns(labels, ("page", "role"), "labels")
    require_columns(matches, ("region_id", "role"), "matches")
    unknown = sorted({str(r) for r in labels["role"].dropna()} - set(LABEL_ROLES))
    if unknown:
        raise ValueError(f"labels.role has unknown roles {unknown}; expected one of {list(LABEL_ROLES)}")
    if only_labelled_pages:
        regions = regions[regions["page"].astype(str).isin(set(labels["page"].astype(str)))]
    n_detected, n_labelled, n_matched = len(regions), len(labels), len(matches)
    precision = _ratio(n_matched, n_detected)
    recall = _ratio(n_matched, n_labelled)
    if math.isnan(precision) or math.isnan(recall):
        f1 = float("nan")
    else:
        f1 = _ratio(2 * precision * recall, precision + recall) if n_matched else 0.0
    mean_iou = float(matches["iou"].mean()) if "iou" in matches.columns and n_matched else float("nan")
    kind_accuracy = float("nan")
    if "kind" in regions.columns and n_matched:
        kinds = dict(zip(regions["region_id"], regions["kind"], strict=True))
        expected = matches["role"].map(ROLE_TO_KIND)
        got = matches["region_id"].map(kinds)
        kind_accuracy = float((got.to_numpy() == expected.to_numpy()).mean())
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "mean_iou": mean_iou,
        "n_detected": int(n_detected),
        "n_labelled": int(n_labelled),
        "n_matched": int(n_matched),
        "kind_accuracy": kind_accuracy,
    }


# ---------------------------------------------------------------------------------------------------- OCR
def character_error_rate(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """Corpus-level character error rate.

    ``sum(levenshtein(p, t)) / sum(len(t))`` after NFKC on both sides (no other normalisation: whitespace is an
    error like any other character). ``None``/NaN reads as the empty string.

    Args:
        predicted: ``n`` OCR outputs.
        truth: ``n`` true texts, aligned with ``predicted``.

    Returns:
        The CER (0 is perfect; it can exceed 1 when predictions are longer than the truth); NaN when the truth
        has no characters at all.

    Raises:
        ValueError: If the lengths differ or an element is not a string.
    """
    predicted, truth = list(predicted), list(truth)
    if len(predicted) != len(truth):
        raise ValueError(f"predicted and truth must have the same length, got {len(predicted)} and {len(truth)}")

    def nfkc(x: object, name: str, i: int) -> str:
        if _is_missing(x):
            return ""
        if not isinstance(x, str):
            raise ValueError(f"{name}[{i}] must be a str, got {type(x).__name__}: {x!r}")
        return unicodedata.normalize("NFKC", x)

    edits = 0
    chars = 0
    for i, (p, t) in enumerate(zip(predicted, truth, strict=True)):
        p_n, t_n = nfkc(p, "predicted", i), nfkc(t, "truth", i)
        edits += Levenshtein.distance(p_n, t_n)
        chars += len(t_n)
    return edits / chars if chars else float("nan")


# -------------------------------------------------------------------------------------------------- splits
def assign_split(
    entity_ids: Sequence[str], *, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), seed: int = 0
) -> np.ndarray:
    """Train/val/test split by firm, stable across runs, machines and row order.

    Each id is hashed with ``sha256(f"{seed}:{entity_id}")``; the first 8 bytes give a uniform number in
    ``[0, 1)`` that is cut at the cumulative fractions. All rows of one firm therefore land in the same split,
    and adding firms never moves existing ones. Realised shares approach ``fractions`` only for many firms.

    Args:
        entity_ids: ``n`` entity ids (converted with ``str``; pass strings, since ``1`` and ``1.0`` differ).
        fractions: Shares of train, val and test; non-negative, summing to 1.
        seed: Changes the assignment as a whole.

    Returns:
        Array of shape ``(n,)``, dtype ``<U5``, values ``"train"``, ``"val"``, ``"test"``.

    Raises:
        ValueError: On missing entity ids or invalid fractions.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or (fr < 0).any() or not math.isclose(float(fr.sum()), 1.0, abs_tol=1e-9):
        raise ValueError(
            f"fractions must be three non-negative shares (train, val, test) summing to 1, got {fractions!r}"
        )
    ids = list(entity_ids)
    missing = [i for i, v in enumerate(ids) if _is_missing(v)]
    if missing:
        raise ValueError(
            f"entity_ids has {len(missing)} missing values (positions {missing[:5]}...); every row needs a firm id"
        )
    cuts = np.cumsum(fr)[:2]
    cache: dict[str, str] = {}
    out = np.empty(len(ids), dtype="<U5")
    for i, v in enumerate(ids):
        key = str(v)
        split = cache.get(key)
        if split is None:
            digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
            u = int.from_bytes(digest[:8], "big") / 2.0**64
            split = SPLITS[int(np.searchsorted(cuts, u, side="right"))]
            cache[key] = split
        out[i] = split
    return out


# ------------------------------------------------------------------------------------------------- linkage
def linkage_outcomes(
    predicted_entity_ids: Sequence[str | None],
    true_entity_ids: Sequence[str],
    target_entity_ids: Collection[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Per-query correctness of the top-1 target and whether the query's firm exists in the target source.

    Args:
        predicted_entity_ids: ``n`` entity ids of each query's top-1 target region (None when no candidate).
        true_entity_ids: ``n`` true entity ids of the queries.
        target_entity_ids: Entity ids present in the target source (a firm may be listed there many times; a
            top-1 is correct when the retrieved region's entity equals the query's).

    Returns:
        ``(correct, in_target)``, two bool arrays of shape ``(n,)``.

    Raises:
        ValueError: If the lengths differ or a true entity id is missing.
    """
    pred = _ids(predicted_entity_ids)
    true = _ids(true_entity_ids)
    if len(pred) != len(true):
        raise ValueError(
            "predicted_entity_ids and true_entity_ids must have the same length, "
            f"got {len(pred)} and {len(true)}"
        )
    if any(t is None for t in true):
        raise ValueError("true_entity_ids has missing values; drop unlabelled queries before scoring")
    targets = {str(t) for t in target_entity_ids if not _is_missing(t)}
    correct = np.array([p is not None and p == t for p, t in zip(pred, true, strict=True)], dtype=bool)
    in_target = np.array([t in targets for t in true], dtype=bool)
    return correct, in_target


def _scores(scores: Sequence[float], n: int) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != n:
        raise ValueError(f"scores must have one value per query ({n}), got {len(s)}")
    # a query with no candidate (NaN score) can only ever be declared "no match"
    return np.where(np.isnan(s), -np.inf, s)


def top1_accuracy(
    predicted_entity_ids: Sequence[str | None],
    true_entity_ids: Sequence[str],
    target_entity_ids: Collection[str],
) -> float:
    """CLIPPINGS Table 1 accuracy: share of queries whose firm is in the target source with a correct top-1.

    Args:
        predicted_entity_ids: ``n`` top-1 target entity ids (None when no candidate).
        true_entity_ids: ``n`` true entity ids.
        target_entity_ids: Entity ids present in the target source.

    Returns:
        Accuracy in ``[0, 1]``; NaN when no query's firm is in the target source.
    """
    correct, in_target = linkage_outcomes(predicted_entity_ids, true_entity_ids, target_entity_ids)
    return float(correct[in_target].mean()) if in_target.any() else float("nan")


def _nomatch_accuracy(scores: np.ndarray, correct: np.ndarray, in_target: np.ndarray, threshold: float) -> float:
    linked = scores >= threshold
    right = np.where(in_target, linked & correct, ~linked)
    return float(right.mean()) if len(right) else float("nan")


def top1_accuracy_with_nomatch(
    predicted_entity_ids: Sequence[str | None],
    scores: Sequence[float],
    true_entity_ids: Sequence[str],
    target_entity_ids: Collection[str],
    threshold: float,
) -> float:
    """CLIPPINGS Table S-2 accuracy: over all queries, including firms absent from the target source.

    A query is linked when its top-1 score is ``>= threshold``. It is right when (its firm is in the target,
    it is linked, and the top-1 is correct) or (its firm is not in the target and it is not linked).

    Args:
        predicted_entity_ids: ``n`` top-1 target entity ids (None when no candidate).
        scores: ``n`` top-1 similarities (NaN = no candidate, never linked).
        true_entity_ids: ``n`` true entity ids.
        target_entity_ids: Entity ids present in the target source.
        threshold: No-match threshold (e.g. from :func:`tune_nomatch_threshold` on the validation split).

    Returns:
        Accuracy in ``[0, 1]``; NaN when there are no queries.
    """
    correct, in_target = linkage_outcomes(predicted_entity_ids, true_entity_ids, target_entity_ids)
    return _nomatch_accuracy(_scores(scores, len(correct)), correct, in_target, float(threshold))


def tune_nomatch_threshold(scores: Sequence[float], correct: Sequence[bool], in_target: Sequence[bool]) -> float:
    """The no-match threshold that maximises :func:`top1_accuracy_with_nomatch` on the given queries.

    Call this on the validation split only. Accuracy is a step function of the threshold that changes only at
    observed scores, so every interval between consecutive distinct scores ``(s_{j-1}, s_j]`` is one candidate,
    plus "link everything" (``t <= s_min``) and "link nothing" (``t > s_max``). Tie-breaking is deterministic:
    the lowest optimal interval wins (it links the most queries) and is widened to the contiguous run of
    optimal intervals above it; the returned value is the midpoint between the score just below that plateau
    and the highest score inside it, leaving equal margin to the validation scores on both sides. When the
    plateau starts at "link everything" the result is ``s_min``; when only "link nothing" is optimal it is the
    next float above ``s_max``.

    Args:
        scores: ``n`` top-1 similarities; NaN means no candidate and is never linked.
        correct: ``n`` bools, top-1 entity equals the query's entity.
        in_target: ``n`` bools, the query's firm exists in the target source.

    Returns:
        The threshold (float); a query is linked when ``score >= threshold``.

    Raises:
        ValueError: If the inputs are empty, differ in length, or no score is finite.
    """
    correct_a = np.asarray(correct, dtype=bool).reshape(-1)
    in_target_a = np.asarray(in_target, dtype=bool).reshape(-1)
    n = len(correct_a)
    if n == 0:
        raise ValueError("tune_nomatch_threshold needs at least one query, got none")
    if len(in_target_a) != n:
        raise ValueError(f"correct and in_target must have the same length, got {n} and {len(in_target_a)}")
    s = _scores(scores, n)
    finite = np.unique(s[np.isfinite(s)])  # sorted ascending
    if len(finite) == 0:
        raise ValueError("scores has no finite values; a threshold cannot be tuned")
    positives = np.sort(s[in_target_a & correct_a])  # right only when linked
    negatives = np.sort(s[~in_target_a])  # right only when not linked
    candidates = np.append(finite, np.nextafter(finite[-1], np.inf))
    linked_right = len(positives) - np.searchsorted(positives, candidates, side="left")
    unlinked_right = np.searchsorted(negatives, candidates, side="left")
    acc = (linked_right + unlinked_right) / n
    m = len(finite)
    best = acc.max()
    j = int(np.argmax(acc))  # the lowest optimal interval ...
    j2 = j
    while j2 + 1 <= m and acc[j2 + 1] == best:  # ... widened to its contiguous optimal plateau
        j2 += 1
    if j == 0:
        threshold = float(finite[0])  # plateau unbounded below: link every finite score
    elif j == m:
        threshold = float(candidates[-1])  # only "link nothing" is optimal
    else:
        threshold = float((finite[j - 1] + finite[min(j2, m - 1)]) / 2.0)
    logger.debug("tuned no-match threshold %.6f (accuracy %.4f on %d queries)", threshold, acc[j], n)
    return threshold


def linkage_evaluation_rows(
    queries: pd.DataFrame,
    links: pd.DataFrame,
    target_entity_ids: Collection[str],
    *,
    tune_split: str = "val",
    report_splits: Sequence[str] = ("test", "all"),
) -> pd.DataFrame:
    """Rows of the ``linkage_evaluation`` table for every method/condition in ``links``.

    For each ``(method, training, ocr)`` group in ``links``, the no-match threshold is tuned on the queries
    with ``split == tune_split`` and then applied to each split in ``report_splits`` (``"all"`` = every
    labelled query, whatever its split). Queries without a link in a group count as "no candidate": wrong
    when their firm is in the target, right (no match) otherwise.

    Args:
        queries: One row per query region: ``query_id`` (unique), ``entity_id`` (rows with a missing id are
            unlabelled and dropped), ``split`` (``train``/``val``/``test``, e.g. from :func:`assign_split`).
        links: One top-1 link per query and condition: ``query_id``, ``target_entity_id`` (entity of the
            retrieved target region), ``score``, ``method``, ``training``, ``ocr``.
        target_entity_ids: Entity ids present in the target source.
        tune_split: Split on which the threshold is tuned.
        report_splits: Splits to report; ``"all"`` is the union of every split.

    Returns:
        DataFrame with columns :data:`LINKAGE_EVALUATION_COLUMNS`: ``n`` is the number of queries whose firm is
        in the target (denominator of ``top1_accuracy``), ``n_with_nomatch`` all queries of the split. When the
        tuning split is empty or has no finite scores, threshold and with-nomatch accuracy are NaN.

    Raises:
        ValueError: On missing columns, duplicated ``query_id`` in ``queries`` or within one condition of
            ``links``, or links to unknown queries.
    """
    require_columns(queries, ("query_id", "entity_id", "split"), "queries")
    require_columns(links, ("query_id", "target_entity_id", "score", *CONDITION_COLUMNS), "links")
    if queries["query_id"].duplicated().any():
        dupes = queries.loc[queries["query_id"].duplicated(), "query_id"].head(5).tolist()
        raise ValueError(f"queries.query_id must be unique, found duplicates {dupes}")
    unknown = set(links["query_id"]) - set(queries["query_id"])
    if unknown:
        raise ValueError(
            f"links has {len(unknown)} query_id values not in queries, e.g. {sorted(map(str, unknown))[:5]}"
        )

    labelled = queries[queries["entity_id"].map(lambda v: not _is_missing(v))]
    if len(labelled) < len(queries):
        logger.info(
            "linkage evaluation: %d of %d queries have no entity id and are skipped",
            len(queries) - len(labelled),
            len(queries),
        )
    q_ids = labelled["query_id"].to_numpy()
    true = _ids(labelled["entity_id"])
    split = labelled["split"].astype(str).to_numpy()
    targets = {str(t) for t in target_entity_ids if not _is_missing(t)}
    in_target = np.array([t in targets for t in true], dtype=bool)

    rows = []
    for key, group in links.groupby(list(CONDITION_COLUMNS), dropna=False, sort=True):
        if group["query_id"].duplicated().any():
            raise ValueError(
                f"links has several rows per query_id for condition {dict(zip(CONDITION_COLUMNS, key, strict=True))}; "
                "expected the top-1 link only"
            )
        by_q = group.set_index("query_id")
        pred = _ids(by_q["target_entity_id"].reindex(q_ids))
        scores = _scores(by_q["score"].reindex(q_ids).to_numpy(dtype=np.float64, na_value=np.nan), len(q_ids))
        correct, _ = linkage_outcomes(pred, true, targets)

        tune = split == tune_split
        threshold = float("nan")
        if tune.any() and np.isfinite(scores[tune]).any():
            threshold = tune_nomatch_threshold(scores[tune], correct[tune], in_target[tune])
        else:
            logger.warning(
                "linkage evaluation %s: no %r queries with scores; no-match threshold left NaN", key, tune_split
            )

        for name in report_splits:
            sel = np.ones(len(q_ids), dtype=bool) if name == "all" else split == name
            n_in = int((sel & in_target).sum())
            acc = float(correct[sel & in_target].mean()) if n_in else float("nan")
            acc_nm = (
                _nomatch_accuracy(scores[sel], correct[sel], in_target[sel], threshold)
                if sel.any() and not math.isnan(threshold)
                else float("nan")
            )
            rows.append((*key, name, acc, acc_nm, threshold, n_in, int(sel.sum())))

    out = pd.DataFrame(rows, columns=list(LINKAGE_EVALUATION_COLUMNS))
    dtypes = {
        "top1_accuracy": "float64",
        "top1_accuracy_with_nomatch": "float64",
        "nomatch_threshold": "float64",
        "n": "int64",
        "n_with_nomatch": "int64",
    }
    return out.astype(dtypes)
