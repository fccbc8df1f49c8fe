"""Unit tests of linkage_pipeline.documents.crops: tight crops, square padding, vertical re-flow, PNG ids."""

from __future__ import annotations

import hashlib
import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont, PngImagePlugin

from linkage_pipeline.documents.crops import (
    border_colour,
    column_extent,
    content_id,
    crop_region,
    cut_regions,
    encode_png,
    ink_extent,
    pad_to_square,
    reflow_vertical,
    vertical_cells,
)

FONT_FILES = [
    "/usr/share/fonts/opentype/ipafont-mincho/ipam.ttf",
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/truetype/bizud-mincho/BIZUDMincho-Regular.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
]
FONTS = [path for path in FONT_FILES if Path(path).exists()]
needs_fonts = pytest.mark.skipif(not FONTS, reason="no Japanese font installed (fonts-ipafont, fonts-noto-cjk)")


def render_vertical(
    text: str,
    font_path: str,
    *,
    size: int = 40,
    spacing: float = 0.1,
    margin: int = 8,
    blur: bool = False,
    turned: str = "",
) -> Image.Image:
    """A vertical column: each character centred in its em box, boxes stacked top to bottom.

    Characters in ``turned`` are set turned a quarter clockwise, as a compositor sets ー and brackets.
    """
    font = ImageFont.truetype(font_path, size, index=0)
    pitch = round(size * (1 + spacing))
    img = Image.new("L", (size + 2 * margin, (len(text) - 1) * pitch + size + 2 * margin), 255)
    draw = ImageDraw.Draw(img)
    for i, char in enumerate(text):
        centre = (margin + size // 2, margin + i * pitch + size // 2)
        if char in turned:
            glyph = Image.new("L", (2 * size, 2 * size), 0)
            ImageDraw.Draw(glyph).text((size, size), char, font=font, fill=255, anchor="mm")
            img.paste(0, (centre[0] - size, centre[1] - size), glyph.rotate(-90))
        else:
            draw.text(centre, char, font=font, fill=0, anchor="mm")
    if blur:
        rng = np.random.default_rng(0)
        arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 8, (img.height, img.width))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.7))
    return img


# ---------------------------------------------------------------- crop_region

PAGE = Image.fromarray(np.arange(100 * 200, dtype=np.uint32).reshape(100, 200).astype(np.uint8))  # 200x100


@pytest.mark.parametrize(
    ("box", "margin", "expected_box"),
    [
        ((50, 20, 80, 40), 4, (46, 16, 84, 44)),  # inside: margin on every side
        ((50, 20, 80, 40), 0, (50, 20, 80, 40)),
        ((0, 0, 10, 10), 4, (0, 0, 14, 14)),  # clipped at the top-left corner
        ((190, 95, 200, 100), 4, (186, 91, 200, 100)),  # clipped at the bottom-right corner
        ((-5, -5, 300, 300), 4, (0, 0, 200, 100)),  # larger than the page
        ((50.4, 20.6, 79.2, 39.1), 0, (50, 20, 80, 40)),  # floats rounded outwards
    ],
)
def test_crop_region_box_margin_and_clipping(box, margin, expected_box):
    crop = crop_region(PAGE, box, margin=margin)
    assert crop.size == (expected_box[2] - expected_box[0], expected_box[3] - expected_box[1])
    assert np.array_equal(np.asarray(crop), np.asarray(PAGE.crop(expected_box)))


@pytest.mark.parametrize(
    ("box", "margin", "message"),
    [
        ((80, 20, 50, 40), 4, r"\(80, 20, 50, 40\) is empty or inverted on a page of 200x100"),
        ((50, 40, 80, 40), 4, r"empty or inverted on a page of 200x100 pixels; expected x0 < x1 and y0 < y1"),
        ((300, 300, 400, 400), 4, r"lies outside the page of 200x100 pixels"),
        ((1, 2, 3), 4, r"box must be \(x0, y0, x1, y1\), got \(1, 2, 3\)"),
        ((50, 20, 80, 40), -1, r"margin must be >= 0 pixels, got -1"),
    ],
)
def test_crop_region_rejects_bad_boxes(box, margin, message):
    with pytest.raises(ValueError, match=message):
        crop_region(PAGE, box, margin=margin)


