"""Quality measures behind the asset checks, on hand-made tables with known verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from linkage_pipeline.quality import empty_text_share, pages_without_regions, score_spread


def test_pages_without_regions_names_the_files() -> None:
    pages = pd.DataFrame({"page_id": ["a", "b", "c"], "file": ["p1.png", "p2.png", "p3.png"]})
    ok = pages_without_regions(pages, pd.DataFrame({"page_id": ["a", "b", "c", "c"]}))
    assert ok.passed and ok.metadata["pages_without_regions"] == 0
    bad = pages_without_regions(pages, pd.DataFrame({"page_id": ["a"]}))
    assert not bad.passed
    assert bad.description == "2 of 3 inked pages have no detected region: p2.png, p3.png"


@pytest.mark.parametrize(
    ("texts", "passed", "share"),
    [
        (["東洋紡績", "明治製菓", "三井鑛山", "日本製鐵"], True, 0.0),
        (["東洋紡績", "", "三井鑛山", "日本製鐵"], False, 0.25),
        (["東洋紡績", "  ", None, "日本製鐵"], False, 0.5),
    ],
)
def test_empty_text_share_per_engine(texts: list, passed: bool, share: float) -> None:
    ocr = pd.DataFrame({"engine": ["tesseract"] * 4 + ["rapidocr"] * 4, "text": texts + ["a", "b", "c", "d"]})
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
        empty_text_share(pd.DataFrame({"engine": ["x"]}))
    with pytest.raises(ValueError, match="max_share must be in"):
        empty_text_share(pd.DataFrame({"engine": ["x"], "text": ["y"]}), max_share=2)


def test_embedding_norms_flag_nan_and_off_norm_rows() -> None:
    import numpy as np

    from linkage_pipeline.quality import embedding_norms

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
    from linkage_pipeline.quality import accuracy_drop

    out = accuracy_drop(current, previous, tolerance=0.02)
    assert out.passed is passed and text in out.description
