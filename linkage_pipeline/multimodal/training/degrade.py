"""Scan-like degradations of training crops, drawn from two families: ``train`` and ``heldout``.

:func:`~linkage_pipeline.multimodal.training.augment.render_crop` adds light noise only (small rotation, Gaussian
blur, down/up-scaling, speckle, pixel noise). Real scans also show spread or starved ink, broken strokes, JPEG
artefacts, paper texture, show-through of the other side of the leaf, wavy baselines, shear, crops cut short or
catching a neighbouring line, and uneven lighting. This module is a library of such operations and a sampler
that applies a random subset of them, so that the multimodal model can be trained on one *family* of
degradations and measured on another it never saw.

Operations
    Every operation is a pure function ``op(img, rng, strength, *, direction="horizontal") -> img`` on a greyscale
    uint8 crop (dark ink on light paper), deterministic for a given ``rng`` state, O(pixels) (every kernel size
    is capped) and the identity (a copy) when ``strength <= 0``. ``strength`` is in the unit given in
    :data:`OPERATIONS`' table below. All keep the shape except ``cut_short`` (one end of the text direction
    loses 3-15 % in the families: the width for horizontal text, the height for vertical text) and
    ``neighbour_edge`` (a strip is appended across the text direction: above or below horizontal text, left or
    right of vertical text, so the height or the width grows).

    ================  =====================================================================  ====================
    name              what                                                                   strength unit
    ================  =====================================================================  ====================
    ink_spread        ink grows (grey erosion = min filter), kernel side <= 1 + round(2 s)   ~ px of growth
    ink_erosion       ink thins (grey dilation = max filter), kernel side <= 1 + round(2 s)  ~ px of thinning
    broken_strokes    small paper-coloured gaps (3 or 5 px discs) at random ink pixels       fraction of ink area
    neighbour_edge    a strip of another line's strokes appended at one side                 strip / crop height
    bleed_through     faint mirrored ghost of the crop, or of random strokes                 ghost opacity
    paper_texture     low-frequency noise field on the paper (less on the ink)               grey levels (std)
    illumination      multiplicative shading ramp in a random direction                      darkest-edge loss
    baseline_warp     smooth displacement across the text, varying along it                  amplitude / height
    rotation          rotation about the centre, random sign                                 degrees
    shear             shear along the text direction, random sign                            tan(shear angle)
    cut_short         one end of the text direction dropped                                  fraction dropped
    gaussian_blur     Gaussian blur (sigma capped at 4 px)                                   sigma px
    motion_blur       line kernel at a random angle (length capped at 15 px)                 length px - 1
    low_resolution    down-scale (area) then up-scale (linear) to the same shape             resolution lost
    speckle           salt-and-pepper: random pixels set dark or light                       fraction of pixels
    jpeg              JPEG round trip (cv2.imencode / imdecode), quality 100 - s             100 - quality
    ================  =====================================================================  ====================

    "height" above means the size across the text direction (the width for vertical text).

Families
    :func:`degrade` walks :data:`OP_ORDER` (print -> page -> paper -> geometry -> cropping -> optics -> output)
    and applies each operation with its family probability, at a strength drawn uniformly from the family range
    and multiplied by the caller's ``strength``. Both families share the order and the code; they differ in
    parameters:

    ================  ======================  =======================
    operation         TRAIN_FAMILY (p, s)     HELDOUT_FAMILY (p, s)
    ================  ======================  =======================
    ink_spread        0.25, 0.5-1.0           0.30, 1.0-1.5
    ink_erosion       0.25, 0.5-1.0           0.30, 1.0-1.5
    broken_strokes    0.20, 0.02-0.08         0.30, 0.08-0.15
    neighbour_edge    0.15, 0.08-0.20         0.25, 0.20-0.35
    bleed_through     **0** (never)           0.40, 0.15-0.35
    paper_texture     0.40, 3-10              0.50, 10-18
    illumination      0.30, 0.10-0.30         0.40, 0.30-0.50
    baseline_warp     0.30, 0.01-0.04         0.40, 0.04-0.08
    rotation          0.40, 0.3-2.0 deg       0.40, 2.0-3.5 deg
    shear             **0** (never)           0.35, 0.05-0.20
    cut_short         0.20, 0.03-0.10         0.25, 0.10-0.15
    gaussian_blur     0.35, 0.4-1.2           **0** (never)
    motion_blur       **0** (never)           0.40, 2-6
    low_resolution    0.30, 0.10-0.35         0.40, 0.35-0.60
    speckle           0.30, 0.001-0.005       0.40, 0.005-0.012
    jpeg              0.40, 10-50 (q 50-90)   0.50, 55-85 (q 15-45)
    ================  ======================  =======================

    So the held-out family uses three operations the train family never applies (``bleed_through``, ``shear``,
    ``motion_blur``), a different blur kind (motion instead of Gaussian; note that ``render_crop`` itself still
    adds a light Gaussian blur to every crop), and for every shared operation a range that starts where the
    train range ends (heavier ink changes, heavier JPEG, stronger shading and warps, lower resolution).

    **The held-out family must never be used for training, for model selection, or for choosing any constant or
    threshold** (including the train family's own ranges). It exists only to measure how a model trained on
    ``TRAIN_FAMILY`` holds up on degradations it did not see; once used for tuning it stops measuring that.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import cv2
import numpy as np

logger = logging.getLogger(__name__)

MAX_SIDE = 4096
"""Largest accepted crop side in pixels; larger inputs are refused so that one call's cost stays bounded."""