def test_cut_regions_rejects_degenerate_regions_and_cuts_the_others():
    """A region of zero width or height (or off the page) is rejected with its reason, never raised."""
    boxes = [
        (50, 20, 80, 40),
        (60, 20, 60, 40),  # zero width
        (60, 30, 90, 30),  # zero height
        (300, 300, 400, 400),  # off the page
        (float("nan"), 0, 10, 10),
        (1, 2, 3),
        (0, 0, 10, 10),
    ]
    crops, rejected = cut_regions(PAGE, boxes, margin=2)
    assert [c.index for c in crops] == [0, 6]
    assert [c.tight.size for c in crops] == [(34, 24), (12, 12)]
    assert [c.square.size for c in crops] == [(34, 34), (12, 12)]
    assert np.array_equal(np.asarray(crops[0].tight), np.asarray(PAGE.crop((48, 18, 82, 42))))
    reasons = dict(rejected)
    assert sorted(reasons) == [1, 2, 3, 4, 5]
    assert "empty or inverted" in reasons[1] and "empty or inverted" in reasons[2]
    assert "outside the page" in reasons[3]
    assert "not a finite number" in reasons[4]
    assert "box must be (x0, y0, x1, y1)" in reasons[5]
    with pytest.raises(ValueError, match="margin must be >= 0"):
        cut_regions(PAGE, boxes, margin=-1)


# ---------------------------------------------------------------- pad_to_square


@pytest.mark.parametrize(
    ("size", "expected_side", "expected_offset"),
    [
        ((120, 30), 120, (0, 45)),  # horizontal name: padded above and below
        ((30, 121), 121, (45, 0)),  # vertical name: (121 - 30) // 2 = 45 on the left
        ((50, 50), 50, (0, 0)),  # already square: unchanged
        ((1, 4), 4, (1, 0)),
    ],
)
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_pad_to_square_keeps_pixels_and_aspect(size, expected_side, expected_offset, mode):
    rng = np.random.default_rng(1)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    img = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)
    square = pad_to_square(img, fill=0 if mode == "L" else (0, 0, 0))
    assert square.size == (expected_side, expected_side)
    assert square.mode == mode
    x, y = expected_offset
    inner = np.asarray(square)[y : y + size[1], x : x + size[0]]
    assert np.array_equal(inner, np.asarray(img))  # same pixels, same aspect: nothing resampled


def test_pad_to_square_fills_with_border_colour():
    # Paper (200, 190, 180) with a dark stroke that touches the border once: the median ignores it.
    arr = np.full((20, 60, 3), (200, 190, 180), dtype=np.uint8)
    arr[5:15, 10:50] = (20, 20, 20)
    arr[0, 0:3] = (0, 0, 0)
    img = Image.fromarray(arr, mode="RGB")
    assert border_colour(img) == (200, 190, 180)
    square = np.asarray(pad_to_square(img))
    assert square.shape == (60, 60, 3)
    assert tuple(square[0, 0]) == (200, 190, 180)  # padding above
    assert tuple(square[59, 30]) == (200, 190, 180)  # padding below
    assert np.array_equal(square[20:40], arr)  # (60 - 20) // 2 = 20 rows above


def test_pad_to_square_explicit_fill_and_grey():
    img = Image.new("L", (10, 4), 7)
    square = np.asarray(pad_to_square(img, fill=255))
    assert square.shape == (10, 10)
    assert (square[:3] == 255).all() and (square[3:7] == 7).all() and (square[7:] == 255).all()


def test_pad_to_square_rejects_empty_image():
    with pytest.raises(ValueError, match="empty image of size 0x5"):
        pad_to_square(Image.new("L", (0, 5)))


