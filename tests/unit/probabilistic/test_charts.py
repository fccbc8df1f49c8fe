"""Match-weight charts of fitted table linkages (linkage_pipeline.probabilistic.charts)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from linkage_pipeline.probabilistic import charts

PARAMETERS = pd.DataFrame({
    "linkage": ["a_to_b"] * 3 + ["a__dedup"] * 2,
    "field": ["name", "name", "name", "city", "city"],
    "level": [0, 1, 2, 1, 2],
    "label": ["missing", "jw < 0.88", "jw >= 0.88", "different", "equal"],
    "m": [np.nan, 0.1, 0.9, 0.2, 0.8],
    "u": [np.nan, 0.95, 0.05, 0.9, 0.1],
    "match_weight": [0.0, np.log2(0.1 / 0.95), np.log2(0.9 / 0.05), np.log2(0.2 / 0.9), 3.0],
    "lambda": [0.01] * 3 + [0.02] * 2,
})


def test_match_weight_charts_markdown_embeds_one_png_per_linkage(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    text = charts.match_weight_charts_markdown(PARAMETERS, tmp_path / "charts")
    assert text.startswith("**a_to_b**\n\n![match weights](data:image/png;base64,") and "\n\n**a__dedup**\n\n" in text
    pngs = re.findall(r"base64,([A-Za-z0-9+/=]+)\)", text)
    assert [base64.b64decode(p)[:8] for p in pngs] == [b"\x89PNG\r\n\x1a\n"] * 2
    files = sorted(p.name for p in (tmp_path / "charts").iterdir())
    assert files == ["a__dedup_match_weights.png", "a_to_b_match_weights.png"]
    assert base64.b64decode(pngs[0]) == (tmp_path / "charts" / "a_to_b_match_weights.png").read_bytes()


def test_match_weight_charts_markdown_without_matplotlib_is_the_text_table(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(charts, "plot_match_weights", lambda *args, **kwargs: None)
    text = charts.match_weight_charts_markdown(PARAMETERS, tmp_path)
    assert text == charts.match_weights_markdown(PARAMETERS)
    assert "| a_to_b" in text and "missing" not in text  # the missing level (weight 0) is left out
    assert charts.match_weight_charts_markdown(PARAMETERS.iloc[:0], tmp_path) == "_no fitted linkage_"
