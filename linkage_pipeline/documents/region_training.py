"""Training the line classifier of :mod:`.regions` on labelled pages (a synthetic corpus or a user's labels).

Each detected line segment takes the kind of the label it matches (IoU >= 0.5) or lies inside (a piece of a body
line or of a letter-spaced heading); a segment that holds several labelled names (names running inline) is an
``entry``; a segment that matches no label is left out.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from linkage_pipeline.documents import layout, regions
from linkage_pipeline.documents.pages import load_page_image
from linkage_pipeline.evaluation.metrics import ROLE_TO_KIND, iou_matrix

logger = logging.getLogger(__name__)

#: A label counts as inside a line when this share of its area lies in the line's box.
_INSIDE = 0.7


@dataclass(frozen=True)
class LabelledPage:
    """One page and its labels: the image file, the text direction, and rows with x0..y1 and role."""

    image: Path
    direction: str
    labels: pd.DataFrame


def line_kinds(lines: np.ndarray, labels: pd.DataFrame) -> list[str | None]:
    """The kind each line box (n, 4) takes from the labels of its page (None: no label matches it)."""
    lines = np.asarray(lines, dtype=np.float64).reshape(-1, 4)
    if len(lines) == 0 or labels.empty:
        return [None] * len(lines)
    boxes = labels[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
    kinds = labels["role"].map(ROLE_TO_KIND).to_numpy()
    overlap = iou_matrix(lines, boxes)
    ix0 = np.maximum(lines[:, None, 0], boxes[None, :, 0])
    iy0 = np.maximum(lines[:, None, 1], boxes[None, :, 1])
    ix1 = np.minimum(lines[:, None, 2], boxes[None, :, 2])
    iy1 = np.minimum(lines[:, None, 3], boxes[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1.0)
    inside = inter / area[None, :] >= _INSIDE
    line_area = np.maximum((lines[:, 2] - lines[:, 0]) * (lines[:, 3] - lines[:, 1]), 1.0)
    within = inter / line_area[:, None]  # share of the segment inside each label (a piece of a body line)
    out: list[str | None] = []
    for i in range(len(lines)):
        j = int(overlap[i].argmax())
        if overlap[i, j] >= 0.5:
            out.append(str(kinds[j]))
            continue
        j = int(within[i].argmax())
        if within[i, j] >= _INSIDE:
            out.append(str(kinds[j]))
            continue
        held = {str(k) for k in kinds[inside[i]]}
        if "entry" in held:
            out.append("entry")
        elif len(held) == 1:
            out.append(held.pop())
        else:
            out.append(None)
    return out


def page_rows(page: LabelledPage) -> tuple[np.ndarray, list[str]]:
    """Features and kinds of the labelled lines of one page."""
    image = np.asarray(load_page_image(page.image).convert("L"))
    geometry, clean, scanned, dots = layout.page_lines(image, page.direction)
    if len(geometry.boxes) == 0:
        return np.zeros((0, len(regions.FEATURES))), []
    features = regions.line_features(clean, geometry, page.direction == "vertical", dots)
    kinds = line_kinds(scanned, page.labels)
    keep = [i for i, k in enumerate(kinds) if k is not None]
    return features[keep], [kinds[i] for i in keep]


def training_rows(pages: Iterable[LabelledPage]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Features, kinds and a page index (for grouped splits) of every labelled line of ``pages``."""
    feats, kinds, groups = [], [], []
    for i, page in enumerate(pages):
        f, k = page_rows(page)
        feats.append(f)
        kinds.extend(k)
        groups.append(np.full(len(k), i))
    if not feats:
        return np.zeros((0, len(regions.FEATURES))), [], np.zeros(0, int)
    return np.vstack(feats), kinds, np.concatenate(groups)