# ---------------------------------------------------------------- vertical cells and re-flow

# Names with characters made of separated parts (三 二 川 小 會 公) and thin ones (一 ー).
VERTICAL_NAMES = ["三井鑛山", "二葉商會", "小川三二", "會津電氣", "三菱重工業株式會社", "日本一", "キッコーマン醤油"]


@needs_fonts
@pytest.mark.parametrize("spacing", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("name", VERTICAL_NAMES)
def test_vertical_cells_one_per_character(name, spacing):
    for font_path in FONTS:
        for blur in (False, True):
            cells = vertical_cells(render_vertical(name, font_path, spacing=spacing, blur=blur))
            assert len(cells) == len(name), (font_path, blur, cells)
            assert all(top < bottom for top, bottom in cells)
            assert all(a[1] <= b[0] for a, b in itertools.pairwise(cells))  # top to bottom, no overlap


@needs_fonts
@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("古河製菓株式会社", 24),  # 菓's 艹 is apart from its body, which touches 株 below
        ("神戸瓦斯", 40),  # 戸's top stroke sits nearer 神 above than 尸 below
        ("鐘淵酒造合名會社", 24),
        ("大日本炭鑛汽船", 30),
    ],
)
def test_vertical_cells_solid_setting(name, size):
    # Solid setting (no space between em boxes), the norm in Japanese typesetting: parts of one character
    # can be closer to a neighbour than to each other, so only the regular pitch tells them apart.
    for font_path in FONTS:
        for blur in (False, True):
            cells = vertical_cells(render_vertical(name, font_path, size=size, spacing=0.0, blur=blur))
            assert len(cells) == len(name), (font_path, blur, cells)


@needs_fonts
def test_vertical_cells_splits_touching_characters():
    # Negative spacing: the glyph boxes overlap, so the profile has no gap between most characters.
    img = render_vertical("東京電燈株式會社", FONTS[0], spacing=-0.08)
    assert len(vertical_cells(img)) == 8


@needs_fonts
def test_reflow_vertical_gives_one_wide_line():
    name = "東洋紡績株式會社"
    img = render_vertical(name, FONTS[0], size=40, spacing=0.1)  # 56 x 364 pixels
    cells = vertical_cells(img)
    assert len(cells) == 8
    dark_cols = np.flatnonzero((np.asarray(img) < 128).any(axis=0))
    ink_width = dark_cols[-1] - dark_cols[0] + 1
    line = reflow_vertical(img, gap=6)
    assert line.mode == "L"
    # 8 equal tiles (the ink column plus up to gap // 2 = 3 px each side) and 9 gaps of 6 px; tallest cell
    # plus a gap above and below.
    tile_width, rest = divmod(line.width - 9 * 6, 8)
    assert rest == 0
    assert ink_width <= tile_width <= ink_width + 2 * 3
    assert line.height == max(bottom - top for top, bottom in cells) + 2 * 6
    assert line.width > 7 * line.height
    # Every ink pixel is kept: cells cover all inked rows and tiles the whole ink column.
    dark_in, dark_out = (np.asarray(img) < 128).sum(), (np.asarray(line) < 128).sum()
    assert dark_out == dark_in


