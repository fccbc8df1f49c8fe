"""Layout detection: find the text regions (titles, headings, names) on a scanned page, in reading order.

Two detectors share one interface, :func:`detect_layout`:

- ``morphology`` (default): OpenCV. Normalise the paper tone, binarise (Otsu's ink level, with the cut moved
  toward the paper so faded strokes survive), remove ruling lines (morphological opening) and dust, dilate
  along the text direction so that the characters of one name merge but neighbouring names do not, and take
  the connected components. Every length is relative to the page's own type size, estimated from the ink and
  refined from the regions found, so the detector depends on neither resolution nor typeface.
- ``tesseract``: Tesseract's page segmentation (``image_to_data``; horizontal pages ``--psm 11`` with ``jpn``,
  vertical pages ``--psm 1`` with ``jpn_vert``), words aggregated into lines here (layoutparser 0.3.4's
  TesseractAgent aggregation computes wrong right edges), fragments of one name joined.

Both classify each region as ``title``, ``heading`` or ``entry`` from its type size relative to the page's
median name (a title is set much larger, a heading somewhat larger and short), and order regions as a reader
would: horizontal pages row by row, top to bottom, left to right; vertical pages band (tier) by band, columns
right to left, each column top to bottom.

Boxes are in pixels of the input image, ``x1``/``y1`` exclusive (the region is ``image[y0:y1, x0:x1]``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import layoutparser as lp
import numpy as np
from PIL import Image
from scipy import ndimage  # find_objects: every label's bounding slices in one C pass

from linkage_pipeline.schema import REGION_KINDS, TEXT_DIRECTIONS

logger = logging.getLogger(__name__)

DETECTORS: tuple[str, ...] = ("morphology", "tesseract")

# Thresholds on a region's type size relative to the median name on the same page. Headings are set about a
# quarter larger than names (and often bold), titles half again larger or more.
_HEADING_REL = 1.13
_TITLE_REL = {"horizontal": 1.42, "vertical": 1.65}
_HEADING_MAX_CHARS = 8.5  # headings are short: a section name (神奈川縣之部), 仕入先, 販賣先
# Dilation kernel of the morphology detector, in units of the page's type size (ink height of a name).
_ALONG = 1.2
_ACROSS = 0.25
# Binarisation threshold as a fraction of the way from the page's ink level to its paper level.
_FAINT = 0.75
# Ink blobs shorter than this (type sizes) are dust or dots, not strokes.
_DUST = 0.3
# Tesseract fragments closer than this (type sizes) along the line belong to one name.
_JOIN_GAP = 1.2


@dataclass(frozen=True)
class _Box:
    """A candidate region: tight box (x1, y1 exclusive), type size across the text direction, score."""

    x0: int
    y0: int
    x1: int
    y1: int
    size: float
    score: float

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def _to_gray(image: Any) -> np.ndarray:
    """Validate and convert the input to a uint8 (H, W) grey image."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("L"))
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array or PIL image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must have dtype uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2GRAY if image.shape[2] == 4 else cv2.COLOR_RGB2GRAY)
    elif image.ndim != 2:
        raise ValueError(f"image must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    if min(image.shape) < 16:
        raise ValueError(f"image must be at least 16x16 pixels, got {image.shape}")
    return np.ascontiguousarray(image)


def binarize(gray: np.ndarray) -> np.ndarray:
    """Ink mask of a scanned page, robust to uneven paper tone.

    Args:
        gray: uint8 (H, W) grey image, dark ink on light paper.

    Returns:
        uint8 (H, W) mask, 255 where ink.
    """
    h, w = gray.shape
    # Paper tone from a max filter on a quarter-size image: ink strokes vanish, slow shading remains.
    small = cv2.resize(gray, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA)
    bg = cv2.dilate(small, np.ones((9, 9), np.uint8))
    bg = cv2.blur(bg, (9, 9))
    bg = cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    norm = np.clip(gray.astype(np.float32) / np.maximum(bg, 1.0) * 255.0, 0, 255).astype(np.uint8)
    otsu, _ = cv2.threshold(norm, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # Otsu on a nearly empty page can split the paper noise; a real ink/paper contrast is never that small.
    otsu = float(np.clip(otsu, 100, 215))
    dark = norm[norm < otsu]
    ink_level = float(np.median(dark)) if dark.size else 0.0
    # Faded and blurred thin strokes sit between ink and paper: cut closer to the paper than Otsu does.
    thr = float(np.clip(ink_level + _FAINT * (255.0 - ink_level), otsu, 230))
    return np.where(norm < thr, 255, 0).astype(np.uint8)


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return labels, stats[1:]


def estimate_char_size(ink: np.ndarray, direction: str = "horizontal") -> float:
    """Typical type size (pixels) of the text on a page, a first guess refined by the detector.

    Closes small gaps so most characters become one blob and measures blobs across the text direction
    (height on horizontal pages, width on vertical ones): characters that run together along a line make
    long blobs, but never thicker ones. An upper quantile skips broken characters and dots.

    Args:
        ink: uint8 (H, W) ink mask, 255 where ink.
        direction: ``horizontal`` or ``vertical``.

    Returns:
        Estimated type size in pixels (at least 6.0).
    """
    h, w = ink.shape
    k = max(3, int(round(min(h, w) / 400)) | 1)
    closed = cv2.morphologyEx(ink, cv2.MORPH_CLOSE, np.ones((k, k), np.uint8))
    _, stats = _components(closed)
    if len(stats) == 0:
        return 6.0
    across = stats[:, cv2.CC_STAT_HEIGHT if direction == "horizontal" else cv2.CC_STAT_WIDTH].astype(np.float64)
    along = stats[:, cv2.CC_STAT_WIDTH if direction == "horizontal" else cv2.CC_STAT_HEIGHT].astype(np.float64)
    keep = (across >= 6) & (along >= 0.3 * across) & (across < min(h, w) / 8)
    if keep.sum() < 3:
        return max(6.0, float(np.median(across)) if len(across) else 6.0)
    return max(6.0, float(np.quantile(across[keep], 0.8)))


def _clean(ink: np.ndarray, size: float) -> np.ndarray:
    """Keep the character strokes of an ink mask: drop dust and dots, and ruling lines.

    Dots of characters (the drops of 氵) go with the dust: they never decide where a name starts or ends by
    more than a few pixels, while dust between two names, kept, would bridge them.

    Args:
        ink: uint8 (H, W) mask, 255 = ink.
        size: Type size in pixels.

    Returns:
        uint8 (H, W) mask, 255 = kept ink.
    """
    # Ruling lines first: a straight run of ink eight ems long is no character stroke, not even in a title.
    # An opening finds them even where text touches them (which joins them to the text in the components below).
    run = max(15, int(round(8 * size)))
    # A slightly rotated line leaves short steps along its edges that the opening misses: widen across it.
    halo = 2 * max(2, int(round(0.15 * size))) + 1
    for shape, widen in (((run, 1), (5, halo)), ((1, run), (halo, 5))):
        lines = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, shape))
        if lines.any():
            lines = cv2.dilate(lines, cv2.getStructuringElement(cv2.MORPH_RECT, widen))
            ink = cv2.bitwise_and(ink, cv2.bitwise_not(lines))
    labels, stats = _components(ink)
    if len(stats) == 0:
        return ink
    w, h = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    long_side = np.maximum(w, h)
    # A ruling line is long and thin even when the page is rotated (its box then is not thin, its ink is).
    mean_thickness = stats[:, cv2.CC_STAT_AREA] / np.maximum(long_side, 1)
    rule = (long_side > 4 * size) & (mean_thickness < 0.25 * size)
    small = long_side < _DUST * size
    lut = np.zeros(len(stats) + 1, np.uint8)
    lut[1:][~small & ~rule] = 255
    return lut[labels]


