"""Synthetic book pages of running prose, for training the line classifier on text that is neither list nor entry.

The firm directories and supply-chain lists of :mod:`.corpus` and :mod:`.dense` hold titles, headings, entries and
the short body lines of entries. Real books that mention firms are mostly running prose: every line the same size,
full measure except the last line of a paragraph, a one-em indent at each paragraph, a few section headings (often
letter-spaced, ``3.　鰯　鯨``), a page number near a top corner and, here and there, ruby (furigana). A classifier
that never saw such pages calls the short last lines of paragraphs ``entry``. :func:`generate_prose` writes two
document sources of such pages in the contract of DESIGN section 4::

    out_dir/sources.yaml
    out_dir/prose_horizontal/pages/page_001.png ...   horizontal; a third of them two-page spreads with a gutter
    out_dir/prose_horizontal/labels.csv
    out_dir/prose_vertical/pages/page_001.png ...     vertical columns, right to left
    out_dir/prose_vertical/labels.csv

Labels: role ``body`` for every printed prose line and for the page number, ``heading`` for section headings;
ruby is printed but never labelled (it is not a line). Boxes are tight around the ink after the page's scan
transform, ``x1``/``y1`` exclusive, exactly as the other synthetic corpora write them.

The prose is built from the vocabulary of :mod:`.entries` and :mod:`.firms` (places, dates, lines of business,
banks, people, firm names) in sentences with the particles の、は、を、に、が、て、で, a 、 every 5 to 15
characters and 。 at the end. Characters are set one by one on a fixed grid (a Japanese compositor's em cells, so
full lines are justified); vertical setting turns brackets and long-vowel marks and moves small kana and
punctuation as :mod:`.corpus` does. Everything is a function of ``seed``: the same arguments give byte-identical
files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from linkage_pipeline.synthetic.corpus import (
    _EM_ASCENT,
    _PREFECTURES,
    _PUNCT_IN_VERTICAL,
    _ROTATE_IN_VERTICAL,
    _SMALL_KANA,
    _degrade,
    _labels_for,
    _Page,
    _prepare_source,
    _Run,
    _write_labels,
)
from linkage_pipeline.synthetic.dense import _DenseTypeset, _pick_weighted, _stamp
from linkage_pipeline.synthetic.entries import (
    _BANKS,
    _CITIES,
    _FACTORIES,
    _LINES_OF_BUSINESS,
    _TOWNS,
    _capital,
    _date,
    _person,
    kanji_number,
)
from linkage_pipeline.synthetic.firms import Firm, generate_firms, mention
from linkage_pipeline.synthetic.fonts import (
    DENSE_DEMO_FONTS,
    DENSE_HELDOUT_FONTS,
    HELDOUT_FONTS,
    FontFile,
    resolve_fonts,
)

logger = logging.getLogger(__name__)

__all__ = ["PROSE_SOURCES", "RUBY_WORDS", "SOURCES_YAML_PROSE", "generate_prose"]

SOURCES_YAML_PROSE = """\
sources:
  prose_horizontal: {role: query, direction: horizontal, language: jpn, layout: ppocr, ocr: [rapidocr]}
  prose_vertical: {role: target, direction: vertical, language: jpn, layout: ppocr, ocr: [rapidocr]}