def _glyph_boxes(line: Image.Image) -> list[tuple[int, int]]:
    """(width, height) of the ink of each glyph in a re-flowed line (glyphs are apart by the gap)."""
    dark = np.asarray(line) < 128
    inked = np.concatenate([[False], dark.any(axis=0), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(inked))
    boxes = []
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        rows = np.flatnonzero(dark[:, a:b].any(axis=1))
        boxes.append((int(b - a), int(rows[-1] - rows[0] + 1)))
    return boxes


@needs_fonts
@pytest.mark.parametrize(
    ("text", "turned", "middle_is_flat"),
    [
        ("大ー大", "ー", True),  # long vowel mark set as a vertical bar: turned back to ー
        ("大一大", "", True),  # 一 is flat and straight: left alone
        ("大\uff08大", "\uff08", False),  # turned bracket ︵ (flat, arched): turned back to an upright (
        ("大(大", "", False),  # an upright bracket (tall, bent): left alone
    ],
)
def test_reflow_turns_back_glyphs_turned_in_vertical(text, turned, middle_is_flat):
    for font_path in FONTS:
        line = reflow_vertical(render_vertical(text, font_path, size=40, turned=turned))
        boxes = _glyph_boxes(line)
        assert len(boxes) == 3, (font_path, boxes)
        width, height = boxes[1]
        assert (width > 2 * height) if middle_is_flat else (height > 2 * width), (font_path, boxes)


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5])
def test_vertical_cells_of_thin_columns_are_never_empty(width):
    """A speck region 1-5 px wide made cells of no rows (int(0.3 * W) == 0 put a cut at a run's first row), and
    the empty tile failed a whole source in crop_embeddings ("cannot pad an empty image of size 0x3")."""
    rng = np.random.default_rng(width)
    for _ in range(200):
        height = int(rng.integers(2, 60))
        arr = np.full((height + 2, width + 2), 230, np.uint8)
        arr[1:-1, 1:-1] = np.where(rng.random((height, width)) < 0.7, 30, 230)
        img = Image.fromarray(arr)
        cells = vertical_cells(img)
        assert all(bottom > top for top, bottom in cells), cells
        line = reflow_vertical(img)
        assert line.width > 0 and line.height > 0
        pad_to_square(line)
        # the horizontal case of the encoders: the crop turned a quarter, cut into columns
        for top, bottom in vertical_cells(img.transpose(Image.Transpose.ROTATE_90)):
            assert bottom > top


def test_reflow_vertical_blank_is_unchanged_and_bad_gap_rejected():
    blank = Image.new("L", (40, 200), 250)
    assert vertical_cells(blank) == []
    assert reflow_vertical(blank) is blank
    with pytest.raises(ValueError, match="gap must be >= 0 pixels, got -2"):
        reflow_vertical(blank, gap=-2)


# ---------------------------------------------------------------- PNG bytes and ids


def test_encode_png_is_deterministic_and_lossless():
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (17, 33, 3), dtype=np.uint8)
    plain = Image.fromarray(arr, mode="RGB")
    # The same pixels loaded from a PNG that carries metadata (text chunk, dpi): metadata is not encoded.
    info = PngImagePlugin.PngInfo()
    info.add_text("Creation Time", "2024-01-01T00:00:00")
    buf = io.BytesIO()
    plain.save(buf, format="PNG", pnginfo=info, dpi=(300, 300))
    with_meta = Image.open(io.BytesIO(buf.getvalue()))
    data = encode_png(plain)
    assert data == encode_png(with_meta) == encode_png(plain.copy())
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), arr)
    assert b"tEXt" not in data and b"pHYs" not in data and b"tIME" not in data


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "e3b0c44298fc1c14"),
        (b"abc", "ba7816bf8f01cfea"),
    ],
)
def test_content_id_is_sha256_prefix(data, expected):
    assert content_id(data) == expected == hashlib.sha256(data).hexdigest()[:16]


def test_crop_ids_differ_by_pixels_only():
    a = Image.new("L", (8, 8), 255)
    b = a.copy()
    b.putpixel((3, 3), 0)
    assert content_id(encode_png(a)) == content_id(encode_png(a.copy()))
    assert content_id(encode_png(a)) != content_id(encode_png(b))