def _core_size(ink_crop: np.ndarray, direction: str) -> float:
    """Type size of one region: extent across the text direction of rows/columns carrying real ink.

    Thin outliers (parentheses, a descending stroke) are ignored, so ``（株）`` does not make a name look
    larger than the names around it.
    """
    axis = 1 if direction == "horizontal" else 0
    profile = (ink_crop > 0).sum(axis=axis).astype(np.float64)
    if profile.max() <= 0:
        return float(ink_crop.shape[1 - axis] if direction == "horizontal" else ink_crop.shape[1])
    idx = np.flatnonzero(profile >= 0.12 * profile.max())
    return float(idx[-1] - idx[0] + 1)


def _morphology_boxes(gray: np.ndarray, direction: str) -> tuple[list[_Box], np.ndarray, float]:
    ink = binarize(gray)
    size = estimate_char_size(ink, direction)
    clean = _clean(ink, size)
    boxes: list[_Box] = []
    for attempt in range(3):
        # Gaps inside a name reach about one em (after a closing parenthesis, around 一); gaps between
        # names are two ems or more along the line and most of an em across it.
        along = max(3, int(round(_ALONG * size)))
        across = max(1, int(round(_ACROSS * size)))
        kernel = (along, across) if direction == "horizontal" else (across, along)
        merged = cv2.dilate(clean, cv2.getStructuringElement(cv2.MORPH_RECT, kernel))
        n, labels = cv2.connectedComponents(merged, connectivity=8)
        boxes = _tight_boxes(labels, n, clean, size, direction)
        # The first guess comes from character blobs; the type size of the regions found is more reliable
        # (titles and broken characters do not move a median over regions).
        sizes = [b.size for b in boxes]
        if len(sizes) < 3:
            break
        new_size = float(np.median(sizes))
        if abs(new_size / size - 1) <= 0.08 or attempt == 2:
            break
        logger.debug("type size re-estimated %.1f -> %.1f px", size, new_size)
        size = new_size
        clean = _clean(ink, size)
    return boxes, clean, size


