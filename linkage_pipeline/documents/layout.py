"""Layout detection: find the text regions (titles, headings, names, body text) on a scanned page, in reading order.

Three detectors share one interface, :func:`detect_layout`:

- ``ppocr`` (default): text lines from the pretrained PP-OCR DB detector (:mod:`.lines`) on the despeckled,
  straightened page (:func:`estimate_skew`), each shrunk to its strokes, split where it holds two lines, ruby
  dropped; then each line classified as title / heading / entry / body by a learned classifier over features
  relative to its page and neighbours (:mod:`.regions`), and entry lines cut into names at separators. Boxes are
  mapped back to the page as scanned.
- ``morphology``: OpenCV. Normalise the paper tone, binarise (Otsu's ink level, with the cut moved
  toward the paper so faded strokes survive), remove ruling lines (morphological opening) and dust, dilate
  along the text direction so that the characters of one name merge but neighbouring names do not, and take
  the connected components. Every length is relative to the page's own type size, estimated from the ink and
  refined from the regions found, so the detector depends on neither resolution nor typeface.
- ``tesseract``: Tesseract's page segmentation (``image_to_data``; horizontal pages ``--psm 11`` with ``jpn``,
  vertical pages ``--psm 1`` with ``jpn_vert``), words aggregated into lines here (layoutparser 0.3.4's
  TesseractAgent aggregation computes wrong right edges), fragments of one name joined.

Every page's cost is bounded. Impulse noise (speckle, salt and pepper) is measured as the ink density of the
page's blankest fifth and, where it is dense enough to defeat the dust filter, removed by a median filter before
binarisation (:func:`despeckle`); specks too small to be any printed mark never reach the type-size estimate. A
page that still yields more regions than its size allows at its type size (:func:`max_regions`), or that takes
longer than its time budget, raises :class:`PageRejected` instead of emitting thousands of regions of noise, and
every step after the connected components is O(n log n) in the number of candidate boxes (spatial grids).

``morphology`` and ``tesseract`` classify each region as ``title``, ``heading`` or ``entry`` from its type size
relative to the page's median name (a title is set much larger, a heading somewhat larger and short), and order regions as a reader
would: horizontal pages row by row, top to bottom, left to right; vertical pages band (tier) by band, columns
right to left, each column top to bottom.

Boxes are in pixels of the input image, ``x1``/``y1`` exclusive (the region is ``image[y0:y1, x0:x1]``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import layoutparser as lp
import numpy as np
from PIL import Image
from scipy import ndimage  # find_objects: every label's bounding slices in one C pass

from linkage_pipeline.documents import lines, regions
from linkage_pipeline.schema import REGION_KINDS, TEXT_DIRECTIONS

logger = logging.getLogger(__name__)


DETECTORS: tuple[str, ...] = ("ppocr", "morphology", "tesseract")

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
# No mark of legible type is smaller than 2x2 pixels (at the ~10 px type OCR engines can still read, the dot of
# 、 or 氵 is 2-3 px across), so smaller ink components are specks; they never reach the type-size estimate.
_SPECK_AREA = 4
#: Type smaller than this (pixels) is read by no OCR engine; an estimate below it comes from noise, not type.
MIN_TYPE_SIZE = 8.0
# Impulse noise is measured in the blankest fifth of the page: every printed page leaves at least a fifth of its
# area (margins, leading, the space between names) without type, so ink there is dust or noise.
_BLANK_SHARE = 0.2
# Below this speck density (ink share of the blank fifth) a speck pixel touches another with probability
# 1 - (1 - q)^8 < 15 %, so specks stay single pixels and pairs that the dust filter removes one by one; above
# it they chain into clumps as large as strokes and must be filtered out of the grey image.
_MEDIAN_ABOVE = 0.02
# A k x k median leaves a noise pixel where more than half its window is noise of the same kind, with probability
# P(Binomial(k^2, q) >= (k^2 + 1) / 2); the window is the smallest whose residue is below this (light dust again).
_MEDIAN_RESIDUE = 1e-3
# Larger windows than 5 x 5 erase strokes of body type at 150 dpi (3-4 px wide); 5 x 5 keeps strokes of >= 3 px.
_MEDIAN_WINDOWS = (3, 5)
# After filtering, the blank fifth of a page with type on paper is as clean as light dust (0 % at every
# salt-and-pepper level up to 50 % measured). Even inside a dense text block ink covers well under a quarter of
# the area (12-15 % in the NDL-DocL text blocks), so a page whose blankest fifth is still more inked than that
# (pure noise: 80 %) has no paper to find type on.
_NO_PAPER = 0.25
#: Default time budget of one page's layout, seconds. Demo pages take 0.1-0.4 s on one core, pages under 50 %
#: salt-and-pepper noise under 1 s; the budget only stops a page that something unforeseen makes pathological.
DEFAULT_TIME_BUDGET_S = 30.0


class PageRejected(Exception):
    """The detector will not emit regions for this page: more than it can hold, over budget, or no paper.

    Attributes:
        reason: What was wrong, in words (a row of ``rejected_inputs``).
        n_regions: Candidate regions found (None when stopped by the time budget before counting).
        bound: The most regions the page can hold (:func:`max_regions`), when the bound was the reason.
    """

    def __init__(self, reason: str, *, n_regions: int | None = None, bound: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.n_regions = n_regions
        self.bound = bound


class _Budget:
    """Wall-clock budget of one page; :meth:`check` raises :class:`PageRejected` once it is spent."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def remaining(self) -> float | None:
        """Seconds left (at least a millisecond, for timeouts that treat 0 as none), None without a budget."""
        if self.seconds is None:
            return None
        return max(1e-3, self.seconds - (time.perf_counter() - self.start))

    def check(self, stage: str, *, force: bool = False) -> None:
        if self.seconds is None:
            return
        spent = time.perf_counter() - self.start
        if force or spent > self.seconds:
            raise PageRejected(
                f"layout exceeded its time budget of {self.seconds:g} s per page ({spent:.1f} s spent, stopped "
                f"at {stage}); no regions emitted"
            )