linkages: []
"""
#: The two sources :func:`generate_prose` writes, with their text direction.
PROSE_SOURCES: tuple[tuple[str, str], ...] = (("prose_horizontal", "horizontal"), ("prose_vertical", "vertical"))
#: Words that get ruby (furigana) on pages that print it, with their readings.
RUBY_WORDS: dict[str, str] = {
    "鯨": "くじら", "鰯": "いわし", "鮪": "まぐろ", "鰹": "かつお", "鱈": "たら", "鰊": "にしん", "鯖": "さば",
    "捕鯨": "ほげい", "鯨油": "げいゆ", "漁獲": "ぎょかく", "紡績": "ぼうせき", "釀造": "じょうぞう",
    "醤油": "しょうゆ", "燐寸": "マッチ", "曹達": "ソーダ", "瓦斯": "ガス", "硝子": "ガラス", "護謨": "ゴム",
    "煉瓦": "れんが", "坩堝": "るつぼ", "罐詰": "かんづめ", "斡旋": "あっせん", "逼迫": "ひっぱく",
}
#: Share of horizontal pages that are two-page spreads (2000 x 1400 with a gutter shadow).
SPREAD_SHARE = 1 / 3
#: Share of pages that print ruby.
RUBY_SHARE = 0.35
#: Page file formats and their drawing weights.
PAGE_FORMATS: tuple[tuple[str, float], ...] = ((".png", 0.6), (".jpg", 0.4))
_SINGLE = (1240, 1700)
_SPREAD = (2000, 1400)
#: Characters a line never starts with: they hang in the margin at the end of the line before.
_NO_LINE_START = set("、。，．）」』")

# ------------------------------------------------------------------------------------------------ vocabulary
_WHALES: tuple[str, ...] = ("長須鯨", "鰯鯨", "抹香鯨", "座頭鯨", "白長須鯨", "背美鯨", "小鰯鯨", "北極鯨")
_FISH: tuple[str, ...] = ("鰯", "鮪", "鰹", "鱈", "鰊", "鯖", "鯨")
_NOUNS: tuple[str, ...] = (
    "生産高", "販賣高", "從業員", "輸出", "原料", "製品", "價格", "需要", "設備", "資本", "利益", "配當", "技術",
    "市場", "取引", "漁獲", "鯨油", "捕鯨", "燐寸", "曹達", "瓦斯", "硝子", "護謨", "煉瓦", "罐詰", "醤油", "紡績",
)
_CONNECTIVES: tuple[str, ...] = (
    "其の後", "然るに", "又", "當時", "戰後", "次いで", "更に", "從って", "一方", "殊に", "爾來", "此の間",
    "然しながら", "其の結果", "之に對して",
)
_VERBS_OBJECT: tuple[str, ...] = (
    "擴張した", "開始した", "買收した", "増加させた", "輸入してゐた", "整備した", "計畫した", "繼承した",
    "改めた", "行ってゐる", "設けた", "手掛けた", "中止した", "再開した", "統合した",
)
_VERBS_SUBJECT: tuple[str, ...] = (
    "設立された", "發展した", "増加した", "減少した", "回復した", "移轉した", "合併した", "著しく伸びた",
    "再開された", "解散した", "停滞した", "倍加した", "半減した",
)
_REGIONS: tuple[str, ...] = ("關東", "關西", "東北", "九州", "北陸", "東海", "中國", "四國", "北海道", "近畿")
_HEADING_TOPICS: tuple[str, ...] = (
    "沿革", "營業の概況", "資本と經營", "工場の分布", "輸出入の推移", "原料の供給", "販賣の組織", "勞務事情",
    "金融關係", "技術の導入", "戰後の復興", "統制と解除", "漁業の現状", "捕鯨の歴史", "結語", "序説",
)


@dataclass(frozen=True)
class _Vocab:
    """What one corpus's prose talks about: its firms (drawn once from ``seed``)."""

    firms: tuple[Firm, ...]