def _tight_boxes(labels: np.ndarray, n: int, clean: np.ndarray, size: float, direction: str) -> list[_Box]:
    """Tight boxes of the ink inside each merged component, dust clusters dropped."""
    masked = np.where(clean > 0, labels, 0).astype(np.int32)
    boxes = []
    for sl in ndimage.find_objects(masked, max_label=n - 1 if n > 1 else 0):
        if sl is None:
            continue
        ys, xs = sl
        crop = clean[ys, xs]
        bw, bh = xs.stop - xs.start, ys.stop - ys.start
        ink_px = int((crop > 0).sum())
        # Dust clusters and pieces of broken ruling lines are no text: too small, or too thin across.
        if max(bw, bh) < 0.5 * size or min(bw, bh) < 0.3 * size or ink_px < 0.05 * size * size:
            continue
        core = _core_size(crop, direction)
        boxes.append(_Box(xs.start, ys.start, xs.stop, ys.stop, core, 1.0))
    return boxes


@lru_cache(maxsize=1)
def _tesseract_languages() -> frozenset[str]:
    import pytesseract

    return frozenset(pytesseract.get_languages(config=""))


def _tesseract_boxes(gray: np.ndarray, direction: str, lang: str) -> tuple[list[_Box], np.ndarray, float]:
    import pytesseract  # imported here: the morphology detector must work without a tesseract binary

    langs = _tesseract_languages()
    parts = lang.split("+")
    if direction == "vertical":  # jpn -> jpn_vert where installed; eng and the like stay as they are
        parts = [f"{p}_vert" if f"{p}_vert" in langs else p for p in parts]
    tess_lang = "+".join(parts)
    missing = [part for part in tess_lang.split("+") if part not in langs]
    if missing:
        raise ValueError(
            f"tesseract has no traineddata for {missing}; installed: {sorted(langs)} "
            f"(Debian/Ubuntu: apt-get install tesseract-ocr-{missing[0].replace('_', '-')})"
        )
    psm = "11" if direction == "horizontal" else "1"
    data = pytesseract.image_to_data(
        gray, lang=tess_lang, config=f"--psm {psm}", output_type=pytesseract.Output.DICT
    )
    lines: dict[tuple[int, int, int], list[int]] = {}
    confs: dict[tuple[int, int, int], list[float]] = {}
    for i, text in enumerate(data["text"]):
        if int(data["level"][i]) != 5 or not str(text).strip():
            continue
        key = (int(data["block_num"][i]), int(data["par_num"][i]), int(data["line_num"][i]))
        x0, y0 = int(data["left"][i]), int(data["top"][i])
        x1, y1 = x0 + int(data["width"][i]), y0 + int(data["height"][i])
        if key in lines:
            b = lines[key]
            lines[key] = [min(b[0], x0), min(b[1], y0), max(b[2], x1), max(b[3], y1)]
        else:
            lines[key] = [x0, y0, x1, y1]
        confs.setdefault(key, []).append(max(0.0, float(data["conf"][i])))
    ink = binarize(gray)
    ink = _clean(ink, estimate_char_size(ink, direction))
    spans = []
    for key, (x0, y0, x1, y1) in lines.items():
        tight = _tighten(ink, x0, y0, x1, y1)  # tesseract pads some boxes and reports dust as words
        if tight is not None:
            spans.append((tight, float(np.mean(confs[key])) / 100.0))
    if not spans:
        return [], ink, estimate_char_size(ink, direction)
    size = float(np.median([_core_size(ink[t[1] : t[3], t[0] : t[2]], direction) for t, _ in spans]))
    raw = []
    for (x0, y0, x1, y1), conf in spans:
        # Tesseract's vertical line finder runs aligned columns of two tiers into one line: cut at wide gaps.
        for px0, py0, px1, py1 in _split_at_gaps(ink, x0, y0, x1, y1, direction, _JOIN_GAP * size):
            core = _core_size(ink[py0:py1, px0:px1], direction)
            raw.append(_Box(px0, py0, px1, py1, core, conf))
    boxes = _join_fragments(raw, direction)
    boxes = [b for b in boxes if max(b.width, b.height) >= 0.5 * size and min(b.width, b.height) >= 0.3 * size]
    return boxes, ink, size


