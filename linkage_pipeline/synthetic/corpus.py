"""The deterministic demo corpus: a vertical firm directory and horizontal supply-chain lists, as scans.

:func:`generate_corpus` writes two document sources in the contract of DESIGN section 4::

    out_dir/sources.yaml
    out_dir/firm_directory/pages/page_001.png ...   vertical columns, right to left, in tiers
    out_dir/firm_directory/labels.csv
    out_dir/supplier_lists/pages/page_001.png ...   horizontal: title, 仕入先 + suppliers, 販賣先 + customers
    out_dir/supplier_lists/labels.csv

The directory prints each firm's canonical name (old forms) under a prefecture heading, some firms twice; the
lists print the same firms the way questionnaires were typed up (modern forms, ``（株）``, no legal form, short
forms), and some listed firms are absent from the directory. Pages are rendered character by character with
Pillow's basic layout (no raqm), then degraded like a 1950s scan: uneven ink, a small rotation, paper tone,
blur and speckle. Everything is a function of ``seed``: the same arguments give byte-identical files.

Boxes in ``labels.csv`` are tight around the printed ink, in pixels, ``x1``/``y1`` exclusive (the region is
``image[y0:y1, x0:x1]``).
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from linkage_pipeline.synthetic.firms import (
    VOCABULARIES,
    Firm,
    Vocabulary,
    generate_firms,
    mention,
)
from linkage_pipeline.synthetic.fonts import (
    DEMO_FONTS,
    DENSE_DEMO_FONTS,
    FALLBACK_FONTS,
    FontFile,
    MissingFontError,
    find_font,
    font_cmap,
    pil_font,
    resolve_fonts,
)

logger = logging.getLogger(__name__)


SOURCES_YAML = """\
sources:
  firm_directory: {role: target, direction: vertical, language: jpn, layout: morphology, ocr: [tesseract, rapidocr]}
  supplier_lists: {role: query, direction: horizontal, language: jpn, layout: morphology, ocr: [tesseract, rapidocr]}
linkages:
  - {query: supplier_lists, target: firm_directory}