DIRECTIONS = ("horizontal", "vertical")

_MAX_SIGMA = 4.0
_MAX_MOTION = 15
_MAX_MORPH = 7


# ------------------------------------------------------------------------------------------------ checks
def _check_crop(img: np.ndarray, what: str = "img") -> np.ndarray:
    """The crop as a 2-D uint8 array, or ValueError naming what is wrong."""
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D greyscale crop (H, W), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8, got dtype {arr.dtype} (shape {arr.shape})")
    if arr.size == 0:
        raise ValueError(f"{what} is empty (shape {arr.shape}); expected a crop with at least one pixel")
    if max(arr.shape) > MAX_SIDE:
        raise ValueError(f"{what} of shape {arr.shape} is larger than {MAX_SIDE} px on a side; refusing to degrade it")
    return arr


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'horizontal' or 'vertical', got {direction!r}")


def _operation(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """What every operation does first: check the crop and the direction, and return a copy at strength <= 0."""

    @functools.wraps(fn)
    def op(img: np.ndarray, rng: np.random.Generator, strength: float, *, direction: str = "horizontal"
           ) -> np.ndarray:
        img = _check_crop(img)
        _check_direction(direction)
        if strength <= 0:
            return img.copy()
        return fn(img, rng, strength, direction=direction)

    return op


def _to_u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _levels(img: np.ndarray) -> tuple[float, float]:
    """(paper, ink) grey levels: the 90th and 2nd percentiles, from a histogram (O(pixels)).

    Text crops are mostly paper, and thin type can cover only a few per cent of the pixels, hence the 2nd.
    """
    cdf = np.cumsum(np.bincount(img.ravel(), minlength=256))
    n = cdf[-1]
    paper = float(np.searchsorted(cdf, 0.90 * n))
    ink = float(np.searchsorted(cdf, 0.02 * n))
    return paper, ink


def _ink_mask(img: np.ndarray) -> np.ndarray:
    """Boolean (H, W): pixels darker than the Otsu threshold, or none where there is no contrast."""
    paper, ink = _levels(img)
    if paper - ink < 20:
        return np.zeros(img.shape, dtype=bool)
    thr, _ = cv2.threshold(img, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return img < thr


# -------------------------------------------------------------------------------------------- operations
def _morph(img: np.ndarray, rng: np.random.Generator, strength: float, grow_ink: bool) -> np.ndarray:
    kx = min(_MAX_MORPH, 1 + round(2 * strength * float(rng.uniform(0.6, 1.0))))
    ky = min(_MAX_MORPH, 1 + round(2 * strength * float(rng.uniform(0.6, 1.0))))
    shape = cv2.MORPH_RECT if rng.random() < 0.5 else cv2.MORPH_ELLIPSE
    kernel = cv2.getStructuringElement(shape, (kx, ky))
    # Dark ink: the min filter (grey erosion) spreads it, the max filter (grey dilation) thins it.
    return cv2.erode(img, kernel) if grow_ink else cv2.dilate(img, kernel)


@_operation
def ink_spread(
    img: np.ndarray, rng: np.random.Generator, strength: float, *, direction: str = "horizontal"
) -> np.ndarray:
    """Ink spreads into the paper (over-inked type, absorbent paper).

    Args:
        img: uint8 (H, W), dark ink on light paper.
        rng: Randomness (kernel size per axis and shape).
        strength: About the pixels of growth; each kernel side is ``1 + round(2 * strength * u)``, ``u`` uniform
            in [0.6, 1] per axis (capped at 7).
        direction: Unused (same signature as every operation).

    Returns:
        uint8 (H, W) with at least as many dark pixels.
    """
    return _morph(img, rng, strength, grow_ink=True)


@_operation
def ink_erosion(
    img: np.ndarray, rng: np.random.Generator, strength: float, *, direction: str = "horizontal"
) -> np.ndarray:
    """Ink thins (starved press, worn type): see :func:`ink_spread` for the arguments; fewer dark pixels."""
    return _morph(img, rng, strength, grow_ink=False)


@_operation
def broken_strokes(
    img: np.ndarray, rng: np.random.Generator, strength: float, *, direction: str = "horizontal"
) -> np.ndarray:
    """Small paper-coloured gaps in the ink (type that did not print fully).

    Args:
        img: uint8 (H, W).
        rng: Randomness (gap centres and sizes).
        strength: Roughly the fraction of the ink area turned to paper (capped at 0.5).
        direction: Unused.

    Returns:
        uint8 (H, W); unchanged if the crop has no ink.
    """
    mask = _ink_mask(img)
    ink_idx = np.flatnonzero(mask)
    if ink_idx.size == 0:
        return img.copy()
    # The typical paper tone (not a bright outlier), so gaps do not read as salt.
    paper = float(np.median(img[~mask])) if ink_idx.size < img.size else float(img.max())
    # Discs of 3 px (area ~5) and 5 px (area ~21): about 13 px per gap on average.
    n = max(1, round(min(strength, 0.5) * ink_idx.size / 13.0))
    centres = ink_idx[rng.integers(0, ink_idx.size, n)]
    big = rng.random(n) < 0.5
    gaps = np.zeros(img.size, dtype=np.uint8)
    hit = np.zeros(img.shape, dtype=np.float32)
    for sel, k in ((~big, 3), (big, 5)):
        gaps[:] = 0
        gaps[centres[sel]] = 1
        disc = cv2.dilate(gaps.reshape(img.shape), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        hit = np.maximum(hit, (disc > 0) & mask)
    # Soft gap edges, like the (already blurred) strokes around them; gaps only ever lighten.
    alpha = np.clip(cv2.GaussianBlur(hit, (0, 0), 0.6) * 1.5, 0.0, 1.0)
    f = img.astype(np.float32)
    return _to_u8(np.maximum(f, f + alpha * (paper - f)))


def _random_strokes(shape: tuple[int, int], rng: np.random.Generator, density: float) -> np.ndarray:
    """float32 (H, W) in [0, 1]: 1 where random pen-like strokes (line segments and short bars) lie."""
    h, w = shape
    canvas = np.zeros((h, w), dtype=np.uint8)
    scale = max(2, min(h, w))
    n = max(1, int(density * h * w / (scale * 3)))
    n = min(n, 4 * (h + w))  # bounded: at most a few strokes per pixel of perimeter
    p0 = np.stack([rng.integers(0, w, n), rng.integers(0, h, n)], axis=1)
    lengths = rng.uniform(0.2, 0.8, n) * scale
    angles = rng.choice(np.array([0.0, math.pi / 2, math.pi / 4, 3 * math.pi / 4]), n) + rng.normal(0, 0.1, n)
    p1 = p0 + np.stack([np.cos(angles) * lengths, np.sin(angles) * lengths], axis=1)
    thick = rng.integers(1, max(2, scale // 12) + 1, n)
    for a, b, t in zip(p0.astype(int), p1.astype(int), thick, strict=True):
        cv2.line(canvas, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), 255, int(t), cv2.LINE_AA)
    return canvas.astype(np.float32) / 255.0


def neighbour_edge(
    img: np.ndarray,
    rng: np.random.Generator,
    strength: float,
    *,
    direction: str = "horizontal",
    neighbour: np.ndarray | None = None,
) -> np.ndarray:
    """Append a strip of a neighbouring line's strokes at one side (a crop that caught the next line).

    Horizontal text gets the strip above (the bottom edge of the line above) or below (the top edge of the line
    below); vertical text gets it left or right (the facing edge of the neighbouring column).

    Args:
        img: uint8 (H, W).
        rng: Randomness (side, offset, synthesised strokes).
        strength: Strip size as a fraction of the size across the text direction (at least 1 px; capped at 1,
            and so that the result stays within :data:`MAX_SIDE`).
        direction: ``horizontal`` or ``vertical``.
        neighbour: Optional uint8 crop of another line to cut the strip from (its paper level is matched to
            ``img``'s); ``None`` synthesises strokes cut off at the crop edge.

    Returns:
        uint8 (H + k, W) for horizontal text or (H, W + k) for vertical text, ``k`` the strip size.

    Raises:
        ValueError: If ``direction`` is unknown or ``neighbour`` is not a valid crop.
    """
    img = _check_crop(img)
    _check_direction(direction)
    if neighbour is not None:
        neighbour = _check_crop(neighbour, "neighbour")
    if strength <= 0:
        return img.copy()
    # Work in "horizontal" coordinates: rows across the text, columns along it.
    work = img if direction == "horizontal" else img.T
    nb = None if neighbour is None else (neighbour if direction == "horizontal" else neighbour.T)
    h, w = work.shape
    k = min(MAX_SIDE - h, max(1, round(min(strength, 1.0) * h)))
    if k <= 0:
        return img.copy()
    before = bool(rng.random() < 0.5)  # strip above (line before) or below (line after)
    paper, ink = _levels(work)
    if nb is not None:
        nb_paper, nb_ink = _levels(nb)
        rows = (nb[-k:] if before else nb[:k]).astype(np.float32)
        if nb_paper - nb_ink >= 20:  # match paper tones; a crop of (almost) only ink has no paper to match
            rows *= paper / max(nb_paper, 1.0)
        x0 = int(rng.integers(0, max(1, rows.shape[1] - w + 1)))
        rows = rows[:, x0 : x0 + w]
        strip = np.full((k, w), paper, dtype=np.float32)
        if before:
            strip[k - rows.shape[0] :, : rows.shape[1]] = rows
        else:
            strip[: rows.shape[0], : rows.shape[1]] = rows
    else:
        # Strokes of a line of about the same size, of which only the edge nearest this crop is visible.
        strokes = _random_strokes((h, w), rng, density=0.6)
        edge = strokes[-k:] if before else strokes[:k]
        strip = paper - edge * (paper - ink)
    stacked = np.concatenate([strip, work.astype(np.float32)] if before else [work.astype(np.float32), strip], 0)
    out = _to_u8(stacked)
    return out if direction == "horizontal" else np.ascontiguousarray(out.T)


@_operation
def bleed_through(
    img: np.ndarray, rng: np.random.Generator, strength: float, *, direction: str = "horizontal"
) -> np.ndarray:
    """A faint ghost of the other side of the leaf: the crop mirrored and shifted, or random strokes, blurred.

    The ghost only darkens (it never lightens ink).

    Args:
        img: uint8 (H, W).
        rng: Randomness (ghost source, shift, blur).
        strength: Ghost opacity: the ghost's darkest point is ``strength`` of the way from paper to ink
            (capped at 0.6).
        direction: Unused.

    Returns:
        uint8 (H, W), no pixel lighter than in ``img``.
    """
    h, w = img.shape
    paper, ink = _levels(img)
    span = max(paper - ink, 1.0)
    if rng.random() < 0.5:
        ghost = np.clip((paper - img[:, ::-1].astype(np.float32)) / span, 0.0, 1.0)
        dx, dy = int(rng.integers(-w // 4, w // 4 + 1)), int(rng.integers(-h // 4, h // 4 + 1))
        ghost = np.roll(ghost, (dy, dx), axis=(0, 1))
    else:
        ghost = _random_strokes((h, w), rng, density=0.5)
    ghost = cv2.GaussianBlur(ghost, (0, 0), float(rng.uniform(0.8, 2.0)))
    shade = paper - min(strength, 0.6) * ghost * span
    return _to_u8(np.minimum(img.astype(np.float32), shade))


def _smooth_field(shape: tuple[int, int], rng: np.random.Generator, cell: float) -> np.ndarray:
    """float32 (H, W), zero mean, unit std: Gaussian noise on a grid of ``cell``-px cells, cubic-upsampled."""
    h, w = shape
    gh, gw = max(2, math.ceil(h / cell) + 1), max(2, math.ceil(w / cell) + 1)
    grid = rng.normal(0.0, 1.0, (gh, gw)).astype(np.float32)
    field = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    std = float(field.std())
    return (field - float(field.mean())) / (std if std > 1e-6 else 1.0)


@_operation
def paper_texture(
    img: np.ndarray, rng: np.random.Generator, strength: float, *, direction: str = "horizontal"
) -> np.ndarray:
    """Low-frequency mottling of the paper (blotches 8-24 px across), weaker on the ink.

    Args:
        img: uint8 (H, W).
        rng: Randomness (cell size, field).
        strength: Standard deviation of the field on the paper, in grey levels.
        direction: Unused.

    Returns:
        uint8 (H, W).
    """
    paper, ink = _levels(img)
    f = img.astype(np.float32)
    weight = np.clip((f - ink) / max(paper - ink, 1.0), 0.0, 1.0)
    field = _smooth_field(img.shape, rng, float(rng.uniform(8.0, 24.0)))
    return _to_u8(f + strength * field * weight)


@_operation
def illumination(
    img: np.ndarray, rng: np.random.Generator, strength: float, *, direction: str = "horizontal"
) -> np.ndarray:
    """Uneven lighting: a multiplicative shading ramp in a random direction (curved by a random gamma).

    Args:
        img: uint8 (H, W).
        rng: Randomness (direction, curvature).
        strength: Fraction of brightness lost at the darkest edge (capped at 0.8).
        direction: Unused.

    Returns:
        uint8 (H, W), no pixel lighter than in ``img``.
    """
    h, w = img.shape
    theta = float(rng.uniform(0.0, 2 * math.pi))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = xs * math.cos(theta) + ys * math.sin(theta)
    lo, hi = float(ramp.min()), float(ramp.max())
    ramp = (ramp - lo) / (hi - lo) if hi > lo else np.zeros_like(ramp)
    ramp = ramp ** float(rng.uniform(0.5, 2.0))
    return _to_u8(img.astype(np.float32) * (1.0 - min(strength, 0.8) * ramp))


def _remap(img: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    paper, _ = _levels(img)
    return cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=paper)


@_operation
def baseline_warp(
    img: np.ndarray, rng: np.random.Generator, strength: float, *, direction: str = "horizontal"
) -> np.ndarray:
    """Uneven baseline: a smooth displacement across the text that varies along it (two low-frequency sines).

    Horizontal text moves up and down along x; vertical text moves left and right along y.

    Args:
        img: uint8 (H, W).
        rng: Randomness (periods, phases, mix).
        strength: Peak displacement as a fraction of the size across the text (capped at 0.25).
        direction: ``horizontal`` or ``vertical``.

    Returns:
        uint8 (H, W); the uncovered border is paper.

    Raises:
        ValueError: If ``direction`` is unknown.
    """
    h, w = img.shape
    along, across = (w, h) if direction == "horizontal" else (h, w)
    t = np.arange(along, dtype=np.float32) / max(along, 1)
    wave = np.zeros(along, dtype=np.float32)
    for cycles in (float(rng.uniform(0.5, 1.5)), float(rng.uniform(1.5, 3.0))):
        wave += float(rng.uniform(0.3, 1.0)) * np.sin(2 * math.pi * cycles * t + float(rng.uniform(0, 2 * math.pi)))
    peak = float(np.abs(wave).max())
    wave *= min(strength, 0.25) * across / (peak if peak > 1e-6 else 1.0)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    if direction == "horizontal":
        ys = ys + wave[None, :]
    else:
        xs = xs + wave[:, None]
    return _remap(img, xs, ys)


@_operation
def rotation(
    img: np.ndarray, rng: np.random.Generator, strength: float, *, direction: str = "horizontal"
) -> np.ndarray:
    """Rotate about the centre by ``strength`` degrees, random sign; shape kept, uncovered corners are paper.

    Args:
        img: uint8 (H, W).
        rng: Randomness (sign).
        strength: Angle in degrees (capped at 15).
        direction: Unused.

    Returns:
        uint8 (H, W).
    """
    h, w = img.shape
    angle = min(strength, 15.0) * (1.0 if rng.random() < 0.5 else -1.0)
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
    paper, _ = _levels(img)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=paper)


@_operation
def shear(img: np.ndarray, rng: np.random.Generator, strength: float, *, direction: str = "horizontal") -> np.ndarray:
    """Shear along the text direction about the centre (slanted type, skewed scan); shape kept.

    Args:
        img: uint8 (H, W).
        rng: Randomness (sign).
        strength: Shear factor, tan of the shear angle (capped at 0.5).
        direction: ``horizontal`` (x shifts with y) or ``vertical`` (y shifts with x).

    Returns:
        uint8 (H, W); the uncovered border is paper.

    Raises:
        ValueError: If ``direction`` is unknown.
    """
    h, w = img.shape
    k = min(strength, 0.5) * (1.0 if rng.random() < 0.5 else -1.0)
    if direction == "horizontal":
        m = np.array([[1.0, k, -k * h / 2.0], [0.0, 1.0, 0.0]], dtype=np.float64)
    else:
        m = np.array([[1.0, 0.0, 0.0], [k, 1.0, -k * w / 2.0]], dtype=np.float64)
    paper, _ = _levels(img)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=paper)


@_operation
def cut_short(
    img: np.ndarray, rng: np.random.Generator, strength: float, *, direction: str = "horizontal"
) -> np.ndarray:
    """Drop one end of the text direction (a detector box that stopped short).

    Args:
        img: uint8 (H, W).
        rng: Randomness (which end).
        strength: Fraction of the length along the text dropped (capped at 0.5; at least 1 px, at most all but
            1 px).
        direction: ``horizontal`` (width shrinks) or ``vertical`` (height shrinks).

    Returns:
        uint8 (H, W - n) or (H - n, W), ``n = round(strength * length)``.

    Raises:
        ValueError: If ``direction`` is unknown.
    """
    length = img.shape[1] if direction == "horizontal" else img.shape[0]
    n = min(length - 1, max(1, round(min(strength, 0.5) * length)))
    if n <= 0:
        return img.copy()
    at_start = bool(rng.random() < 0.5)
    keep = slice(n, None) if at_start else slice(0, length - n)
    out = img[:, keep] if direction == "horizontal" else img[keep, :]
    return np.ascontiguousarray(out)


@_operation
def gaussian_blur(
    img: np.ndarray, rng: np.random.Generator, strength: float, *, direction: str = "horizontal"
) -> np.ndarray:
    """Gaussian blur (defocus) with sigma ``strength`` px (capped at 4; kernel side 6 sigma + 1, so O(pixels)).

    Args:
        img: uint8 (H, W).
        rng: Unused (kept for the common signature; the blur is deterministic).
        strength: Sigma in pixels.
        direction: Unused.

    Returns:
        uint8 (H, W).
    """
    return cv2.GaussianBlur(img, (0, 0), min(strength, _MAX_SIGMA), borderType=cv2.BORDER_REPLICATE)


@_operation
def motion_blur(
    img: np.ndarray, rng: np.random.Generator, strength: float, *, direction: str = "horizontal"
) -> np.ndarray:
    """Motion blur: a normalised line kernel at a random angle.

    Args:
        img: uint8 (H, W).
        rng: Randomness (angle).
        strength: Kernel length minus one, in pixels (length capped at 15).
        direction: Unused.

    Returns:
        uint8 (H, W).
    """
    length = min(_MAX_MOTION, 1 + round(strength))
    if length < 2:
        return img.copy()
    kernel = np.zeros((length, length), dtype=np.uint8)
    c = (length - 1) / 2.0
    theta = float(rng.uniform(0.0, math.pi))
    dx, dy = c * math.cos(theta), c * math.sin(theta)
    # Draw at 1/16 px precision so short kernels at odd angles stay straight and centred.
    cv2.line(
        kernel,
        (round((c - dx) * 16), round((c - dy) * 16)),
        (round((c + dx) * 16), round((c + dy) * 16)),
        255,
        1,
        cv2.LINE_AA,
        shift=4,
    )
    k = kernel.astype(np.float32)
    k /= max(float(k.sum()), 1e-6)
    return cv2.filter2D(img, -1, k, borderType=cv2.BORDER_REPLICATE)


@_operation
def low_resolution(
    img: np.ndarray, rng: np.random.Generator, strength: float, *, direction: str = "horizontal"
) -> np.ndarray:
    """A coarse scan: down-scale by ``1 - strength`` (area), then back up (linear) to the same shape.

    Args:
        img: uint8 (H, W).
        rng: Unused (deterministic).
        strength: Fraction of the resolution lost per axis (the scale is capped at no less than 1/8 and each side
            at no less than 1 px).
        direction: Unused.

    Returns:
        uint8 (H, W).
    """
    h, w = img.shape
    scale = max(1.0 / 8.0, 1.0 - strength)
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    if (sw, sh) == (w, h):
        return img.copy()
    small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


@_operation
def speckle(img: np.ndarray, rng: np.random.Generator, strength: float, *, direction: str = "horizontal") -> np.ndarray:
    """Salt-and-pepper: random pixels set dark (0-79) or light (200-255), half each.

    Args:
        img: uint8 (H, W).
        rng: Randomness (positions, kind, values).
        strength: Fraction of the pixels hit (capped at 0.2; positions are drawn with replacement).
        direction: Unused.

    Returns:
        uint8 (H, W).
    """
    n = round(min(strength, 0.2) * img.size)
    out = img.copy()
    if n == 0:
        return out
    flat = out.reshape(-1)
    pos = rng.integers(0, img.size, n)
    dark = rng.random(n) < 0.5
    values = np.where(dark, rng.integers(0, 80, n), rng.integers(200, 256, n))
    flat[pos] = values.astype(np.uint8)
    return out


@_operation
def jpeg(img: np.ndarray, rng: np.random.Generator, strength: float, *, direction: str = "horizontal") -> np.ndarray:
    """JPEG round trip through ``cv2.imencode`` / ``cv2.imdecode`` at quality ``100 - strength``.

    Args:
        img: uint8 (H, W).
        rng: Unused (deterministic).
        strength: ``100 - quality``; the quality is clipped to [5, 100].
        direction: Unused.

    Returns:
        uint8 (H, W).

    Raises:
        RuntimeError: If OpenCV fails to encode or decode (should not happen for valid crops).
    """
    quality = int(np.clip(round(100 - strength), 5, 100))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for a crop of shape {img.shape} at quality {quality}")
    out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    if out is None or out.shape != img.shape:
        raise RuntimeError(f"JPEG decoding failed for a crop of shape {img.shape} at quality {quality}")
    return out


OPERATIONS: Mapping[str, Callable[..., np.ndarray]] = MappingProxyType(
    {
        "ink_spread": ink_spread,
        "ink_erosion": ink_erosion,
        "broken_strokes": broken_strokes,
        "neighbour_edge": neighbour_edge,
        "bleed_through": bleed_through,
        "paper_texture": paper_texture,
        "illumination": illumination,
        "baseline_warp": baseline_warp,
        "rotation": rotation,
        "shear": shear,
        "cut_short": cut_short,
        "gaussian_blur": gaussian_blur,
        "motion_blur": motion_blur,
        "low_resolution": low_resolution,
        "speckle": speckle,
        "jpeg": jpeg,
    }
)
"""Every operation by name, in :data:`OP_ORDER`."""

OP_ORDER: tuple[str, ...] = tuple(OPERATIONS)
"""The order :func:`degrade` applies operations in: print, page, paper, geometry, cropping, optics, output."""

SHAPE_CHANGING = frozenset({"neighbour_edge", "cut_short"})
"""Operations that may change the crop's shape; every other one keeps it."""


# ---------------------------------------------------------------------------------------------- families
@dataclass(frozen=True)
class OpSpec:
    """How often and how hard one family applies one operation.

    Attributes:
        probability: Chance of applying it to a crop, in [0, 1].
        low: Lowest strength (the operation's own unit, see the module docstring), ``>= 0``.
        high: Highest strength, ``>= low``.
    """

    probability: float
    low: float
    high: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")
        if not (0.0 <= self.low <= self.high and math.isfinite(self.high)):
            raise ValueError(f"strength range must satisfy 0 <= low <= high < inf, got ({self.low}, {self.high})")


_NEVER = OpSpec(0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Family:
    """A named family of degradations: per operation, its probability and strength range.

    Attributes:
        name: Family name (``train``, ``heldout``, ...).
        ops: Operation name -> :class:`OpSpec`; operations not named are never applied.
    """

    name: str
    ops: Mapping[str, OpSpec] = field(hash=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.ops) - set(OPERATIONS))
        if unknown:
            raise ValueError(f"family {self.name!r}: unknown operations {unknown}; known: {list(OP_ORDER)}")
        object.__setattr__(self, "ops", MappingProxyType(dict(self.ops)))

    def spec(self, op: str) -> OpSpec:
        """The operation's :class:`OpSpec` (probability 0 if the family does not name it)."""
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r}; known: {list(OP_ORDER)}")
        return self.ops.get(op, _NEVER)

    def used(self) -> frozenset[str]:
        """Names of the operations this family can apply (probability > 0 and a positive range)."""
        return frozenset(n for n, s in self.ops.items() if s.probability > 0 and s.high > 0)


TRAIN_FAMILY = Family(
    "train",
    {
        "ink_spread": OpSpec(0.25, 0.5, 1.0),
        "ink_erosion": OpSpec(0.25, 0.5, 1.0),
        "broken_strokes": OpSpec(0.20, 0.02, 0.08),
        "neighbour_edge": OpSpec(0.15, 0.08, 0.20),
        "bleed_through": _NEVER,
        "paper_texture": OpSpec(0.40, 3.0, 10.0),
        "illumination": OpSpec(0.30, 0.10, 0.30),
        "baseline_warp": OpSpec(0.30, 0.01, 0.04),
        "rotation": OpSpec(0.40, 0.3, 2.0),
        "shear": _NEVER,
        "cut_short": OpSpec(0.20, 0.03, 0.10),
        "gaussian_blur": OpSpec(0.35, 0.4, 1.2),
        "motion_blur": _NEVER,
        "low_resolution": OpSpec(0.30, 0.10, 0.35),
        "speckle": OpSpec(0.30, 0.001, 0.005),
        "jpeg": OpSpec(0.40, 10.0, 50.0),
    },
)
"""The family for training and for choosing constants (see the module docstring)."""

HELDOUT_FAMILY = Family(
    "heldout",
    {
        "ink_spread": OpSpec(0.30, 1.0, 1.5),
        "ink_erosion": OpSpec(0.30, 1.0, 1.5),
        "broken_strokes": OpSpec(0.30, 0.08, 0.15),
        "neighbour_edge": OpSpec(0.25, 0.20, 0.35),
        "bleed_through": OpSpec(0.40, 0.15, 0.35),
        "paper_texture": OpSpec(0.50, 10.0, 18.0),
        "illumination": OpSpec(0.40, 0.30, 0.50),
        "baseline_warp": OpSpec(0.40, 0.04, 0.08),
        "rotation": OpSpec(0.40, 2.0, 3.5),
        "shear": OpSpec(0.35, 0.05, 0.20),
        "cut_short": OpSpec(0.25, 0.10, 0.15),
        "gaussian_blur": _NEVER,
        "motion_blur": OpSpec(0.40, 2.0, 6.0),
        "low_resolution": OpSpec(0.40, 0.35, 0.60),
        "speckle": OpSpec(0.40, 0.005, 0.012),
        "jpeg": OpSpec(0.50, 55.0, 85.0),
    },
)
"""Evaluation only: never train on it or choose any constant with it (see the module docstring)."""

FAMILIES: Mapping[str, Family] = MappingProxyType({f.name: f for f in (TRAIN_FAMILY, HELDOUT_FAMILY)})


# ---------------------------------------------------------------------------------------------- sampler
def degrade(
    img: np.ndarray,
    rng: np.random.Generator,
    family: Family,
    *,
    strength: float = 1.0,
    direction: str = "horizontal",
    neighbour: np.ndarray | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Apply a random subset of a family's operations to one crop.

    Walks :data:`OP_ORDER`; for each operation draws one uniform number (always, so the stream of draws does not
    depend on the family's probabilities being zero) and, if it falls below the family's probability, a strength
    uniform in the family's range times ``strength``, then applies the operation.

    Args:
        img: uint8 (H, W) greyscale crop, dark ink on light paper (a PIL ``L`` image is accepted too).
        rng: Randomness; the result is a deterministic function of its state.
        family: :data:`TRAIN_FAMILY` for training; :data:`HELDOUT_FAMILY` for evaluation only.
        strength: Multiplier of every drawn strength, ``>= 0``; 0 returns a copy of ``img`` and consumes no draws.
        direction: Text direction, ``horizontal`` or ``vertical`` (baseline warp, shear, cut-short, neighbour edge).
        neighbour: Optional uint8 crop of another line for ``neighbour_edge``; ``None`` synthesises the strip.

    Returns:
        (uint8 crop, names of the operations applied, in order). The crop has ``img``'s shape unless
        ``neighbour_edge`` (taller for horizontal / wider for vertical text) or ``cut_short`` (narrower /
        shorter) was applied.

    Raises:
        ValueError: If ``img`` or ``neighbour`` is empty, not 2-D uint8, or over :data:`MAX_SIDE` on a side, if
            ``direction`` is unknown, or ``strength`` is negative or not finite.
    """
    img = _check_crop(img)
    _check_direction(direction)
    if neighbour is not None:
        neighbour = _check_crop(neighbour, "neighbour")
    if not (math.isfinite(strength) and strength >= 0):
        raise ValueError(f"strength must be a finite number >= 0, got {strength}")
    out = img.copy()
    applied: list[str] = []
    if strength == 0:
        return out, applied
    for name in OP_ORDER:
        spec = family.spec(name)
        if rng.random() >= spec.probability:
            continue
        s = float(rng.uniform(spec.low, spec.high)) * strength
        if s <= 0:
            continue
        op = OPERATIONS[name]
        out = (
            op(out, rng, s, direction=direction, neighbour=neighbour)
            if name == "neighbour_edge"
            else op(out, rng, s, direction=direction)
        )
        applied.append(name)
    return out, applied