def _tighten(ink: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int] | None:
    """Shrink a box to the ink inside it; None when it holds no ink."""
    ys, xs = np.nonzero(ink[y0:y1, x0:x1])
    if len(ys) == 0:
        return None
    return int(x0 + xs.min()), int(y0 + ys.min()), int(x0 + xs.max() + 1), int(y0 + ys.max() + 1)


def _split_at_gaps(
    ink: np.ndarray, x0: int, y0: int, x1: int, y1: int, direction: str, min_gap: float
) -> list[tuple[int, int, int, int]]:
    """Cut a box along the text direction wherever the ink leaves a gap of at least ``min_gap`` pixels."""
    crop = ink[y0:y1, x0:x1] > 0
    profile = crop.any(axis=0 if direction == "horizontal" else 1)
    filled = np.flatnonzero(profile)
    if len(filled) == 0:
        return []
    cuts = np.flatnonzero(np.diff(filled) > min_gap)
    starts = np.concatenate(([filled[0]], filled[cuts + 1]))
    ends = np.concatenate((filled[cuts], [filled[-1]])) + 1
    pieces = []
    for a, b in zip(starts, ends, strict=True):
        box = (x0 + a, y0, x0 + b, y1) if direction == "horizontal" else (x0, y0 + a, x1, y0 + b)
        tight = _tighten(ink, *map(int, box))
        if tight is not None:
            pieces.append(tight)
    return pieces


