"""Layout detection: accuracy against a generated corpus, reading order and kinds on drawn pages, errors."""

from __future__ import annotations

import csv
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import layoutparser as lp
import numpy as np
import pytest
from PIL import Image

from linkage_pipeline.documents.layout import detect_layout, layout_to_records
from linkage_pipeline.synthetic.corpus import generate_corpus

DIRECTIONS = {"firm_directory": "vertical", "supplier_lists": "horizontal"}


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _score(records: list[dict], labels: list[dict]) -> tuple[int, int]:
    """One-to-one greedy matching at IoU >= 0.5: (matched pairs, pairs whose kind is right)."""
    dets = [(r["x0"], r["y0"], r["x1"], r["y1"]) for r in records]
    labs = [tuple(int(lab[k]) for k in ("x0", "y0", "x1", "y1")) for lab in labels]
    pairs = sorted(((_iou(d, lb), i, j) for i, d in enumerate(dets) for j, lb in enumerate(labs)), reverse=True)
    used_d, used_l, kind_ok = set(), set(), 0
    for v, i, j in pairs:
        if v < 0.5:
            break
        if i in used_d or j in used_l:
            continue
        used_d.add(i)
        used_l.add(j)
        truth = labels[j]["role"]
        kind_ok += records[i]["kind"] == ("entry" if truth in ("supplier", "customer") else truth)
    return len(used_d), kind_ok


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("layout_corpus")
    generate_corpus(out, seed=3, n_firms=20, n_list_pages=3)
    return out


def _labels(corpus: Path, source: str) -> dict[str, list[dict]]:
    by_page: dict[str, list[dict]] = defaultdict(list)
    with (corpus / source / "labels.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            by_page[row["page"]].append(row)
    return by_page


def _page(corpus: Path, source: str, page: str) -> np.ndarray:
    return np.asarray(Image.open(corpus / source / "pages" / page).convert("L"))


@pytest.mark.parametrize(
    ("source", "n_labels", "n_kind_ok"),
    [
        ("firm_directory", 24, 24),  # 22 entries (two firms listed twice) + 2 prefecture headings
        ("supplier_lists", 42, 42),  # 3 titles, 6 headings, 33 suppliers and customers
    ],
)
def test_morphology_matches_labels(corpus: Path, source: str, n_labels: int, n_kind_ok: int) -> None:
    n_det = n_match = n_ok = n_lab = 0
    for page, labels in sorted(_labels(corpus, source).items()):
        records = layout_to_records(
            detect_layout(_page(corpus, source, page), direction=DIRECTIONS[source], detector="morphology")
        )
        matched, ok = _score(records, labels)
        n_det += len(records)
        n_lab += len(labels)
        n_match += matched
        n_ok += ok
    assert n_lab == n_labels
    assert (n_det, n_match) == (n_labels, n_labels)  # precision = recall = 1.0 at IoU 0.5
    assert n_ok == n_kind_ok


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract binary not installed")
@pytest.mark.parametrize("source", ["firm_directory", "supplier_lists"])
def test_tesseract_detector_finds_most_names(corpus: Path, source: str) -> None:
    langs = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True).stdout.split()
    if "jpn" not in langs or "jpn_vert" not in langs:
        pytest.skip("tesseract jpn/jpn_vert traineddata not installed")
    page, labels = sorted(_labels(corpus, source).items())[0]
    records = layout_to_records(
        detect_layout(_page(corpus, source, page), direction=DIRECTIONS[source], detector="tesseract")
    )
    matched, kind_ok = _score(records, labels)
    assert matched / len(labels) >= 0.9
    assert matched / len(records) >= 0.9
    assert kind_ok >= matched - 1


