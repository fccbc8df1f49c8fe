"""The reviewers' contact sheet: which links are sampled and what the sheet shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from linkage_pipeline.evaluation.provenance import contact_sheet, sample_links


def _links(n: int, tmp_path: Path) -> pd.DataFrame:
    h, v = tmp_path / "h.png", tmp_path / "v.png"
    img = Image.new("L", (120, 30), 235)
    ImageDraw.Draw(img).rectangle((5, 5, 110, 25), fill=20)
    img.save(h)
    img.rotate(90, expand=True).save(v)
    return pd.DataFrame({
        "query_crop_id": [f"q{i:02d}" for i in range(n)], "rank": 1, "score": np.linspace(0.2, 0.99, n)[::-1],
        "matched": [i % 3 != 0 for i in range(n)], "method": "multimodal", "ocr": "rapidocr",
        "query_crop_path": str(h), "target_crop_path": [str(v) if i % 2 else "/missing.png" for i in range(n)],
        "query_text": "東洋紡績", "target_text": "東洋紡績株式會社",
    })


def test_sample_spreads_over_the_score_range_and_is_deterministic(tmp_path: Path) -> None:
    links = _links(40, tmp_path)
    links = pd.concat([links, links.assign(rank=2)])  # only rank-1 rows are sampled
    sample = sample_links(links, n=5)
    assert len(sample) == 5 and (sample["rank"] == 1).all()
    assert sample["score"].is_monotonic_increasing
    assert sample["score"].iloc[0] == pytest.approx(0.2) and sample["score"].iloc[-1] == pytest.approx(0.99)
    pd.testing.assert_frame_equal(sample, sample_links(links.sample(frac=1, random_state=1), n=5))
    assert len(sample_links(links, n=100)) == 40


def test_contact_sheet_has_one_band_per_link_and_survives_missing_crops(tmp_path: Path) -> None:
    links = _links(4, tmp_path)
    out = contact_sheet(links, tmp_path / "sheets" / "s.png")
    with Image.open(out) as im:
        assert im.size == (1100, 4 * 72 + 8)
        px = np.asarray(im.convert("L"))
    # the first band holds the (dark) query crop; the missing target crop leaves a grey outline, not a crash
    assert px[4:64, 8:268].min() < 60
    assert (px[4:64, 284:544] < 200).sum() < 0.2 * 60 * 260


def test_sample_needs_a_positive_count(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n must be >= 1"):
        sample_links(_links(3, tmp_path), n=0)
