"""Distilling an ensemble of supervised models into one: the loss, the trainer with a teacher, the recipe's stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from fixtures.tiny import TINY

from linkage_pipeline.multimodal.checkpoints import shipped_model_dir
from linkage_pipeline.multimodal.encoder import MultimodalEncoder
from linkage_pipeline.multimodal.registry import choose_model, update_card
from linkage_pipeline.multimodal.training.data import (
    TrainingSet,
    save_training_set,
)
from linkage_pipeline.multimodal.training.losses import distillation_loss, relation_kl
from linkage_pipeline.multimodal.training.recipe import (
    Recipe,
    distil_stage,
    resolve_models,
)
from linkage_pipeline.multimodal.training.trainer import (
    TrainConfig,
    teacher_embeddings,
    train,
)


def _encoder(seed: int) -> MultimodalEncoder:
    return MultimodalEncoder.create(seed=seed, **TINY)


# ------------------------------------------------------------------------------------------------- the loss
def test_relation_kl_matches_a_hand_computed_case() -> None:
    s = torch.tensor([[1.0, 0.2, -0.4], [0.2, 1.0, 0.6], [-0.4, 0.6, 1.0]])
    t = torch.tensor([[1.0, 0.8, 0.0], [0.8, 1.0, -0.2], [0.0, -0.2, 1.0]])
    temp = 0.5
    expected = []
    for i in range(3):
        others = [j for j in range(3) if j != i]
        p = np.exp(t[i, others].numpy() / temp) / np.exp(t[i, others].numpy() / temp).sum()
        q = np.exp(s[i, others].numpy() / temp) / np.exp(s[i, others].numpy() / temp).sum()
        expected.append(float(np.sum(p * np.log(p / q))))
    assert float(relation_kl(s, t, temp, exclude_self=True)) == pytest.approx(np.mean(expected), rel=1e-5)
    assert float(relation_kl(t, t, temp, exclude_self=True)) == pytest.approx(0.0, abs=1e-7)
    # with the diagonal, every row has three entries and the loss changes
    assert float(relation_kl(s, t, temp, exclude_self=False)) != pytest.approx(np.mean(expected), rel=1e-3)
    with pytest.raises(ValueError, match="expected two \\(n, n\\) similarity matrices"):
        relation_kl(s, t[:2], temp, exclude_self=True)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        relation_kl(s, t, 0.0, exclude_self=True)


def test_distillation_loss_sees_only_similarities_so_an_ensemble_of_copies_is_the_model_itself() -> None:
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    # a teacher of two identical members: concatenated unit vectors, cosines equal to the student's
    twice = (lambda x: torch.cat([F.normalize(x, dim=-1)] * 2, dim=1) / np.sqrt(2))
    assert float(distillation_loss(img, txt, twice(img), twice(txt))) == pytest.approx(0.0, abs=1e-6)
    other = distillation_loss(img, txt, torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g))
    assert float(other) > 0.05
    with pytest.raises(ValueError, match="expected student \\(n, d\\) and teacher \\(n, D\\)"):
        distillation_loss(img, txt, twice(img)[:7], twice(txt)[:7])


# ------------------------------------------------------------------------------------ teacher and trainer
def test_teacher_embeddings_of_an_ensemble_average_the_members_cosines(data: TrainingSet) -> None:
    a, b = _encoder(1), _encoder(2)
    ai, at = teacher_embeddings([a], data)
    bi, _ = teacher_embeddings([b], data)
    ei, et = teacher_embeddings([a, b], data)
    assert ei.shape == (len(data), ai.shape[1] + bi.shape[1]) and et.shape[0] == len(data)
    np.testing.assert_allclose(torch.linalg.norm(ei, dim=1).numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose((ei @ ei.T).numpy(), ((ai @ ai.T + bi @ bi.T) / 2).numpy(), atol=1e-5)
    np.testing.assert_allclose(torch.linalg.norm(at, dim=1).numpy(), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="need at least one teacher"):
        teacher_embeddings([], data)


def test_training_with_a_teacher_makes_the_student_link_like_it(data: TrainingSet) -> None:
    teacher_model = _encoder(7)
    train(teacher_model, data, TrainConfig(stage="supcon", lr=1e-3, batch_size=18, m=3, k=2, epochs=6, t0=1000))
    teacher = teacher_embeddings([teacher_model], data)
    rows = np.arange(len(data))

    def gap(student: MultimodalEncoder) -> float:
        si, st = teacher_embeddings([student], data)
        return float(distillation_loss(si, st, teacher[0][rows], teacher[1][rows]))

    base = {"stage": "supcon", "lr": 1e-3, "batch_size": 18, "m": 3, "k": 2, "epochs": 8, "t0": 1000}
    plain, distilled = _encoder(11), _encoder(11)
    start = gap(plain)
    train(plain, data, TrainConfig(**base))
    result = train(distilled, data, TrainConfig(**base, distil_weight=5.0), teacher=teacher)
    assert result.steps > 0
    # the distilled student is nearer its teacher's similarities than the same training without the teacher
    assert gap(distilled) < 0.5 * start and gap(distilled) < 0.7 * gap(plain)


def test_distillation_needs_a_teacher_of_every_row_and_the_supcon_stage(data: TrainingSet) -> None:
    config = TrainConfig(stage="supcon", batch_size=18, m=3, k=2, distil_weight=1.0)
    with pytest.raises(ValueError, match=f"teacher image and text embeddings of all {len(data)} training rows, "
                       "got none"):
        train(_encoder(1), data, config)
    short = (torch.zeros(3, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="got 3 and 3 rows"):
        train(_encoder(1), data, config, teacher=short)
    with pytest.raises(ValueError, match="distil_weight > 0 only in the supcon stage"):
        TrainConfig(stage="clip", distil_weight=1.0)
    with pytest.raises(ValueError, match="distil_weight >= 0 and distil_temperature > 0"):
        TrainConfig(stage="supcon", distil_temperature=0.0)


# ------------------------------------------------------------------------------------------ recipe stage
def _saved(tmp_path: Path, name: str, seed: int, weight: float | None = None) -> Path:
    folder = tmp_path / name
    _encoder(seed).save(folder)
    if weight is not None:
        update_card(folder, linking={"pooling_weight": weight})
    return folder


def test_distil_stage_keeps_the_start_models_weight_and_records_its_teachers(data: TrainingSet, tmp_path: Path) -> None:
    save_training_set(data, tmp_path / "training_crops.parquet")
    start = _saved(tmp_path, "start", 3, weight=0.3)
    other = _saved(tmp_path, "other", 4)
    tuned: list[tuple[Path, float]] = []

    def tune(folder: Path, weight: float) -> dict:
        tuned.append((folder, weight))
        return {"pooling_weight": weight, "nomatch_threshold": 0.8}

    lines: list[str] = []
    small = {"max_steps": 2, "batch_size": 18}
    folder, card, row = distil_stage(tmp_path, [start, other], start, overrides=small, tune=tune, log=lines.append)
    assert tuned == [(folder, 0.3)] and folder.name == "distil" and folder.parent.parent == tmp_path / "runs"
    assert card["linking"]["pooling_weight"] == 0.3 and card["linking"]["nomatch_threshold"] == 0.8
    assert card["linking"]["pooling_weight_rule"].startswith("the start model's card weight (0.3), kept")
    distil = card["training"]["distil"]
    ids = [MultimodalEncoder.load(p).model_id for p in (start, other)]
    assert [t["model_id"] for t in distil["teachers"]] == ids and distil["steps"] == 2
    assert distil["start_parent_model_id"] == ""  # the start model was saved fresh, without a parent
    assert distil["config"]["distil_weight"] == Recipe().distil.distil_weight > 0
    assert row[["model_id", "stage", "parent_model_id"]].iloc[0].tolist() == [card["model_id"], "distil", ids[0]]
    assert card["model_id"] != ids[0] and lines[0].startswith(f"distilling 2 teachers into {start} on 18 crops")
    # without tuning (no labels) the card still carries the start model's weight
    _, untuned, _ = distil_stage(tmp_path, [start], start, overrides={**small, "max_steps": 1})
    assert untuned["linking"]["pooling_weight"] == 0.3 and "nomatch_threshold" not in untuned["linking"]
    with pytest.raises(ValueError, match="at least one teacher"):
        distil_stage(tmp_path, [], start)


def test_resolve_models_names_the_shipped_the_trained_and_folders(tmp_path: Path) -> None:
    a, b = _saved(tmp_path, "a", 1), _saved(tmp_path, "b", 2)
    trained = pd.DataFrame([
        {"model_id": "b", "stage": "supcon", "path": str(b), "created_at": "2026-01-02T00:00:00Z"},
        {"model_id": "a", "stage": "supcon", "path": str(a), "created_at": "2026-01-01T00:00:00Z"},
        {"model_id": "c", "stage": "clip", "path": str(tmp_path / "c"), "created_at": "2026-01-03T00:00:00Z"},
    ])
    assert resolve_models(["shipped", "trained"], trained) == [shipped_model_dir(), a, b]
    assert resolve_models([str(a), "trained"], trained) == [a, b]  # a named twice counts once
    with pytest.raises(ValueError, match="'trained' names no model: materialize supervised_model first"):
        resolve_models(["trained"], None)
    with pytest.raises(ValueError, match="has no model.safetensors"):
        resolve_models([str(tmp_path / "missing")], None)
    with pytest.raises(ValueError, match="no models named"):
        resolve_models([], None)


def test_auto_links_with_a_distilled_model_saved_after_the_supervised_ones(tmp_path: Path) -> None:
    a, d = _saved(tmp_path, "a", 1), _saved(tmp_path, "d", 2)
    trained = pd.DataFrame([
        {"model_id": "a", "stage": "supcon", "path": str(a), "created_at": "2026-01-01T00:00:00Z"},
        {"model_id": "d", "stage": "distil", "path": str(d), "created_at": "2026-01-02T00:00:00Z"},
    ])
    assert choose_model("auto", "", trained).path == d
    assert choose_model("auto", "", trained.assign(created_at=trained["created_at"][::-1].to_numpy())).path == a
    assert json.loads((d / "model_card.json").read_text())["model_id"] == MultimodalEncoder.load(d).model_id