def _draw_name(page: np.ndarray, x: int, y: int, n: int, cell: int, direction: str) -> tuple[int, int, int, int]:
    """Draw a 'name' of n square glyphs (cell px, gaps of cell/6) and return its box (x1, y1 exclusive)."""
    step = cell + cell // 6
    for k in range(n):
        gx, gy = (x + k * step, y) if direction == "horizontal" else (x, y + k * step)
        page[gy + 2 : gy + cell - 2, gx + 2 : gx + cell - 2] = 30  # glyph body
        page[gy + cell // 2 - 1 : gy + cell // 2 + 1, gx : gx + cell] = 30  # a stroke to the cell edge
        page[gy : gy + cell, gx + cell // 2 - 1 : gx + cell // 2 + 1] = 30
    length = (n - 1) * step + cell
    return (x, y, x + length, y + cell) if direction == "horizontal" else (x, y, x + cell, y + length)


def _boxes(layout: lp.Layout) -> list[tuple[int, int, int, int]]:
    return [(r["x0"], r["y0"], r["x1"], r["y1"]) for r in layout_to_records(layout)]


def test_horizontal_reading_order_and_kinds() -> None:
    page = np.full((700, 900), 235, np.uint8)
    title = _draw_name(page, 250, 40, 7, 48, "horizontal")
    heading = _draw_name(page, 60, 150, 3, 36, "horizontal")
    grid = [_draw_name(page, x, y, 6, 28, "horizontal") for y in (230, 290, 350) for x in (90, 400)]
    heading2 = _draw_name(page, 60, 450, 3, 36, "horizontal")
    last = _draw_name(page, 90, 530, 5, 28, "horizontal")
    rng = np.random.default_rng(0)
    page[rng.integers(0, 700, 300), rng.integers(0, 900, 300)] = 90  # dust
    layout = detect_layout(page, direction="horizontal", detector="morphology")
    assert _boxes(layout) == [title, heading, *grid, heading2, last]
    kinds = [r["kind"] for r in layout_to_records(layout)]
    assert kinds == ["title", "heading"] + ["entry"] * 6 + ["heading", "entry"]


def test_vertical_reading_order_tiers_and_rule() -> None:
    page = np.full((900, 700), 235, np.uint8)
    tier0 = [_draw_name(page, x, 60, 8, 28, "vertical") for x in (600, 540, 480, 420)]
    head = _draw_name(page, 350, 90, 4, 38, "vertical")
    tier0b = [_draw_name(page, x, 60, 6, 28, "vertical") for x in (280, 220)]
    page[446:449, 40:660] = 40  # ruling line between the tiers, touching nothing
    tier1 = [_draw_name(page, x, 500, 7, 28, "vertical") for x in (600, 540, 480)]
    layout = detect_layout(page, direction="vertical", detector="morphology")
    assert _boxes(layout) == [*tier0, head, *tier0b, *tier1]
    kinds = [r["kind"] for r in layout_to_records(layout)]
    assert kinds == ["entry"] * 4 + ["heading"] + ["entry"] * 5


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda g: Image.fromarray(g), id="pil-gray"),
        pytest.param(lambda g: Image.fromarray(g).convert("RGB"), id="pil-rgb"),
        pytest.param(lambda g: np.stack([g, g, g], axis=2), id="rgb-array"),
        pytest.param(lambda g: np.dstack([g, g, g, np.full_like(g, 255)]), id="rgba-array"),
        pytest.param(lambda g: g[:, :, None], id="hw1-array"),
    ],
)
def test_accepts_pil_and_colour_inputs(convert) -> None:
    page = np.full((300, 500), 230, np.uint8)
    boxes = [_draw_name(page, 40, y, 6, 28, "horizontal") for y in (40, 120, 200)]
    assert _boxes(detect_layout(convert(page), direction="horizontal", detector="morphology")) == boxes


def test_blank_page_gives_empty_layout() -> None:
    page = np.full((400, 300), 220, np.uint8)
    page[np.random.default_rng(1).integers(0, 400, 50), np.random.default_rng(2).integers(0, 300, 50)] = 100
    for direction in ("horizontal", "vertical"):
        for detector in ("ppocr", "morphology"):
            assert len(detect_layout(page, direction=direction, detector=detector)) == 0


def test_layout_to_records_format() -> None:
    page = np.full((300, 500), 230, np.uint8)
    for y in (40, 120, 200):
        _draw_name(page, 40, y, 6, 28, "horizontal")
    layout = detect_layout(page, direction="horizontal", detector="morphology")
    assert all(isinstance(b, lp.TextBlock) and isinstance(b.block, lp.Rectangle) for b in layout)
    records = layout_to_records(layout)
    assert [r["reading_order"] for r in records] == [0, 1, 2]
    for r in records:
        assert set(r) == {"x0", "y0", "x1", "y1", "kind", "score", "reading_order"}
        assert all(isinstance(r[k], int) for k in ("x0", "y0", "x1", "y1"))
        assert 0.0 <= r["score"] <= 1.0
    bad = lp.Layout([lp.TextBlock(lp.Rectangle(0, 0, 5, 5), type="table", score=1.0)])
    with pytest.raises(ValueError, match="kind 'table'"):
        layout_to_records(bad)


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [
        (np.zeros((100, 100), np.uint8), {"direction": "diagonal"}, "direction must be one of"),
        (np.zeros((100, 100), np.uint8), {"direction": "vertical", "detector": "yolo"}, "detector must be one of"),
        (np.zeros((100, 100), np.float32), {"direction": "vertical"}, "dtype uint8"),
        (np.zeros((100, 100, 2), np.uint8), {"direction": "vertical"}, "shape"),
        (np.zeros((8, 100), np.uint8), {"direction": "vertical"}, "at least 16x16"),
        ([[0, 1]], {"direction": "vertical"}, "numpy array or PIL image"),
    ],
)
def test_rejects_bad_arguments(image: object, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        detect_layout(image, **kwargs)
