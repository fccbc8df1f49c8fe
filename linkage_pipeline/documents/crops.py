"""Crops of layout regions: tight crops for OCR, square paddings for the encoders, vertical re-flow.

A *tight crop* is the region's pixel box plus a small margin, clipped to the page; it is what the OCR engines
read and what ``crop_id`` hashes (``schema.REGION_CROPS``). The *square* is the CLIPPINGS padding of the tight
crop: centred on a square canvas of the border colour, never squashed or stretched, so that resizing it to the
encoder's input keeps the glyph shapes.

Vertical text (firm directories) is read top to bottom. ``reflow_vertical`` cuts such a column into character
cells and lays them out left to right, so a horizontal OCR model (and an image encoder trained on horizontal
names) sees the same picture for both orientations (DESIGN section 4, notes for the model).

All functions take and return ``PIL.Image.Image``; images are 8-bit ``"L"`` (H, W) or ``"RGB"`` (H, W, 3)
uint8 in practice, other modes are converted as documented per function.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)


#: Modes kept as they are; anything else is converted to RGB (or RGBA when it carries transparency).
_NATIVE_MODES = ("L", "RGB", "RGBA", "LA")

# Cell segmentation of vertical columns, in units of the column's ink width W (CJK glyphs are about square,
# so W is about one character). Measured on 2080 rendered columns (6 typefaces, 24-48 px, solid to 0.5 em
# spacing, with and without blur/noise): 99.6 % get one cell per character; the misses are upright ASCII
# brackets touching a kanji and 一二三 set solid.
_MAX_CELL = 1.2  # a cell is at most this tall; a taller run of ink is touching characters, cut through ink
_THIN_CELL = 0.75  # a cell shorter than this is likely a part of a character (三, 二, 會, 菓 drawn apart)...
_THIN_COST = 0.15  # ...and costs this much, so parts are joined unless that breaks the pitch
_CUT_COST = 0.1  # cost of a boundary cut through ink (plus the ink cut, in W) instead of a blank row
_CUT_MARGIN = 0.3  # ink cuts are not tried closer than this to the ends of a run
_CUT_WINDOW = 0.15  # an ink cut is a row of least ink within this distance either side
_PITCHES = np.round(np.arange(0.9, 2.05, 0.05), 2)  # character pitches tried, in W (solid to letter-spaced)
# Space between re-flowed cells, in W. On the demo corpus's directory (350 crops) rapidocr reached 0.988-0.993
# character accuracy for gaps of 0.1-0.5 W, best at 0.2 W; the differences are a few characters.
_GAP = 0.2
# Glyphs a compositor turns a quarter in vertical setting (brackets, long vowel mark) must be turned back
# for a horizontal reader. Measured on 5 typefaces at 24-48 px: turned ー is a straight bar (< 0.3 W wide,
# row-centre spread <= 0.054 W; an upright "(" spreads >= 0.136 W); a turned bracket is flat (< 0.5 W
# tall) and arched (column-centre spread >= 0.065 W; 一 spreads <= 0.025 W).
_BAR_MAX_WIDTH = 0.3
_BAR_MAX_BEND = 0.09
_FLAT_MAX_HEIGHT = 0.5
_ARCH_MIN_BEND = 0.045


def crop_region(page: Image.Image, box: Sequence[float], *, margin: int = 4) -> Image.Image:
    """Cut a tight crop of one region out of a page.

    Args:
        page: The page image, any mode, size (W, H) pixels.
        box: ``(x0, y0, x1, y1)`` in page pixels, x1/y1 exclusive; floats are rounded outwards.
        margin: Pixels added on every side before clipping to the page; >= 0.

    Returns:
        The crop, same mode as ``page``, size at most ``(x1 - x0 + 2 * margin, y1 - y0 + 2 * margin)``.

    Raises:
        ValueError: If the box does not have 4 numbers, is empty or inverted (``x1 <= x0`` or ``y1 <= y0``),
            lies outside the page, or ``margin`` is negative.
    """
    if len(box) != 4:
        raise ValueError(f"box must be (x0, y0, x1, y1), got {tuple(box)!r}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0 pixels, got {margin}")
    x0, y0 = (int(np.floor(v)) for v in box[:2])
    x1, y1 = (int(np.ceil(v)) for v in box[2:])
    width, height = page.size
    if x1 <= x0 or y1 <= y0:
        raise ValueError(
            f"box {tuple(box)!r} is empty or inverted on a page of {width}x{height} pixels; "
            "expected x0 < x1 and y0 < y1"
        )
    cx0, cy0 = max(0, x0 - margin), max(0, y0 - margin)
    cx1, cy1 = min(width, x1 + margin), min(height, y1 + margin)
    if cx1 <= cx0 or cy1 <= cy0:
        raise ValueError(
            f"box {tuple(box)!r} lies outside the page of {width}x{height} pixels; "
            f"expected a box overlapping (0, 0, {width}, {height})"
        )
    return page.crop((cx0, cy0, cx1, cy1))


@dataclass(frozen=True)
class RegionCrop:
    """One region cut out of its page.

    Attributes:
        index: Position of the region in the sequence given to :func:`cut_regions`.
        tight: The tight crop (:func:`crop_region`), the page's mode, both sides > 0.
        square: Its square padding (:func:`pad_to_square`), side ``max(tight.size)``.
    """

    index: int
    tight: Image.Image
    square: Image.Image


def cut_regions(
    page: Image.Image, boxes: Sequence[Sequence[float]], *, margin: int = 4
) -> tuple[list[RegionCrop], list[tuple[int, str]]]:
    """Cut every region of one page; a region that cannot be cut is rejected with its reason, never raised.

    A degenerate box (not four finite numbers, zero or negative width or height, off the page) or a crop that
    cannot be padded yields a rejection; the other regions are cut all the same, so one bad region never fails
    a page or a source.

    Args:
        page: The page image, any mode, size (W, H) pixels.
        boxes: ``(x0, y0, x1, y1)`` per region in page pixels, x1/y1 exclusive.
        margin: Pixels added on every side of each crop before clipping to the page; >= 0.

    Returns:
        ``(crops, rejected)``: a :class:`RegionCrop` per region cut, in the order of ``boxes``, and
        ``(index, reason)`` per region rejected.

    Raises:
        ValueError: If ``margin`` is negative (a mistake of the caller, not of one region).
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0 pixels, got {margin}")
    crops: list[RegionCrop] = []
    rejected: list[tuple[int, str]] = []
    for i, box in enumerate(boxes):
        try:
            values = [float(v) for v in box]
            if len(values) == 4 and not all(np.isfinite(values)):
                raise ValueError(f"box {tuple(box)!r} has a coordinate that is not a finite number")
            tight = crop_region(page, values, margin=margin)
            square = pad_to_square(tight)
        except (TypeError, ValueError) as exc:
            logger.debug("region %d not cut: %s", i, exc)
            rejected.append((i, f"region not cut: {exc}"))
            continue
        crops.append(RegionCrop(i, tight, square))
    return crops, rejected