@pytest.mark.parametrize("seed", range(6))
def test_the_ink_mask_of_a_turned_crop_is_the_mask_turned(seed: int) -> None:
    """character_tiles cuts horizontal crops turned a quarter with the original crop's mask turned; that holds
    for noisy scans too (Otsu, the border test and 8-connected speck removal do not depend on orientation)."""
    from linkage_pipeline.documents.crops import ink_mask, vertical_cells
    from linkage_pipeline.multimodal.training.augment import render_crop
    from linkage_pipeline.multimodal.training.degrade import HELDOUT_FAMILY, degrade
    from linkage_pipeline.synthetic.fonts import TRAIN_FONTS, find_font

    rng = np.random.default_rng(seed)
    crop = render_crop("株式會社明治製菓", find_font(TRAIN_FONTS[seed % len(TRAIN_FONTS)]), "horizontal", rng)
    arr, _ = degrade(np.asarray(crop), rng, HELDOUT_FAMILY, direction="horizontal")
    img = Image.fromarray(arr, mode="L")
    turned = img.transpose(Image.Transpose.ROTATE_270)
    assert np.array_equal(ink_mask(turned), np.rot90(ink_mask(img), k=-1))
    assert vertical_cells(turned, mask=np.rot90(ink_mask(img), k=-1)) == vertical_cells(turned)


def test_column_extent_leaves_out_a_band_at_the_border_but_keeps_inner_bands():
    mask = np.zeros((100, 60), dtype=bool)
    mask[10:90, 20:40] = True  # the column's glyphs
    assert column_extent(mask) == (20, 40)
    mask[5:95, 0:6] = True  # a neighbouring column's cut-off strokes at the left border
    assert column_extent(mask) == (20, 40)
    mask[20:60, 44:48] = True  # a band apart from the column but inside the crop: a glyph's detached stroke
    assert column_extent(mask) == (20, 48)
    mask[:, 55:60] = True  # a dark band at the right border (shading, the scanner's edge)
    assert column_extent(mask) == (20, 48)
    # the band with the most ink is the text even when it reaches the border (a crop cut tight)
    tight = np.zeros((100, 60), dtype=bool)
    tight[10:90, 0:30] = True
    tight[10:20, 50:60] = True
    assert column_extent(tight) == (0, 30)
    # thin stray marks (under 1 % of the rows) never count, at the border or not
    stray = np.zeros((200, 60), dtype=bool)
    stray[10:190, 20:40] = True
    stray[50, 2] = stray[70, 45] = True
    assert column_extent(stray) == (20, 40)


def test_ink_extent_takes_faint_tips_but_not_a_band_left_out():
    mask = np.zeros((200, 60), dtype=bool)
    mask[10:190, 20:40] = True
    mask[100, 18:20] = True  # the tip of one glyph: one row of ink, under the 1 % rule
    mask[5:195, 0:5] = True  # a neighbour's strokes at the border, a blank column apart
    assert column_extent(mask) == (20, 40)
    assert ink_extent(mask) == (18, 40)


@needs_fonts
@pytest.mark.parametrize("name", ["三井鑛山", "會津電氣", "三菱重工業株式會社"])
def test_cells_one_per_character_when_the_crop_caught_a_neighbouring_line(name):
    # A layout box a little too wide catches the facing edge of the next column: the cells must stay one per
    # character, with the neighbour's strokes on the left or on the right, in both orientations.
    from linkage_pipeline.multimodal.preprocessing import character_tiles
    from linkage_pipeline.multimodal.training.degrade import neighbour_edge

    for font_path in FONTS:
        column = render_vertical(name, font_path, spacing=0.1)
        other = np.asarray(render_vertical("東京瓦斯電氣工業株式會社", font_path, spacing=0.1))
        for seed in range(4):  # the strip falls left or right as the seed says
            arr = neighbour_edge(np.asarray(column), np.random.default_rng(seed), 0.3, direction="vertical",
                                 neighbour=other)
            img = Image.fromarray(arr)
            assert len(vertical_cells(img)) == len(name), (font_path, seed)
            assert len(character_tiles(img, "vertical")[0]) == len(name), (font_path, seed)
            line = img.transpose(Image.Transpose.ROTATE_90)  # the same crop as a horizontal line
            assert len(character_tiles(line, "horizontal")[0]) == len(name), (font_path, seed)
