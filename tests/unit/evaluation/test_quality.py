"""Quality measures behind the asset checks, on hand-made tables with known verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from linkage_pipeline.evaluation.quality import (
    empty_text_share,
    pages_without_regions,
    regions_per_page,
    score_spread,
)


def test_pages_without_regions_names_the_files() -> None:
    pages = pd.DataFrame({"page_id": ["a", "b", "c"], "file": ["p1.png", "p2.png", "p3.png"]})
    ok = pages_without_regions(pages, pd.DataFrame({"page_id": ["a", "b", "c", "c"]}))
    assert ok.passed and ok.metadata["pages_without_regions"] == 0
    bad = pages_without_regions(pages, pd.DataFrame({"page_id": ["a"]}))
    assert not bad.passed
    assert bad.description == "2 of 3 inked pages have no detected region: p2.png, p3.png"


def _regions(page_id: str, n: int, size: int, direction: str, length: int = 6) -> list[dict]:
    """n regions of type size ``size`` (height on horizontal pages, width on vertical ones), ``length`` ems long."""
    across, along = size, length * size
    w, h = (along, across) if direction == "horizontal" else (across, along)
    return [{"page_id": page_id, "x0": 0, "y0": 0, "x1": w, "y1": h, "direction": direction} for _ in range(n)]


@pytest.mark.parametrize("direction", ["horizontal", "vertical"])
def test_regions_per_page_fails_on_a_page_over_its_bound(direction: str) -> None:
    # A 1240 x 1700 page of 30 px type holds at most 1064 regions (W * H / (2.2 * 30^2)).
    pages = pd.DataFrame(
        {"page_id": ["a", "b", "c"], "file": ["p1.jpg", "p2.jpg", "p3.jpg"], "width": 1240, "height": 1700}
    )
    healthy = pd.DataFrame(_regions("a", 16, 30, direction) + _regions("b", 1064, 30, direction))
    ok = regions_per_page(pages, healthy)
    assert ok.passed and ok.metadata["pages_over_bound"] == 0
    assert ok.metadata["max_regions_per_page"] == 1064 and ok.metadata["max_share_of_bound"] == pytest.approx(1.0)
    one_more = pd.DataFrame(
        _regions("a", 16, 30, direction) + _regions("b", 20, 30, direction) + _regions("c", 1065, 30, direction)
    )
    bad = regions_per_page(pages, one_more)
    assert not bad.passed and bad.metadata["pages_over_bound"] == 1
    assert bad.description.startswith("1 of 3 pages hold more regions than their size allows")
    assert "p3.jpg (1065 > 1064)" in bad.description
    assert regions_per_page(pages, one_more.iloc[:0]).passed


@pytest.mark.parametrize("direction", ["horizontal", "vertical"])
def test_regions_per_page_is_not_fooled_by_specks(direction: str) -> None:
    """The issue's speckled pages: 2,000-5,500 regions each, most of them specks a few pixels across."""
    pages = pd.DataFrame({"page_id": ["a", "b"], "file": ["p1.jpg", "p2.jpg"], "width": 1240, "height": 1700})
    # 15 names of 30 px type outweigh 2,000 specks of 4 x 3 px: the page's type size stays 30 px, bound 1064.
    names_and_specks = pd.DataFrame(
        _regions("a", 15, 30, direction) + _regions("a", 2000, 3, direction, length=1) + _regions("b", 14, 30, direction)
    )
    outcome = regions_per_page(pages, names_and_specks)
    assert not outcome.passed and "p1.jpg (2015 > 1064)" in outcome.description
    # A page of specks alone: its type size is 3 px, smaller than any type OCR reads.
    specks = pd.DataFrame(_regions("a", 300, 3, direction, length=1) + _regions("b", 14, 30, direction))
    outcome = regions_per_page(pages, specks)
    assert not outcome.passed and "p1.jpg (300 regions of 3 px type)" in outcome.description


@pytest.mark.parametrize(
    ("texts", "passed", "share"),
    [
        (["東洋紡績", "明治製菓", "三井鑛山", "日本製鐵"], True, 0.0),
        (["東洋紡績", "", "三井鑛山", "日本製鐵"], False, 0.25),
        (["東洋紡績", "  ", None, "日本製鐵"], False, 0.5),
    ],
)
def test_empty_text_share_per_engine(texts: list, passed: bool, share: float) -> None:
    ocr = pd.DataFrame({"ocr": ["tesseract"] * 4 + ["rapidocr"] * 4, "text": texts + ["a", "b", "c", "d"]})
    outcome = empty_text_share(ocr, max_share=0.05)
    assert outcome.passed is passed
    assert outcome.metadata["empty_share_tesseract"] == pytest.approx(share)
    assert outcome.metadata["empty_share_rapidocr"] == 0.0


def test_score_spread_detects_collapse_and_nan() -> None:
    rng = np.random.default_rng(0)
    healthy = pd.DataFrame({"query_crop_id": [f"q{i}" for i in range(50)], "rank": 1, "score": rng.uniform(0.3, 1, 50)})
    assert score_spread(healthy).passed
    collapsed = healthy.assign(score=0.5)
    outcome = score_spread(collapsed)
    assert not outcome.passed and outcome.metadata["score_std"] == 0.0
    with_nan = healthy.copy()
    with_nan.loc[3, "score"] = np.nan
    assert not score_spread(with_nan).passed


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match=r"ocr is missing columns \['text'\]"):
        empty_text_share(pd.DataFrame({"ocr": ["x"]}))
    with pytest.raises(ValueError, match="max_share must be in"):
        empty_text_share(pd.DataFrame({"ocr": ["x"], "text": ["y"]}), max_share=2)


def test_embedding_norms_flag_nan_and_off_norm_rows() -> None:
    import numpy as np

    from linkage_pipeline.evaluation.quality import embedding_norms

    good = [np.array([0.6, 0.8], np.float32), np.array([1.0, 0.0], np.float32)]
    frame = pd.DataFrame({"image_embedding": good, "text_embedding": good})
    assert embedding_norms(frame).passed
    broken = frame.assign(text_embedding=[np.array([np.nan, 0.0]), np.array([2.0, 0.0])])
    out = embedding_norms(broken)
    assert not out.passed and out.metadata["bad_text_embedding"] == 2 and out.metadata["bad_image_embedding"] == 0
    assert "2 embeddings non-finite or off unit norm" in out.description


@pytest.mark.parametrize(
    ("current", "previous", "passed", "text"),
    [
        (0.90, None, True, "no earlier accepted run"),
        (float("nan"), 0.9, True, "no validation labels"),
        (0.89, 0.90, True, "drop +0.010"),
        (0.85, 0.90, False, "drop +0.050, bound 0.02"),
        (0.95, 0.90, True, "drop -0.050"),
    ],
)
def test_accuracy_drop_against_the_last_accepted_run(current, previous, passed, text) -> None:
    from linkage_pipeline.evaluation.quality import accuracy_drop

    out = accuracy_drop(current, previous, tolerance=0.02)
    assert out.passed is passed and text in out.description