def border_colour(img: Image.Image) -> int | tuple[int, ...]:
    """Median colour of the one-pixel border of an image (the paper colour around a tight crop).

    Args:
        img: Image of mode ``"L"`` (returns an int) or a multi-band 8-bit mode (returns one int per band).

    Returns:
        The per-band median of the border pixels, in the image's own mode.
    """
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]], axis=0)  # (2W + 2H, C)
    med = np.median(border, axis=0).round().astype(int)
    return int(med[0]) if med.shape[0] == 1 else tuple(int(v) for v in med)


def pad_to_square(img: Image.Image, *, fill: int | tuple[int, ...] | None = None) -> Image.Image:
    """Centre an image on a square canvas, the CLIPPINGS padding (never squashes or stretches).

    Args:
        img: Crop of size (W, H), W and H > 0. Modes other than L, LA, RGB, RGBA are converted to RGB.
        fill: Canvas colour in the image's mode; ``None`` uses :func:`border_colour`.

    Returns:
        Image of size (S, S) with ``S = max(W, H)``; the input's pixels appear unchanged at offset
        ``((S - W) // 2, (S - H) // 2)``.

    Raises:
        ValueError: If the image has a zero dimension.
    """
    img = _native(img)
    width, height = img.size
    if width == 0 or height == 0:
        raise ValueError(f"cannot pad an empty image of size {width}x{height}; expected both sides > 0")
    side = max(width, height)
    if fill is None:
        fill = border_colour(img)
    canvas = Image.new(img.mode, (side, side), fill)
    canvas.paste(img, ((side - width) // 2, (side - height) // 2))
    return canvas


@dataclass(frozen=True)
class _Atom:
    """Rows ``[top, bottom)`` of ink that belong to one cell; ``cut_cost`` is paid if a cell starts here."""

    top: int
    bottom: int
    cut_cost: float


def ink_mask(img: Image.Image) -> np.ndarray:
    """Binary ink mask of a text crop: Otsu threshold, polarity from the border, specks removed.

    Args:
        img: Text crop of any mode, size (W, H).

    Returns:
        Array (H, W) of bool, True where there is ink. All False for a crop without contrast.
    """
    gray = np.asarray(img.convert("L"), dtype=np.uint8)
    if gray.size == 0 or int(gray.max()) - int(gray.min()) < 32:
        return np.zeros(gray.shape, dtype=bool)
    _, binary = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = binary == 0
    # Light text on dark paper (negatives, dark stamps): ink is whatever the border is not.
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    if border.mean() > 0.5:
        mask = ~mask
    # Scan speckle would bridge the gaps between characters; drop components far smaller than a stroke dot.
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count > 1:
        min_area = max(2, int(0.0005 * min(gray.shape) ** 2))
        keep = stats[:, cv2.CC_STAT_AREA] >= min_area
        keep[0] = False
        mask = keep[labels]
    return mask


def column_extent(mask: np.ndarray) -> tuple[int, int]:
    """Columns ``[left, right)`` holding the text column's ink.

    A column counts as inked when at least 1 % of its rows hold ink, so thin stray marks at the sides do not
    count. Inked columns next to each other form bands. A crop whose box caught the edge of the neighbouring
    line holds, besides the text, a band of that line's cut-off strokes at one side, reaching the crop's border
    (or a dark border of shading or of the scanner's edge does): a band that reaches the first or the last column
    and holds less ink than the largest band is left out. Every other band is kept, so a column whose glyphs
    leave a blank column between their strokes is not cut. A neighbour's strokes that touch the text are not
    separated.

    Args:
        mask: Bool ink mask (H, W) of a column of text (rows along the text); at least one True.

    Returns:
        ``(left, right)``, right exclusive.
    """
    col_ink = mask.sum(axis=0)
    threshold = max(1, int(0.01 * mask.shape[0]))
    inked = col_ink >= threshold
    if not inked.any():
        inked = col_ink > 0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], inked.astype(np.int8), [0]])))
    starts, ends = edges[::2], edges[1::2]
    if starts.size > 1:
        mass = [int(col_ink[a:b].sum()) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
        main = int(np.argmax(mass))
        at_border = (starts == 0) | (ends == mask.shape[1])
        keep = ~at_border | (np.arange(starts.size) == main)
        starts, ends = starts[keep], ends[keep]
    return int(starts[0]), int(ends[-1])


def ink_extent(mask: np.ndarray) -> tuple[int, int]:
    """:func:`column_extent` grown over the adjacent columns holding any ink at all (the faint tips of glyphs
    that the 1 % rule leaves out), never across a blank column (so never into a band left out)."""
    left, right = column_extent(mask)
    any_ink = mask.any(axis=0)
    while left > 0 and any_ink[left - 1]:
        left -= 1
    while right < mask.shape[1] and any_ink[right]:
        right += 1
    return left, right


def vertical_cells(img: Image.Image, *, mask: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Cut a top-to-bottom text column into character cells.

    The horizontal projection profile of the ink (ink pixels per row) splits the column into runs at blank
    rows; runs taller than a character (touching characters) are further split at rows of least ink. These
    pieces are then grouped into cells by dynamic programming, choosing the grouping whose cell centres are
    most evenly spaced (printed CJK text has a regular pitch; the pitch is searched from solid setting to
    letter-spaced), with a small cost for cells much shorter than a character and for cuts through ink.
    So the separated parts of 三, 二, 會 or 菓 join into one cell, while a lone 一 stays one cell.

    Args:
        img: Crop of one vertical text column, any mode, size (W_img, H).
        mask: Its :func:`ink_mask`, when the caller has it already (bool (H, W_img)).

    Returns:
        ``(top, bottom)`` row ranges of the cells, top to bottom, bottom exclusive, trimmed to their ink,
        never empty (``bottom > top``). Empty list when the crop holds no ink.
    """
    mask = ink_mask(img) if mask is None else mask
    if not mask.any():
        return []
    left, right = column_extent(mask)
    width = right - left
    profile = mask[:, left:right].sum(axis=1)
    atoms = _atoms(profile, width)
    # Every cell becomes an image; one of no rows would be an image of zero height downstream.
    return [(top, bottom) for top, bottom in _group_atoms(atoms, width) if bottom > top]


def _atoms(profile: np.ndarray, width: int) -> list[_Atom]:
    """Runs of inked rows, with runs taller than a character cut at local minima of the ink."""
    inked = np.concatenate([[False], profile > 0, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(inked))
    smooth = np.convolve(profile, np.ones(3) / 3, mode="same")
    window = max(1, int(_CUT_WINDOW * width))
    atoms: list[_Atom] = []
    for top, bottom in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
        cuts: list[int] = []
        if bottom - top > _MAX_CELL * width:
            # At least one row from either end: a cut at ``top`` would make an atom of no rows, and a cell of no
            # rows an image of zero height (a column of 1-3 px, e.g. a speck, has int(0.3 * W) == 0).
            margin = max(1, int(_CUT_MARGIN * width))
            for row in range(top + margin, bottom - margin):
                near = smooth[max(top, row - window) : row + window + 1]
                if smooth[row] <= near.min() and (not cuts or row - cuts[-1] > window):
                    cuts.append(row)
        bounds = [top, *cuts, bottom]
        for k, (a, b) in enumerate(itertools.pairwise(bounds)):
            cost = 0.0 if k == 0 else _CUT_COST + float(profile[a]) / width
            atoms.append(_Atom(a, b, cost))
    return atoms


def _group_atoms(atoms: list[_Atom], width: int) -> list[tuple[int, int]]:
    """Best grouping of consecutive atoms into cells (dynamic programming over cells, for each pitch)."""
    n = len(atoms)
    max_height = _MAX_CELL * width
    tops = [a.top for a in atoms]
    bottoms = [a.bottom for a in atoms]
    # starts[j]: first atoms i of the cells that may end at atom j (one atom, or at most _MAX_CELL tall).
    starts: list[list[int]] = []
    for j in range(n):
        firsts = [j]
        while firsts[-1] > 0 and bottoms[j] - tops[firsts[-1] - 1] <= max_height:
            firsts.append(firsts[-1] - 1)
        starts.append(firsts)
    # What does not depend on the pitch, once: each candidate cell's centre and own cost. This runs for every
    # vertical crop the encoder sees, so the loops below stay on plain Python floats and lists.
    centre = {(i, j): (tops[i] + bottoms[j]) / 2 for j in range(n) for i in starts[j]}
    own = {(i, j): atoms[i].cut_cost + (_THIN_COST if bottoms[j] - tops[i] < _THIN_CELL * width else 0.0)
           for j in range(n) for i in starts[j]}
    previous = [[(k, i - 1) for k in starts[i - 1]] if i > 0 else [] for i in range(n)]

    best_cost = np.inf
    best_cells: list[tuple[int, int]] = []
    for pitch in (float(p) for p in _PITCHES * width):
        # cost[(i, j)]: least cost of cutting atoms 0..j into cells, the last cell being atoms i..j.
        cost: dict[tuple[int, int], float] = {}
        back: dict[tuple[int, int], tuple[int, int] | None] = {}
        for j in range(n):
            for i in starts[j]:
                if i == 0:
                    cost[(i, j)], back[(i, j)] = own[(i, j)], None
                    continue
                here = centre[(i, j)]
                # The previous cell ends at atom i - 1; pay for how far its centre is from one pitch above.
                best_prev, best_total = None, np.inf
                for key in previous[i]:
                    off = (here - centre[key] - pitch) / pitch
                    total = cost[key] + off * off
                    if total < best_total:
                        best_prev, best_total = key, total
                cost[(i, j)] = best_total + own[(i, j)]
                back[(i, j)] = best_prev
        last = min(((i, n - 1) for i in starts[n - 1]), key=cost.__getitem__)
        if cost[last] < best_cost - 1e-9:
            best_cost = cost[last]
            cells: list[tuple[int, int]] = []
            key: tuple[int, int] | None = last
            while key is not None:
                cells.append((tops[key[0]], bottoms[key[1]]))
                key = back[key]
            best_cells = cells[::-1]
    return best_cells


def turned_in_vertical(cell: np.ndarray, width: int) -> bool:
    """Whether a cell holds a glyph set turned a quarter (ー as a vertical bar, brackets as arches ︵ ︶).

    Args:
        cell: Ink mask (h, w) bool of one cell across the column's ink width; h is trimmed to the ink.
        width: The column's ink width W in pixels.
    """
    rows, cols = np.nonzero(cell)
    if rows.size == 0:
        return False
    ink_height = int(rows.max() - rows.min() + 1)
    ink_width = int(cols.max() - cols.min() + 1)
    if ink_width < _BAR_MAX_WIDTH * width and ink_height > _FLAT_MAX_HEIGHT * width:
        # A vertical stroke: a turned ー if straight (an upright bracket or 1 is not turned back).
        centres = np.bincount(rows, weights=cols)[np.unique(rows)] / np.bincount(rows)[np.unique(rows)]
        return bool(np.subtract(*np.percentile(centres, [90, 10])) <= _BAR_MAX_BEND * width)
    if ink_height < _FLAT_MAX_HEIGHT * width and ink_width > _FLAT_MAX_HEIGHT * width:
        # A flat glyph: 一 is straight, a turned bracket is arched.
        centres = np.bincount(cols, weights=rows)[np.unique(cols)] / np.bincount(cols)[np.unique(cols)]
        return bool(np.subtract(*np.percentile(centres, [90, 10])) >= _ARCH_MIN_BEND * width)
    return False


def reflow_vertical(img: Image.Image, *, gap: int | None = None) -> Image.Image:
    """Re-flow a vertical text column into one horizontal line, so horizontal models can read it.

    Cells come from :func:`vertical_cells`; each is cut over the column's ink width (plus a small margin).
    A cell holding a glyph that vertical setting turns a quarter clockwise (the long vowel mark ー drawn as
    a vertical bar, brackets drawn as ︵ ︶) is turned back. The cells are pasted left to right, vertically
    centred, ``gap`` pixels apart, on a canvas of the crop's border colour with a ``gap``-pixel margin.

    Args:
        img: Crop of one vertical text column, size (W, H). Modes other than L, LA, RGB, RGBA become RGB.
        gap: Pixels between cells; ``None`` uses 20 % of the column's ink width (at least 2).

    Returns:
        Image in the crop's mode of size (about ``n * (W_ink + gap)``, about ``max cell height + 2 * gap``)
        for n cells. A crop without ink is returned unchanged.

    Raises:
        ValueError: If ``gap`` is negative.
    """
    if gap is not None and gap < 0:
        raise ValueError(f"gap must be >= 0 pixels, got {gap}")
    img = _native(img)
    cells = vertical_cells(img)
    if not cells:
        logger.debug("reflow_vertical: no ink in a %dx%d crop, returned unchanged", *img.size)
        return img
    mask = ink_mask(img)
    left, right = column_extent(mask)
    ink_width = right - left
    if gap is None:
        gap = max(2, round(_GAP * ink_width))
    # Keep a little of the paper around the glyphs: recognisers are trained on crops with some margin.
    pad = max(1, gap // 2)
    x0, x1 = max(0, left - pad), min(img.width, right + pad)
    background = border_colour(img)
    tiles = []
    for top, bottom in cells:
        tile = img.crop((x0, top, x1, bottom))
        if turned_in_vertical(mask[top:bottom, left:right], ink_width):
            tile = tile.rotate(90, expand=True, fillcolor=background)  # counter-clockwise: undo the turn
        tiles.append(tile)
    line_height = max(tile.height for tile in tiles)
    canvas_w = sum(tile.width for tile in tiles) + gap * (len(tiles) + 1)
    canvas_h = line_height + 2 * gap
    canvas = Image.new(img.mode, (canvas_w, canvas_h), background)
    x = gap
    for tile in tiles:
        canvas.paste(tile, (x, gap + (line_height - tile.height) // 2))
        x += tile.width + gap
    return canvas


def encode_png(img: Image.Image) -> bytes:
    """Deterministic PNG bytes of an image: pixels, mode and size only (no metadata, no timestamps).

    Two images with the same mode, size and pixels give the same bytes with the same Pillow/zlib build.

    Args:
        img: Any image; modes PNG cannot store are converted as in :func:`pad_to_square`.

    Returns:
        The PNG file as bytes.
    """
    img = _native(img) if img.mode not in ("1", "I;16") else img
    # A fresh image from the raw pixels drops info/ICC/EXIF that Pillow would otherwise write.
    clean = Image.frombytes(img.mode, img.size, img.tobytes())
    buf = io.BytesIO()
    clean.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def content_id(data: bytes) -> str:
    """Stable id of some bytes: the first 16 hex digits of their SHA-256.

    Args:
        data: File content, e.g. from :func:`encode_png`.

    Returns:
        16 lower-case hex characters.
    """
    return hashlib.sha256(data).hexdigest()[:16]


def _native(img: Image.Image) -> Image.Image:
    if img.mode in _NATIVE_MODES:
        return img
    if img.mode == "P" and "transparency" in img.info:
        return img.convert("RGBA")
    return img.convert("RGB")