def corpus_pages(corpus: Path, sources: Sequence[tuple[str, str]]) -> list[LabelledPage]:
    """Labelled pages of a corpus folder: ``sources`` are (source folder name, direction) pairs."""
    out = []
    for name, direction in sources:
        labels = pd.read_csv(corpus / name / "labels.csv", dtype={"page": str})
        for page, rows in labels.groupby("page", sort=True):
            out.append(LabelledPage(corpus / name / "pages" / page, direction, rows))
    return out


# -------------------------------------------------------------------------------------- per-source choice
#: Folds of the cross-fitting on a source's labelled pages (fewer when it has fewer labelled pages).
FOLDS = 5
#: A source needs this many labelled lines (of at least two kinds) for a classifier of its own.
MIN_SOURCE_LINES = 30
#: ... and this many labelled pages, so each cross-fitted model learns from at least three pages (on the two
#: real NDL pages, models fitted on one page and scored on the other lost 0.04 precision to the shipped one).
MIN_SOURCE_PAGES = 4
#: Labelled pages a source's classifier is fitted on, at most (evenly spread over its labelled pages); labelled
#: pages left out of the fit are classified by the model fitted on all the others, like unlabelled ones.
MAX_FIT_PAGES = 24


@dataclass(frozen=True)
class SourceClassifiers:
    """The line classifier of every page of a source.

    Attributes:
        by_page: page id -> classifier (absent: use :attr:`other`).
        other: The classifier of pages without labels (the source's full model, or the shipped default).
        name: What ran, for ``layout_regions.classifier``: ``default``, or ``source:<name>@<labels hash>`` (a
            labelled page is classified by a model fitted on the other folds of pages, never on itself).
    """

    by_page: dict[str, regions.RegionClassifier]
    other: regions.RegionClassifier
    name: str

    def for_page(self, page_id: str) -> regions.RegionClassifier:
        return self.by_page.get(page_id, self.other)


def _labelled_pages(pages: pd.DataFrame, labels: pd.DataFrame, direction: str) -> list[tuple[str, LabelledPage]]:
    page_key = labels["page"].astype(str) + "#" + labels["page_number"].fillna(0).astype(int).astype(str)
    out = []
    for page in pages.itertuples(index=False):
        rows = labels[page_key == f"{page.file}#{int(page.page_number)}"]
        if not rows.empty:
            out.append((page.page_id, LabelledPage(Path(page.image_path), direction, rows)))
    return out


def classifier_name(pages: pd.DataFrame, labels: pd.DataFrame | None, source: str) -> str:
    """Which classifier :func:`source_classifiers` fits for a source, without fitting it (cheap).

    ``source:<name>@<hash of its labels>`` when the source has at least :data:`MIN_SOURCE_PAGES` labelled pages,
    at least :data:`MIN_SOURCE_LINES` labels and labels of at least two kinds; ``default`` otherwise.
    """
    if labels is None or labels.empty:
        return "default"
    files = set(pages["file"].astype(str))
    usable = labels[labels["page"].astype(str).isin(files)]
    kinds = {ROLE_TO_KIND.get(str(r)) for r in usable["role"]} - {None}
    if usable["page"].nunique() < MIN_SOURCE_PAGES or len(usable) < MIN_SOURCE_LINES or len(kinds) < 2:
        return "default"
    digest = hashlib.sha256(pd.util.hash_pandas_object(usable, index=False).to_numpy().tobytes()).hexdigest()[:8]
    return f"source:{source}@{digest}"


