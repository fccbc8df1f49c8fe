"""The dense corpus style: directory entries with body text, supply-chain lists that run partners inline.

Real 1950s directories (帝國銀行會社要錄, 人事興信録) print each firm as an *entry*: its name in larger or bolder
type, then three to eight columns of body text in smaller type (address, founding date, capital, officers,
business lines, banks, suppliers and customers), several entries per tier, sometimes with a rule between
entries. Supply-chain lists typed from questionnaires run the partners inline (``東洋紡績、（株）大和商會、
中央物産 ...``), wrapping only between names. :func:`generate_dense` writes both sources in the contract of
DESIGN section 4 with the same firms and mention logic as the sparse style (see
:func:`~linkage_pipeline.synthetic.corpus.generate_corpus`, which calls it for ``style="dense"``):

- directory labels: every heading, every firm name (role ``entry``, with its entity id) and every printed body
  line (role ``body``, text = the line, no entity id, even where the line names firms);
- list labels: the title (the reporting firm), each section heading as printed (``【仕入先】``, ``販売先：``,
  ``◎販賣先`` ...) and each partner name on its own (``supplier``/``customer``), tight around the name's ink
  and never around the separator that follows it;
- pages: PNG, JPEG (quality 55-90) or TIFF, drawn per page; a rotation of up to 3 degrees, show-through of a
  mirrored back page, uneven ink and paper tone, speckle.

Everything is a function of ``seed``: the same arguments give byte-identical files.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from linkage_pipeline.synthetic.corpus import (
    _EM_ASCENT,
    LABEL_COLUMNS,
    CorpusSummary,
    _degrade,
    _labels_for,
    _Page,
    _page_rng,
    _Population,
    _prepare_source,
    _render_run,
    _Run,
    _Typeset,
    _write_labels,
    tally_mentions,
)
from linkage_pipeline.synthetic.entries import entry_fields, wrap_fields
from linkage_pipeline.synthetic.firms import Vocabulary, mention
from linkage_pipeline.synthetic.fonts import (
    FALLBACK_FONTS,
    FontFile,
    MissingFontError,
    find_font,
    font_cmap,
)

logger = logging.getLogger(__name__)

SOURCES_YAML_DENSE = """\
sources:
  firm_directory: {role: target, direction: vertical, language: jpn, layout: ppocr, ocr: [tesseract, rapidocr]}
  supplier_lists: {role: query, direction: horizontal, language: jpn, layout: ppocr, ocr: [tesseract, rapidocr]}
linkages:
  - {query: supplier_lists, target: firm_directory}