def _join_fragments(boxes: list[_Box], direction: str) -> list[_Box]:
    """Join boxes that continue each other along the text direction (one name split into pieces).

    Two boxes join when they are aligned across the line, set in a similar type size, and the gap between
    them is under ``_JOIN_GAP`` of their type size: this mends names split by tesseract, and gaps in large
    type (a title's ``（株）``) that the page-wide dilation kernel, sized for the names, does not bridge.
    """
    boxes = sorted(boxes, key=lambda b: (b.x0, b.y0) if direction == "horizontal" else (b.y0, b.x0))
    changed = True
    while changed:
        changed = False
        out: list[_Box] = []
        for b in boxes:
            for i, a in enumerate(out):
                if direction == "horizontal":
                    overlap = min(a.y1, b.y1) - max(a.y0, b.y0)
                    gap = max(a.x0, b.x0) - min(a.x1, b.x1)
                    aligned = overlap >= 0.5 * min(a.height, b.height)
                else:
                    overlap = min(a.x1, b.x1) - max(a.x0, b.x0)
                    gap = max(a.y0, b.y0) - min(a.y1, b.y1)
                    aligned = overlap >= 0.5 * min(a.width, b.width)
                similar = max(a.size, b.size) <= 1.5 * min(a.size, b.size)
                if aligned and similar and gap < _JOIN_GAP * max(a.size, b.size):
                    out[i] = _Box(
                        min(a.x0, b.x0), min(a.y0, b.y0), max(a.x1, b.x1), max(a.y1, b.y1),
                        max(a.size, b.size), (a.score + b.score) / 2,
                    )
                    changed = True
                    break
            else:
                out.append(b)
        boxes = out
    return boxes


def _classify(boxes: list[_Box], direction: str) -> list[tuple[_Box, str, float]]:
    """Title / heading / entry from type size relative to the page's median region, and position.

    A title is the largest type on the page, well above the names (on horizontal pages also nothing above
    it); a heading is set larger than the names, is short, and on horizontal pages stands alone in its row;
    everything else is an entry. Scores fall off near a size boundary.
    """
    if not boxes:
        return []
    median = float(np.median([b.size for b in boxes]))
    rel = [b.size / median for b in boxes]
    title_rel = _TITLE_REL[direction]
    candidates = [i for i, r in enumerate(rel) if r >= title_rel]
    titles: set[int] = set()
    if candidates:
        top = max(rel[i] for i in candidates)
        titles = {i for i in candidates if rel[i] >= 0.9 * top}
        if direction == "horizontal":
            titles = {
                i for i in titles
                if not any(j not in titles and boxes[j].y1 <= boxes[i].y0 + 0.25 * boxes[i].size
                           for j in range(len(boxes)))
            }
    out = []
    for i, b in enumerate(boxes):
        n_chars = _length(b, direction) / max(b.size, 1.0)
        alone = direction == "vertical" or not any(
            j != i and min(b.y1, o.y1) - max(b.y0, o.y0) >= 0.5 * min(b.height, o.height)
            for j, o in enumerate(boxes)
        )
        if i in titles:
            kind = "title"
        elif rel[i] >= _HEADING_REL and n_chars <= _HEADING_MAX_CHARS and alone:
            kind = "heading"
        else:
            kind = "entry"
        margin = min(abs(rel[i] - _HEADING_REL), abs(rel[i] - title_rel))
        score = b.score * float(np.clip(0.5 + margin / 0.2, 0.5, 1.0))
        out.append((b, kind, score))
    return out


def _length(b: _Box, direction: str) -> int:
    return b.width if direction == "horizontal" else b.height


def _group_overlapping(
    items: list[tuple[_Box, str, float]], span: Callable[[_Box], tuple[int, int]]
) -> list[list[tuple[_Box, str, float]]]:
    """Groups consecutive items whose ``span`` (y-range for rows, x-range for columns) overlaps the current
    group's by at least half the smaller extent; ``items`` must already be sorted along that axis."""
    groups: list[list[tuple[_Box, str, float]]] = []
    for it in items:
        lo, hi = span(it[0])
        if groups:
            g0 = min(span(g[0])[0] for g in groups[-1])
            g1 = max(span(g[0])[1] for g in groups[-1])
            if min(g1, hi) - max(g0, lo) >= 0.5 * min(hi - lo, g1 - g0):
                groups[-1].append(it)
                continue
        groups.append([it])
    return groups


