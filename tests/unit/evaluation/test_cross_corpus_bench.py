"""bench/cross_corpus.py: which rows a model folder gives (label-free folders give self-supervised rows only)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

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
