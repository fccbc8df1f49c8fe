"""Layout on noisy scans: every page costs bounded time and regions, names survive speckle, noise is rejected.

Regression tests of the reliability issue: lightly speckled JPEG pages gave thousands of regions each, a page of
10 % salt-and-pepper noise kept the fragment join running for more than 600 s, 50 % noise gave one whole-page
region, and a zero-width region crashed a whole source. Pages come from the project's own renderer, so every
name has a labelled box. Wall times are asserted only as generous guards (each page takes well under a second).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from linkage_pipeline.config import SourceConfig
from linkage_pipeline.documents import layout
from linkage_pipeline.documents.chain import detect_page_regions, extract_crops
from linkage_pipeline.documents.layout import (
    PageRejected,
    despeckle,
    detect_layout,
    estimate_char_size,
    layout_to_records,
    max_regions,
)
from linkage_pipeline.evaluation.metrics import match_regions_to_labels
from linkage_pipeline.synthetic.corpus import generate_corpus

DIRECTIONS = {"firm_directory": "vertical", "supplier_lists": "horizontal"}
SECONDS_PER_PAGE = 10.0  # a guard, not a benchmark: pages take 0.1-0.6 s on one core


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("noisy_layout")
    generate_corpus(out, seed=3, n_firms=8, n_list_pages=2)
    return out


def _pages(corpus: Path, source: str) -> list[tuple[str, np.ndarray, pd.DataFrame]]:
    labels = pd.read_csv(corpus / source / "labels.csv", dtype=str, keep_default_na=False)
    labels[["x0", "y0", "x1", "y1"]] = labels[["x0", "y0", "x1", "y1"]].astype(int)
    return [
        (page, np.asarray(Image.open(corpus / source / "pages" / page).convert("L")), group.reset_index(drop=True))
        for page, group in labels.groupby("page", sort=True)
    ]


def _salt_and_pepper(page: np.ndarray, share: float, seed: int) -> np.ndarray:
    """``share`` of the pixels replaced, half by black (pepper) and half by white (salt)."""
    u = np.random.default_rng(seed).random(page.shape)
    out = page.copy()
    out[u < share / 2] = 0
    out[(u >= share / 2) & (u < share)] = 255
    return out


def _speckled_jpeg(page: np.ndarray, seed: int, share: float = 0.003, quality: int = 60) -> np.ndarray:
    """Dark specks on ``share`` of the pixels (dust, paper fibres), then saved as a lossy JPEG."""
    rng = np.random.default_rng(seed)
    out = page.copy()
    n = int(share * out.size)
    out[rng.integers(0, out.shape[0], n), rng.integers(0, out.shape[1], n)] = rng.integers(0, 120, n)
    buf = io.BytesIO()
    Image.fromarray(out).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("L"))


def _detect(page: np.ndarray, direction: str) -> tuple[list[dict], float]:
    t0 = time.perf_counter()
    records = layout_to_records(detect_layout(page, direction=direction))
    return records, time.perf_counter() - t0


def _matched(records: list[dict], labels: pd.DataFrame, page: str) -> int:
    regions = pd.DataFrame(
        [{**r, "region_id": str(i), "page": page} for i, r in enumerate(records)],
        columns=["region_id", "page", "x0", "y0", "x1", "y1"],
    )
    return len(match_regions_to_labels(regions, labels, iou_threshold=0.5))


@pytest.mark.parametrize(
    ("share", "min_recall", "max_per_label"),
    [
        # Measured on this corpus: recall 1.0 at 10 % and 20 %, 1.0 (lists) and 0.96 (directory) at 50 %, with
        # at most one region in eight of noise; on 26 pages of two other corpora 0.88-1.0 at 50 %.
        pytest.param(0.10, 0.95, 1.2, id="10pct"),
        pytest.param(0.20, 0.95, 1.2, id="20pct"),
        pytest.param(0.50, 0.80, 1.5, id="50pct"),
    ],
)
@pytest.mark.parametrize("source", ["supplier_lists", "firm_directory"])
def test_salt_and_pepper_pages_keep_their_names_in_bounded_time(
    corpus: Path, source: str, share: float, min_recall: float, max_per_label: float
) -> None:
    n_labels = n_matched = 0
    for k, (page, clean, labels) in enumerate(_pages(corpus, source)):
        noisy = _salt_and_pepper(clean, share, seed=k)
        records, seconds = _detect(noisy, DIRECTIONS[source])
        assert seconds < SECONDS_PER_PAGE, f"{page}: {seconds:.1f} s"
        assert len(records) <= max_per_label * len(labels), f"{page}: {len(records)} regions for {len(labels)} names"
        assert len(records) <= max_regions(noisy.shape[1], noisy.shape[0], 8.0)
        n_labels += len(labels)
        n_matched += _matched(records, labels, page)
    assert n_matched / n_labels >= min_recall


@pytest.mark.parametrize("source", ["supplier_lists", "firm_directory"])
def test_lightly_speckled_jpeg_pages_keep_their_names(corpus: Path, source: str) -> None:
    """The issue's list pages: light speckle, JPEG-compressed (2,000-5,500 regions each before the fix)."""
    n_labels = n_matched = n_found = 0
    for k, (page, clean, labels) in enumerate(_pages(corpus, source)):
        records, seconds = _detect(_speckled_jpeg(clean, seed=k), DIRECTIONS[source])
        assert seconds < SECONDS_PER_PAGE, f"{page}: {seconds:.1f} s"
        n_labels, n_found = n_labels + len(labels), n_found + len(records)
        n_matched += _matched(records, labels, page)
    # Measured: precision and recall 1.0 here and on 26 pages of two other corpora (also at 1 % specks).
    assert n_matched / n_labels >= 0.95
    assert n_matched / n_found >= 0.95