def max_regions(width: int, height: int, type_size: float) -> int:
    """Most text regions a page can hold: ``W * H / ((1 + 1.2) * s^2)`` for type size ``s`` pixels.

    A region of type is at least one character long (1 em) and one line across (1 em, lines set solid), and the
    detector keeps regions on a line apart only when more than its join gap (1.2 em) separates them, so each
    region claims at least 2.2 em^2 of the page. More regions than that are shorter than a character or closer
    than a line: not type of that size but noise. A 1240 x 1700 page of 30 px type holds at most 1064 regions
    (the demo pages carry 10-40, the real NDL-DocL pages about 75 at 20 px).

    Args:
        width: Page width in pixels, > 0.
        height: Page height in pixels, > 0.
        type_size: Type size in pixels, > 0 (raised to 8 px, the smallest type OCR reads).

    Returns:
        The bound, an int >= 1.

    Raises:
        ValueError: If a size is not positive.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"page size must be positive, got {width}x{height}")
    if not type_size > 0:
        raise ValueError(f"type_size must be > 0 pixels, got {type_size}")
    em = max(float(type_size), MIN_TYPE_SIZE)
    return max(1, int(width * height / ((1.0 + _ALONG) * em * em)))


def _over_bound(n: int, shape: tuple[int, int], size: float, what: str) -> PageRejected:
    h, w = shape
    bound = max_regions(w, h, size)
    return PageRejected(
        f"{n} {what} on a {w}x{h} page with {size:.0f} px type, more than the {bound} regions such a page can "
        f"hold (W*H / (2.2 * type size^2)); no regions emitted (scan noise, not type)",
        n_regions=n,
        bound=bound,
    )


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


def speck_density(ink: np.ndarray) -> float:
    """Share of ink in the blankest fifth of a page: the density of dust and impulse noise on it.

    The page is cut into square tiles (1/40 of its short side, at least 16 px) and the ink share of the tile at
    the 20th percentile is taken: every printed page leaves at least a fifth of its area without type, so that
    tile holds only what the scan added. 0 on a clean page; about half the noise level under salt-and-pepper
    noise (the other half is salt, invisible on paper).

    Args:
        ink: uint8 (H, W) ink mask, 255 where ink.

    Returns:
        Density in [0, 1].
    """
    h, w = ink.shape
    t = max(16, min(h, w) // 40)
    if h < t or w < t:
        return float((ink > 0).mean())
    tiles = (ink[: h // t * t, : w // t * t] > 0).reshape(h // t, t, w // t, t).mean(axis=(1, 3))
    return float(np.quantile(tiles, _BLANK_SHARE))


def _median_window(density: float) -> int:
    """Smallest median window whose residue of noise pixels, ``P(Bin(k^2, q) >= (k^2 + 1) / 2)``, is below
    ``_MEDIAN_RESIDUE``; the largest window when none is."""
    for k in _MEDIAN_WINDOWS:
        n = k * k
        residue = sum(math.comb(n, j) * density**j * (1 - density) ** (n - j) for j in range((n + 1) // 2, n + 1))
        if residue <= _MEDIAN_RESIDUE:
            return k
    return _MEDIAN_WINDOWS[-1]


@dataclass(frozen=True)
class Despeckled:
    """A page after :func:`despeckle`.

    Attributes:
        gray: uint8 (H, W) page, median filtered when ``window > 0``.
        ink: uint8 (H, W) ink mask of ``gray`` (255 = ink).
        density: Speck density of the page as given (:func:`speck_density`).
        residue: Speck density left after filtering (equal to ``density`` when not filtered).
        window: Side of the median window applied, 0 when the page was left as it was.
    """

    gray: np.ndarray
    ink: np.ndarray
    density: float
    residue: float
    window: int


def despeckle(gray: np.ndarray) -> Despeckled:
    """Remove impulse noise (speckle, salt and pepper) from a page where it is too dense for the dust filter.

    The speck density ``q`` (:func:`speck_density` of the binarised page) decides: at most ``_MEDIAN_ABOVE``
    (2 %), specks stay isolated and the page is returned as it is (clean pages are never filtered, so thin
    strokes of small type survive); above it, the page is median filtered with the smallest window that leaves
    fewer than 0.1 % noise pixels (3 x 3 up to q of about 10 %, else 5 x 5), and binarised again.

    Args:
        gray: uint8 (H, W) grey page, dark ink on light paper.

    Returns:
        The (filtered) page, its ink mask, and the speck densities before and after.
    """
    ink = binarize(gray)
    density = speck_density(ink)
    if density <= _MEDIAN_ABOVE:
        return Despeckled(gray, ink, density, density, 0)
    k = _median_window(density)
    filtered = cv2.medianBlur(gray, k)
    ink = binarize(filtered)
    residue = speck_density(ink)
    logger.debug("speck density %.3f: %dx%d median filter leaves %.4f", density, k, k, residue)
    return Despeckled(filtered, ink, density, residue, k)


def _require_paper(page: Despeckled) -> None:
    """Raise :class:`PageRejected` when even the filtered page has no blank paper (a page of noise or a picture)."""
    if page.residue > _NO_PAPER:
        raise PageRejected(
            f"no blank paper on the page: {page.residue:.0%} of its blankest fifth is ink even after a "
            f"{page.window}x{page.window} median filter (speck density {page.density:.0%} before); a page of "
            "noise or a picture, not type on paper; no regions emitted"
        )


def _drop_specks(ink: np.ndarray, min_area: int = _SPECK_AREA) -> np.ndarray:
    """The ink mask without components of fewer than ``min_area`` pixels (uint8 (H, W), 255 = ink)."""
    labels, stats = _components(ink)
    if len(stats) == 0:
        return ink
    lut = np.zeros(len(stats) + 1, np.uint8)
    lut[1:][stats[:, cv2.CC_STAT_AREA] >= min_area] = 255
    return lut[labels]


def estimate_char_size(ink: np.ndarray, direction: str = "horizontal") -> float:
    """Typical type size (pixels) of the text on a page, a first guess refined by the detector.

    Drops specks (components under 2x2 pixels, smaller than any printed mark) first, so that closing cannot
    chain them into clumps of type size; then closes small gaps so most characters become one blob and measures
    blobs across the text direction (height on horizontal pages, width on vertical ones): characters that run
    together along a line make long blobs, but never thicker ones. An upper quantile skips broken characters
    and dots.

    Args:
        ink: uint8 (H, W) ink mask, 255 where ink.
        direction: ``horizontal`` or ``vertical``.

    Returns:
        Estimated type size in pixels (at least 8.0, the smallest type OCR reads).
    """
    h, w = ink.shape
    k = max(3, int(round(min(h, w) / 400)) | 1)
    closed = cv2.morphologyEx(_drop_specks(ink), cv2.MORPH_CLOSE, np.ones((k, k), np.uint8))
    _, stats = _components(closed)
    if len(stats) == 0:
        return MIN_TYPE_SIZE
    across = stats[:, cv2.CC_STAT_HEIGHT if direction == "horizontal" else cv2.CC_STAT_WIDTH].astype(np.float64)
    along = stats[:, cv2.CC_STAT_WIDTH if direction == "horizontal" else cv2.CC_STAT_HEIGHT].astype(np.float64)
    keep = (across >= 6) & (along >= 0.3 * across) & (across < min(h, w) / 8)
    if keep.sum() < 3:
        return max(MIN_TYPE_SIZE, float(np.median(across)) if len(across) else MIN_TYPE_SIZE)
    return max(MIN_TYPE_SIZE, float(np.quantile(across[keep], 0.8)))


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


def _morphology_boxes(gray: np.ndarray, direction: str, budget: _Budget) -> tuple[list[_Box], np.ndarray, float]:
    page = despeckle(gray)
    _require_paper(page)
    ink = page.ink
    size = estimate_char_size(ink, direction)
    clean = _clean(ink, size)
    budget.check("binarisation")
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
        budget.check("connected components")
        # The first guess comes from character blobs; the type size of the regions found is more reliable
        # (titles and broken characters do not move a median over regions).
        sizes = [b.size for b in boxes]
        if len(sizes) < 3:
            break
        new_size = max(MIN_TYPE_SIZE, float(np.median(sizes)))
        if abs(new_size / size - 1) <= 0.08 or attempt == 2:
            break
        logger.debug("type size re-estimated %.1f -> %.1f px", size, new_size)
        size = new_size
        clean = _clean(ink, size)
    if len(boxes) > max_regions(gray.shape[1], gray.shape[0], size):  # before the join and the classification
        raise _over_bound(len(boxes), gray.shape, size, "candidate regions")
    return boxes, clean, size


#: Skew the ppocr detector corrects (degrees either way), the step of its search, and the least it acts on.
MAX_SKEW = 4.0
_SKEW_STEP = 0.1
_MIN_SKEW = 0.15


def estimate_skew(ink: np.ndarray, direction: str) -> float:
    """Angle (degrees, counter-clockwise positive as in ``cv2.getRotationMatrix2D``) that straightens the lines.

    Projection profiles: the ink, shrunk to at most 800 pixels, is rotated by each candidate angle in
    [-:data:`MAX_SKEW`, +:data:`MAX_SKEW`] and summed across the text direction (rows of horizontal text, columns
    of vertical text); straight lines give the sharpest profile (largest sum of squared differences).
    """
    h, w = ink.shape
    f = min(1.0, 800.0 / max(h, w))
    small = cv2.resize(ink, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA).astype(np.float32)
    if not small.any():
        return 0.0
    centre = (small.shape[1] / 2.0, small.shape[0] / 2.0)
    axis = 1 if direction == "horizontal" else 0

    def sharpness(angle: float) -> float:
        m = cv2.getRotationMatrix2D(centre, angle, 1.0)
        rotated = cv2.warpAffine(small, m, (small.shape[1], small.shape[0]), flags=cv2.INTER_LINEAR, borderValue=0)
        profile = rotated.sum(axis=axis)
        return float(np.square(np.diff(profile)).sum())

    coarse = np.arange(-MAX_SKEW, MAX_SKEW + 1e-9, 0.5)
    best = float(coarse[int(np.argmax([sharpness(a) for a in coarse]))])
    fine = np.arange(best - 0.5, best + 0.5 + 1e-9, _SKEW_STEP)
    return float(fine[int(np.argmax([sharpness(a) for a in fine]))])


@dataclass(frozen=True)
class _Rotation:
    """A page straightened by ``angle`` degrees about its centre; maps boxes back to the page as scanned."""

    angle: float
    shape: tuple[int, int]

    def matrix(self) -> np.ndarray:
        h, w = self.shape
        return cv2.getRotationMatrix2D((w / 2.0, h / 2.0), self.angle, 1.0)

    def apply(self, image: np.ndarray, fill: int) -> np.ndarray:
        h, w = self.shape
        flags = cv2.INTER_NEAREST if fill == 0 else cv2.INTER_LINEAR
        return cv2.warpAffine(image, self.matrix(), (w, h), flags=flags, borderValue=fill)

    def back(self, b: _Box) -> _Box:
        """The upright box, on the page as scanned, around a box of the straightened page."""
        inverse = cv2.invertAffineTransform(self.matrix())
        corners = np.array([[b.x0, b.y0, 1], [b.x1, b.y0, 1], [b.x0, b.y1, 1], [b.x1, b.y1, 1]], np.float64)
        pts = corners @ inverse.T
        h, w = self.shape
        x0, y0 = max(0, int(np.floor(pts[:, 0].min()))), max(0, int(np.floor(pts[:, 1].min())))
        x1, y1 = min(w, int(np.ceil(pts[:, 0].max()))), min(h, int(np.ceil(pts[:, 1].max())))
        return _Box(x0, y0, x1, y1, b.size, b.score)


def _ppocr_page(
    gray: np.ndarray, direction: str, budget: _Budget
) -> tuple[list[_Box], np.ndarray, float, _Rotation | None, np.ndarray]:
    """Lines of the PP-OCR DB detector (:mod:`.lines`) on the page straightened (skew up to :data:`MAX_SKEW`
    degrees), each shrunk to the character strokes inside it; boxes, ink and size are of the straightened page,
    the rotation (None when the page was straight) maps boxes back, and the last mask keeps the dots (、 ・)
    that the cleaned ink drops with the dust."""
    page = despeckle(gray)
    _require_paper(page)
    size = estimate_char_size(page.ink, direction)
    clean = _clean(page.ink, size)
    budget.check("binarisation")
    angle = estimate_skew(clean, direction)
    rotation = None
    work, ink = page.gray, page.ink
    if abs(angle) >= _MIN_SKEW:
        rotation = _Rotation(angle, gray.shape)
        work = rotation.apply(page.gray, int(np.median(page.gray)))
        ink = rotation.apply(page.ink, 0)
        clean = _clean(ink, size)
        logger.debug("page straightened by %.1f degrees", angle)
    dots = _drop_specks(ink, max(_SPECK_AREA, int(0.01 * size * size)))
    budget.check("deskew")
    found = lines.detect_lines(work, size)
    budget.check("text-line detection")
    if len(found) > max_regions(gray.shape[1], gray.shape[0], size):
        raise _over_bound(len(found), gray.shape, size, "text lines")
    boxes = []
    for line in found:
        tight = _tighten(clean, line.x0, line.y0, line.x1, line.y1)
        if tight is None:  # a line of faint marks only (bleed-through, a stain): no strokes to read
            continue
        for x0, y0, x1, y1 in _unstack(clean, tight, direction, size):
            boxes.append(_Box(x0, y0, x1, y1, _core_size(clean[y0:y1, x0:x1], direction), line.score))
    sizes = [b.size for b in boxes]
    if len(sizes) >= 3:
        size = max(MIN_TYPE_SIZE, float(np.median(sizes)))
    return _drop_ruby(boxes, direction), clean, size, rotation, dots


def _unstack(clean: np.ndarray, box: tuple[int, int, int, int], direction: str, size: float) -> list[tuple[int, int, int, int]]:
    """The lines of type inside one detected line box, apart.

    The detector's box, grown back around the line, can take in a sliver of the neighbouring line's ink (close
    leading), or hold two lines its map merged. Across the line, the ink falls in bands separated by blank runs:
    slivers (bands under a third of a type size at either edge) are trimmed, and in a box thicker than 1.4 type
    sizes, bands each at least 0.6 type sizes thick are lines of their own; otherwise the box is one line.
    """
    x0, y0, x1, y1 = box
    vertical = direction == "vertical"
    crop = clean[y0:y1, x0:x1] > 0
    filled = np.flatnonzero(crop.any(axis=0 if vertical else 1))
    if len(filled) == 0:
        return []
    cuts = np.flatnonzero(np.diff(filled) > 1)
    if len(cuts) == 0:
        return [box]
    bands = list(zip(np.concatenate(([filled[0]], filled[cuts + 1])).tolist(),
                     (np.concatenate((filled[cuts], [filled[-1]])) + 1).tolist(), strict=True))
    thin = 0.35 * size
    while len(bands) > 1 and bands[0][1] - bands[0][0] < thin:
        bands.pop(0)
    while len(bands) > 1 and bands[-1][1] - bands[-1][0] < thin:
        bands.pop()
    # Lines apart: the box is thicker than one line can be and every band is most of a type size thick (the
    # halves of characters built left and right, 株 or 鑛, leave a blank run down a narrow column of them).
    apart = bands[-1][1] - bands[0][0] >= 1.4 * size and min(b - a for a, b in bands) >= 0.6 * size
    if len(bands) > 1 and not apart:
        bands = [(bands[0][0], bands[-1][1])]
    out = []
    for a, b in bands:
        part = (x0 + a, y0, x0 + b, y1) if vertical else (x0, y0 + a, x1, y0 + b)
        tight = _tighten(clean, *part)
        if tight is not None:
            out.append(tight)
    return out


#: Ruby (furigana) is set at half the size of the text it glosses (its measured core comes out nearer 0.7: thin
#: strokes), over a word, not a whole line: a line under this share of its neighbour's size, shorter than this
#: share of its length, and closer to it than this share of its size, is ruby.
_RUBY_SIZE = 0.75
_RUBY_LENGTH = 0.6
_RUBY_GAP = 0.25


def _drop_ruby(boxes: list[_Box], direction: str) -> list[_Box]:
    """The lines without ruby: small type set right against (or into the margin of) a larger, longer line, above
    it on horizontal pages and to its right on vertical ones. Ruby glosses a reading; it is no line of its own."""
    if len(boxes) < 2:
        return boxes
    arr = np.array([(b.x0, b.y0, b.x1, b.y1, b.size) for b in boxes], dtype=np.float64)
    vertical = direction == "vertical"
    a0, a1 = (arr[:, 1], arr[:, 3]) if vertical else (arr[:, 0], arr[:, 2])
    keep = []
    for i, b in enumerate(boxes):
        length = a1[i] - a0[i]
        base = (arr[:, 4] * _RUBY_SIZE >= b.size) & ((a1 - a0) * _RUBY_LENGTH >= length)
        gap = (b.x0 - arr[:, 2]) if vertical else (arr[:, 1] - b.y1)  # right of a column / above a line
        near = base & (gap >= -b.size) & (gap <= _RUBY_GAP * arr[:, 4])
        along = np.minimum(a1, a1[i]) - np.maximum(a0, a0[i])
        keep.append(not bool((near & (along >= 0.8 * length)).any()))
    if not all(keep):
        logger.debug("dropped %d ruby lines", len(keep) - sum(keep))
    return [b for b, k in zip(boxes, keep, strict=True) if k]


def _tight_boxes(labels: np.ndarray, n: int, clean: np.ndarray, size: float, direction: str) -> list[_Box]:
    """Tight boxes of the ink inside each merged component, dust clusters dropped.

    Raises:
        PageRejected: When more boxes survive the dust filter than the page could hold even in the smallest
            type OCR reads (:func:`max_regions` at ``MIN_TYPE_SIZE``, whatever the type size estimate of this
            attempt); checked before the per-box work, so a page of noise costs no more than a page of names.
    """
    masked = np.where(clean > 0, labels, 0).astype(np.int32)
    slices = ndimage.find_objects(masked, max_label=n - 1 if n > 1 else 0)
    ink_px = np.bincount(masked.ravel(), minlength=len(slices) + 1)
    kept = []
    for label, sl in enumerate(slices, start=1):
        if sl is None:
            continue
        ys, xs = sl
        bw, bh = xs.stop - xs.start, ys.stop - ys.start
        # Dust clusters and pieces of broken ruling lines are no text: too small, or too thin across.
        if max(bw, bh) < 0.5 * size or min(bw, bh) < 0.3 * size or ink_px[label] < 0.05 * size * size:
            continue
        kept.append(sl)
    if len(kept) > max_regions(clean.shape[1], clean.shape[0], MIN_TYPE_SIZE):
        raise _over_bound(len(kept), clean.shape, MIN_TYPE_SIZE, "candidate regions")
    boxes = []
    for ys, xs in kept:
        core = _core_size(clean[ys, xs], direction)
        boxes.append(_Box(xs.start, ys.start, xs.stop, ys.stop, core, 1.0))
    return boxes


@lru_cache(maxsize=1)
def _tesseract_languages() -> frozenset[str]:
    import pytesseract

    return frozenset(pytesseract.get_languages(config=""))


def _tesseract_boxes(
    gray: np.ndarray, direction: str, lang: str, budget: _Budget
) -> tuple[list[_Box], np.ndarray, float]:
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
    # Tesseract reads the despeckled page: its own segmentation cuts lines at specks as readily as ours does.
    page = despeckle(gray)
    _require_paper(page)
    psm = "11" if direction == "horizontal" else "1"
    try:
        data = pytesseract.image_to_data(
            page.gray, lang=tess_lang, config=f"--psm {psm}", output_type=pytesseract.Output.DICT,
            timeout=budget.remaining() or 0,
        )
    except RuntimeError as exc:  # pytesseract's timeout kills the process and raises RuntimeError
        if "timeout" not in str(exc).lower():
            raise
        budget.check("tesseract page segmentation", force=True)
        raise
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
    budget.check("tesseract page segmentation")
    ink = page.ink
    page_size = estimate_char_size(ink, direction)
    ink = _clean(ink, page_size)
    if len(lines) > max_regions(gray.shape[1], gray.shape[0], page_size):
        raise _over_bound(len(lines), gray.shape, page_size, "tesseract lines")
    spans = []
    for key, (x0, y0, x1, y1) in lines.items():
        tight = _tighten(ink, x0, y0, x1, y1)  # tesseract pads some boxes and reports dust as words
        if tight is not None:
            spans.append((tight, float(np.mean(confs[key])) / 100.0))
    if not spans:
        return [], ink, estimate_char_size(ink, direction)
    cores = [_core_size(ink[t[1] : t[3], t[0] : t[2]], direction) for t, _ in spans]
    size = max(MIN_TYPE_SIZE, float(np.median(cores)))
    raw = []
    for (x0, y0, x1, y1), conf in spans:
        # Tesseract's vertical line finder runs aligned columns of two tiers into one line: cut at wide gaps.
        for px0, py0, px1, py1 in _split_at_gaps(ink, x0, y0, x1, y1, direction, _JOIN_GAP * size):
            core = _core_size(ink[py0:py1, px0:px1], direction)
            raw.append(_Box(px0, py0, px1, py1, core, conf))
    if len(raw) > max_regions(gray.shape[1], gray.shape[0], size):
        raise _over_bound(len(raw), gray.shape, size, "tesseract fragments")
    boxes = _join_fragments(raw, direction, budget)
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


class _Grid:
    """Boxes bucketed in square cells of ``cell`` pixels, to find the boxes near a rectangle without a scan.

    Every step that compares boxes with their neighbours uses it, so their cost grows with the number of boxes
    times the (bounded) number of neighbours, not with its square.
    """

    def __init__(self, cell: float) -> None:
        self.cell = max(1.0, float(cell))
        self.cells: dict[tuple[int, int], set[int]] = defaultdict(set)

    def span(self, x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
        """Cells ``(gx0, gy0, gx1, gy1)`` (inclusive) that the rectangle ``[x0, x1) x [y0, y1)`` touches."""
        c = self.cell
        return int(x0 // c), int(y0 // c), int(max(x0, x1 - 1) // c), int(max(y0, y1 - 1) // c)

    @staticmethod
    def _keys(span: tuple[int, int, int, int]) -> Iterable[tuple[int, int]]:
        gx0, gy0, gx1, gy1 = span
        for gy in range(gy0, gy1 + 1):
            for gx in range(gx0, gx1 + 1):
                yield gx, gy

    def add(self, key: int, b: _Box, *, already: _Box | None = None) -> None:
        """Register ``b`` under ``key``; with ``already`` (a box inside ``b`` registered under the same key), only
        the cells of ``b`` outside it are added, so growing a box costs its new cells only."""
        gx0, gy0, gx1, gy1 = self.span(b.x0, b.y0, b.x1, b.y1)
        if already is None:
            parts = [(gx0, gy0, gx1, gy1)]
        else:
            ax0, ay0, ax1, ay1 = self.span(already.x0, already.y0, already.x1, already.y1)
            parts = [
                (gx0, gy0, gx1, ay0 - 1),  # rows above the old box
                (gx0, ay1 + 1, gx1, gy1),  # rows below it
                (gx0, ay0, ax0 - 1, ay1),  # left of it, in its rows
                (ax1 + 1, ay0, gx1, ay1),  # right of it, in its rows
            ]
        for part in parts:
            if part[0] <= part[2] and part[1] <= part[3]:
                for k in self._keys(part):
                    self.cells[k].add(key)

    def remove(self, key: int, b: _Box) -> None:
        for k in self._keys(self.span(b.x0, b.y0, b.x1, b.y1)):
            self.cells[k].discard(key)

    def near(self, x0: float, y0: float, x1: float, y1: float) -> set[int]:
        found: set[int] = set()
        for k in self._keys(self.span(x0, y0, x1, y1)):
            found |= self.cells.get(k, set())
        return found


def _joinable(a: _Box, b: _Box, direction: str) -> bool:
    if direction == "horizontal":
        overlap = min(a.y1, b.y1) - max(a.y0, b.y0)
        gap = max(a.x0, b.x0) - min(a.x1, b.x1)
        aligned = overlap >= 0.5 * min(a.height, b.height)
    else:
        overlap = min(a.x1, b.x1) - max(a.x0, b.x0)
        gap = max(a.y0, b.y0) - min(a.y1, b.y1)
        aligned = overlap >= 0.5 * min(a.width, b.width)
    similar = max(a.size, b.size) <= 1.5 * min(a.size, b.size)
    return aligned and similar and gap < _JOIN_GAP * max(a.size, b.size)


def _join_fragments(boxes: list[_Box], direction: str, budget: _Budget | None = None) -> list[_Box]:
    """Join boxes that continue each other along the text direction (one name split into pieces).

    Two boxes join when they are aligned across the line, set in a similar type size, and the gap between
    them is under ``_JOIN_GAP`` of their type size: this mends names split by tesseract, and gaps in large
    type (a title's ``（株）``) that the page-wide dilation kernel, sized for the names, does not bridge.

    Boxes are taken in order along the text direction; each is joined to the earliest joinable box kept so far
    and the joined box is tried again, until no two kept boxes join. Candidates come from a grid of type-size
    cells; a joined box is registered by its new cells only and searched again only around the piece that
    grew it (around all of it when the join changed its extent across the line or its type size), so a line of
    k fragments costs O(k), and n boxes O(n log n) (the sort) rather than the O(n^2) per pass of a pairwise scan.
    """
    if not boxes:
        return []
    horizontal = direction == "horizontal"
    boxes = sorted(boxes, key=lambda b: (b.x0, b.y0) if horizontal else (b.y0, b.x0))
    reach = _JOIN_GAP * max(b.size for b in boxes)
    grid = _Grid(float(np.median([b.size for b in boxes])))
    kept: dict[int, _Box] = {}
    first: dict[int, int] = {}  # key -> earliest input position among the boxes joined into it (output order)

    def across(b: _Box) -> tuple[int, int, float]:
        return (b.y0, b.y1, b.size) if horizontal else (b.x0, b.x1, b.size)

    def cells(b: _Box) -> int:
        gx0, gy0, gx1, gy1 = grid.span(b.x0, b.y0, b.x1, b.y1)
        return (gx1 - gx0 + 1) * (gy1 - gy0 + 1)

    for i, b in enumerate(boxes):
        key: int | None = None  # b is not registered until it joins or is kept
        current, probe = b, b
        while True:
            if budget is not None:  # a cascade of joins that each widen a box is the one costly path
                budget.check("joining fragments")
            if horizontal:
                near = grid.near(probe.x0 - reach, current.y0, probe.x1 + reach, current.y1)
            else:
                near = grid.near(current.x0, probe.y0 - reach, current.x1, probe.y1 + reach)
            partners = [k for k in near if k != key and _joinable(kept[k], current, direction)]
            if not partners:
                break
            partner = min(partners, key=first.__getitem__)
            a = kept[partner]
            merged = _Box(
                min(a.x0, current.x0), min(a.y0, current.y0), max(a.x1, current.x1), max(a.y1, current.y1),
                max(a.size, current.size), (a.score + current.score) / 2,
            )
            # The larger of the two keeps its key and registration (union by size: a cell entry moves O(log n)
            # times); the smaller is unregistered.
            if key is None or cells(a) >= cells(current):
                big_key, big, small_key, small = partner, a, key, current
            else:
                big_key, big, small_key, small = key, current, partner, a
            if small_key is not None:
                grid.remove(small_key, small)
                del kept[small_key]
                first[big_key] = min(first[big_key], first.pop(small_key))
            else:
                first[big_key] = min(first[big_key], i)
            grid.add(big_key, merged, already=big)
            kept[big_key] = merged
            # New partners can only lie near the piece that grew the big box, unless the join changed its
            # extent across the line or its type size: then anywhere along it.
            probe = small if across(merged) == across(big) else merged
            key, current = big_key, merged
        if key is None:
            kept[i], first[i] = b, i
            grid.add(i, b)
    return [kept[k] for k in sorted(kept, key=first.__getitem__)]


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
            # Nothing but titles above a title: the highest bottom edge of the other boxes is below its top.
            first_end = min((b.y1 for j, b in enumerate(boxes) if j not in titles), default=np.inf)
            titles = {i for i in titles if not first_end <= boxes[i].y0 + 0.25 * boxes[i].size}
    rows: _Grid | None = None
    if direction == "horizontal":
        # Rows of the page, to ask whether a heading candidate shares its row (only the boxes near it).
        rows = _Grid(median)
        for j, o in enumerate(boxes):
            rows.add(j, _Box(0, o.y0, 1, o.y1, o.size, o.score))
    out = []
    for i, b in enumerate(boxes):
        n_chars = _length(b, direction) / max(b.size, 1.0)
        heading_like = rel[i] >= _HEADING_REL and n_chars <= _HEADING_MAX_CHARS
        alone = rows is None or not heading_like or not any(
            j != i and min(b.y1, boxes[j].y1) - max(b.y0, boxes[j].y0) >= 0.5 * min(b.height, boxes[j].height)
            for j in rows.near(0, b.y0, 1, b.y1)
        )
        if i in titles:
            kind = "title"
        elif heading_like and alone:
            kind = "heading"
        else:
            kind = "entry"
        margin = min(abs(rel[i] - _HEADING_REL), abs(rel[i] - title_rel))
        score = b.score * float(np.clip(0.5 + margin / 0.2, 0.5, 1.0))
        out.append((b, kind, score))
    return out


def _segments(
    boxes: list[_Box], clean: np.ndarray, direction: str
) -> tuple[list[_Box], np.ndarray]:
    """The lines in reading order, each cut into segments at blank gaps of ``regions.NAME_GAP`` ems, and the line
    index of each segment (a heading and the names after it on one line, a label and its value on a body line)."""
    vertical = direction == "vertical"
    ordered = _reading_order([(b, "entry", b.score) for b in boxes], direction)
    segments: list[_Box] = []
    line_ids: list[int] = []
    for i, (b, _, _) in enumerate(ordered):
        for x0, y0, x1, y1 in regions.split_names(clean, (b.x0, b.y0, b.x1, b.y1), b.size, vertical, at_separators=False):
            size = _core_size(clean[y0:y1, x0:x1], direction) if (x0, y0, x1, y1) != (b.x0, b.y0, b.x1, b.y1) else b.size
            segments.append(_Box(x0, y0, x1, y1, size, b.score))
            line_ids.append(i)
    return segments, np.array(line_ids, dtype=np.int64)


def _geometry(segments: list[_Box], line_ids: np.ndarray) -> regions.LineGeometry:
    return regions.LineGeometry(
        np.array([(b.x0, b.y0, b.x1, b.y1) for b in segments], dtype=np.int64).reshape(-1, 4),
        np.array([b.size for b in segments], dtype=np.float64),
        line_ids,
    )


def page_lines(
    image: np.ndarray | Image.Image, direction: str
) -> tuple[regions.LineGeometry, np.ndarray, np.ndarray, np.ndarray]:
    """The segments of a page's PP-OCR text lines in reading order, before they are classified or cut into names.

    Returns:
        The segments on the straightened page (boxes tight around their strokes, type sizes, line ids), its
        cleaned ink mask (uint8, 255 = ink) that :func:`regions.line_features` reads, the segments' boxes on
        the page as scanned (n, 4), to match with labels, and the ink mask that keeps separator dots.
    """
    if direction not in TEXT_DIRECTIONS:
        raise ValueError(f"direction must be one of {TEXT_DIRECTIONS}, got {direction!r}")
    gray = _to_gray(image)
    boxes, clean, _, rotation, dots = _ppocr_page(gray, direction, _Budget(None))
    segments, line_ids = _segments(_drop_degenerate(boxes, gray.shape), clean, direction)
    scanned = segments if rotation is None else [rotation.back(b) for b in segments]
    return _geometry(segments, line_ids), clean, _geometry(scanned, line_ids).boxes, dots


def _union(boxes: list[_Box], score: float) -> _Box:
    return _Box(
        min(b.x0 for b in boxes), min(b.y0 for b in boxes), max(b.x1 for b in boxes), max(b.y1 for b in boxes),
        float(np.median([b.size for b in boxes])), score,
    )


#: Two pieces of text in one row (column), of one kind other than entry, less than this many ems apart are one
#: line: a label and its value set with a full-width space, a letter-spaced heading, a line the detector broke.
_SAME_LINE_GAP = 2.0


def _continues(a: _Box, b: _Box, vertical: bool) -> bool:
    """Whether ``b`` goes on the line of ``a``: it overlaps ``a`` across the line by half the thinner of the two
    and starts less than :data:`_SAME_LINE_GAP` ems after ``a`` ends."""
    if vertical:
        overlap, thin, gap = min(a.x1, b.x1) - max(a.x0, b.x0), min(a.width, b.width), b.y0 - a.y1
    else:
        overlap, thin, gap = min(a.y1, b.y1) - max(a.y0, b.y0), min(a.height, b.height), b.x0 - a.x1
    return overlap >= 0.5 * thin and -0.5 * a.size <= gap <= _SAME_LINE_GAP * max(a.size, b.size)


def _names_from_lines(
    boxes: list[_Box],
    clean: np.ndarray,
    direction: str,
    classifier: regions.RegionClassifier,
    budget: _Budget,
    dots: np.ndarray | None = None,
) -> list[tuple[_Box, str, float]]:
    """Classify the segments of a page's lines (title, heading, entry, body) and cut entries into names.

    A line takes one kind, voted by its segments' probabilities (:func:`regions.line_kinds_smoothed`); only a
    run-in heading at its start keeps a kind of its own.

    Consecutive segments of the same kind other than ``entry`` that go on one line (:func:`_continues`) are one
    region again (a body line of label and value, a letter-spaced heading); ``entry`` segments are cut at
    separator marks into names.
    """
    vertical = direction == "vertical"
    segments, line_ids = _segments(boxes, clean, direction)
    if not segments:
        return []
    geometry = _geometry(segments, line_ids)
    proba_all = classifier.probabilities(regions.line_features(clean, geometry, vertical, dots))
    lengths = (geometry.boxes[:, 3] - geometry.boxes[:, 1]) if vertical else (geometry.boxes[:, 2] - geometry.boxes[:, 0])
    predicted, proba = regions.line_kinds_smoothed(proba_all, classifier.classes, line_ids, lengths)
    budget.check("line classification")
    out: list[tuple[_Box, str, float]] = []
    run: list[int] = []

    def flush() -> None:
        if run:
            kind = predicted[run[0]]
            score = float(np.mean([segments[i].score * proba[i] for i in run]))
            out.append((_union([segments[i] for i in run], score), kind, score))
            run.clear()

    for i, (b, kind, p) in enumerate(zip(segments, predicted, proba.tolist(), strict=True)):
        if run and (predicted[run[-1]] != kind or not _continues(segments[run[-1]], b, vertical)):
            flush()
        if kind != "entry":
            run.append(i)
            continue
        for x0, y0, x1, y1 in regions.split_names(clean, (b.x0, b.y0, b.x1, b.y1), b.size, vertical, marks=dots):
            out.append((_Box(x0, y0, x1, y1, b.size, b.score), kind, float(b.score * p)))
    flush()
    return _reading_order(out, direction)


def _length(b: _Box, direction: str) -> int:
    return b.width if direction == "horizontal" else b.height


def _group_overlapping(
    items: list[tuple[_Box, str, float]], span: Callable[[_Box], tuple[int, int]]
) -> list[list[tuple[_Box, str, float]]]:
    """Groups consecutive items whose ``span`` (y-range for rows, x-range for columns) overlaps the current
    group's by at least half the smaller extent; ``items`` must already be sorted along that axis."""
    groups: list[list[tuple[_Box, str, float]]] = []
    g0 = g1 = 0  # span of the current group, kept as it grows (one pass, no rescans of the group)
    for it in items:
        lo, hi = span(it[0])
        if groups and min(g1, hi) - max(g0, lo) >= 0.5 * min(hi - lo, g1 - g0):
            groups[-1].append(it)
            g0, g1 = min(g0, lo), max(g1, hi)
            continue
        groups.append([it])
        g0, g1 = lo, hi
    return groups


def _gutter(items: list[tuple[_Box, str, float]]) -> int | None:
    """The x of a blank band down the middle third of a horizontal page that no line crosses, with lines on both
    sides spanning most of the height (a two-page spread); None on a single page."""
    if len(items) < 4:
        return None
    x0 = min(b.x0 for b, _, _ in items)
    x1 = max(b.x1 for b, _, _ in items)
    width = x1 - x0
    size = float(np.median([b.size for b, _, _ in items]))
    covered = np.zeros(width + 1, bool)
    for b, _, _ in items:
        covered[b.x0 - x0 : b.x1 - x0] = True
    lo, hi = width // 3, 2 * width // 3
    blank = np.flatnonzero(~covered[lo:hi]) + lo
    if len(blank) == 0:
        return None
    runs = np.split(blank, np.flatnonzero(np.diff(blank) > 1) + 1)
    run = max(runs, key=len)
    if len(run) < size:  # narrower than a character: a gap inside a row, not a gutter
        return None
    cut = int(x0 + run[len(run) // 2])
    left = [b for b, _, _ in items if b.x1 <= cut]
    right = [b for b, _, _ in items if b.x0 >= cut]

    def tall(side: list[_Box]) -> bool:
        return bool(side) and (max(b.y1 for b in side) - min(b.y0 for b in side)) >= 0.5 * (
            max(b.y1 for b, _, _ in items) - min(b.y0 for b, _, _ in items)
        )

    return cut if tall(left) and tall(right) else None


def _reading_order(items: list[tuple[_Box, str, float]], direction: str) -> list[tuple[_Box, str, float]]:
    """Sort regions as a reader reads them.

    Horizontal: rows (regions overlapping vertically by half the smaller height) top to bottom, each left to
    right. Vertical: bands (tiers separated by a horizontal gap) top to bottom; in each band, columns (regions
    overlapping horizontally) right to left, each top to bottom.
    """
    if direction == "horizontal":
        gutter = _gutter(items)
        if gutter is not None:  # a two-page spread: the left page, then the right one
            left = [it for it in items if it[0].x1 <= gutter]
            right = [it for it in items if it[0].x1 > gutter]
            return _reading_order(left, direction) + _reading_order(right, direction)
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


def _drop_degenerate(boxes: list[_Box], shape: tuple[int, int]) -> list[_Box]:
    """Boxes clipped to the page, without those of zero width or height (nothing to crop, read or embed)."""
    h, w = shape
    kept = []
    for b in boxes:
        x0, y0, x1, y1 = max(0, b.x0), max(0, b.y0), min(w, b.x1), min(h, b.y1)
        if x1 <= x0 or y1 <= y0:
            logger.debug("dropped a degenerate region (%d, %d, %d, %d) on a %dx%d page", b.x0, b.y0, b.x1, b.y1, w, h)
            continue
        kept.append(b if (x0, y0, x1, y1) == (b.x0, b.y0, b.x1, b.y1) else _Box(x0, y0, x1, y1, b.size, b.score))
    if len(kept) < len(boxes):
        logger.warning("dropped %d regions of zero width or height (or off the page)", len(boxes) - len(kept))
    return kept


def detect_layout(
    image: np.ndarray | Image.Image,
    *,
    direction: str,
    detector: str = "ppocr",
    lang: str = "jpn",
    time_budget_s: float | None = DEFAULT_TIME_BUDGET_S,
    classifier: regions.RegionClassifier | None = None,
) -> lp.Layout:
    """Detect the text regions of one page.

    The page's cost is bounded: impulse noise is filtered out first (:func:`despeckle`), a page with more
    candidate regions than it can hold (:func:`max_regions`) is rejected before any per-region work, and a page
    that takes longer than ``time_budget_s`` is rejected at the next step. Regions of zero width or height are
    never returned.

    Args:
        image: The page: uint8 numpy array (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA, or a PIL image.
        direction: ``horizontal`` (rows, left to right) or ``vertical`` (columns, top to bottom, right to left).
        detector: ``ppocr`` (pretrained text lines + learned line classifier), ``morphology`` (OpenCV, fast, no
            model) or ``tesseract`` (Tesseract page segmentation).
        lang: Tesseract language for the ``tesseract`` detector; vertical pages use ``{lang}_vert`` where
            installed. Ignored by ``morphology``.
        time_budget_s: Wall-clock seconds this page may take (checked between steps, so a step that is running
            finishes first); ``None`` for no budget.
        classifier: The line classifier of the ``ppocr`` detector (default: the shipped one,
            :func:`regions.default_classifier`); ignored by the others.

    Returns:
        A layoutparser Layout of TextBlocks in reading order: ``block`` an ``lp.Rectangle`` in pixels
        (x_2/y_2 exclusive), ``type`` one of ``title``/``heading``/``entry``/``body`` (``body`` from ``ppocr``
        only), ``score`` in [0, 1], ``id`` the 0-based reading order.

    Raises:
        ValueError: If the image, ``direction``, ``detector``, ``time_budget_s`` or (for tesseract) ``lang`` is
            not supported.
        PageRejected: If the page holds more regions than its size allows at its type size, has no blank paper
            even after despeckling (a page of noise), or its layout ran over ``time_budget_s``; ``reason`` says
            which, with the numbers (count and bound, ink share, seconds).
    """
    if direction not in TEXT_DIRECTIONS:
        raise ValueError(f"direction must be one of {TEXT_DIRECTIONS}, got {direction!r}")
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    if time_budget_s is not None and not time_budget_s > 0:
        raise ValueError(f"time_budget_s must be > 0 seconds or None, got {time_budget_s!r}")
    budget = _Budget(time_budget_s)
    gray = _to_gray(image)
    if detector == "ppocr":
        boxes, clean, size, rotation, dots = _ppocr_page(gray, direction, budget)
        boxes = _drop_degenerate(boxes, gray.shape)
        items = _names_from_lines(boxes, clean, direction, classifier or regions.default_classifier(), budget, dots)
        if rotation is not None:
            items = [(rotation.back(b), kind, score) for b, kind, score in items]
        return _to_layout(items, detector, size, direction)
    if detector == "morphology":
        boxes, _, size = _morphology_boxes(gray, direction, budget)
        boxes = _join_fragments(_drop_degenerate(boxes, gray.shape), direction, budget)
    else:
        boxes, _, size = _tesseract_boxes(gray, direction, lang, budget)
    boxes = _drop_degenerate(boxes, gray.shape)
    if len(boxes) > max_regions(gray.shape[1], gray.shape[0], size):
        raise _over_bound(len(boxes), gray.shape, size, "regions")
    budget.check("joining fragments")
    items = _reading_order(_classify(boxes, direction), direction)
    return _to_layout(items, detector, size, direction)


def _to_layout(items: list[tuple[_Box, str, float]], detector: str, size: float, direction: str) -> lp.Layout:
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
        ValueError: If a block has a kind outside title/heading/entry/body.
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
