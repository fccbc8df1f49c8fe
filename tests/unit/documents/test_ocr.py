"""Unit tests of linkage_pipeline.documents.ocr: both engines on rendered firm names, failure handling, the factory."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from rapidfuzz.distance import Levenshtein

from linkage_pipeline.documents import ocr
from linkage_pipeline.documents.ocr import (
    ENGINES,
    EngineUnavailableError,
    OcrEngine,
    OcrResult,
    RapidOcrEngine,
    TesseractEngine,
    check_engine_available,
    make_engine,
)

FONT_FILES = [
    "/usr/share/fonts/opentype/ipafont-mincho/ipam.ttf",
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
]
FONTS = [path for path in FONT_FILES if Path(path).exists()]
needs_fonts = pytest.mark.skipif(not FONTS, reason="no Japanese font installed (fonts-ipafont, fonts-noto-cjk)")
needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract binary not installed")

# Old and new character forms, abbreviations, kana; (株) is read back in NFKC (ASCII brackets).
NAMES = ["東洋紡績株式會社", "大日本製藥(株)", "明治製菓", "北海道炭鑛汽船", "帝國電氣工業", "キッコーマン醤油"]
TURNED_IN_VERTICAL = "()\uff08\uff09ー"


def render(text: str, direction: str, font_path: str, *, size: int = 40, noise: bool = False) -> Image.Image:
    """Black text on white with an 8 px margin.

    Vertical: characters stacked top to bottom, 10 % apart, brackets and ー turned a quarter clockwise as a
    compositor sets them.
    """
    font = ImageFont.truetype(font_path, size, index=0)
    margin = 8
    if direction == "horizontal":
        left, top, right, bottom = font.getbbox(text)
        img = Image.new("L", (right - left + 2 * margin, bottom - top + 2 * margin), 255)
        ImageDraw.Draw(img).text((margin - left, margin - top), text, font=font, fill=0)
    else:
        pitch = int(size * 1.1)
        img = Image.new("L", (size + 2 * margin, (len(text) - 1) * pitch + size + 2 * margin), 255)
        draw = ImageDraw.Draw(img)
        for i, char in enumerate(text):
            centre = (margin + size // 2, margin + i * pitch + size // 2)
            if char in TURNED_IN_VERTICAL:
                glyph = Image.new("L", (2 * size, 2 * size), 0)
                ImageDraw.Draw(glyph).text((size, size), char, font=font, fill=255, anchor="mm")
                img.paste(0, (centre[0] - size, centre[1] - size), glyph.rotate(-90))
            else:
                draw.text(centre, char, font=font, fill=0, anchor="mm")
    if noise:
        rng = np.random.default_rng(len(text))
        arr = np.asarray(img.filter(ImageFilter.GaussianBlur(0.8)), dtype=np.float32)
        img = Image.fromarray(np.clip(arr + rng.normal(0, 10, arr.shape), 0, 255).astype(np.uint8))
    return img


def char_accuracy(truths: list[str], preds: list[str]) -> float:
    """1 - CER over a set: total edit distance / total true characters."""
    return 1 - sum(Levenshtein.distance(t, p) for t, p in zip(truths, preds, strict=True)) / sum(map(len, truths))


@pytest.fixture(scope="module")
def rapid() -> RapidOcrEngine:
    return RapidOcrEngine()


@pytest.fixture(scope="module")
def tesseract() -> TesseractEngine:
    return TesseractEngine(workers=2)


# ---------------------------------------------------------------- accuracy on rendered names

# (engine, direction, noise, minimum character accuracy, minimum exact matches out of 6 names x fonts).
# Bounds sit below what was measured here (rapidocr 0.99-1.00 char accuracy, 0.94-1.00 exact; tesseract
# 0.90-0.92 char accuracy, 0.33-0.44 exact), so they catch
# a broken pipeline (wrong psm, no re-flow, BGR/RGB mix-up), not font-rendering jitter.
ACCURACY_CASES = [
    ("rapidocr", "horizontal", False, 0.97, 0.8),
    ("rapidocr", "horizontal", True, 0.97, 0.8),
    ("rapidocr", "vertical", False, 0.95, 0.7),
    ("rapidocr", "vertical", True, 0.95, 0.7),
    ("tesseract", "horizontal", False, 0.80, 0.25),
    ("tesseract", "vertical", False, 0.80, 0.25),
]


@needs_fonts
@pytest.mark.parametrize(("engine_name", "direction", "noise", "min_accuracy", "min_exact"), ACCURACY_CASES)
def test_engines_read_rendered_names(request, engine_name, direction, noise, min_accuracy, min_exact):
    if engine_name == "tesseract" and shutil.which("tesseract") is None:
        pytest.skip("tesseract binary not installed")
    engine = request.getfixturevalue("rapid" if engine_name == "rapidocr" else "tesseract")
    truths = [name for _ in FONTS for name in NAMES]
    images = [render(name, direction, font, noise=noise) for font in FONTS for name in NAMES]
    results = engine.read(images, direction=direction)
    texts = [r.text for r in results]
    assert len(results) == len(images)
    pairs = list(zip(truths, texts, strict=True))
    assert char_accuracy(truths, texts) >= min_accuracy, pairs
    assert np.mean([t == p for t, p in pairs]) >= min_exact, pairs
    assert all(0.0 <= r.confidence <= 1.0 for r in results)
    assert all(r.confidence > 0 for r in results if r.text)


@needs_fonts
@pytest.mark.parametrize("direction", ["horizontal", "vertical"])
def test_rapidocr_reads_old_forms_exactly(rapid, direction):
    # The CLIPPINGS failure mode of string matching: old forms 國 氣 鑛 會 藥 must survive OCR.
    images = [render(name, direction, FONTS[0]) for name in NAMES]
    assert [r.text for r in rapid.read(images, direction=direction)] == NAMES


@needs_fonts
@pytest.mark.parametrize("direction", ["horizontal", "vertical"])
def test_rapidocr_reading_does_not_depend_on_the_batch(rapid, direction):
    # Runs are incremental (only new crops are OCRed), so a crop must read the same, text and confidence,
    # alone, beside any other crops, in any order and batch size. rapidocr's own batching padded each crop to
    # the widest in its batch, which changed almost every confidence and about 0.5 % of the texts.
    names = [*NAMES, "東洋紡績株式會社大日本製藥(株)明治製菓"]  # one crop much wider than the rest
    images = [render(name, direction, font, noise=True) for font in FONTS for name in names]
    together = rapid.read(images, direction=direction)
    alone = [rapid.read([img], direction=direction)[0] for img in images]
    reversed_in_threes = RapidOcrEngine(batch_size=3).read(images[::-1], direction=direction)[::-1]
    assert alone == together
    assert reversed_in_threes == together
    assert char_accuracy([name for _ in FONTS for name in names], [r.text for r in together]) >= 0.95


@needs_fonts
@needs_tesseract
def test_tesseract_horizontal_exact_and_workers_keep_order(tesseract):
    images = [render(name, "horizontal", FONTS[0]) for name in ["明治製菓", "東洋紡績株式會社", "大日本製藥(株)"]]
    texts = [r.text for r in tesseract.read(images, direction="horizontal")]
    assert texts[:2] == ["明治製菓", "東洋紡績株式會社"]
    assert Levenshtein.distance(texts[2], "大日本製藥(株)") <= 1  # tesseract reads 藥 as the new form 薬
    serial = TesseractEngine(workers=1).read(images, direction="horizontal")
    assert [r.text for r in serial] == texts


# ---------------------------------------------------------------- what cannot be read


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("direction", ["horizontal", "vertical"])
def test_blank_and_broken_crops_give_empty_results_in_order(engine_name, direction):
    if engine_name == "tesseract" and shutil.which("tesseract") is None:
        pytest.skip("tesseract binary not installed")
    engine = make_engine(engine_name)
    images = [
        Image.new("L", (200, 40), 255),  # blank paper
        Image.new("RGB", (40, 200), (230, 225, 210)),  # blank, tinted
        Image.new("L", (0, 0)),  # empty
        "not an image",  # wrong type
    ]
    if FONTS:
        images.append(render("明治製菓", direction, FONTS[0]))
    results = engine.read(images, direction=direction)  # type: ignore[arg-type]
    assert results[:4] == [OcrResult("", 0.0)] * 4
    if FONTS:
        assert results[4].text == "明治製菓"
    assert engine.read([], direction=direction) == []


class _FlakyEngine(OcrEngine):
    """Fails on any batch holding a crop wider than 100 px; reads others as their width."""

    name = "flaky"

    def check_available(self) -> None:
        return None

    def _read_batch(self, images, direction):
        if any(img.width > 100 for img in images):
            raise RuntimeError("model crashed")
        return [OcrResult(f"w{img.width}", 0.5) for img in images]


def test_one_bad_crop_does_not_lose_the_batch():
    images = [Image.effect_noise((w, 30), 64) for w in (50, 150, 60)]
    results = _FlakyEngine().read(images, direction="horizontal")
    assert results == [OcrResult("w50", 0.5), OcrResult("", 0.0), OcrResult("w60", 0.5)]


class _FixedEngine(OcrEngine):
    """Returns a fixed raw text for every crop."""

    name = "fixed"

    def __init__(self, raw: str, unicode_form: str | None) -> None:
        self.raw = raw
        self.unicode_form = unicode_form  # type: ignore[assignment]

    def check_available(self) -> None:
        return None

    def _read_batch(self, images, direction):
        return [OcrResult(self.raw, 0.9) for _ in images]


@pytest.mark.parametrize(
    ("raw", "unicode_form", "expected"),
    [
        ("\uff08株\uff09 山形製薬", "NFKC", "(株)山形製薬"),  # full-width brackets to ASCII, space dropped
        ("㈱群馬商會", "NFKC", "(株)群馬商會"),  # the one-glyph ㈱ spelled out
        ("大日本製藥 株式會社 ", "NFKC", "大日本製藥株式會社"),
        ("Tokyo Gas　瓦斯", "NFKC", "Tokyo Gas瓦斯"),  # ideographic space next to kanji dropped
        ("\uff08株\uff09 山形製薬", None, "\uff08株\uff09山形製薬"),  # raw form kept, spaces still dropped
        ("　", "NFKC", ""),
        ("九|州|窯|業|株|式|會|社|", "NFKC", "九州窯業株式會社"),  # a rule beside the column, read per cell
        ("│東洋紡績｜", None, "東洋紡績"),  # box drawing and the full-width bar, raw form too
        ("||", "NFKC", ""),
    ],
)
def test_texts_are_normalised(raw, unicode_form, expected):
    result = _FixedEngine(raw, unicode_form).read([Image.effect_noise((40, 20), 64)], direction="horizontal")[0]
    assert result == (OcrResult(expected, 0.9) if expected else OcrResult("", 0.0))


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("direction", ["diagonal", "Vertical", "", None])
def test_bad_direction_raises(engine_name, direction):
    engine = make_engine(engine_name)
    with pytest.raises(ValueError, match=r"direction must be one of \('horizontal', 'vertical'\), got"):
        engine.read([Image.new("L", (10, 10), 255)], direction=direction)  # type: ignore[arg-type]


# ---------------------------------------------------------------- tesseract output parsing


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ([("東洋", 96.0), ("紡績", 90.0)], ("東洋紡績", 0.93)),  # spaces between kanji dropped
        ([("大日本", 90.0), ("(株)", 60.0)], ("大日本(株)", 0.75)),
        ([("Tokyo", 80.0), ("Gas", 80.0), ("瓦斯", 80.0)], ("Tokyo Gas瓦斯", 0.8)),  # Latin spacing kept
        ([("", 95.0), (" ", 95.0)], ("", 0.0)),
        ([], ("", 0.0)),
    ],
)
def test_tesseract_tsv_joins_words_and_weights_confidence(words, expected):
    header = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"
    rows = [header, "1\t1\t0\t0\t0\t0\t0\t0\t340\t58\t-1\t"]
    rows += [f"5\t1\t1\t1\t1\t{i}\t0\t0\t10\t10\t{conf}\t{text}" for i, (text, conf) in enumerate(words)]
    result = ocr._from_tesseract_tsv("\n".join(rows) + "\n")
    assert result.text == expected[0]
    assert result.confidence == pytest.approx(expected[1])


# jpn_vert --psm 5 on a clean 49x336 column of 株式會社堀越製作所 (a crop of an independently drawn corpus): a
# second "line" two pixels wide at the crop's right edge, read as four words that are not there.
_EDGE_LINE_TSV = """level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext
1\t1\t0\t0\t0\t0\t0\t0\t49\t336\t-1\t
2\t1\t1\t0\t0\t0\t5\t5\t44\t331\t-1\t
3\t1\t1\t1\t0\t0\t5\t5\t44\t331\t-1\t
4\t1\t1\t1\t1\t0\t47\t261\t2\t75\t-1\t
5\t1\t1\t1\t1\t1\t0\t253\t4\t7\t0.000000\t湯本
5\t1\t1\t1\t1\t2\t0\t263\t4\t19\t0.000000\t竹下
5\t1\t1\t1\t1\t3\t0\t281\t4\t4\t29.786575\t和
5\t1\t1\t1\t1\t4\t3\t285\t1\t5\t15.321686\t人
4\t1\t1\t1\t2\t0\t5\t5\t38\t326\t-1\t
5\t1\t1\t1\t2\t1\t12\t5\t31\t33\t93.297226\t株
5\t1\t1\t1\t2\t2\t10\t53\t33\t45\t92.858177\t式
5\t1\t1\t1\t2\t3\t9\t115\t32\t60\t63.311447\t會社
5\t1\t1\t1\t2\t4\t7\t188\t32\t66\t94.578064\t堀越
5\t1\t1\t1\t2\t5\t0\t262\t47\t48\t96.942505\t製作
5\t1\t1\t1\t2\t6\t5\t309\t33\t22\t96.964172\t所
"""


def test_tesseract_tsv_drops_a_line_much_thinner_than_the_crops_text():
    result = ocr._from_tesseract_tsv(_EDGE_LINE_TSV, direction="vertical")
    assert result.text == "株式會社堀越製作所"
    # confidence of the words kept only: (93.3 + 92.9 + 2 * 63.3 + 2 * 94.6 + 2 * 96.9 + 97.0) / 9 / 100
    assert result.confidence == pytest.approx(0.8811, abs=1e-3)
    # read as horizontal, thickness is the lines' height (75 and 326 px): the same thin line goes
    assert ocr._from_tesseract_tsv(_EDGE_LINE_TSV, direction="horizontal").text == "株式會社堀越製作所"


def test_tesseract_tsv_keeps_columns_of_one_type_size():
    header = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"
    rows = [header, "4\t1\t1\t1\t1\t0\t60\t0\t30\t300\t-1\t", "5\t1\t1\t1\t1\t1\t60\t0\t30\t90\t90\t資本金",
            "4\t1\t1\t1\t2\t0\t10\t0\t24\t300\t-1\t", "5\t1\t1\t1\t2\t1\t10\t0\t24\t120\t80\t代表社員"]
    # two columns, the second 24/30 as thick as the first: both are the region's text
    assert ocr._from_tesseract_tsv("\n".join(rows) + "\n", direction="vertical").text == "資本金代表社員"


@needs_tesseract
def test_tesseract_reader_names_version_languages_and_line_rule():
    reader = TesseractEngine().reader
    assert reader.startswith("tesseract ") and "jpn/psm7 jpn_vert/psm5" in reader
    assert f"lines>={ocr.MIN_LINE_THICKNESS_SHARE:g}" in reader and reader.endswith("NFKC no-rules")
    assert TesseractEngine(unicode_form=None).reader.endswith("raw no-rules")
    assert TesseractEngine(workers=1).reader == reader  # threads do not change what is read


def test_rapidocr_reader_ignores_batching_and_device(tmp_path: Path):
    reader = RapidOcrEngine().reader
    assert reader == f"rapidocr {ocr.RAPIDOCR_REC_MODEL} reflow-vertical NFKC no-rules"
    assert RapidOcrEngine(batch_size=3, width_step=64, device="auto").reader == reader
    assert RapidOcrEngine(model_path=tmp_path / "mine.onnx").reader.startswith("rapidocr mine.onnx ")


# ---------------------------------------------------------------- factory and availability


def test_make_engine_by_name():
    assert ENGINES == ("tesseract", "rapidocr")
    assert isinstance(make_engine("tesseract", workers=3), TesseractEngine)
    assert make_engine(" RapidOCR ", batch_size=8).batch_size == 8


@pytest.mark.parametrize("name", ["easyocr", "", "tesseract-jpn"])
def test_unknown_engine_lists_known_names(name):
    with pytest.raises(ValueError, match=r"unknown OCR engine .*; expected one of: tesseract, rapidocr"):
        make_engine(name)
    with pytest.raises(ValueError, match="expected one of: tesseract, rapidocr"):
        check_engine_available(name)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("tesseract", {"workers": 0}, "workers must be >= 1"),
        ("tesseract", {"psm": 6}, r"bad options \['psm'\] for OCR engine 'tesseract'; accepted: .*lang_vertical"),
        ("rapidocr", {"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ("rapidocr", {"width_step": 20}, "width_step must be a positive multiple of 8 pixels, got 20"),
        ("rapidocr", {"device": "gpu"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
        ("rapidocr", {"unicode_form": "NFX"}, "unicode_form must be None, 'NFC', 'NFKC', 'NFD' or 'NFKD'"),
    ],
)
def test_make_engine_rejects_bad_options(name, options, message):
    with pytest.raises(ValueError, match=message):
        make_engine(name, **options)


def test_ocr_result_confidence_range():
    assert OcrResult("明治", 1.0).confidence == 1.0
    with pytest.raises(ValueError, match=r"confidence must be in \[0, 1\], got 1.5"):
        OcrResult("明治", 1.5)


@needs_tesseract
def test_check_available_names_the_missing_package(monkeypatch):
    check_engine_available("tesseract")
    check_engine_available("rapidocr")
    missing_vert = r"no 'xyz_vert' traineddata.*apt-get install tesseract-ocr-xyz-vert"
    with pytest.raises(EngineUnavailableError, match=missing_vert):
        check_engine_available("tesseract", lang_vertical="xyz_vert")
    import pytesseract

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    with pytest.raises(EngineUnavailableError, match=r"tesseract binary not found.*apt-get install tesseract-ocr"):
        check_engine_available("tesseract")


def test_rapidocr_missing_model_is_an_error_not_a_download(tmp_path):
    engine = RapidOcrEngine(model_path=tmp_path / "missing.onnx")
    with pytest.raises(EngineUnavailableError, match=r"missing\.onnx is missing.*never downloads"):
        engine.check_available()
    with pytest.raises(EngineUnavailableError, match="never downloads"):
        engine.read([Image.effect_noise((60, 30), 64)], direction="horizontal")


@needs_fonts
def test_rapidocr_loads_bundled_model_without_network(monkeypatch):
    from rapidocr.utils import download_file

    def no_network(*args, **kwargs):
        raise AssertionError("rapidocr tried to download something")

    monkeypatch.setattr(download_file.DownloadFile, "run", no_network)
    monkeypatch.setattr(download_file.requests, "get", no_network)
    engine = RapidOcrEngine(batch_size=2)
    assert engine.read([render("明治製菓", "horizontal", FONTS[0])], direction="horizontal")[0].text == "明治製菓"
    assert engine._load() is engine._load()  # loaded once, reused


# ---------------------------------------------------------------- incremental reading keeps only the same reader


class _CountingEngine(OcrEngine):
    """Reads every crop as its width, under a reader name given; counts the crops it read."""

    name = "tesseract"

    def __init__(self, reader: str) -> None:
        self._reader, self.read_count = reader, 0

    @property
    def reader(self) -> str:
        return self._reader

    def check_available(self) -> None:
        return None

    def _read_batch(self, images, direction):
        self.read_count += len(images)
        return [OcrResult(f"{self._reader}{img.width}", 0.9) for img in images]


def test_incremental_reading_reads_again_what_another_reader_read(tmp_path: Path):
    import pandas as pd

    from linkage_pipeline.config import SourceConfig
    from linkage_pipeline.documents.chain import read_crops_incremental

    paths = []
    for i, width in enumerate((40, 50, 60)):
        paths.append(tmp_path / f"c{i}.png")
        Image.effect_noise((width, 20), 64).convert("RGB").save(paths[-1])
    crops = pd.DataFrame({"crop_id": ["a", "b", "c"], "crop_path": [str(p) for p in paths]})
    source = SourceConfig("s", "query", "horizontal", tmp_path, ocr=("tesseract",))
    old = _CountingEngine("old")
    first = read_crops_incremental(crops.iloc[:2], source, {"tesseract": old}, None)
    assert list(first.rows["text"]) == ["old40", "old50"] and set(first.rows["reader"]) == {"old"}
    again = read_crops_incremental(crops, source, {"tesseract": old}, first.rows)
    assert (again.done, again.reused, old.read_count) == (1, 2, 3)  # only the new crop read
    new = _CountingEngine("new")
    upgraded = read_crops_incremental(crops, source, {"tesseract": new}, again.rows)
    assert (upgraded.done, upgraded.reused, new.read_count) == (3, 0, 3)  # nothing mixes readers
    assert list(upgraded.rows["text"]) == ["new40", "new50", "new60"] and set(upgraded.rows["reader"]) == {"new"}