def source_classifiers(pages: pd.DataFrame, labels: pd.DataFrame | None, direction: str, source: str) -> SourceClassifiers:
    """The shipped classifier, or, for a source with enough labels (:func:`classifier_name`), ones fitted on them.

    Up to :data:`MAX_FIT_PAGES` labelled pages are split into up to :data:`FOLDS` folds; each fold's pages are
    classified by a model fitted on the other folds (so ``layout_evaluation`` of the source scores pages its
    classifier never saw), and every other page by a model fitted on all of them. A fold whose training lines
    hold a single kind falls back to the shipped classifier.

    Args:
        pages: ``page_images`` rows of the source (``page_id``, ``file``, ``page_number``, ``image_path``).
        labels: The source's labels (``documents.labels.read_labels``), or None.
        direction: The source's text direction.
        source: The source's name.
    """
    default = regions.default_classifier()
    name = classifier_name(pages, labels, source)
    if name == "default" or labels is None:
        return SourceClassifiers({}, default, default.name)
    every = _labelled_pages(pages, labels, direction)
    # fit on at most MAX_FIT_PAGES of them (evenly spread), so a large labelled source costs a bounded extra pass
    labelled = every[:: max(1, -(-len(every) // MAX_FIT_PAGES))]
    per_page = [page_rows(p) for _, p in labelled]
    folds = min(FOLDS, len(labelled))

    def fit(members: list[int]) -> regions.RegionClassifier:
        x = np.vstack([per_page[i][0] for i in members])
        k = [kind for i in members for kind in per_page[i][1]]
        if len(set(k)) < 2:
            logger.warning("%s: the training lines of a fold hold kinds %s only; the default classifier runs there",
                           source, sorted(set(k)))
            return default
        return regions.train_classifier(x, k, name=name)

    by_page: dict[str, regions.RegionClassifier] = {}
    for fold in range(folds):
        model = fit([i for i in range(len(labelled)) if i % folds != fold])
        by_page.update({labelled[i][0]: model for i in range(len(labelled)) if i % folds == fold})
    logger.info("%s: line classifier %s fitted on %d labelled pages (%d folds)", source, name, len(labelled), folds)
    return SourceClassifiers(by_page, fit(list(range(len(labelled)))), name)


# ----------------------------------------------------------------------------------- the shipped classifier
#: Corpora the shipped classifier is trained on: (seed, style), style ``dense``/``sparse`` (directories and
#: lists, :func:`synthetic.corpus.generate_corpus`) or ``prose`` (book pages, :func:`synthetic.prose.generate_prose`).
#: Seeds other than the demo's (0) and the held-out check's (7); demo typefaces only (held-out faces stay unseen).
TRAINING_CORPORA: tuple[tuple[int, str], ...] = ((101, "dense"), (102, "dense"), (201, "sparse"), (301, "prose"))
_CORPUS_SOURCES = (("firm_directory", "vertical"), ("supplier_lists", "horizontal"))


def train_default(out: Path, work_dir: Path, corpora: Sequence[tuple[int, str]] = TRAINING_CORPORA) -> dict[str, object]:
    """Generates the training corpora, fits the line classifier on every labelled line and writes it to ``out``.

    Returns:
        What was trained: lines per kind, corpora, and the training accuracy (held-out figures come from
        ``layout_evaluation`` on the demo, the held-out corpus and real pages, never from these corpora).
    """
    from linkage_pipeline.synthetic.corpus import generate_corpus
    from linkage_pipeline.synthetic.prose import PROSE_SOURCES, generate_prose

    pages: list[LabelledPage] = []
    for seed, style in corpora:
        folder = work_dir / f"{style}_{seed}"
        if style == "prose":  # pages of running text only: every line is body or a section heading
            if not (folder / "sources.yaml").is_file():
                generate_prose(folder, seed=seed)
            pages.extend(corpus_pages(folder, PROSE_SOURCES))
            continue
        if not (folder / "sources.yaml").is_file():
            generate_corpus(folder, seed=seed, style=style)
        pages.extend(corpus_pages(folder, _CORPUS_SOURCES))
    x, kinds, _ = training_rows(pages)
    model = regions.train_classifier(x, kinds, name="default")
    predicted, _ = model.predict(x)
    summary = {
        "corpora": [f"{style}:{seed}" for seed, style in corpora],
        "pages": len(pages),
        "lines": {k: kinds.count(k) for k in sorted(set(kinds))},
        "training_accuracy": float(np.mean(np.array(predicted) == np.array(kinds))),
    }
    model.save(out, training=summary)
    return summary