class _Prose:
    """Sentences and paragraphs of one page, drawn from the page's randomness."""

    def __init__(self, vocab: _Vocab, rng: np.random.Generator) -> None:
        self.vocab = vocab
        self.rng = rng
        self.prefecture = str(_PREFECTURES[int(rng.integers(len(_PREFECTURES)))])

    def _pick(self, pool: Sequence[str]) -> str:
        return str(pool[int(self.rng.integers(len(pool)))])

    def firm(self) -> str:
        return mention(self.vocab.firms[int(self.rng.integers(len(self.vocab.firms)))], self.rng, "directory")

    def place(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            return self.prefecture + self._pick(_CITIES)
        if r < 0.7:
            return self._pick(_CITIES) + self._pick(_TOWNS)
        return self._pick(_FACTORIES)

    def time(self) -> str:
        return _date(self.rng) if self.rng.random() < 0.7 else self._pick(("戰前", "戰後", "大戰中", "終戰直後", "近年"))

    def _sentence_chunks(self) -> list[str]:
        """One sentence as pieces that each end where a 、 may follow (the last ends the sentence)."""
        r = self.rng
        kind = int(r.integers(8))
        chunks: list[str] = []
        if r.random() < 0.3:
            chunks.append(self._pick(_CONNECTIVES))
        if kind == 0:
            chunks += [self.firm() + "は", self.time() + "に", self.place() + "に於て",
                       self._pick(_NOUNS) + "の" + self._pick(("製造", "販賣", "輸出", "研究")) + "を",
                       self._pick(_VERBS_OBJECT)]
        elif kind == 1:
            chunks += [self.time() + "、" + self.firm() + "が", self._pick(_BANKS) + "の融資を得て",
                       self._pick(_FACTORIES) + "に工場を設けたのは", self._pick(_LINES_OF_BUSINESS) + "の需要が",
                       "増加した爲である"]
        elif kind == 2:
            chunks += [self.firm() + "の" + self._pick(_NOUNS) + "は", self.time() + "に比べて",
                       kanji_number(int(r.integers(2, 10))) + "割程度", self._pick(("増加した", "減少した",
                                                                                    "伸びてゐる", "落ちてゐる"))]
        elif kind == 3:
            chunks += [self.place() + "に本店を置く" + self.firm() + "は", "資本金" + _capital(r) + "を以て",
                       _date(r) + "に設立され", self._pick(_LINES_OF_BUSINESS) + "を營んでゐる"]
        elif kind == 4:
            chunks += [self._pick(_FISH) + "の漁獲は", self.time() + "以來", "年々" + self._pick(_VERBS_SUBJECT)
                       .removesuffix("た") + "て", self.firm() + "は", "その加工に當って",
                       self._pick(_NOUNS) + "を", self._pick(_VERBS_OBJECT)]
        elif kind == 5:
            chunks += [_person(r) + "は", self.firm() + "の社長として", self._pick(_NOUNS) + "の整備に努め",
                       self.time() + "には", self._pick(_NOUNS) + "を", self._pick(_VERBS_OBJECT)]
        elif kind == 6:
            chunks += ["此の地方の" + self._pick(_LINES_OF_BUSINESS) + "は", self.firm() + "及び",
                       self.firm() + "の二社によって", "占められてゐた"]
        else:
            chunks += [self._pick(_REGIONS) + "に於ける", self._pick(_WHALES) + "の", "捕獲頭數は",
                       self.time() + "で", kanji_number(int(r.integers(20, 3000))) + "頭に",
                       self._pick(("達した", "過ぎなかった", "及んだ"))]
        return chunks

    def sentence(self) -> str:
        """A sentence with a 、 every 5 to 15 characters (at a piece boundary) and a 。 at the end."""
        chunks = self._sentence_chunks()
        out, since = "", 0
        limit = int(self.rng.integers(5, 16))
        for i, chunk in enumerate(chunks):
            out += chunk
            since = len(chunk) - chunk.rindex("、") - 1 if "、" in chunk else since + len(chunk)
            if i + 1 < len(chunks) and since >= limit:
                out += "、"
                since, limit = 0, int(self.rng.integers(5, 16))
        return out + "。"

    def paragraph(self) -> str:
        return "".join(self.sentence() for _ in range(int(self.rng.integers(2, 7))))

    def heading(self, vertical: bool) -> str:
        """A section heading: a number, then a topic; short ones sometimes letter-spaced (``3.　鰯　鯨``)."""
        r = self.rng
        n = int(r.integers(1, 13))
        kanji = kanji_number(n)
        styles = ["第{k}章　", "第{k}節　", "{k}、", "（{k}）", "{k}　"]
        if not vertical:
            styles += ["{n}.　", "{n}．", "{n}　"]
        number = self._pick(styles).format(k=kanji, n=n)
        r2 = r.random()
        if r2 < 0.35:
            topic = self._pick(_WHALES)
        elif r2 < 0.7:
            topic = self._pick(_HEADING_TOPICS)
        elif r2 < 0.85:
            topic = self._pick(_LINES_OF_BUSINESS)
        else:
            topic = mention(self.vocab.firms[int(r.integers(len(self.vocab.firms)))], r, "directory") + "の沿革"
        if len(topic) <= 5 and r.random() < 0.6:
            topic = "\u3000".join(topic)
            number = number.rstrip("\u3000") + "\u3000"
        return number + topic


def _wrap(text: str, per_line: int, indent: bool) -> list[tuple[int, str]]:
    """Break a paragraph into lines of ``per_line`` cells: ``(first cell, text)``; 、。 never start a line."""
    lines: list[tuple[int, str]] = []
    pos, first = 0, True
    while pos < len(text):
        start = 1 if first and indent else 0
        end = min(len(text), pos + per_line - start)
        while end < len(text) and text[end] in _NO_LINE_START:
            end += 1  # hanging punctuation (burasage)
        lines.append((start, text[pos:end]))
        pos, first = end, False
    return lines


# ------------------------------------------------------------------------------------------------ rendering
def _render_line(
    typeset: _DenseTypeset,
    font: FontFile,
    text: str,
    size: int,
    pitch: float,
    direction: str,
    bold: bool,
    rng: np.random.Generator,
) -> tuple[np.ndarray | None, int, int]:
    """Set ``text`` character by character in cells of ``pitch`` pixels along the line.

    The origin is the top-left corner of the first cell's em box. Full-width characters are centred in their
    em; Latin letters and digits (horizontal only) advance by their own width; blanks leave their cell empty.

    Returns:
        ``(ink, dx, dy)``: float32 ink in [0, 1] cropped tight (``None`` if nothing prints) and the offset of
        its top-left corner from the origin.
    """
    pad = size
    length = int(len(text) * max(pitch, float(size)) + 2 * pad) + 1
    shape = (length, 3 * size) if direction == "horizontal" else (3 * size, length)
    canvas = Image.new("L", shape, 0)
    draw = ImageDraw.Draw(canvas)
    stroke = max(1, round(size / 36)) if bold else 0
    pen = 0.0
    for ch in text:
        if ch == " ":
            pen += size * 0.3
            continue
        if ch.isspace():
            pen += pitch
            continue
        face = typeset.face(font, ch, size)
        shade = int(255 * rng.uniform(0.86, 1.0))  # letterpress: each type prints a little differently
        jitter = float(rng.normal(0.0, 0.35))
        adv = face.getlength(ch)
        if direction == "horizontal":
            baseline = pad + _EM_ASCENT * size + jitter
            if ord(ch) < 0x2E80:  # Latin: proportional
                draw.text((pad + pen, baseline), ch, font=face, fill=shade, anchor="ls",
                          stroke_width=stroke, stroke_fill=shade)
                pen += adv + size * 0.05
            else:
                draw.text((pad + pen + (size - adv) / 2, baseline), ch, font=face, fill=shade, anchor="ls",
                          stroke_width=stroke, stroke_fill=shade)
                pen += pitch
            continue
        centre_x = pad + size / 2 + jitter
        top = pad + pen
        if ch in _ROTATE_IN_VERTICAL:
            cell = Image.new("L", (size * 2, size * 2), 0)
            ImageDraw.Draw(cell).text((size, size), ch, font=face, fill=shade, anchor="mm", stroke_width=stroke)
            cell = cell.rotate(-90, resample=Image.Resampling.BILINEAR)
            canvas.paste(cell, (int(round(centre_x - size)), int(round(top + size / 2 - size))), cell)
        else:
            dx, dy = (0.12 * size, -0.12 * size) if ch in _SMALL_KANA else (0.0, 0.0)
            if ch in _PUNCT_IN_VERTICAL:
                dx, dy = (0.55 * size, -0.6 * size)
            draw.text((centre_x - adv / 2 + dx, top + _EM_ASCENT * size + dy), ch, font=face, fill=shade,
                      anchor="ls", stroke_width=stroke, stroke_fill=shade)
        pen += pitch
    arr = np.asarray(canvas, dtype=np.float32) / 255.0
    mask = arr > 0.25
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None, 0, 0
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    return arr[y0 : y1 + 1, x0 : x1 + 1], x0 - pad, y0 - pad


@dataclass
class _PageStyle:
    """Typographic choices of one page."""

    font: FontFile
    head_font: FontFile
    size: int
    pitch: float  # cell pitch along the line
    line_pitch: float  # from one line to the next
    ruby: bool
    head_bold: bool
    headings_left: int
    spacing_heads: float  # extra letter spacing of headings, in ems


@dataclass
class _Composer:
    """Places lines, headings and ruby on one page and counts what it placed."""

    page: _Page
    typeset: _DenseTypeset
    rng: np.random.Generator
    direction: str
    style: _PageStyle
    prose: _Prose
    n_ruby: int = 0
    stamps: list[tuple[np.ndarray, int, int]] = field(default_factory=list)

    def _place(self, ink: np.ndarray, text: str, role: str, x: int, y: int) -> None:
        self.page.place(_Run(ink, text, "", role), x, y)

    def _ruby(self, text: str, first_cell: int, ox: float, oy: float) -> None:
        """Ruby over the words of :data:`RUBY_WORDS` in a line whose origin is ``(ox, oy)``."""
        s = self.style
        rsize = max(8, int(round(s.size * 0.5)))
        taken: list[tuple[float, float]] = []  # spans (in cells) already under ruby
        for word, reading in RUBY_WORDS.items():
            start = text.find(word)
            if start < 0 or self.rng.random() < 0.3:
                continue
            if any(word != w and word in w and w in text for w in RUBY_WORDS):
                continue  # the longer word (捕鯨 over 鯨) gets the ruby
            middle = first_cell + start + len(word) / 2
            half = max(len(word), len(reading) / 2) / 2 + 0.1
            if any(middle - half < b and a < middle + half for a, b in taken):
                continue  # two rubies never overlap
            taken.append((middle - half, middle + half))
            ink, _, _ = _render_line(self.typeset, s.font, reading, rsize, float(rsize), self.direction, False,
                                     self.rng)
            if ink is None:
                continue
            centre = middle * s.pitch - (s.pitch - s.size) / 2
            if self.direction == "horizontal":
                x = int(round(ox + centre - ink.shape[1] / 2))
                y = int(round(oy - 0.1 * s.size - ink.shape[0]))
            else:
                x = int(round(ox + 1.08 * s.size))
                y = int(round(oy + centre - ink.shape[0] / 2))
            self.stamps.append((ink, x, y))
            self.n_ruby += 1

    def fill(self, block: tuple[int, int, int, int], continuation: bool) -> None:
        """Fill ``block`` (x0, y0, x1, y1) with paragraphs and headings."""
        s, rng = self.style, self.rng
        x0, y0, x1, y1 = block
        vertical = self.direction == "vertical"
        along = (y1 - y0) if vertical else (x1 - x0)
        across = (x1 - x0) if vertical else (y1 - y0)
        per_line = int(along // s.pitch)

        def origin(cross: float, thickness: int, cell: float) -> tuple[float, float]:
            if vertical:
                return x1 - cross - thickness, y0 + cell
            return x0 + cell, y0 + cross

        cross = 0.0
        first = True
        while True:
            if s.headings_left > 0 and rng.random() < (0.4 if not first else 0.2):
                h_size = int(round(s.size * rng.uniform(1.0, 1.3)))
                above = 0.0 if first else s.line_pitch * float(rng.uniform(0.6, 1.6))
                below = s.line_pitch * float(rng.uniform(0.4, 0.8))
                if cross + above + h_size + below + 2 * s.line_pitch <= across:
                    text = self.prose.heading(vertical)
                    h_pitch = h_size * (1 + s.spacing_heads)
                    ink, dx, dy = _render_line(self.typeset, s.head_font, text, h_size, h_pitch, self.direction,
                                               s.head_bold, rng)
                    assert ink is not None  # a heading always has printing characters
                    extent = ink.shape[0] if vertical else ink.shape[1]
                    lead = dy if vertical else dx
                    if extent < along:
                        if rng.random() < 0.4:
                            cell = (along - extent) / 2 - lead
                        else:
                            cell = s.pitch * int(rng.integers(0, 4))
                            if cell + lead + extent > along:
                                cell = -lead
                        ox, oy = origin(cross + above, h_size, cell)
                        self._place(ink, text, "heading", int(round(ox + dx)), int(round(oy + dy)))
                        cross += above + h_size + below
                        s.headings_left -= 1
            lines = _wrap(self.prose.paragraph(), per_line, indent=True)
            if first and continuation and len(lines) > 1:
                lines = [(0, t) for _, t in lines[int(rng.integers(1, len(lines))):]]
            for cell, text in lines:
                if cross + s.size > across:
                    return
                ox, oy = origin(cross, s.size, cell * s.pitch)
                ink, dx, dy = _render_line(self.typeset, s.font, text, s.size, s.pitch, self.direction, False, rng)
                if ink is not None:
                    self._place(ink, text, "body", int(round(ox + dx)), int(round(oy + dy)))
                    if s.ruby:
                        self._ruby(text, 0, ox, oy)
                cross += s.line_pitch
            first = False

    def page_number(self, number: int, x_edge: int, right: bool, margin_y: int, kanji: bool) -> None:
        """The page number near a top corner, its outer edge at ``x_edge``."""
        s, rng = self.style, self.rng
        text = kanji_number(number) if kanji else str(number)
        size = int(round(s.size * rng.uniform(0.75, 1.0)))
        ink, _, _ = _render_line(self.typeset, s.font, text, size, float(size), "horizontal", False, rng)
        assert ink is not None
        bottom = margin_y - 0.9 * s.size - rng.uniform(0.0, 0.4) * s.size
        y = max(6, int(round(bottom - ink.shape[0])))
        x = x_edge - ink.shape[1] if right else x_edge
        self._place(ink, text, "body", int(x), y)

    def finish(self) -> None:
        for ink, x, y in self.stamps:
            _stamp(self.page, ink, x, y)


def _page_style(typeset: _DenseTypeset, rng: np.random.Generator) -> _PageStyle:
    fonts = typeset.fonts
    font = fonts[int(rng.integers(len(fonts)))]
    head_font = fonts[int(rng.integers(len(fonts)))] if rng.random() < 0.5 else font
    size = int(rng.integers(22, 33))
    ruby = bool(rng.random() < RUBY_SHARE)
    low = 1.7 if ruby else 1.4  # ruby needs room between the lines
    return _PageStyle(
        font=font,
        head_font=head_font,
        size=size,
        pitch=size * (1 + float(rng.uniform(0.0, 0.08))),
        line_pitch=size * float(rng.uniform(low, 1.9)),
        ruby=ruby,
        head_bold=bool(rng.random() < 0.4),
        headings_left=int(rng.integers(0, 4)),
        spacing_heads=float(rng.uniform(0.0, 0.3)) if rng.random() < 0.4 else 0.0,
    )


def _gutter(image: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Darken the middle of a spread: the paper curves into the binding."""
    w = image.shape[1]
    strength = min(noise, 1.5)
    if strength <= 0:
        return image
    cx = w / 2 + float(rng.uniform(-8, 8))
    x = np.arange(w, dtype=np.float32) - cx
    narrow = float(rng.uniform(0.25, 0.5)) * np.exp(-((x / float(rng.uniform(14, 30))) ** 2))
    broad = float(rng.uniform(0.05, 0.12)) * np.exp(-((x / float(rng.uniform(60, 100))) ** 2))
    shade = 1.0 - strength * (narrow + broad)
    out = image.astype(np.float32) * shade[None, :]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _save(folder: Path, stem: str, image: np.ndarray, rng: np.random.Generator) -> str:
    """Save a page as PNG or JPEG (drawn from ``rng``); returns the file name."""
    suffix = _pick_weighted(rng, PAGE_FORMATS)
    params = [cv2.IMWRITE_PNG_COMPRESSION, 3] if suffix == ".png" else [cv2.IMWRITE_JPEG_QUALITY,
                                                                         int(rng.integers(60, 92))]
    ok, buf = cv2.imencode(suffix, image, params)
    if not ok:
        raise OSError(f"could not encode {folder / (stem + suffix)}")
    (folder / (stem + suffix)).write_bytes(buf.tobytes())
    return stem + suffix


def _compose(
    typeset: _DenseTypeset, vocab: _Vocab, rng: np.random.Generator, direction: str, spread: bool
) -> _Composer:
    """One page of prose, composed but not yet degraded (its page, its ruby count)."""
    width, height = _SPREAD if spread else _SINGLE
    style = _page_style(typeset, rng)
    comp = _Composer(_Page(width, height), typeset, rng, direction, style, _Prose(vocab, rng))
    margin_y = int(rng.uniform(110, 150))
    number = int(rng.integers(2, 400))
    kanji = bool(rng.random() < 0.35)
    if spread:
        outer, inner = int(rng.uniform(80, 120)), int(rng.uniform(90, 130))
        half = width // 2
        number -= number % 2
        for k, (bx0, bx1) in enumerate(((outer, half - inner), (half + inner, width - outer))):
            per_line = int((bx1 - bx0) // style.pitch)
            bx1 = bx0 + int(np.ceil(per_line * style.pitch))
            comp.fill((bx0, margin_y, bx1, height - margin_y), continuation=k == 0 or rng.random() < 0.7)
            comp.page_number(number + k, bx0 if k == 0 else bx1, k == 1, margin_y, kanji)
        return comp
    margin_x = int(rng.uniform(100, 150))
    bx0, by0, bx1, by1 = margin_x, margin_y, width - margin_x, height - int(rng.uniform(110, 150))
    if direction == "horizontal":
        per_line = int((bx1 - bx0) // style.pitch)
        bx1 = bx0 + int(np.ceil(per_line * style.pitch))
    else:
        per_line = int((by1 - by0) // style.pitch)
        by1 = by0 + int(np.ceil(per_line * style.pitch))
    comp.fill((bx0, by0, bx1, by1), continuation=rng.random() < 0.7)
    right = bool(number % 2 == (0 if direction == "vertical" else 1))
    comp.page_number(number, bx1 if right else bx0, right, margin_y, kanji)
    return comp


def generate_prose(
    out_dir: str | Path,
    *,
    seed: int,
    n_pages: int = 40,
    fonts: Sequence[str] | None = None,
    noise: float = 1.0,
) -> dict[str, object]:
    """Write two sources of synthetic book prose (horizontal and vertical pages) under ``out_dir``.

    Args:
        out_dir: Folder to write; created if missing. Existing pages of the two sources are replaced.
        seed: Seed of everything (text, layout, typefaces, noise).
        n_pages: Pages in all (``>= 2``): ``ceil(n_pages / 2)`` horizontal (a third of them two-page spreads)
            and ``floor(n_pages / 2)`` vertical.
        fonts: Font family names or font files; default
            :data:`~linkage_pipeline.synthetic.fonts.DENSE_DEMO_FONTS`. Held-out families are refused.
        noise: Scan degradation strength; 1.0 for training, 0.0 for clean renderings (no skew, no gutter shadow).

    Returns:
        A summary: ``pages`` per source, ``labels`` per role, ``spreads``, ``ruby`` (ruby words printed),
        ``ruby_pages`` (``source/file`` of pages with ruby), ``fonts_used`` and ``seconds``.

    Raises:
        ValueError: If an argument is out of range or names a held-out typeface.
        MissingFontError: If a requested font family is not installed.
    """
    t0 = time.perf_counter()
    if n_pages < 2:
        raise ValueError(f"n_pages must be >= 2 (one page per source at least), got {n_pages}")
    if not 0.0 <= noise <= 2.0:
        raise ValueError(f"noise must be in [0, 2], got {noise}")
    if isinstance(fonts, str):
        raise ValueError(f"fonts must be a sequence of family names, got the string {fonts!r}; wrap it in a list")
    families = tuple(fonts) if fonts is not None else DENSE_DEMO_FONTS
    held = sorted(set(families) & (set(DENSE_HELDOUT_FONTS) | set(HELDOUT_FONTS)))
    if held:
        raise ValueError(f"fonts {held} are held out for evaluation; training prose must not use them")
    typeset = _DenseTypeset(resolve_fonts(families))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = _Vocab(tuple(generate_firms(60, seed, vocabulary="train")))

    counts = {"horizontal": (n_pages + 1) // 2, "vertical": n_pages // 2}
    pages: dict[str, int] = {}
    labels: dict[str, int] = {"body": 0, "heading": 0}
    ruby_pages: list[str] = []
    n_spreads = n_ruby = 0
    for code, (name, direction) in enumerate(PROSE_SOURCES, start=1):
        folder = _prepare_source(out, name)
        rows: list[dict[str, object]] = []
        back: np.ndarray | None = None
        for p in range(1, counts[direction] + 1):
            rng = np.random.default_rng([seed, code, p, 0x50524F53])
            spread = direction == "horizontal" and rng.random() < SPREAD_SHARE
            comp = _compose(typeset, vocab, rng, direction, spread)
            comp.finish()
            max_angle = 2.0 if rng.random() < 0.3 else 1.0
            bleed = back if back is not None and back.shape == comp.page.ink.shape else comp.page.ink
            image, matrix = _degrade(comp.page, rng, noise, max_angle=max_angle, bleed=bleed)
            back = comp.page.ink
            if spread:
                image = _gutter(image, rng, noise)
                n_spreads += 1
            file = _save(folder, f"page_{p:03d}", image, rng)
            page_rows = _labels_for(comp.page, matrix, image.shape, file)
            rows.extend(page_rows)
            for r in page_rows:
                labels[str(r["role"])] += 1
            if comp.n_ruby:
                ruby_pages.append(f"{name}/{file}")
                n_ruby += comp.n_ruby
        _write_labels(out / name / "labels.csv", rows)
        pages[name] = counts[direction]
    (out / "sources.yaml").write_text(SOURCES_YAML_PROSE, encoding="utf-8")
    summary: dict[str, object] = {
        "out_dir": str(out),
        "seed": seed,
        "pages": pages,
        "labels": labels,
        "spreads": n_spreads,
        "ruby": n_ruby,
        "ruby_pages": ruby_pages,
        "fonts_used": sorted(typeset.used),
        "seconds": time.perf_counter() - t0,
    }
    logger.info(
        "wrote prose to %s: %s pages, %s labels, %d spreads, %d ruby words in %.1f s",
        out, pages, labels, n_spreads, n_ruby, summary["seconds"],
    )
    return summary