def test_speckle_does_not_shrink_the_type_size(corpus: Path) -> None:
    """Issue B's cause: under speckle the type-size estimate fell from 30 px to 3 px (16,120 candidate boxes)."""
    _, clean, _ = _pages(corpus, "supplier_lists")[0]
    truth = estimate_char_size(despeckle(clean).ink, "horizontal")
    for page in (_speckled_jpeg(clean, seed=0), *(_salt_and_pepper(clean, s, seed=1) for s in (0.1, 0.2, 0.5))):
        assert estimate_char_size(despeckle(page).ink, "horizontal") == pytest.approx(truth, rel=0.15)


def test_clean_pages_are_not_filtered(corpus: Path) -> None:
    for source in DIRECTIONS:
        for _, clean, _ in _pages(corpus, source):
            result = despeckle(clean)
            assert result.window == 0 and result.density < 0.005
            assert result.gray is clean


@pytest.mark.parametrize("direction", ["horizontal", "vertical"])
def test_a_page_of_pure_noise_is_rejected_quickly(direction: str) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (1700, 1240)).astype(np.uint8)
    t0 = time.perf_counter()
    with pytest.raises(PageRejected, match="no blank paper") as info:
        detect_layout(noise, direction=direction)
    assert time.perf_counter() - t0 < SECONDS_PER_PAGE
    assert "no regions emitted" in info.value.reason


@pytest.mark.parametrize(
    ("width", "height", "type_size", "bound"),
    [
        (1240, 1700, 30.0, 1064),  # the demo page: W * H / (2.2 * 30^2)
        (1600, 1200, 20.0, 2181),  # the real NDL-DocL spreads
        (1240, 1700, 3.0, 14971),  # a collapsed estimate counts as 8 px, the smallest type OCR reads
        (10, 10, 100.0, 1),
    ],
)
def test_max_regions_formula(width: int, height: int, type_size: float, bound: int) -> None:
    assert max_regions(width, height, type_size) == bound


