"""From text lines to firm-name regions: line features, a learned line classifier, and names cut out of lines.

A detector (:mod:`.lines`) finds printed lines; which of them is a ``title`` (the reporting firm of a list), a
``heading`` (a section: 神奈川縣之部, 仕入先), an ``entry`` (one or several firm names) or ``body`` (any other
text: an address, a capital, officers) is decided here by a classifier over features of each line *relative to
its page and its neighbours*: type size and stroke weight against the page's median line and against the lines
before and after it, length in characters, leading before and after, indent, whether it shares its row, how many
name separators (、 ・ ，) it holds, and its place on the page. No single ratio decides.

The classifier is scikit-learn's ``HistGradientBoostingClassifier`` (BSD-3-Clause), saved with skops (MIT; no
pickle: only the sklearn and numpy types the model is made of are trusted on load). The shipped one
(``models/regions/default.skops``) is trained on the synthetic corpus v2 (:mod:`linkage_pipeline.synthetic`), with
held-out typefaces kept out; a source with its own labels gets one trained on them (:func:`train_classifier`).

An ``entry`` line is then cut into names (:func:`split_names`) at separator marks (、 ， 。 ・: small marks alone
along the line) and at blank gaps of most of an em, each name's box shrunk to its ink.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from linkage_pipeline.schema import REGION_KINDS

logger = logging.getLogger(__name__)

#: Features of one line, in the order of the classifier's columns.
FEATURES: tuple[str, ...] = (
    "vertical",
    "rel_size",
    "rel_size_prev",
    "rel_size_next",
    "size_rank",
    "rel_weight",
    "rel_weight_prev",
    "rel_weight_next",
    "n_chars",
    "rel_length",
    "gap_before",
    "gap_after",
    "rel_gap_before",
    "rel_gap_after",
    "indent",
    "row_mates",
    "separators",
    "order",
    "first",
    "last",
    "n_lines",
    "line_segments",
    "segment_index",
    "gap_in_line",
)
#: A separator mark is shorter than this share of the line's type size in both directions.
SEPARATOR_MAX = 0.45
#: Blank gaps along a line of names at least this many ems long end a name.
NAME_GAP = 0.8
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "regions" / "default.skops"


@dataclass(frozen=True)
class LineGeometry:
    """Segments of the lines of one page in reading order: boxes (n, 4) int ``x0, y0, x1, y1`` (exclusive),
    type sizes (n,), and the line each belongs to (n,) int, non-decreasing (a line is cut into segments at blank
    gaps of :data:`NAME_GAP` ems; most lines are one segment)."""

    boxes: np.ndarray
    sizes: np.ndarray
    line_ids: np.ndarray


def _along(boxes: np.ndarray, vertical: bool) -> np.ndarray:
    return (boxes[:, 3] - boxes[:, 1]) if vertical else (boxes[:, 2] - boxes[:, 0])


def separator_marks(ink: np.ndarray, box: Sequence[int], size: float, vertical: bool) -> list[tuple[int, int]]:
    """Spans (along the line, page pixels, end exclusive) of separator marks inside one line's box.

    A separator is a small mark (under :data:`SEPARATOR_MAX` of the type size both ways, but at least a fifth of
    it: no speck) that no other mark of the line overlaps along the line, with a blank on
    one side (0.15 em), set low (、 ， 。 on horizontal lines) or right (on vertical lines) in its cell, or centred and
    tiny (・).
    """
    x0, y0, x1, y1 = (int(v) for v in box)
    crop = ink[y0:y1, x0:x1]
    if crop.size == 0:
        return []
    n, _, stats, _ = cv2.connectedComponentsWithStats(crop, connectivity=8)
    if n <= 2:
        return []
    st = stats[1:]
    if vertical:
        a0, alen, c0, clen, across = st[:, 1], st[:, 3], st[:, 0], st[:, 2], crop.shape[1]
    else:
        a0, alen, c0, clen, across = st[:, 0], st[:, 2], st[:, 1], st[:, 3], crop.shape[0]
    a1 = a0 + alen
    longest = np.maximum(st[:, 2], st[:, 3])
    # a mark of punctuation is small, but no speck: at least a fifth of the type size long, and of some area
    small = (longest < SEPARATOR_MAX * size) & (longest >= 0.2 * size) & (st[:, 4] >= 0.012 * size * size)
    out = []
    for i in np.flatnonzero(small):
        # alone along the line: no other component overlaps its span by more than a pixel
        overlap = np.minimum(a1, a1[i]) - np.maximum(a0, a0[i])
        overlap[i] = 0
        if (overlap > 1).any():
            continue
        # and set apart: the punctuation's own cell leaves a blank of 0.15 em or more on one side (a speck
        # between two characters of a name has the name's tight spacing on both)
        before = a0[i] - np.max(a1[a1 <= a0[i]], initial=a0[i] - size)
        after = np.min(a0[a0 >= a1[i]], initial=a1[i] + size) - a1[i]
        if max(before, after) < 0.15 * size:
            continue
        centre = (c0[i] + clen[i] / 2) / max(across, 1)
        low = centre > 0.55  # 、 ， 。 sit low in their cell on horizontal lines, right of it on vertical ones
        tiny_centred = max(alen[i], clen[i]) < 0.3 * size and 0.3 < centre < 0.7
        if low or tiny_centred:
            base = y0 if vertical else x0
            out.append((int(base + a0[i]), int(base + a1[i])))
    return out


def split_names(
    ink: np.ndarray,
    box: Sequence[int],
    size: float,
    vertical: bool,
    *,
    at_separators: bool = True,
    marks: np.ndarray | None = None,
) -> list[tuple[int, int, int, int]]:
    """Cut one line of names into names: at separator marks and at blank gaps of :data:`NAME_GAP` ems or more.

    Args:
        ink: uint8 (H, W) page ink mask (255 = ink), dust and rules removed.
        box: The line's box ``x0, y0, x1, y1`` (exclusive ends).
        size: The line's type size in pixels.
        vertical: Whether the line runs top to bottom.
        at_separators: Also cut at separator marks (False: at blank gaps only, the segments a line is
            classified in).
        marks: The ink mask separator marks are looked for in, when ``ink`` has lost its dots (a dust filter
            drops a small 、 with them); default ``ink``.

    Returns:
        Name boxes in reading order, each tight around its ink (the separators' ink left out); the line itself
        when nothing cuts it.
    """
    x0, y0, x1, y1 = (int(v) for v in box)
    marks_found = separator_marks(ink if marks is None else marks, box, size, vertical) if at_separators else []
    crop = (ink[y0:y1, x0:x1] > 0).copy()
    base = y0 if vertical else x0
    for a, b in marks_found:
        if vertical:
            crop[a - base : b - base, :] = False
        else:
            crop[:, a - base : b - base] = False
    profile = crop.any(axis=1 if vertical else 0)
    filled = np.flatnonzero(profile)
    if len(filled) == 0:
        return []
    breaks = np.diff(filled) > NAME_GAP * size
    for a, b in marks_found:  # a separator cuts even where the gap around it is narrow
        lo, hi = a - base, b - base
        breaks |= (filled[:-1] < hi) & (filled[1:] >= lo)
    cuts = np.flatnonzero(breaks)
    starts = np.concatenate(([filled[0]], filled[cuts + 1]))
    ends = np.concatenate((filled[cuts], [filled[-1]])) + 1
    out = []
    for a, b in zip(starts, ends, strict=True):
        if b - a < 0.5 * size:  # a stray mark, not a name
            continue
        sub = crop[a:b, :] if vertical else crop[:, a:b]
        ys, xs = np.nonzero(sub)
        if len(ys) == 0:
            continue
        if vertical:
            out.append((x0 + int(xs.min()), y0 + a + int(ys.min()), x0 + int(xs.max()) + 1, y0 + a + int(ys.max()) + 1))
        else:
            out.append((x0 + a + int(xs.min()), y0 + int(ys.min()), x0 + a + int(xs.max()) + 1, y0 + int(ys.max()) + 1))
    return out if out else [(x0, y0, x1, y1)]


def line_features(ink: np.ndarray, lines: LineGeometry, vertical: bool, marks: np.ndarray | None = None) -> np.ndarray:
    """Feature matrix (n, len(FEATURES)) float64 of a page's lines given in reading order (``marks``: the mask
    separator marks are counted in, see :func:`split_names`)."""
    boxes = np.asarray(lines.boxes, dtype=np.int64).reshape(-1, 4)
    n = len(boxes)
    if n == 0:
        return np.zeros((0, len(FEATURES)))
    sizes = np.maximum(np.asarray(lines.sizes, dtype=np.float64), 1.0)
    area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1)
    integral = cv2.integral((ink > 0).astype(np.uint8))
    inked = (
        integral[boxes[:, 3], boxes[:, 2]] - integral[boxes[:, 1], boxes[:, 2]]
        - integral[boxes[:, 3], boxes[:, 0]] + integral[boxes[:, 1], boxes[:, 0]]
    )
    weight = inked / area
    length = _along(boxes, vertical).astype(np.float64)
    med_size = float(np.median(sizes))
    med_weight = max(float(np.median(weight)), 1e-6)
    med_length = max(float(np.median(length)), 1.0)
    rel_size = sizes / med_size
    rel_weight = weight / med_weight

    def shifted(v: np.ndarray, k: int, fill: float) -> np.ndarray:
        out = np.full(n, fill)
        if k > 0:
            out[k:] = v[:-k]
        else:
            out[:k] = v[-k:]
        return out

    if vertical:  # the previous line is to the right: gap = its left edge - this right edge
        gap_prev = shifted(boxes[:, 0].astype(float), 1, np.nan) - boxes[:, 2]
        gap_next = boxes[:, 0] - shifted(boxes[:, 2].astype(float), -1, np.nan)
    else:
        gap_prev = boxes[:, 1] - shifted(boxes[:, 3].astype(float), 1, np.nan)
        gap_next = shifted(boxes[:, 1].astype(float), -1, np.nan) - boxes[:, 3]
    gap_before = np.nan_to_num(gap_prev / sizes, nan=-1.0)
    gap_after = np.nan_to_num(gap_next / sizes, nan=-1.0)
    positive = np.concatenate([g[g > 0] for g in (gap_before, gap_after)])
    med_gap = float(np.median(positive)) if len(positive) else 1.0
    lead = boxes[:, 1] if vertical else boxes[:, 0]
    page_start = float(np.quantile(lead, 0.1))
    indent = (lead - page_start) / sizes
    c0, c1 = (boxes[:, 0], boxes[:, 2]) if vertical else (boxes[:, 1], boxes[:, 3])
    order = np.argsort(c0, kind="stable")
    mates = np.zeros(n)
    # lines sharing this line's row (horizontal) or column (vertical): overlap across by half the smaller extent
    sc0, sc1 = c0[order], c1[order]
    for rank, i in enumerate(order):
        j = rank + 1
        while j < n and sc0[j] < c1[i]:
            k = order[j]
            if min(c1[i], c1[k]) - max(c0[i], c0[k]) >= 0.5 * min(c1[i] - c0[i], c1[k] - c0[k]):
                mates[i] += 1
                mates[k] += 1
            j += 1
    dots = ink if marks is None else marks
    seps = np.array([len(separator_marks(dots, b, s, vertical)) for b, s in zip(boxes, sizes, strict=True)])
    ranks = (np.argsort(np.argsort(-rel_size, kind="stable"), kind="stable")).astype(float)
    line_ids = np.asarray(lines.line_ids, dtype=np.int64)
    _, first_of_line, counts = np.unique(line_ids, return_index=True, return_counts=True)
    segments = np.repeat(counts, counts).astype(float)
    index = (np.arange(n) - np.repeat(first_of_line, counts)).astype(float)
    same_line_before = np.r_[False, line_ids[1:] == line_ids[:-1]]
    lead_edge = boxes[:, 1] if vertical else boxes[:, 0]
    trail_edge = boxes[:, 3] if vertical else boxes[:, 2]
    gap_in_line = np.full(n, -1.0)
    gap_in_line[same_line_before] = (lead_edge[1:] - trail_edge[:-1])[same_line_before[1:]] / sizes[same_line_before]
    pos = np.arange(n, dtype=np.float64)
    cols = {
        "vertical": np.full(n, float(vertical)),
        "rel_size": rel_size,
        "rel_size_prev": shifted(rel_size, 1, 0.0),
        "rel_size_next": shifted(rel_size, -1, 0.0),
        "size_rank": np.minimum(ranks, 10.0),
        "rel_weight": rel_weight,
        "rel_weight_prev": shifted(rel_weight, 1, 0.0),
        "rel_weight_next": shifted(rel_weight, -1, 0.0),
        "n_chars": length / sizes,
        "rel_length": length / med_length,
        "gap_before": gap_before,
        "gap_after": gap_after,
        "rel_gap_before": np.where(gap_before > 0, gap_before / max(med_gap, 1e-6), -1.0),
        "rel_gap_after": np.where(gap_after > 0, gap_after / max(med_gap, 1e-6), -1.0),
        "indent": indent,
        "row_mates": mates,
        "separators": seps / np.maximum(length / sizes, 1.0),
        "order": pos / max(n - 1, 1),
        "first": (pos == 0).astype(float),
        "last": (pos == n - 1).astype(float),
        "n_lines": np.full(n, float(np.log1p(n))),
        "line_segments": segments,
        "segment_index": index,
        "gap_in_line": gap_in_line,
    }
    return np.column_stack([cols[f] for f in FEATURES])


class RegionClassifier:
    """A fitted line classifier: kinds in :data:`schema.REGION_KINDS` from :data:`FEATURES`.

    Attributes:
        model: The fitted ``HistGradientBoostingClassifier``.
        name: Where it comes from (``default`` for the shipped model, ``source:<name>`` for one trained on a
            source's labels), written to ``layout_evaluation``.
    """

    def __init__(self, model, name: str) -> None:  # noqa: ANN001 - a sklearn estimator
        self.model = model
        self.name = name

    @property
    def classes(self) -> list[str]:
        """The kinds, in the order of :meth:`probabilities`' columns."""
        return [str(c) for c in self.model.classes_]

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Probability of each kind (n, len(classes)) for a feature matrix (n, len(FEATURES))."""
        if len(features) == 0:
            return np.zeros((0, len(self.classes)))
        return np.asarray(self.model.predict_proba(features), dtype=np.float64)

    def predict(self, features: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Kinds and their probabilities for a feature matrix (n, len(FEATURES))."""
        proba = self.probabilities(features)
        if len(proba) == 0:
            return [], np.zeros(0)
        best = proba.argmax(axis=1)
        return [self.classes[i] for i in best], proba[np.arange(len(best)), best]


    def save(self, path: Path, training: dict | None = None) -> None:
        """Writes the model (skops) and a JSON card beside it (features, classes, name, the scikit-learn version
        it was fitted with, and ``training``: what it was trained on)."""
        import sklearn
        import skops.io as sio

        path.parent.mkdir(parents=True, exist_ok=True)
        sio.dump(self.model, path)
        card = {"features": list(FEATURES), "classes": [str(c) for c in self.model.classes_], "name": self.name,
                "sklearn_version": sklearn.__version__, "training": training or {}}
        path.with_suffix(".json").write_text(json.dumps(card, indent=1, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path, name: str | None = None) -> RegionClassifier:
        """Reads a model written by :meth:`save`; only the types such a model is made of are trusted.

        Raises:
            FileNotFoundError: If the model or its card is missing.
            ValueError: If the card's features differ from :data:`FEATURES` or the file holds other types.
        """
        import skops.io as sio

        card_path = path.with_suffix(".json")
        if not path.is_file() or not card_path.is_file():
            raise FileNotFoundError(f"region classifier {path} (and its card {card_path.name}) not found")
        card = json.loads(card_path.read_text(encoding="utf-8"))
        import sklearn

        fitted_with = card.get("sklearn_version")
        if fitted_with and fitted_with.split(".")[:2] != sklearn.__version__.split(".")[:2]:
            logger.warning("%s was fitted with scikit-learn %s, this is %s; its predictions may differ",
                           path, fitted_with, sklearn.__version__)
        if tuple(card.get("features", ())) != FEATURES:
            raise ValueError(f"{card_path}: the model was trained on other features ({card.get('features')})")
        untrusted = sio.get_untrusted_types(file=path)
        allowed = {t for t in untrusted if t.startswith(("sklearn.", "numpy."))}
        if set(untrusted) - allowed:
            raise ValueError(f"{path}: refuses to load types {sorted(set(untrusted) - allowed)}")
        model = sio.load(path, trusted=sorted(allowed))
        unknown = {str(c) for c in model.classes_} - set(REGION_KINDS)
        if unknown:
            raise ValueError(f"{path}: classes {sorted(unknown)} are not region kinds {REGION_KINDS}")
        return cls(model, name or str(card.get("name", path.stem)))


def train_classifier(features: np.ndarray, kinds: Sequence[str], *, name: str, seed: int = 0) -> RegionClassifier:
    """Fits a line classifier on labelled lines (features from :func:`line_features`, kinds from labels).

    Raises:
        ValueError: If the shapes disagree, a kind is not a region kind, or fewer than two kinds occur.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    features = np.asarray(features, dtype=np.float64)
    kinds = np.asarray([str(k) for k in kinds])
    if features.ndim != 2 or features.shape[1] != len(FEATURES) or len(features) != len(kinds):
        raise ValueError(f"features must be (n, {len(FEATURES)}) with one kind per row, got {features.shape}, {len(kinds)}")
    unknown = set(kinds) - set(REGION_KINDS)
    if unknown:
        raise ValueError(f"kinds {sorted(unknown)} are not region kinds {REGION_KINDS}")
    if len(set(kinds)) < 2:
        raise ValueError(f"a classifier needs lines of at least two kinds, got only {sorted(set(kinds))}")
    model = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.1, max_leaf_nodes=15, l2_regularization=1.0, class_weight="balanced",
        random_state=seed,
    )
    model.fit(features, kinds)
    return RegionClassifier(model, name)


_DEFAULT: list[RegionClassifier] = []


def default_classifier() -> RegionClassifier:
    """The shipped classifier (``models/regions/default.skops``), loaded once.

    Raises:
        FileNotFoundError: If the installed package lacks it (a broken install: it ships with the code).
    """
    if not _DEFAULT:
        _DEFAULT.append(RegionClassifier.load(DEFAULT_MODEL, "default"))
    return _DEFAULT[0]


def line_kinds_smoothed(
    proba: np.ndarray, classes: Sequence[str], line_ids: np.ndarray, lengths: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """One kind per line, from its segments' probabilities weighted by length; only the first segment of a line
    may keep a kind of its own, and only ``heading`` (a run-in heading: 【仕入先】 and the names after it).

    Args:
        proba: Per-segment probabilities (n, len(classes)).
        classes: The kinds of the columns.
        line_ids: The line of each segment (n,), non-decreasing.
        lengths: Each segment's length along the line (n,), the weights.

    Returns:
        The kind of each segment and the probability of that kind (the line's, or the segment's own for a
        run-in heading).
    """
    n = len(proba)
    if n == 0:
        return [], np.zeros(0)
    classes = list(classes)
    heading = classes.index("heading") if "heading" in classes else -1
    kinds: list[str] = []
    probs = np.zeros(n)
    starts = np.flatnonzero(np.r_[True, line_ids[1:] != line_ids[:-1]])
    ends = np.r_[starts[1:], n]
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        own = proba[a].argmax()
        first = a
        if b - a > 1 and own == heading:  # a run-in heading keeps its kind; the rest of the line is voted on
            kinds.append(classes[own])
            probs[a] = proba[a, own]
            first = a + 1
        w = np.maximum(lengths[first:b].astype(np.float64), 1.0)
        mean = (proba[first:b] * w[:, None]).sum(axis=0) / w.sum()
        best = int(mean.argmax())
        kinds.extend([classes[best]] * (b - first))
        probs[first:b] = mean[best]
    return kinds, probs
