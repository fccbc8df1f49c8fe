"""bench/cross_corpus.py: which rows a model folder gives (label-free folders give self-supervised rows only)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from linkage_pipeline.multimodal.checkpoints import (
    shipped_model_dir,
    shipped_pretrained_dir,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
import cross_corpus as cc


@pytest.mark.parametrize(
    ("card", "expected"),
    [
        ({"training": {"clip": {"steps": 500}}}, True),  # the pipeline's label-free stage
        ({"ablation": "all", "steps": 500}, True),  # bench/label_free_ablation.py
        ({"training": {"supcon": {"steps": 5110}}}, False),  # the pipeline's supervised stage
        ({"training": {"clip": {}, "supcon": {}}}, False),  # both stages in one card (train_recipe)
        (None, False),  # no card: a checkpoint of another format, scored as it is
    ],
)
def test_label_free_only_reads_the_card(tmp_path: Path, card: dict | None, expected: bool) -> None:
    if card is not None:
        (tmp_path / "model_card.json").write_text(json.dumps(card))
    assert cc.label_free_only(tmp_path) is expected


def test_shipped_folders() -> None:
    assert not cc.label_free_only(shipped_model_dir())
    assert cc.label_free_only(shipped_pretrained_dir())


def _frame(rows: list[tuple[str, str, list[float], list[float]]], model_id: str) -> pd.DataFrame:
    return pd.DataFrame(
        [{"ocr": o, "crop_id": c, "image_embedding": np.array(i, np.float32),
          "text_embedding": np.array(t, np.float32), "model_id": model_id, "text": "x"} for o, c, i, t in rows]
    )


def test_ensemble_similarity_is_the_mean_of_the_members() -> None:
    from linkage_pipeline.multimodal.embed import method_embeddings

    # member 1 puts crops a and b at cosine 0 (image) / 1 (text); member 2 at 1 / 0.6; rows given in another order
    one = _frame([("rapidocr", "a", [1, 0], [1, 0]), ("rapidocr", "b", [0, 2], [3, 0])], "m1")
    two = _frame([("rapidocr", "b", [1, 0], [0.6, 0.8]), ("rapidocr", "a", [5, 0], [1, 0])], "m2")
    ens = cc.ensemble_embeddings([one, two])
    assert list(ens["crop_id"]) == ["a", "b"]
    assert ens["model_id"].iloc[0] == "ensemble:m1+m2"
    image = method_embeddings(ens, "vision", 1.0)
    text = method_embeddings(ens, "language", 0.0)
    assert float(image[0] @ image[1]) == pytest.approx((0.0 + 1.0) / 2, abs=1e-6)
    assert float(text[0] @ text[1]) == pytest.approx((1.0 + 0.6) / 2, abs=1e-6)


def test_ensemble_members_must_embed_the_same_rows() -> None:
    one = _frame([("rapidocr", "a", [1, 0], [1, 0])], "m1")
    two = _frame([("tesseract", "a", [1, 0], [1, 0])], "m2")
    with pytest.raises(ValueError, match="member 2 embedded other"):
        cc.ensemble_embeddings([one, two])
    with pytest.raises(ValueError, match="at least one member"):
        cc.ensemble_embeddings([])


def test_a_model_folder_without_a_model_stops_the_bench_with_its_name(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"model 'new': .*empty has no config.json"):
        cc.main(["--corpus", f"demo={tmp_path}", "--model", f"new={tmp_path / 'empty'}"])
    with pytest.raises(SystemExit, match=r"model 'three': .*missing has no config.json"):
        cc.main(["--corpus", f"demo={tmp_path}", "--ensemble", f"three={shipped_model_dir()}+{tmp_path / 'missing'}"])