@pytest.mark.parametrize(("args", "message"), [((0, 10, 20.0), "page size"), ((10, 10, 0.0), "type_size")])
def test_max_regions_rejects_bad_sizes(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        max_regions(*args)


def test_a_page_over_the_bound_is_rejected_with_count_and_bound(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page, image, labels = _pages(corpus, "supplier_lists")[0]
    monkeypatch.setattr(layout, "max_regions", lambda w, h, s: 5)  # a page of 12 names, a bound of 5
    with pytest.raises(PageRejected) as info:
        detect_layout(image, direction="horizontal", detector="morphology")
    assert info.value.bound == 5 and info.value.n_regions == len(labels)
    height, width = image.shape
    assert f"{len(labels)} candidate regions on a {width}x{height} page" in info.value.reason
    assert "more than the 5 regions" in info.value.reason
    # The stage emits none of its regions (nothing is cut or read) and records the page as a rejection.
    source = SourceConfig(name="lists", role="query", direction="horizontal", path=tmp_path, layout="morphology")
    pages = pd.DataFrame([{"page_id": "p1", "file": page, "image_path": str(corpus / "supplier_lists" / "pages" / page)}])
    regions, rejected = detect_page_regions(pages, source)
    assert regions.empty
    assert [(r.file, r.stage) for r in rejected] == [(page, "layout_regions")]
    assert "more than the 5 regions" in rejected[0].reason
    # The ppocr detector counts its text lines against the same bound (the page's title, headings and lines).
    with pytest.raises(PageRejected, match=r"text lines on a \d+x\d+ page .* more than the 5 regions"):
        detect_layout(image, direction="horizontal", detector="ppocr")


def test_a_page_over_its_time_budget_is_rejected(corpus: Path) -> None:
    _, image, _ = _pages(corpus, "supplier_lists")[0]
    with pytest.raises(PageRejected, match="time budget of 1e-06 s"):
        detect_layout(image, direction="horizontal", time_budget_s=1e-6)
    with pytest.raises(ValueError, match="time_budget_s must be > 0"):
        detect_layout(image, direction="horizontal", time_budget_s=0)


def test_join_scales_to_many_boxes() -> None:
    """Fragment join on 20,000 boxes, 10,000 names of two fragments each (issue B had 16,120 candidate boxes):
    the old pairwise scan compared each box with every box kept so far, O(n^2) per pass."""
    boxes = []
    for row in range(100):
        for col in range(100):
            x, y = 20 + col * 200, 20 + row * 40
            boxes += [layout._Box(x, y, x + 40, y + 30, 30.0, 1.0), layout._Box(x + 50, y, x + 80, y + 30, 30.0, 1.0)]
    t0 = time.perf_counter()
    joined = layout._join_fragments(boxes, "horizontal")
    assert time.perf_counter() - t0 < SECONDS_PER_PAGE
    # Gaps of 10 px join (under 1.2 em of 30 px); the 120 px between names do not.
    assert len(joined) == 10_000
    assert {(b.x1 - b.x0, b.y1 - b.y0) for b in joined} == {(80, 30)}
    assert [(b.x0, b.y0) for b in joined[:3]] == [(20, 20), (20, 60), (20, 100)]  # in order along the lines


@pytest.mark.parametrize(
    ("boxes", "expected"),
    [
        pytest.param([(0, 0, 30, 30), (40, 0, 70, 30)], [(0, 0, 70, 30)], id="pair"),
        pytest.param([(0, 0, 30, 30), (80, 0, 110, 30)], [(0, 0, 30, 30), (80, 0, 110, 30)], id="gap-too-wide"),
        pytest.param([(0, 0, 30, 30), (40, 20, 70, 50)], [(0, 0, 30, 30), (40, 20, 70, 50)], id="not-aligned"),
        # The middle piece arrives last in reading order, then bridges the other two: one box.
        pytest.param([(0, 0, 30, 30), (68, 0, 98, 30), (33, 0, 65, 30)], [(0, 0, 98, 30)], id="bridge"),
    ],
)
def test_join_fragments_cases(boxes: list[tuple[int, int, int, int]], expected: list[tuple[int, int, int, int]]) -> None:
    joined = layout._join_fragments([layout._Box(*b, 30.0, 1.0) for b in boxes], "horizontal")
    assert [(b.x0, b.y0, b.x1, b.y1) for b in joined] == expected


def test_degenerate_regions_are_dropped_at_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    good = [layout._Box(40, 40, 208, 68, 28.0, 1.0), layout._Box(40, 120, 208, 148, 28.0, 1.0)]
    bad = [
        layout._Box(300, 40, 300, 68, 28.0, 1.0),  # zero width
        layout._Box(300, 120, 400, 120, 28.0, 1.0),  # zero height
        layout._Box(600, 40, 700, 68, 28.0, 1.0),  # off the 500 px wide page
    ]
    monkeypatch.setattr(layout, "_morphology_boxes", lambda gray, direction, *_: ([*good, *bad], gray, 28.0))
    page = np.full((300, 500), 230, np.uint8)
    records = layout_to_records(detect_layout(page, direction="horizontal", detector="morphology"))
    assert [(r["x0"], r["y0"], r["x1"], r["y1"]) for r in records] == [(40, 40, 208, 68), (40, 120, 208, 148)]


def test_a_degenerate_region_is_rejected_and_the_others_cut(corpus: Path, tmp_path: Path) -> None:
    """Issue C: one region of zero width failed the whole source in crop_embeddings."""
    page, _, labels = _pages(corpus, "supplier_lists")[0]
    source = SourceConfig(name="lists", role="query", direction="horizontal", path=tmp_path)
    pages = pd.DataFrame([{"page_id": "p1", "file": page, "image_path": str(corpus / "supplier_lists" / "pages" / page)}])
    boxes = [tuple(map(int, b)) for b in labels[["x0", "y0", "x1", "y1"]].to_numpy()[:3]]
    boxes.insert(1, (boxes[0][0], boxes[0][1], boxes[0][0], boxes[0][3]))  # zero width
    boxes.append((5000, 5000, 5010, 5010))  # off the page
    regions = pd.DataFrame(
        [
            {"region_id": f"r{i}", "page_id": "p1", "x0": b[0], "y0": b[1], "x1": b[2], "y1": b[3],
             "reading_order": i, "direction": "horizontal"}
            for i, b in enumerate(boxes)
        ]
    )
    crops, rejected = extract_crops(pages, regions, source, tmp_path / "crops")
    assert sorted(crops["region_id"]) == ["r0", "r2", "r3"]
    assert all(Path(p).is_file() for p in [*crops["crop_path"], *crops["square_path"]])
    reasons = {r.reason.split(":")[0]: r.reason for r in rejected}
    assert set(reasons) == {"region r1", "region r4"}
    assert "empty or inverted" in reasons["region r1"]
    assert "outside the page" in reasons["region r4"]