def _reading_order(items: list[tuple[_Box, str, float]], direction: str) -> list[tuple[_Box, str, float]]:
    """Sort regions as a reader reads them.

    Horizontal: rows (regions overlapping vertically by half the smaller height) top to bottom, each left to
    right. Vertical: bands (tiers separated by a horizontal gap) top to bottom; in each band, columns (regions
    overlapping horizontally) right to left, each top to bottom.
    """
    if direction == "horizontal":
        rows = _group_overlapping(
            sorted(items, key=lambda t: (t[0].y0 + t[0].y1) / 2), lambda b: (b.y0, b.y1)
        )
        return [it for row in rows for it in sorted(row, key=lambda t: t[0].x0)]
    bands: list[list[tuple[_Box, str, float]]] = []
    band_end = -1
    for it in sorted(items, key=lambda t: t[0].y0):
        if bands and it[0].y0 < band_end:
            bands[-1].append(it)
            band_end = max(band_end, it[0].y1)
        else:
            bands.append([it])
            band_end = it[0].y1
    ordered: list[tuple[_Box, str, float]] = []
    for band in bands:
        cols = _group_overlapping(
            sorted(band, key=lambda t: -(t[0].x0 + t[0].x1) / 2), lambda b: (b.x0, b.x1)
        )
        ordered.extend(it for col in cols for it in sorted(col, key=lambda t: t[0].y0))
    return ordered


def detect_layout(
    image: np.ndarray | Image.Image,
    *,
    direction: str,
    detector: str = "morphology",
    lang: str = "jpn",
) -> lp.Layout:
    """Detect the text regions of one page.

    Args:
        image: The page: uint8 numpy array (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA, or a PIL image.
        direction: ``horizontal`` (rows, left to right) or ``vertical`` (columns, top to bottom, right to left).
        detector: ``morphology`` (OpenCV, fast, no model) or ``tesseract`` (Tesseract page segmentation).
        lang: Tesseract language for the ``tesseract`` detector; vertical pages use ``{lang}_vert`` where
            installed. Ignored by ``morphology``.

    Returns:
        A layoutparser Layout of TextBlocks in reading order: ``block`` an ``lp.Rectangle`` in pixels
        (x_2/y_2 exclusive), ``type`` one of ``title``/``heading``/``entry``, ``score`` in [0, 1], ``id`` the
        0-based reading order.

    Raises:
        ValueError: If the image, ``direction``, ``detector`` or (for tesseract) ``lang`` is not supported.
    """
    if direction not in TEXT_DIRECTIONS:
        raise ValueError(f"direction must be one of {TEXT_DIRECTIONS}, got {direction!r}")
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    gray = _to_gray(image)
    if detector == "morphology":
        boxes, _, size = _morphology_boxes(gray, direction)
        boxes = _join_fragments(boxes, direction)
    else:
        boxes, _, size = _tesseract_boxes(gray, direction, lang)
    items = _reading_order(_classify(boxes, direction), direction)
    blocks = [
        lp.TextBlock(lp.Rectangle(b.x0, b.y0, b.x1, b.y1), type=kind, score=round(score, 4), id=i)
        for i, (b, kind, score) in enumerate(items)
    ]
    logger.debug("%s detector found %d regions (type size %.1f px, %s)", detector, len(blocks), size, direction)
    return lp.Layout(blocks)


def layout_to_records(layout: lp.Layout) -> list[dict[str, Any]]:
    """Flatten a Layout to rows of the ``layout_regions`` table (without ids and source columns).

    Args:
        layout: Output of :func:`detect_layout` (or any Layout of rectangular TextBlocks with a ``type``).

    Returns:
        One dict per block in layout order: ``x0, y0, x1, y1`` (int pixels), ``kind``, ``score`` (float),
        ``reading_order`` (int, 0-based position).

    Raises:
        ValueError: If a block has a kind outside title/heading/entry.
    """
    records = []
    for i, block in enumerate(layout):
        kind = block.type
        if kind not in REGION_KINDS:
            raise ValueError(f"block {i} has kind {kind!r}; expected one of {REGION_KINDS}")
        x0, y0, x1, y1 = block.coordinates
        records.append(
            {
                "x0": int(round(x0)),
                "y0": int(round(y0)),
                "x1": int(round(x1)),
                "y1": int(round(y1)),
                "kind": kind,
                "score": float(block.score) if block.score is not None else 1.0,
                "reading_order": i,
            }
        )
    return records