"""
#: How list pages print their section headings; ``{}`` is the heading word.
HEADING_STYLES: tuple[str, ...] = ("【{}】", "{}：", "◎{}", "{}", "〔{}〕", "■{}")
#: Separators between inline partner names, with their drawing weights (a full-width space prints no ink).
SEPARATORS: tuple[tuple[str, float], ...] = (("、", 0.6), ("，", 0.15), ("・", 0.15), ("\u3000", 0.1))
#: Share of list pages that print one partner per line instead of inline.
ONE_PER_LINE_SHARE = 0.2
#: Page file formats and their drawing weights.
PAGE_FORMATS: tuple[tuple[str, float], ...] = ((".png", 0.45), (".jpg", 0.4), (".tif", 0.15))
_MAX_BODY_LINES = 8
_MIN_BODY_LINES = 3
__all__ = ["LABEL_COLUMNS", "SOURCES_YAML_DENSE", "generate_dense"]


def _is_text_char(ch: str) -> bool:
    """Kana and kanji: the characters a typeface must have to set a run (punctuation may come from a fallback)."""
    o = ord(ch)
    return 0x3041 <= o <= 0x30FF or 0x4E00 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF


class _DenseTypeset(_Typeset):
    """The corpus's typefaces; a face sets a run only if it has every kana and kanji of it.

    Characters a face lacks otherwise (punctuation, ``㈱``) come from the corpus's own faces first, then from
    :data:`~linkage_pipeline.synthetic.fonts.FALLBACK_FONTS`; every face that sets a character is recorded.
    """

    def __init__(self, fonts: tuple[FontFile, ...]) -> None:
        self.fonts = fonts
        extra = []
        for fam in FALLBACK_FONTS:
            try:
                extra.append(find_font(fam))
            except MissingFontError:
                continue
        self.fallbacks = fonts + tuple(f for f in extra if f not in fonts)
        self.used: set[str] = set()
        self._covers: dict[tuple[FontFile, str], bool] = {}

    def face(self, font: FontFile, ch: str, size: int) -> ImageFont.FreeTypeFont:
        if ord(ch) in font_cmap(font.path, font.index):
            self.used.add(font.family)
        else:
            for fb in self.fallbacks:
                if ord(ch) in font_cmap(fb.path, fb.index):
                    self.used.add(fb.family)
                    break
        return super().face(font, ch, size)

    def covering(self, font: FontFile, text: str) -> FontFile:
        """``font`` if it has every kana and kanji of ``text``, else the first corpus face that has them."""
        for f in (font, *self.fonts):
            key = (f, text)
            if key not in self._covers:
                cmap = font_cmap(f.path, f.index)
                self._covers[key] = all(ord(c) in cmap for c in text if _is_text_char(c))
            if self._covers[key]:
                return f
        return font


def _pick_weighted(rng: np.random.Generator, options: tuple[tuple[str, float], ...]) -> str:
    w = np.array([p for _, p in options])
    return options[int(rng.choice(len(options), p=w / w.sum()))][0]


# ------------------------------------------------------------------------------------------------ rendering
def _render_segment(
    typeset: _DenseTypeset,
    font: FontFile,
    text: str,
    size: int,
    spacing: float,
    bold: bool,
    rng: np.random.Generator,
) -> tuple[np.ndarray | None, int, int, float]:
    """Render horizontal ``text`` so that several segments can share one baseline.

    Returns:
        ``(ink, dx, dy, advance)``: ink cropped tight (``None`` for a blank), the offset of its top-left corner
        from the pen position at the top of the em box, and how far the pen moves.
    """
    pad = size
    canvas = Image.new("L", (int(len(text) * size * (1 + spacing) + 2 * pad), int(size * 2 + 2 * pad)), 0)
    draw = ImageDraw.Draw(canvas)
    stroke = max(1, round(size / 36)) if bold else 0
    pen = float(pad)
    for ch in text:
        face = typeset.face(font, ch, size)
        shade = int(255 * rng.uniform(0.86, 1.0))
        baseline = pad + _EM_ASCENT * size + float(rng.normal(0.0, 0.35))
        draw.text((pen, baseline), ch, font=face, fill=shade, anchor="ls", stroke_width=stroke, stroke_fill=shade)
        pen += face.getlength(ch) + spacing * size
    arr = np.asarray(canvas, dtype=np.float32) / 255.0
    ys, xs = np.nonzero(arr > 0.25)
    if len(ys) == 0:
        return None, 0, 0, pen - pad
    ink = arr[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    return ink, int(xs.min()) - pad, int(ys.min()) - pad, pen - pad


def _stamp(page: _Page, ink: np.ndarray, x: int, y: int) -> None:
    """Print unlabelled ink (a separator) on the page."""
    h, w = ink.shape
    if x < 0 or y < 0 or x + w > page.ink.shape[1] or y + h > page.ink.shape[0]:
        raise ValueError(f"separator at ({x}, {y}) size {w}x{h} falls off the page {page.ink.shape}")
    np.maximum(page.ink[y : y + h, x : x + w], ink, out=page.ink[y : y + h, x : x + w])


# ------------------------------------------------------------------------------------------------ directory
def _fit_vertical(
    typeset: _DenseTypeset,
    font: FontFile,
    text: str,
    size: int,
    spacing: float,
    bold: bool,
    limit: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """A vertical run no longer than ``limit`` pixels: tighter spacing first, then smaller type."""
    ink = _render_run(typeset, font, text, size, "vertical", spacing, bold, rng)
    if ink.shape[0] > limit:
        ink = _render_run(typeset, font, text, size, "vertical", -0.02, bold, rng)
    while ink.shape[0] > limit and size > 8:
        size = max(8, int(size * limit / ink.shape[0]) - 1)
        ink = _render_run(typeset, font, text, size, "vertical", -0.02, bold, rng)
    return ink


def _layout_directory_dense(
    items: list[tuple[str, str, str, list[str]]],
    typeset: _DenseTypeset,
    rng: np.random.Generator,
    scale: float,
    width: int,
    height: int,
    running_heading: str | None,
) -> tuple[_Page, int]:
    """Fill one vertical page with entries (name column + body columns) in tiers, right to left.

    ``items`` are ``(text, entity_id, role, fields)``: a ``heading`` (no fields) or an ``entry`` with its body
    fields. Returns the page and how many items it took.
    """
    page = _Page(width, height)
    body = int(round(rng.uniform(17, 22) * scale))
    bold_names = rng.random() < 0.35
    name = body if bold_names else int(round(body * rng.uniform(1.1, 1.35)))
    name_bold = bold_names or rng.random() < 0.3
    font = typeset.fonts[int(rng.integers(len(typeset.fonts)))]
    name_font = typeset.fonts[int(rng.integers(len(typeset.fonts)))] if rng.random() < 0.4 else font
    spacing = float(rng.uniform(0.0, 0.08))
    body_pitch = body * float(rng.uniform(1.4, 1.65))
    name_pitch = name * float(rng.uniform(1.45, 1.7))
    entry_gap = body * float(rng.uniform(0.7, 1.4))
    rules = rng.random() < 0.4
    margin_x, margin_y = int(rng.uniform(95, 125) * scale), int(rng.uniform(100, 130) * scale)
    n_tiers = int(rng.choice([2, 3, 4], p=[0.3, 0.45, 0.25]))
    tier_gap = int(body * rng.uniform(1.3, 1.9))
    tier_h = (height - 2 * margin_y - (n_tiers - 1) * tier_gap) // n_tiers
    indent = int(round(body * rng.uniform(0.8, 1.2)))
    per_line = max(6, int((tier_h - indent) // (body * (1 + spacing))) - 1)
    left_limit = margin_x
    tier = 0
    edge = float(width - margin_x)  # right edge of the free space in the current tier

    def tier_top(t: int) -> int:
        return margin_y + t * (tier_h + tier_gap)

    queue = list(items)
    counts = [True] * len(queue)
    if running_heading is not None and queue and queue[0][2] != "heading":
        queue.insert(0, (running_heading, "", "heading", []))
        counts.insert(0, False)
    taken = 0
    first_in_tier = True
    while queue:
        text, entity_id, role, fields = queue[0]
        if role == "heading":
            size = int(round(body * rng.uniform(1.3, 1.6)))
            need = size * 2.2 + name_pitch + body_pitch * _MIN_BODY_LINES  # a heading never ends a tier
            lines: list[str] = []
        else:
            lines = wrap_fields(fields, per_line)
            while len(lines) > _MAX_BODY_LINES and len(fields) > _MIN_BODY_LINES:
                fields = fields[:-1]
                lines = wrap_fields(fields, per_line)
            lines = lines[:_MAX_BODY_LINES]
            need = name_pitch + len(lines) * body_pitch
        if edge - need < left_limit:
            tier += 1
            if tier >= n_tiers:
                break
            edge, first_in_tier = float(width - margin_x), True
        top = tier_top(tier)
        if role == "heading":
            if not first_in_tier:
                edge -= body_pitch  # a blank column before a new section
            f = typeset.covering(name_font, text)
            ink = _fit_vertical(typeset, f, text, size, 0.15, True, tier_h - size, rng)
            x = int(round(edge - size * 1.1 - ink.shape[1] / 2))
            page.place(_Run(ink, text, "", "heading"), x, top + int(size * rng.uniform(0.5, 1.0)))
            edge -= size * 2.2
        else:
            if rules and not first_in_tier:
                xr = int(round(edge + entry_gap / 2))
                page.rule(xr, top, xr + max(1, body // 14), top + tier_h)
            f = name_font if rng.random() > 0.06 else typeset.fonts[int(rng.integers(len(typeset.fonts)))]
            f = typeset.covering(f, text)
            ink = _fit_vertical(typeset, f, text, name, spacing, name_bold, tier_h, rng)
            x = int(round(edge - name_pitch / 2 - ink.shape[1] / 2))
            page.place(_Run(ink, text, entity_id, "entry"), x, top)
            edge -= name_pitch
            for line in lines:
                ink = _fit_vertical(typeset, typeset.covering(font, line), line, body, spacing, False,
                                    tier_h - indent, rng)
                x = int(round(edge - body_pitch / 2 - ink.shape[1] / 2))
                page.place(_Run(ink, line, "", "body"), x, top + indent)
                edge -= body_pitch
            edge -= entry_gap
        first_in_tier = False
        queue.pop(0)
        taken += counts.pop(0)
    if rules:
        for t in range(1, n_tiers):
            yy = tier_top(t) - tier_gap // 2
            page.rule(margin_x - body // 2, yy, width - margin_x + body // 2, yy + max(2, body // 12))
    return page, taken


# ----------------------------------------------------------------------------------------------------- lists
def _layout_list_dense(
    title: tuple[str, str],
    sections: list[tuple[str, str, list[tuple[str, str]]]],
    typeset: _DenseTypeset,
    rng: np.random.Generator,
    scale: float,
    width: int,
) -> _Page:
    """One horizontal list page: title, then per section a heading and the partners inline (or one per line)."""
    size = int(round(rng.uniform(24, 32) * scale))
    font = typeset.fonts[int(rng.integers(len(typeset.fonts)))]
    head_font = typeset.fonts[int(rng.integers(len(typeset.fonts)))] if rng.random() < 0.5 else font
    spacing = float(rng.uniform(0.0, 0.06))
    margin = int(rng.uniform(95, 125) * scale)
    line_pitch = size * float(rng.uniform(1.75, 2.1))
    title_factor = rng.uniform(1.1, 1.2) if rng.random() < 1 / 3 else rng.uniform(1.4, 1.8)
    title_bold = rng.random() < 0.7
    heading_style = HEADING_STYLES[int(rng.integers(len(HEADING_STYLES)))]
    heading_inline = rng.random() < 0.4
    one_per_line = rng.random() < ONE_PER_LINE_SHARE
    separator = _pick_weighted(rng, SEPARATORS)
    modern_customer = rng.random() < 0.4
    placements: list[tuple[_Run, int, int]] = []
    stamps: list[tuple[np.ndarray, int, int]] = []
    right = width - margin

    title_size = int(round(size * title_factor))
    ink, _, _, _ = _render_segment(
        typeset, typeset.covering(head_font, title[0]), title[0], title_size, spacing, title_bold, rng
    )
    assert ink is not None  # a firm name always prints
    x0 = (width - ink.shape[1]) // 2 if rng.random() < 0.6 else margin
    y = margin
    placements.append((_Run(ink, title[0], title[1], "title"), x0, y))
    y += ink.shape[0] + int(size * rng.uniform(1.1, 1.6))
    for word, role, names in sections:
        if word == "販賣先" and modern_customer:
            word = "販売先"
        heading = heading_style.format(word)
        h_size = int(round(size * rng.uniform(1.0, 1.25)))
        h_ink, hdx, hdy, h_adv = _render_segment(
            typeset, typeset.covering(head_font, heading), heading, h_size, 0.05, rng.random() < 0.6, rng
        )
        assert h_ink is not None
        line_top = float(y)
        placements.append((_Run(h_ink, heading, "", "heading"), margin + hdx, int(line_top + hdy)))
        indent = int(size * rng.uniform(0.8, 1.6))
        if heading_inline and not one_per_line:
            pen = margin + h_adv + size * rng.uniform(0.6, 1.2)
        else:
            line_top += max(h_size, h_ink.shape[0]) * 1.0 + size * rng.uniform(0.5, 0.9)
            pen = float(margin + indent)
        line_start = float(margin + indent)
        for i, (text, entity_id) in enumerate(names):
            f = font if rng.random() > 0.06 else typeset.fonts[int(rng.integers(len(typeset.fonts)))]
            n_ink, ndx, ndy, n_adv = _render_segment(
                typeset, typeset.covering(f, text), text, size, spacing, False, rng
            )
            assert n_ink is not None
            sep = None
            if not one_per_line and i + 1 < len(names):
                sep = _render_segment(typeset, font, separator, size, 0.0, False, rng)
            need = n_adv + (sep[3] if sep is not None else 0.0)
            if one_per_line and i > 0 or pen + need > right and pen > line_start:
                line_top += line_pitch
                pen = line_start
            baseline_top = int(round(line_top))
            placements.append((_Run(n_ink, text, entity_id, role), int(round(pen)) + ndx, baseline_top + ndy))
            pen += n_adv + size * 0.05
            if sep is not None:
                s_ink, sdx, sdy, s_adv = sep
                if s_ink is not None:
                    stamps.append((s_ink, int(round(pen)) + sdx, baseline_top + sdy))
                pen += s_adv + size * rng.uniform(0.0, 0.15)
        y = int(line_top + line_pitch + size * rng.uniform(0.6, 1.2))
    height = int(min(max(1240 * scale, y + margin + rng.uniform(0, 200) * scale), 1754 * scale))
    height = max(height, y + margin)
    page = _Page(width, height)
    for run, x, yy in placements:
        page.place(run, x, yy)
    for ink, x, yy in stamps:
        _stamp(page, ink, x, yy)
    return page


# ------------------------------------------------------------------------------------------------- saving
#: Share of pages that lie badly askew on the glass (up to MAX_SKEW degrees); the others lie within 1 degree.
SKEWED_SHARE = 0.25
MAX_SKEW = 3.0


def _max_angle(rng: np.random.Generator) -> float:
    """Largest rotation of one page, in degrees."""
    return MAX_SKEW if rng.random() < SKEWED_SHARE else 1.0


def _save_page(folder: Path, stem: str, image: np.ndarray, rng: np.random.Generator) -> str:
    """Save a page as PNG, JPEG or TIFF (drawn from ``rng``); returns the file name."""
    suffix = _pick_weighted(rng, PAGE_FORMATS)
    params: list[int] = []
    if suffix == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    elif suffix == ".jpg":
        params = [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(55, 91))]
    ok, buf = cv2.imencode(suffix, image, params)
    if not ok:
        raise OSError(f"could not encode {folder / (stem + suffix)}")
    (folder / (stem + suffix)).write_bytes(buf.tobytes())
    return stem + suffix


# ------------------------------------------------------------------------------------------------- corpus
def generate_dense(
    out: Path,
    *,
    seed: int,
    n_firms: int,
    n_list_pages: int,
    families: tuple[str, ...],
    fonts: tuple[FontFile, ...],
    vocabulary: Vocabulary,
    duplicate_share: float,
    absent_share: float,
    names_per_list: tuple[int, int],
    scale: float,
    noise: float,
    t0: float,
) -> CorpusSummary:
    """Write the dense two-source corpus under ``out`` (arguments checked by ``generate_corpus``).

    The firms, the directory's sections and entries, and every list page's reporting firm and partners are the
    sparse style's for the same arguments; layout, typefaces, body text and degradation differ.

    Returns:
        A CorpusSummary (``style="dense"``, with the families that set text and the body-line count).
    """
    typeset = _DenseTypeset(fonts)
    population = _Population.draw(seed, n_firms, vocabulary, duplicate_share)
    directory, absent, universe = population.directory, population.absent, population.universe
    items = population.directory_items()

    # Body text of each entry: its own randomness, independent of the layout.
    dense_items: list[tuple[str, str, str, list[str]]] = []
    prefecture = ""
    for k, (text, entity_id, role) in enumerate(items):
        if role == "heading":
            prefecture = text.removesuffix("之部")
            dense_items.append((text, entity_id, role, []))
            continue
        erng = np.random.default_rng([seed, 3, k, 0x454E54])
        partners = [
            mention(directory[int(j)], erng, "directory")
            for j in erng.choice(len(directory), size=min(6, len(directory)), replace=False)
            if directory[int(j)].entity_id != entity_id
        ]
        dense_items.append((text, entity_id, role, entry_fields(erng, prefecture, partners)))

    width = int(round(1240 * scale))
    height = int(round(1700 * scale))
    dir_pages = _prepare_source(out, "firm_directory")
    dir_rows: list[dict[str, object]] = []
    page_no, pos, current_heading = 0, 0, None
    back: np.ndarray | None = None
    while pos < len(dense_items):
        page_no += 1
        prng = _page_rng(seed, 11, page_no)
        page, taken = _layout_directory_dense(dense_items[pos:], typeset, prng, scale, width, height, current_heading)
        if taken == 0:
            raise ValueError("a directory page holds no entry; increase scale or reduce the type size")
        for text, _, role, _ in dense_items[pos : pos + taken]:
            if role == "heading":
                current_heading = text
        pos += taken
        bleed = back if back is not None else page.ink  # the first page shows its own text through
        image, matrix = _degrade(page, prng, noise, max_angle=_max_angle(prng), bleed=bleed)
        back = page.ink
        file = _save_page(dir_pages, f"page_{page_no:03d}", image, prng)
        dir_rows.extend(_labels_for(page, matrix, image.shape, file))
    _write_labels(out / "firm_directory" / "labels.csv", dir_rows)

    list_pages = _prepare_source(out, "supplier_lists")
    list_rows: list[dict[str, object]] = []
    n_mentions = n_absent_mentions = n_changed = 0
    directory_ids = {f.entity_id for f in directory}
    canonical = {f.entity_id: f.canonical for f in universe}
    back = None
    for p in range(1, n_list_pages + 1):
        prng = _page_rng(seed, 2, p)
        title, page_sections = population.list_content(prng, names_per_list, absent_share)
        page = _layout_list_dense(title, page_sections, typeset, prng, scale, width)
        bleed = back if back is not None else page.ink  # the first page shows its own text through
        image, matrix = _degrade(page, prng, noise, max_angle=_max_angle(prng), bleed=bleed)
        back = page.ink
        file = _save_page(list_pages, f"page_{p:03d}", image, prng)
        rows = _labels_for(page, matrix, image.shape, file)
        list_rows.extend(rows)
        n_mentions, n_absent_mentions, n_changed = tally_mentions(
            rows, directory_ids, canonical, (n_mentions, n_absent_mentions, n_changed)
        )
    _write_labels(out / "supplier_lists" / "labels.csv", list_rows)
    (out / "sources.yaml").write_text(SOURCES_YAML_DENSE, encoding="utf-8")

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
        style="dense",
        fonts_used=tuple(sorted(typeset.used)),
        n_body_lines=sum(1 for r in dir_rows if r["role"] == "body"),
    )
    logger.info(
        "wrote dense corpus to %s: %d directory pages (%d entries, %d body lines), %d list pages (%d mentions) "
        "in %.1f s",
        out, page_no, summary.n_directory_entries, summary.n_body_lines, n_list_pages, n_mentions, summary.seconds,
    )
    return summary
