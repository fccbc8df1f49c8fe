"""One stage of the recipe at a time, as the training assets run it: config, data, parent, run folder, card, row."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import pytest

from linkage_pipeline.multimodal.encoder import MultimodalEncoder
from linkage_pipeline.multimodal.registry import record_trained_model
from linkage_pipeline.multimodal.training.data import (
    build_training_set,
    save_training_set,
)
from linkage_pipeline.multimodal.training.label_free import build_label_free_set
from linkage_pipeline.multimodal.training.recipe import (
    Recipe,
    architecture,
    parent_model,
    run_folder,
    stage_config,
    stage_data,
    train_stage,
    trained_model_row,
    write_card_linking,
)
from linkage_pipeline.multimodal.training.trainer import TrainConfig
from linkage_pipeline.multimodal.variants import japanese_old_new


def test_stage_config_keeps_the_recipe_where_none() -> None:
    base = Recipe().clip
    assert stage_config(base) == TrainConfig(**{**asdict(base), "seed": 0})
    changed = stage_config(base, epochs=2, lr=1e-3, batch_size=24, max_steps=5, seed=3)
    assert (changed.epochs, changed.lr, changed.batch_size, changed.max_steps, changed.seed) == (2, 1e-3, 24, 5, 3)
    # the label-free stage batches 3 views of sets of 4 names: a batch must hold at least one set
    with pytest.raises(ValueError, match=r"batch_size >= m \* k, got .*batch_size=8"):
        stage_config(base, batch_size=8)
    assert stage_config(base, max_steps=0).max_steps is None  # 0: no limit
    assert stage_config(base, max_steps=None).max_steps == 2550  # None: the recipe's
    with pytest.raises(ValueError, match="epochs must be > 0"):
        stage_config(base, epochs=-1)
    with pytest.raises(ValueError, match="max_steps must be >= 0"):
        stage_config(base, max_steps=-1)
    distil = Recipe().distil
    assert distil.distil_weight == 10.0 and stage_config(distil, distil_weight=0).distil_weight == 0
    with pytest.raises(ValueError, match="distil_weight must be >= 0"):
        stage_config(distil, distil_weight=-1.0)
    with pytest.raises(ValueError, match="distil_weight > 0 only in the supcon stage"):
        stage_config(base, distil_weight=1.0)  # the clip stage has no teacher


def _trained() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"model_id": "c1", "stage": "clip", "path": "/m/c1", "created_at": "2026-01-01T00:00:02Z"},
            {"model_id": "c0", "stage": "clip", "path": "/m/c0", "created_at": "2026-01-01T00:00:01Z"},
            {"model_id": "s9", "stage": "supcon", "path": "/m/s9", "created_at": "2026-01-01T00:00:09Z"},
        ]
    )


def test_parent_model_is_the_latest_clip_model() -> None:
    assert parent_model(_trained(), "supcon") == ("/m/c1", "c1")
    assert parent_model(_trained(), "clip") == (None, "")
    assert parent_model(None, "clip") == (None, "")
    with pytest.raises(ValueError, match="no pretrained model yet; materialize pretrained_model"):
        parent_model(None, "supcon")
    with pytest.raises(ValueError, match="no pretrained model yet"):
        parent_model(_trained().iloc[2:], "supcon")


def test_run_folder_is_keyed_by_data_config_and_parent(tmp_path: Path) -> None:
    config = Recipe().clip
    folder = run_folder(tmp_path, "clip", "abc", config, "")
    assert folder.parent == tmp_path / "runs" and folder.name.startswith("clip-") and len(folder.name) == 17
    assert run_folder(tmp_path, "clip", "abc", config, "") == folder
    assert run_folder(tmp_path, "clip", "abd", config, "") != folder
    assert run_folder(tmp_path, "clip", "abc", stage_config(config, epochs=1), "") != folder
    assert run_folder(tmp_path, "clip", "abc", config, "p") != folder


def test_run_folder_is_keyed_by_the_architecture(tmp_path: Path) -> None:
    # a recipe that builds another model (input size, tower, layout) must never resume or reuse a run of the old one
    recipe = Recipe()
    arch = architecture(recipe)
    assert arch == architecture(Recipe())
    assert arch["model"]["image_size"] == recipe.image_size and arch["model"]["vision_tower"] == recipe.vision_tower
    assert arch["model"]["cnn_widths"] == (32, 48, 96, 96, 192)  # the tower's default, filled in
    folder = run_folder(tmp_path, "clip", "abc", recipe.clip, "", arch)
    assert run_folder(tmp_path, "clip", "abc", recipe.clip, "", architecture(Recipe())) == folder
    for other in (replace(recipe, image_size=96), replace(recipe, vision_tower="vit"), replace(recipe, layout="line"),
                  replace(recipe, seed=1), replace(recipe, text_fold=False)):
        assert architecture(other) != arch
        assert run_folder(tmp_path, "clip", "abc", recipe.clip, "", architecture(other)) != folder
    # reading texts once more without a legal form happens when linking only: the same training run
    assert architecture(replace(recipe, text_drop=False)) == arch


def test_write_card_linking_rewrites_the_card_only_with_settings(tmp_path: Path) -> None:
    card = {"model_id": "m", "training": {"clip": {}}}
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    assert write_card_linking(tmp_path, card, {}) == card
    assert json.loads((tmp_path / "model_card.json").read_text()) == card
    out = write_card_linking(tmp_path, card, {"pooling_weight": 0.6, "tuned_on": "validation split of demo"})
    assert out == {**card, "linking": {"pooling_weight": 0.6, "tuned_on": "validation split of demo"}}
    assert json.loads((tmp_path / "model_card.json").read_text()) == out
    assert "linking" not in card


def test_trained_model_row_and_its_registry_replace_a_model_id(tmp_path: Path) -> None:
    config = stage_config(Recipe().supcon, epochs=1)
    row = trained_model_row({"model_id": "s9"}, "supcon", tmp_path, "c1", "ff", config)
    assert row.drop(columns="created_at").to_dict("records") == [
        {"model_id": "s9", "stage": "supcon", "path": str(tmp_path), "parent_model_id": "c1", "data_sha256": "ff",
         "config": json.dumps(asdict(config))}
    ]
    assert row["created_at"].item().endswith("Z") and len(row["created_at"].item()) == 30
    table = record_trained_model(_trained(), row)
    assert table["model_id"].tolist() == ["c1", "c0", "s9"]
    assert table.loc[table["model_id"] == "s9", "path"].item() == str(tmp_path)  # the old s9 row is replaced
    assert record_trained_model(None, row) is row


def test_stage_data_gives_clip_the_label_free_set_when_there_is_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="training_crops.parquet is missing; materialize training_crops"):
        stage_data(tmp_path, "clip")
    save_training_set(build_training_set(2, 2, seed=1), tmp_path / "training_crops.parquet")
    supcon, sha, label_free = stage_data(tmp_path, "supcon")
    assert len(supcon) == 4 and len(sha) == 64 and not label_free
    assert stage_data(tmp_path, "clip")[1:] == (sha, False)  # no label-free set: CLIP on the training crops
    save_training_set(build_label_free_set(3, 2, seed=2), tmp_path / "pretraining_extra.parquet")
    clip, clip_sha, label_free = stage_data(tmp_path, "clip")
    assert len(clip) == 6 and len(clip.firms) == 3 and label_free and clip_sha != sha
    assert stage_data(tmp_path, "supcon")[1:] == (sha, False)


def test_train_stage_runs_clip_then_supcon_from_it(tmp_path: Path) -> None:
    save_training_set(build_training_set(6, 3, seed=5), tmp_path / "training_crops.parquet")
    lines: list[str] = []
    one_step = {"max_steps": 1, "epochs": 1}
    folder, card, row = train_stage(tmp_path, "clip", None, overrides=one_step, log=lines.append)
    assert folder.parent.parent == tmp_path / "runs" and folder.name == "clip"
    assert row[["model_id", "stage", "parent_model_id"]].iloc[0].tolist() == [card["model_id"], "clip", ""]
    assert json.loads(row["config"].item())["max_steps"] == 1 and "linking" not in card
    assert lines[0].startswith("training stage clip on 18 crops in ") and lines[0].endswith("(device cpu)")
    trained = record_trained_model(None, row)
    tuned: list[Path] = []

    def tune(saved: Path) -> dict:
        tuned.append(saved)
        return {"pooling_weight": 0.4}

    folder2, card2, row2 = train_stage(tmp_path, "supcon", trained, overrides=one_step, tune=tune)
    assert tuned == [folder2] and card2["linking"] == {"pooling_weight": 0.4}
    assert json.loads((folder2 / "model_card.json").read_text())["linking"] == {"pooling_weight": 0.4}
    assert row2["parent_model_id"].item() == card["model_id"] == card2["parent_model_id"]
    assert json.loads((folder2 / "pretrained" / "model_card.json").read_text())["model_id"] == card["model_id"]
    # the recipe's models read old character forms as new ones, in training and after (the table goes with them)
    saved = MultimodalEncoder.load(folder2)
    assert saved.preprocessing.text_fold == tuple(japanese_old_new()) and len(saved.preprocessing.text_fold) > 500
    assert saved.token_ids(["東洋製藥株式會社"]) == saved.token_ids(["東洋製薬株式会社"])
    assert "株式会社" in saved.preprocessing.text_drop and "(株)" in saved.preprocessing.text_drop
    # the same inputs resume the same run folder (no retraining), so the model id is the same
    again, card3, _ = train_stage(tmp_path, "clip", None, overrides=one_step)
    assert again == folder and card3["model_id"] == card["model_id"]
    with pytest.raises(ValueError, match="unknown stage 'vit'"):
        train_stage(tmp_path, "vit", None)