"""
LABEL_COLUMNS: tuple[str, ...] = ("page", "x0", "y0", "x1", "y1", "text", "entity_id", "role")
#: Corpus styles of :func:`generate_corpus`.
STYLES: tuple[str, ...] = ("sparse", "dense")

_PREFECTURES: tuple[str, ...] = (
    "東京都", "大阪府", "北海道", "愛知縣", "兵庫縣", "福岡縣", "神奈川縣", "京都府", "廣島縣", "静岡縣",
    "新潟縣", "長野縣", "岡山縣", "宮城縣", "福井縣", "石川縣",
)
# In vertical setting these are turned a quarter (long vowel mark, brackets) or moved to the upper right
# (small kana), as a Japanese compositor does.
_ROTATE_IN_VERTICAL = set("ー－—〜（）()「」『』〔〕［］")
_SMALL_KANA = set("ぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ")
# Commas and full stops sit in the lower left of a horizontal cell and in the upper right of a vertical one.
_PUNCT_IN_VERTICAL = set("、。，．")
_EM_ASCENT = 0.88  # ideographic em box top above the baseline, in ems (CJK fonts put the box at -0.12..0.88)


@dataclass(frozen=True)
class CorpusSummary:
    """What :func:`generate_corpus` wrote.

    Attributes:
        out_dir: The corpus folder (holds ``sources.yaml`` and one folder per source).
        seed: The seed.
        fonts: Families used for the text.
        n_firms: Firms in the directory.
        n_absent_firms: Firms that lists can mention but the directory does not contain.
        n_directory_pages: Directory page images.
        n_directory_entries: Entry regions in the directory (a firm listed twice counts twice).
        n_duplicated_firms: Directory firms listed more than once.
        n_list_pages: Supply-chain list page images.
        n_list_mentions: Supplier and customer regions on the lists.
        n_absent_mentions: Of those, mentions of firms absent from the directory.
        n_changed_mentions: List mentions (titles included) whose text differs from the canonical name.
        seconds: Wall time of the generation.
        style: ``sparse`` or ``dense`` (see :func:`generate_corpus`).
        fonts_used: Families that set at least one character, fallbacks included (dense style only).
        n_body_lines: Body lines (address, capital, officers ...) labelled in the directory (dense style only).
    """

    out_dir: Path
    seed: int
    fonts: tuple[str, ...]
    n_firms: int
    n_absent_firms: int
    n_directory_pages: int
    n_directory_entries: int
    n_duplicated_firms: int
    n_list_pages: int
    n_list_mentions: int
    n_absent_mentions: int
    n_changed_mentions: int
    seconds: float = field(default=0.0, compare=False)
    style: str = "sparse"
    fonts_used: tuple[str, ...] = ()
    n_body_lines: int = 0


class _Typeset:
    """Fonts of one corpus: picks the face for each character, falling back where a face lacks a glyph."""

    def __init__(self, fonts: tuple[FontFile, ...]) -> None:
        self.fonts = fonts
        fallbacks = []
        for fam in FALLBACK_FONTS:
            try:
                fallbacks.append(find_font(fam))
            except MissingFontError:
                continue
        self.fallbacks = tuple(fallbacks) + fonts

    def face(self, font: FontFile, ch: str, size: int) -> ImageFont.FreeTypeFont:
        if ord(ch) in font_cmap(font.path, font.index):
            return pil_font(font.path, font.index, size)
        for fb in self.fallbacks:
            if ord(ch) in font_cmap(fb.path, fb.index):
                return pil_font(fb.path, fb.index, size)
        raise MissingFontError(f"no installed font has a glyph for {ch!r} (U+{ord(ch):04X})")


# ------------------------------------------------------------------------------------------------ rendering
@dataclass
class _Run:
    """One rendered text region before placement: its ink (float32 (h, w) in [0, 1]) and its label."""

    ink: np.ndarray  # (h, w) float32
    text: str
    entity_id: str
    role: str


def _render_run(
    typeset: _Typeset,
    font: FontFile,
    text: str,
    size: int,
    direction: str,
    spacing: float,
    bold: bool,
    rng: np.random.Generator,
) -> np.ndarray:
    """Render ``text`` character by character on its own canvas.

    Returns:
        Ink, float32 (h, w) in [0, 1], cropped tight around the ink.
    """
    n = len(text)
    pad = size
    if direction == "horizontal":
        canvas = Image.new("L", (int(n * size * (1 + spacing) + 2 * pad), int(size * 2 + 2 * pad)), 0)
    else:
        canvas = Image.new("L", (int(size * 2 + 2 * pad), int(n * size * (1 + spacing) + 2 * pad)), 0)
    draw = ImageDraw.Draw(canvas)
    stroke = max(1, round(size / 36)) if bold else 0
    pen = float(pad)
    for ch in text:
        face = typeset.face(font, ch, size)
        shade = int(255 * rng.uniform(0.86, 1.0))  # letterpress: each type prints a little differently
        jitter = float(rng.normal(0.0, 0.35))
        if direction == "horizontal":
            baseline = pad + _EM_ASCENT * size + jitter
            draw.text((pen, baseline), ch, font=face, fill=shade, anchor="ls", stroke_width=stroke, stroke_fill=shade)
            pen += face.getlength(ch) + spacing * size
            continue
        centre_x = pad + size + jitter
        if ch in _ROTATE_IN_VERTICAL:
            cell = Image.new("L", (size * 2, size * 2), 0)
            ImageDraw.Draw(cell).text(
                (size * 2 / 2, size * 2 / 2), ch, font=face, fill=shade, anchor="mm", stroke_width=stroke
            )
            cell = cell.rotate(-90, resample=Image.Resampling.BILINEAR)
            canvas.paste(
                cell, (int(round(centre_x - size)), int(round(pen + size / 2 - size))), cell
            )
        else:
            dx, dy = (0.12 * size, -0.12 * size) if ch in _SMALL_KANA else (0.0, 0.0)
            if ch in _PUNCT_IN_VERTICAL:
                dx, dy = (0.55 * size, -0.6 * size)
            x = centre_x - face.getlength(ch) / 2 + dx
            draw.text(
                (x, pen + _EM_ASCENT * size + dy), ch, font=face, fill=shade, anchor="ls",
                stroke_width=stroke, stroke_fill=shade,
            )
        pen += size * (1 + spacing)
    arr = np.asarray(canvas, dtype=np.float32) / 255.0
    ys, xs = np.nonzero(arr > 0.25)
    if len(ys) == 0:
        raise ValueError(f"rendering {text!r} produced no ink; the font has no visible glyphs for it")
    return arr[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


class _Page:
    """A page being composed: an ink layer and the regions placed on it."""

    def __init__(self, width: int, height: int) -> None:
        self.ink = np.zeros((height, width), dtype=np.float32)
        self.regions: list[tuple[_Run, int, int]] = []  # run, x, y of its top-left corner

    def place(self, run: _Run, x: int, y: int) -> None:
        h, w = run.ink.shape
        if x < 0 or y < 0 or x + w > self.ink.shape[1] or y + h > self.ink.shape[0]:
            raise ValueError(f"region {run.text!r} at ({x}, {y}) size {w}x{h} falls off the page {self.ink.shape}")
        np.maximum(self.ink[y : y + h, x : x + w], run.ink, out=self.ink[y : y + h, x : x + w])
        self.regions.append((run, x, y))

    def rule(self, x0: int, y0: int, x1: int, y1: int) -> None:
        self.ink[y0:y1, x0:x1] = np.maximum(self.ink[y0:y1, x0:x1], 0.9)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Low-frequency noise, float32 ``shape``, zero mean and unit variance."""
    h, w = shape
    small = rng.standard_normal((max(2, h // cell + 2), max(2, w // cell + 2))).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    big -= big.mean()
    return big / (big.std() + 1e-6)


def _degrade(
    page: _Page,
    rng: np.random.Generator,
    noise: float,
    *,
    max_angle: float = 0.8,
    bleed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn the clean ink layer into a scan.

    Args:
        page: The composed page.
        rng: Randomness of this page.
        noise: Strength of the degradation, 1.0 = the demo corpus, 0.0 = clean.
        max_angle: Largest rotation of the page on the scanner glass, in degrees (at ``noise >= 1``).
        bleed: Ink layer (float32 in [0, 1], any shape) of the page's back side: it shows through faintly,
            mirrored, with an uneven paper tone (both only where given and ``noise > 0``).

    Returns:
        ``(image, matrix)``: uint8 (H, W) grey scan, and the 2x3 float64 affine matrix that maps clean page
        coordinates to scan coordinates.
    """
    ink: np.ndarray = page.ink
    h, w = ink.shape
    # Uneven ink: worn type prints thin in some patches, over-inked type bleeds in others.
    if noise > 0:
        kernel = np.ones((2, 2), np.uint8)
        field_ = _smooth_field(rng, (h, w), 96)
        thin = cv2.erode(ink, kernel)
        thick = cv2.dilate(ink, kernel)
        w_thin = np.clip((-field_ - 1.0) * 1.3 * noise, 0, 0.7)
        w_thick = np.clip((field_ - 1.1) * 1.2 * noise, 0, 0.8)
        ink = ink * (1 - w_thin - w_thick) + thin * w_thin + thick * w_thick
        darkness = 1.0 - 0.15 * noise * np.clip(_smooth_field(rng, (h, w), 160) * 0.5 + 0.5, 0, 1)
        ink = ink * darkness
        # Dropouts: specks of paper inside strokes.
        n_drop = int(noise * h * w / 2000)
        seeds = np.zeros((h, w), np.float32)
        ys, xs = rng.integers(0, h, n_drop), rng.integers(0, w, n_drop)
        seeds[ys, xs] = 1.0
        drop: np.ndarray = cv2.dilate(seeds, np.ones((2, 2), np.uint8))
        ink = ink * (1 - 0.8 * drop)
    # A page never lies perfectly straight on the scanner glass.
    angle = float(rng.uniform(-max_angle, max_angle)) * min(noise, 1.0)
    shift = rng.uniform(-4, 4, size=2) * min(noise, 1.0)
    matrix: np.ndarray = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0).astype(np.float64)
    matrix[:, 2] = matrix[:, 2] + shift
    ink = cv2.warpAffine(ink, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    paper = float(rng.uniform(208, 240)) + 4.0 * noise * _smooth_field(rng, (h, w), 300)
    ink_tone = float(rng.uniform(20, 60))
    img: np.ndarray = paper * (1 - ink) + ink_tone * ink
    if bleed is not None and noise > 0:
        # Show-through: the back side's text, mirrored and blurred by the paper; paper darker towards an edge.
        back = cv2.resize(np.ascontiguousarray(bleed[:, ::-1]), (w, h), interpolation=cv2.INTER_AREA)
        back = cv2.GaussianBlur(back, (0, 0), float(rng.uniform(1.2, 2.5)))
        strength = float(rng.uniform(0.03, 0.09)) * min(noise, 1.5)
        img = img - strength * back * (paper - ink_tone) * (1 - ink)
        ramp = np.linspace(0.0, 1.0, w, dtype=np.float32) ** 3
        if rng.random() < 0.5:
            ramp = ramp[::-1]
        img = img - float(rng.uniform(0, 18)) * noise * ramp[None, :]
    if noise > 0:
        sigma = float(rng.uniform(0.8, 1.3)) * min(noise, 1.5)
        img = cv2.GaussianBlur(img, (0, 0), sigma)
        # Many archives were filmed and the film scanned: detail finer than the film's resolution is lost.
        film = float(rng.uniform(0.35, 0.55)) ** min(noise, 1.5)
        small = cv2.resize(img, (max(1, int(w * film)), max(1, int(h * film))), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        # Speckle: dust and paper fibres, mostly single pixels, a few small blots.
        n_speck = int(noise * rng.uniform(500, 1800))
        ys, xs = rng.integers(0, h, n_speck), rng.integers(0, w, n_speck)
        img[ys, xs] = np.minimum(img[ys, xs], rng.uniform(40, 160, n_speck).astype(np.float32))
        for _ in range(int(noise * rng.integers(4, 14))):
            cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
            axes = (int(rng.integers(1, 4)), int(rng.integers(1, 3)))
            cv2.ellipse(img, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(50, 140)), -1)
        img = img + rng.normal(0.0, 3.5 * noise, size=(h, w)).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), matrix


def _labels_for(page: _Page, matrix: np.ndarray, shape: tuple[int, int], file: str) -> list[dict[str, object]]:
    """Tight boxes of every placed region after the page's affine transform."""
    h, w = shape
    rows = []
    for run, x, y in page.regions:
        pts = cv2.findNonZero((run.ink > 0.25).astype(np.uint8))
        hull = cv2.convexHull(pts).reshape(-1, 2).astype(np.float64) + (x, y)
        moved = hull @ matrix[:, :2].T + matrix[:, 2]
        x0, y0 = np.floor(moved.min(axis=0)).astype(int)
        x1, y1 = np.ceil(moved.max(axis=0)).astype(int) + 1
        rows.append(
            {
                "page": file,
                "x0": int(max(0, x0)),
                "y0": int(max(0, y0)),
                "x1": int(min(w, x1)),
                "y1": int(min(h, y1)),
                "text": run.text,
                "entity_id": run.entity_id,
                "role": run.role,
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------- layouts
def _page_rng(seed: int, source: int, page: int) -> np.random.Generator:
    return np.random.default_rng([seed, source, page, 0x5359])


def _layout_directory(
    items: list[tuple[str, str, str]],
    typeset: _Typeset,
    rng: np.random.Generator,
    scale: float,
    width: int,
    height: int,
    running_heading: str | None,
) -> tuple[_Page, int]:
    """Fill one vertical page with directory items; returns the page and how many items it took.

    ``items`` are ``(text, entity_id, role)``; a heading always starts a new column.
    """
    page = _Page(width, height)
    size = int(round(rng.uniform(30, 38) * scale))
    font = typeset.fonts[int(rng.integers(len(typeset.fonts)))]
    head_font = typeset.fonts[int(rng.integers(len(typeset.fonts)))] if rng.random() < 0.5 else font
    spacing = float(rng.uniform(0.03, 0.12))
    pitch = size * float(rng.uniform(1.75, 2.1))
    margin_x, margin_y = int(rng.uniform(70, 100) * scale), int(rng.uniform(80, 110) * scale)
    tier_gap = int(size * rng.uniform(1.6, 2.2))
    n_tiers = 2
    tier_h = (height - 2 * margin_y - (n_tiers - 1) * tier_gap) // n_tiers
    n_cols = int((width - 2 * margin_x - size) // pitch) + 1
    slots = [(t, c) for t in range(n_tiers) for c in range(n_cols)]
    # (text, entity_id, role, counts): a repeated running heading is not one of the caller's items.
    queue = [(*item, True) for item in items]
    if running_heading is not None and queue and queue[0][2] != "heading":
        queue.insert(0, (running_heading, "", "heading", False))
    taken = 0
    slot = 0
    rules = rng.random() < 0.6
    while queue and slot < len(slots):
        text, entity_id, role, counts = queue[0]
        heading = role == "heading"
        if heading and slots[slot][1] > 0 and slot + 1 < len(slots) and slots[slot + 1][0] == slots[slot][0]:
            slot += 1  # a blank column before a new section
        if heading and (slot + 1 >= len(slots) or slots[slot + 1][0] != slots[slot][0]):
            slot += 1  # a heading never ends a tier: it moves on to the next one
            if slot >= len(slots):
                break
        tier, col = slots[slot]
        s = int(round(size * rng.uniform(1.25, 1.35))) if heading else size
        if not heading and rng.random() < 0.06:  # an entry set from another case of type
            f = typeset.fonts[int(rng.integers(len(typeset.fonts)))]
        else:
            f = head_font if heading else font
        top_offset = int(size * 0.9) if heading else 0
        ink = _render_run(typeset, f, text, s, "vertical", spacing, heading, rng)
        if ink.shape[0] + top_offset > tier_h:  # too long for a tier: the compositor tightens the spacing
            ink = _render_run(typeset, f, text, s, "vertical", -0.02, heading, rng)
        centre_x = width - margin_x - size / 2 - col * pitch
        top = margin_y + tier * (tier_h + tier_gap) + top_offset
        x = int(round(centre_x - ink.shape[1] / 2))
        page.place(_Run(ink, text, entity_id, role), x, top)
        queue.pop(0)
        taken += counts
        slot += 1
    if rules:
        for t in range(1, n_tiers):
            yy = margin_y + t * (tier_h + tier_gap) - tier_gap // 2
            page.rule(margin_x - size // 2, yy, width - margin_x + size // 2, yy + max(2, size // 16))
    return page, taken


def _layout_list(
    title: tuple[str, str],
    sections: list[tuple[str, str, list[tuple[str, str]]]],
    typeset: _Typeset,
    rng: np.random.Generator,
    scale: float,
    width: int,
) -> _Page:
    """One horizontal supply-chain list page: title, then per section a heading and names in columns."""
    size = int(round(rng.uniform(28, 36) * scale))
    font = typeset.fonts[int(rng.integers(len(typeset.fonts)))]
    head_font = typeset.fonts[int(rng.integers(len(typeset.fonts)))] if rng.random() < 0.5 else font
    spacing = float(rng.uniform(0.0, 0.08))
    margin = int(rng.uniform(80, 110) * scale)
    row_pitch = size * float(rng.uniform(1.7, 2.0))
    placements: list[tuple[_Run, int, int]] = []
    title_size = int(round(size * rng.uniform(1.5, 1.8)))
    title_ink = _render_run(typeset, head_font, title[0], title_size, "horizontal", spacing, True, rng)
    y = margin
    placements.append((_Run(title_ink, title[0], title[1], "title"), (width - title_ink.shape[1]) // 2, y))
    y += title_ink.shape[0] + int(size * rng.uniform(1.2, 1.6))
    for heading, role, names in sections:
        head_ink = _render_run(
            typeset, head_font, heading, int(round(size * rng.uniform(1.2, 1.3))), "horizontal", 0.1, True, rng
        )
        placements.append((_Run(head_ink, heading, "", "heading"), margin, y))
        y += head_ink.shape[0] + int(size * rng.uniform(0.7, 0.9))
        inks: list[_Run] = []
        for text, entity_id in names:
            f = typeset.fonts[int(rng.integers(len(typeset.fonts)))] if rng.random() < 0.06 else font
            ink = _render_run(typeset, f, text, size, "horizontal", spacing, False, rng)
            inks.append(_Run(ink, text, entity_id, role))
        col_w = max(r.ink.shape[1] for r in inks) + int(size * rng.uniform(2.0, 2.8))
        indent = int(size * rng.uniform(0.8, 1.5))
        n_cols = int(max(1, min(3, (width - 2 * margin - indent + size * 2) // col_w)))
        for i, run in enumerate(inks):
            r, c = divmod(i, n_cols)
            yy = int(y + r * row_pitch + (size - run.ink.shape[0]) / 2)
            placements.append((run, margin + indent + c * col_w, max(0, yy)))
        y += int(((len(inks) + n_cols - 1) // n_cols) * row_pitch + size * rng.uniform(0.8, 1.4))
    height = int(min(max(1240 * scale, y + margin + rng.uniform(0, 200) * scale), 1754 * scale))
    height = max(height, y + margin)
    page = _Page(width, height)
    for run, x, yy in placements:
        page.place(run, x, yy)
    return page


# ------------------------------------------------------------------------------------------------- corpus
def _write_labels(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LABEL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _prepare_source(out_dir: Path, name: str) -> Path:
    pages = out_dir / name / "pages"
    pages.mkdir(parents=True, exist_ok=True)
    for stale in sorted(pages.glob("page_*")):  # a smaller rerun must not leave pages of a larger one behind
        if stale.suffix in (".png", ".jpg", ".tif"):
            stale.unlink()
    return pages


def _save_png(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise OSError(f"could not encode {path}")
    path.write_bytes(buf.tobytes())


@dataclass(frozen=True)
class _Population:
    """The firms of one corpus: who is in the directory (in which prefecture sections) and who is absent."""

    universe: list[Firm]
    directory: list[Firm]
    absent: list[Firm]
    sections: list[str]
    suffix: str
    by_section: list[list[Firm]]
    duplicated: set[int]
    rng: np.random.Generator

    @classmethod
    def draw(cls, seed: int, n_firms: int, vocabulary: Vocabulary, duplicate_share: float) -> _Population:
        """Draw the firms, the absent ones and the directory's sections (some firms in two sections)."""
        rng = np.random.default_rng([seed, 0x434F5250])
        n_absent = max(2, int(round(n_firms * 0.25)))
        universe = generate_firms(n_firms + n_absent, seed, vocabulary=vocabulary)
        absent_idx = set(rng.choice(len(universe), size=n_absent, replace=False).tolist())
        directory = [f for i, f in enumerate(universe) if i not in absent_idx]
        absent = [f for i, f in enumerate(universe) if i in absent_idx]
        n_sections = int(np.clip(round(n_firms / 30), 2, len(_PREFECTURES)))
        sections = [str(p) for p in rng.choice(_PREFECTURES, size=n_sections, replace=False)]
        suffix = "之部" if rng.random() < 0.7 else ""
        by_section: list[list[Firm]] = [[] for _ in sections]
        n_twice = int(round(duplicate_share * len(directory)))
        duplicated = set(rng.choice(len(directory), size=n_twice, replace=False).tolist())
        for i, firm in enumerate(directory):
            homes = rng.choice(n_sections, size=2 if i in duplicated else 1, replace=False)
            for h in homes:
                by_section[int(h)].append(firm)
        return cls(universe, directory, absent, sections, suffix, by_section, duplicated, rng)

    def directory_items(self) -> list[tuple[str, str, str]]:
        """The directory in print order, ``(text, entity_id, role)``: a heading, then its section's entries.

        Draws from :attr:`rng`; call it once.
        """
        items: list[tuple[str, str, str]] = []
        for name, members in zip(self.sections, self.by_section, strict=True):
            if not members:
                continue
            items.append((name + self.suffix, "", "heading"))
            order = self.rng.permutation(len(members))
            items.extend(
                (mention(members[j], self.rng, "directory"), members[j].entity_id, "entry") for j in order
            )
        return items

    def list_content(
        self, prng: np.random.Generator, names_per_list: tuple[int, int], absent_share: float
    ) -> tuple[tuple[str, str], list[tuple[str, str, list[tuple[str, str]]]]]:
        """What one supply-chain list page says: its reporting firm and its suppliers and customers.

        Returns:
            ``(title, sections)``: ``title`` is ``(printed name, entity_id)``; each section is ``(heading,
            role, [(printed name, entity_id), ...])`` for ``supplier`` then ``customer``.
        """
        lo, hi = names_per_list
        directory, absent = self.directory, self.absent
        reporter = directory[int(prng.integers(len(directory)))] if prng.random() < 0.9 else \
            absent[int(prng.integers(len(absent)))]
        used = {reporter.entity_id}
        total = min(int(prng.integers(lo, hi + 1)), len(self.universe) - 1)  # a tiny corpus has few firms
        n_sup = int(np.clip(prng.integers(total // 2 - 2, total // 2 + 3), 1, total - 1))
        page_sections = []
        for heading, role, count in (
            ("仕入先", "supplier", n_sup),
            ("販賣先" if prng.random() < 0.6 else "得意先", "customer", total - n_sup),
        ):
            names: list[tuple[str, str]] = []
            while len(names) < count:
                pool = absent if prng.random() < absent_share else directory
                firm = pool[int(prng.integers(len(pool)))]
                if firm.entity_id in used:  # terminates: total < number of firms
                    continue
                used.add(firm.entity_id)
                names.append((mention(firm, prng, "list"), firm.entity_id))
            page_sections.append((heading, role, names))
        title = (mention(reporter, prng, "title"), reporter.entity_id)
        return title, page_sections


def tally_mentions(
    rows: list[dict[str, object]], directory_ids: set[str], canonical: dict[str, str], counts: tuple[int, int, int]
) -> tuple[int, int, int]:
    """Adds a list page's label rows to (mentions, mentions absent from the directory, mentions printed otherwise
    than the canonical name)."""
    n_mentions, n_absent, n_changed = counts
    for row in rows:
        if row["role"] in ("supplier", "customer"):
            n_mentions += 1
            n_absent += row["entity_id"] not in directory_ids
        if row["entity_id"]:
            n_changed += row["text"] != canonical[str(row["entity_id"])]
    return n_mentions, n_absent, n_changed


def generate_corpus(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_firms: int = 600,
    n_list_pages: int = 60,
    fonts: Sequence[str] | None = None,
    vocabulary: Vocabulary = "demo",
    duplicate_share: float = 0.1,
    absent_share: float = 0.17,
    names_per_list: tuple[int, int] = (8, 15),
    scale: float = 1.0,
    noise: float = 1.0,
    style: str = "sparse",
) -> CorpusSummary:
    """Write the synthetic two-source corpus (directory + supply-chain lists) under ``out_dir``.

    Args:
        out_dir: Folder to write; created if missing. Existing ``page_*.png`` of the two sources are replaced.
        seed: Seed of everything (firms, text variation, layout, fonts, noise).
        n_firms: Firms in the directory (``>= 4``).
        n_list_pages: Supply-chain list pages (``>= 1``), one reporting firm each.
        fonts: Font family names (fontconfig) or font file paths; default :data:`DEMO_FONTS`.
        vocabulary: Part of the firm-name vocabulary (see :func:`~linkage_pipeline.synthetic.firms.generate_firms`).
        duplicate_share: Share of directory firms listed twice (under two prefectures).
        absent_share: Probability that a supplier/customer is a firm absent from the directory.
        names_per_list: Inclusive range of suppliers + customers per list page.
        scale: Page and type size factor; 1.0 gives 1240 px wide pages (about 150 dpi) and 28-38 px type.
        noise: Scan degradation strength; 1.0 for the demo, 0.0 for clean renderings.
        style: ``sparse`` (the default): one name per column or line, PNG pages; ``dense``: directory entries
            with body text in smaller type and lists that run partners inline, mixed PNG/JPEG/TIFF pages, more
            typefaces (:data:`~linkage_pipeline.synthetic.fonts.DENSE_DEMO_FONTS`); see
            :mod:`linkage_pipeline.synthetic.dense`.

    Returns:
        A CorpusSummary with counts and timing.

    Raises:
        ValueError: If an argument is out of range.
        MissingFontError: If a requested font family is not installed.
    """
    t0 = time.perf_counter()
    if n_firms < 4:
        raise ValueError(f"n_firms must be >= 4, got {n_firms}")
    if n_list_pages < 1:
        raise ValueError(f"n_list_pages must be >= 1, got {n_list_pages}")
    if not 0 <= duplicate_share <= 1 or not 0 <= absent_share < 1:
        raise ValueError(
            f"duplicate_share must be in [0, 1] and absent_share in [0, 1), got {duplicate_share}, {absent_share}"
        )
    lo, hi = names_per_list
    if not 2 <= lo <= hi <= 24:
        raise ValueError(f"names_per_list must be (lo, hi) with 2 <= lo <= hi <= 24, got {names_per_list}")
    if not 0.5 <= scale <= 3.0:
        raise ValueError(f"scale must be in [0.5, 3.0], got {scale}")
    if not 0.0 <= noise <= 2.0:
        raise ValueError(f"noise must be in [0, 2], got {noise}")
    if vocabulary not in VOCABULARIES:
        raise ValueError(f"unknown vocabulary {vocabulary!r}; expected one of {VOCABULARIES}")
    if isinstance(fonts, str):
        raise ValueError(f"fonts must be a sequence of family names, got the string {fonts!r}; wrap it in a list")
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    if fonts is not None:
        families = tuple(fonts)
    else:
        families = DENSE_DEMO_FONTS if style == "dense" else DEMO_FONTS
    found = resolve_fonts(families)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    if style == "dense":
        from linkage_pipeline.synthetic.dense import generate_dense

        return generate_dense(
            out, seed=seed, n_firms=n_firms, n_list_pages=n_list_pages, families=families, fonts=found,
            vocabulary=vocabulary, duplicate_share=duplicate_share, absent_share=absent_share,
            names_per_list=names_per_list, scale=scale, noise=noise, t0=t0,
        )
    typeset = _Typeset(found)
    population = _Population.draw(seed, n_firms, vocabulary, duplicate_share)
    directory, absent, universe = population.directory, population.absent, population.universe
    items = population.directory_items()

    dir_pages = _prepare_source(out, "firm_directory")
    dir_rows: list[dict[str, object]] = []
    width = int(round(1240 * scale))
    height = int(round(1700 * scale))
    page_no, pos, current_heading = 0, 0, None
    while pos < len(items):
        page_no += 1
        prng = _page_rng(seed, 1, page_no)
        page, taken = _layout_directory(items[pos:], typeset, prng, scale, width, height, current_heading)
        if taken == 0:
            raise ValueError("a directory page holds no entry; increase scale or reduce the type size")
        for text, _, role in items[pos : pos + taken]:
            if role == "heading":
                current_heading = text
        pos += taken
        image, matrix = _degrade(page, prng, noise)
        file = f"page_{page_no:03d}.png"
        _save_png(dir_pages / file, image)
        dir_rows.extend(_labels_for(page, matrix, image.shape, file))
    _write_labels(out / "firm_directory" / "labels.csv", dir_rows)

    # ---- supply-chain lists
    list_pages = _prepare_source(out, "supplier_lists")
    list_rows: list[dict[str, object]] = []
    n_mentions = n_absent_mentions = n_changed = 0
    directory_ids = {f.entity_id for f in directory}
    canonical = {f.entity_id: f.canonical for f in universe}
    for p in range(1, n_list_pages + 1):
        prng = _page_rng(seed, 2, p)
        title, page_sections = population.list_content(prng, names_per_list, absent_share)
        page = _layout_list(title, page_sections, typeset, prng, scale, width)
        image, matrix = _degrade(page, prng, noise)
        file = f"page_{p:03d}.png"
        _save_png(list_pages / file, image)
        rows = _labels_for(page, matrix, image.shape, file)
        list_rows.extend(rows)
        n_mentions, n_absent_mentions, n_changed = tally_mentions(
            rows, directory_ids, canonical, (n_mentions, n_absent_mentions, n_changed)
        )
    _write_labels(out / "supplier_lists" / "labels.csv", list_rows)
    (out / "sources.yaml").write_text(SOURCES_YAML, encoding="utf-8")

    summary = CorpusSummary(
        out_dir=out,
        seed=seed,
        fonts=families,
        n_firms=len(directory),
        n_absent_firms=len(absent),
        n_directory_pages=page_no,
        n_directory_entries=sum(1 for r in dir_rows if r["role"] == "entry"),
        n_duplicated_firms=len(population.duplicated),
        n_list_pages=n_list_pages,
        n_list_mentions=n_mentions,
        n_absent_mentions=n_absent_mentions,
        n_changed_mentions=n_changed,
        seconds=time.perf_counter() - t0,
    )
    logger.info(
        "wrote corpus to %s: %d directory pages (%d entries), %d list pages (%d mentions, %d absent) in %.1f s",
        out, summary.n_directory_pages, summary.n_directory_entries, n_list_pages, n_mentions,
        n_absent_mentions, summary.seconds,
    )
    return summary
