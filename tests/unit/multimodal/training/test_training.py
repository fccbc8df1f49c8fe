"""Unit tests of linkage_pipeline.multimodal.training: data, losses, hard-negative mining, training and resuming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.tiny import TINY

from linkage_pipeline.multimodal.encoder import MultimodalEncoder
from linkage_pipeline.multimodal.training.augment import simulate_ocr
from linkage_pipeline.multimodal.training.data import TrainingSet, build_training_set
from linkage_pipeline.multimodal.training.losses import clip_loss, supcon_loss
from linkage_pipeline.multimodal.training.mining import (
    hard_negative_batches,
    nearest_classes,
)
from linkage_pipeline.multimodal.training.trainer import (
    LoopState,
    TrainConfig,
    epoch_rng,
    load_checkpoint_state,
    make_optimizer,
    optimize,
    shuffled_batches,
    train,
)


def _encoder() -> MultimodalEncoder:
    return MultimodalEncoder.create(seed=11, **TINY)


def test_training_set_has_both_orientations_and_firm_variants(data: TrainingSet) -> None:
    assert len(data) == 18 and data.labels.tolist() == [i for i in range(6) for _ in range(3)]
    assert set(data.directions) == {"horizontal", "vertical"}
    for img, d in zip(data.images, data.directions, strict=True):
        assert img.mode == "L" and ((img.height > img.width) == (d == "vertical"))
    assert data.info["vocabulary"] == "train" and data.info["fonts"]
    # Views print the firm in different ways (old/new forms, legal form variants) but stay one class.
    assert len(set(data.true_texts)) > 6
    again = build_training_set(6, 3, seed=5)
    assert again.texts == data.texts and np.array_equal(np.asarray(again.images[4]), np.asarray(data.images[4]))


def test_training_set_uses_a_given_ocr_engine() -> None:
    class FakeEngine:
        def read(self, images, *, direction):
            from linkage_pipeline.documents.ocr import OcrResult

            return [OcrResult(f"{direction[0]}{i}", 0.9) for i in range(len(images))]

    ds = build_training_set(2, 2, seed=0, ocr=FakeEngine())
    assert [t[0] for t in ds.texts] == [d[0] for d in ds.directions]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_firms": 1}, "n_firms must be >= 2"),
        ({"n_firms": 3, "views_per_firm": 0}, "views_per_firm must be >= 1"),
        ({"n_firms": 3, "views": (("list", "sideways"),)}, "unknown direction"),
    ],
)
def test_build_training_set_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_training_set(**kwargs)


def test_simulated_ocr() -> None:
    rng = np.random.default_rng(0)
    assert simulate_ocr("東洋紡績（株）", rng, error_rate=0.0) == "東洋紡績(株)"
    noisy = [simulate_ocr("東洋紡績株式會社", np.random.default_rng(s), error_rate=0.5) for s in range(20)]
    assert any(n != "東洋紡績株式會社" for n in noisy)
    assert simulate_ocr("東洋", np.random.default_rng(1), error_rate=0.5) == simulate_ocr(
        "東洋", np.random.default_rng(1), error_rate=0.5
    )
    with pytest.raises(ValueError, match="error_rate"):
        simulate_ocr("x", rng, error_rate=2.0)


def test_supcon_loss_matches_a_hand_computed_case() -> None:
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    t = 0.5
    # Anchors 0 and 1: positive sim 1/t, negative 0 -> -log(e^2 / (e^2 + 1)); anchor 2 has no positive.
    expected = -np.log(np.exp(2) / (np.exp(2) + 1))
    assert float(supcon_loss(z, labels, t)) == pytest.approx(expected, rel=1e-5)
    assert float(supcon_loss(z, torch.tensor([0, 1, 2]), t)) == 0.0
    with pytest.raises(ValueError, match="temperature"):
        supcon_loss(z, labels, 0.0)


def test_clip_loss_is_low_for_aligned_pairs() -> None:
    e = torch.eye(4)
    assert float(clip_loss(e, e, torch.tensor(np.log(100.0)))) < 1e-3
    assert float(clip_loss(e, e.flip(0), torch.tensor(np.log(100.0)))) > 10
    with pytest.raises(ValueError, match="expected two"):
        clip_loss(e, e[:3], 1.0)


def test_mining_picks_the_nearest_other_class() -> None:
    emb = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.8, 0.6], [0.0, 0.0, 1.0]])
    nb = nearest_classes(emb, 2)
    assert nb[:, 0].tolist() == [0, 1, 2, 3, 4]
    # 3 = (0, .8, .6) is nearer 1 (cos .8) than 4 (cos .6); 4 is nearest 3; 0 and 2 are each other's nearest.
    assert nb[:, 1].tolist() == [2, 3, 0, 1, 3]
    assert nearest_classes(emb, 3)[0].tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="k must be in"):
        nearest_classes(emb, 6)


def test_hard_negative_batches_keep_sets_together_with_m_views() -> None:
    labels = np.repeat(np.arange(6), 4)
    neighbours = np.array([[0, 1], [1, 0], [2, 3], [3, 2], [4, 5], [5, 4]])
    batches = hard_negative_batches(neighbours, labels, m=3, batch_size=6, rng=np.random.default_rng(0))
    assert len(batches) == 6
    for b in batches:
        classes, counts = np.unique(labels[b], return_counts=True)
        assert counts.tolist() == [3, 3] and len(set(b.tolist())) == 6
        assert sorted(classes.tolist()) in ([0, 1], [2, 3], [4, 5])
    with pytest.raises(ValueError, match="batch_size must be >= k \\* m"):
        hard_negative_batches(neighbours, labels, m=3, batch_size=5, rng=np.random.default_rng(0))


@pytest.mark.parametrize("stage", ["clip", "supcon"])
def test_a_few_steps_reduce_the_loss_on_a_tiny_batch(data: TrainingSet, stage: str) -> None:
    enc = _encoder()
    epochs = 24 if stage == "clip" else 12
    config = TrainConfig(stage=stage, lr=1e-3, batch_size=18, m=3, k=2, epochs=epochs, t0=1000, checkpoint_every=1000)
    result = train(enc, data, config)
    assert result.steps == len(result.losses) >= 8
    assert np.mean(result.losses[-2:]) < 0.8 * np.mean(result.losses[:2])


def test_resume_continues_from_the_saved_step_and_is_deterministic(data: TrainingSet, tmp_path: Path) -> None:
    config = TrainConfig(stage="supcon", lr=1e-3, batch_size=6, m=3, k=2, epochs=3, checkpoint_every=2, t0=3)
    straight = _encoder()
    full = train(straight, data, config)
    assert full.steps == 18 and full.epoch == 3  # 6 classes, one hard-negative set of k=2 per batch of 6

    resumed = _encoder()
    first = train(resumed, data, TrainConfig(**{**config.__dict__, "max_steps": 7}), checkpoint_dir=tmp_path)
    assert first.steps == 7 and load_checkpoint_state(tmp_path)["step"] == 7  # stopped mid-epoch
    second = train(_encoder(), data, config, checkpoint_dir=tmp_path)  # a fresh process would start from init
    assert second.resumed_from == 7 and second.steps == 18 and len(second.losses) == 11
    np.testing.assert_allclose(first.losses + second.losses, full.losses, rtol=1e-5)
    state = load_checkpoint_state(tmp_path)
    assert state["step"] == 18 and state["epoch"] == 3 and state["config"]["stage"] == "supcon"
    assert (tmp_path / "last" / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="stage"):
        train(_encoder(), data, TrainConfig(stage="clip"), checkpoint_dir=tmp_path)


def test_train_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="stage must be"):
        TrainConfig(stage="mlm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="supcon needs"):
        TrainConfig(stage="supcon", m=3, k=3, batch_size=4)
    with pytest.raises(ValueError, match="unimodal_weight"):
        TrainConfig(stage="supcon", unimodal_weight=-1.0)


def test_supcon_with_unimodal_terms_trains_a_cnn_vision_tower(data: TrainingSet) -> None:
    from linkage_pipeline.multimodal.preprocessing import Preprocessing

    tiny = {k: x for k, x in TINY.items() if k not in ("image_size", "max_length", "patch_size")}
    prep = Preprocessing(image_size=32, max_length=24, layout="grid")
    enc = MultimodalEncoder.create(seed=11, preprocessing=prep, vision_tower="cnn", cnn_widths=(8, 8, 16, 16), **tiny)
    before = {k: v.clone() for k, v in enc.model.model.vision_model.state_dict().items()}
    config = TrainConfig(
        stage="supcon", lr=3e-3, batch_size=18, m=3, k=2, epochs=12, t0=1000, checkpoint_every=1000, unimodal_weight=1.0
    )
    result = train(enc, data, config)
    assert np.mean(result.losses[-2:]) < 0.8 * np.mean(result.losses[:2])
    after = enc.model.model.vision_model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())


def test_training_set_round_trips_through_parquet(data: TrainingSet, tmp_path: Path) -> None:
    from linkage_pipeline.multimodal.training.data import (
        load_training_set,
        save_training_set,
    )

    path = save_training_set(data, tmp_path / "set.parquet")
    back = load_training_set(path)
    assert back.texts == data.texts and back.true_texts == data.true_texts and back.directions == data.directions
    np.testing.assert_array_equal(back.labels, data.labels)
    assert [f.entity_id for f in back.firms] == [f.entity_id for f in data.firms]
    assert back.firms[0].aliases == data.firms[0].aliases and isinstance(back.firms[0].aliases, tuple)
    for a, b in zip(back.images, data.images, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # PNG is lossless
    with pytest.raises(ValueError, match="is not a training set"):
        import pandas as pd

        pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "other.parquet")
        load_training_set(tmp_path / "other.parquet")


def test_concatenated_sets_never_share_a_class(data: TrainingSet) -> None:
    from linkage_pipeline.multimodal.training.data import concat_training_sets

    both = concat_training_sets([data, data])
    assert len(both) == 2 * len(data) and len(both.firms) == 2 * len(data.firms)
    n = len(data.firms)
    np.testing.assert_array_equal(both.labels[len(data):], data.labels + n)


def test_train_recipe_saves_each_stage_with_a_card(data: TrainingSet, tmp_path: Path) -> None:
    import json
    from dataclasses import replace

    from linkage_pipeline.multimodal.training.recipe import Recipe, train_recipe

    recipe = Recipe(
        vision_tower="cnn",
        image_size=32,
        clip=TrainConfig(stage="clip", batch_size=6, epochs=1, checkpoint_every=1000),
        supcon=TrainConfig(stage="supcon", batch_size=6, m=2, k=3, epochs=1, unimodal_weight=1.0, checkpoint_every=1000),
    )
    steps = []
    out = train_recipe(data, recipe, tmp_path / "run", on_step=steps.append)
    assert set(out) == {"clip", "supcon"} and {s["stage"] for s in steps} == {"clip", "supcon"}
    clip_card = json.loads((out["clip"] / "model_card.json").read_text())
    card = json.loads((out["supcon"] / "model_card.json").read_text())
    assert card["parent_model_id"] == clip_card["model_id"] != card["model_id"]
    assert set(card["training"]) == {"clip", "supcon"} and card["recipe"]["vision_tower"] == "cnn"
    # resuming a finished stage does no further steps and gives the same weights
    again = train_recipe(data, replace(recipe), tmp_path / "run", stages=("clip",))
    assert json.loads((again["clip"] / "model_card.json").read_text())["model_id"] == clip_card["model_id"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stage": "mlm"}, r"stage must be 'clip' or 'supcon', got TrainConfig\(.*stage='mlm'"),
        ({"lr": 0.0}, r"lr > 0 and batch_size >= 2 expected, got TrainConfig\("),
        ({"batch_size": 1}, "lr > 0 and batch_size >= 2 expected"),
        ({"t_mult": 0}, "epochs >= 1, t0 >= 1 and t_mult >= 1 expected"),
        ({"image_weight": 1.5}, r"image_weight must be in \[0, 1\], got .*image_weight=1.5"),
        ({"unimodal_weight": -0.1}, "unimodal_weight must be >= 0"),
        ({"stage": "supcon", "m": 1}, r"supcon needs m >= 2, k >= 1 and batch_size >= m \* k, got .*m=1"),
    ],
)
def test_train_config_names_the_rule_and_the_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)
    assert TrainConfig(stage="clip", m=1).m == 1  # the supcon rule does not bind the clip stage


# ----------------------------------------------------------------------------------- the one training loop
def test_shuffled_batches_are_a_function_of_seed_and_epoch() -> None:
    batches = shuffled_batches(7, 3, epoch_rng(4, 0))
    assert [len(b) for b in batches] == [3, 3]  # the last batch of one row is dropped (no in-batch negative)
    assert len(set(np.concatenate(batches).tolist())) == 6 and np.concatenate(batches).max() <= 6
    again = shuffled_batches(7, 3, epoch_rng(4, 0))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    order = np.concatenate(shuffled_batches(50, 10, epoch_rng(4, 0)))
    assert not np.array_equal(order, np.concatenate(shuffled_batches(50, 10, epoch_rng(4, 1))))
    assert np.array_equal(order, np.random.default_rng([4, 0, 0x42415443]).permutation(50))  # the seeds never move


def test_make_optimizer_schedules() -> None:
    model = torch.nn.Linear(2, 1)
    opt, constant = make_optimizer(model, 0.1, 0.01, "constant")
    assert opt.param_groups[0]["weight_decay"] == 0.01
    for _ in range(5):
        opt.step()
        constant.step()
    assert constant.get_last_lr() == [0.1]
    opt, cosine = make_optimizer(model, 0.1, 0.0, "cosine_restarts", t0=2, t_mult=1)
    lrs = []
    for _ in range(4):
        opt.step()
        cosine.step()
        lrs.append(cosine.get_last_lr()[0])
    np.testing.assert_allclose(lrs, [0.05, 0.1, 0.05, 0.1])  # half way down, then a warm restart, twice
    with pytest.raises(ValueError, match="schedule must be 'constant' or 'cosine_restarts', got 'linear'"):
        make_optimizer(model, 0.1, 0.0, "linear")  # type: ignore[arg-type]


def _quadratic() -> tuple[torch.nn.Module, torch.optim.Optimizer, object, object, object]:
    """A one-weight model pulled to each batch's mean target, its optimizer, schedule, batches and loss."""
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    opt, schedule = make_optimizer(model, 0.5, 0.0, "constant")
    targets = torch.arange(6, dtype=torch.float32)

    def loss(rows: np.ndarray) -> torch.Tensor:
        return ((model.weight[0, 0] - targets[torch.from_numpy(rows)].mean()) ** 2).sum()

    return model, opt, schedule, lambda e: shuffled_batches(6, 2, epoch_rng(1, e)), loss


def test_optimize_runs_epochs_of_batches_and_reports_every_step() -> None:
    model, opt, schedule, batches, loss = _quadratic()
    calls: list = []
    result = optimize(model, opt, schedule, batches, loss, epochs=3, on_step=calls.append,
                      checkpoint=lambda s: calls.append(("ckpt", s.step)), checkpoint_every=4)
    assert (result.steps, result.epoch, result.resumed_from, len(result.losses)) == (9, 3, 0, 9)
    np.testing.assert_allclose(result.epoch_losses, [np.mean(result.losses[i : i + 3]) for i in (0, 3, 6)])
    assert abs(float(model.weight.detach()) - 2.5) < 1.0  # moved from 0 to near the mean target, 2.5
    steps = [c for c in calls if isinstance(c, dict)]
    assert [c["step"] for c in steps] == list(range(1, 10))
    assert [c["epoch"] for c in steps] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [c["loss"] for c in steps] == result.losses and {c["lr"] for c in steps} == {0.5}
    assert [c for c in calls if isinstance(c, tuple)] == [("ckpt", 4), ("ckpt", 8), ("ckpt", 9)]  # every 4, and last
    assert not model.training and result.model_dir is None and result.step_losses is result.losses


def test_optimize_stops_at_max_steps_and_resumes_to_the_same_losses() -> None:
    model, opt, schedule, batches, loss = _quadratic()
    full = optimize(model, opt, schedule, batches, loss, epochs=3)
    model, opt, schedule, batches, loss = _quadratic()
    state = LoopState()
    first = optimize(model, opt, schedule, batches, loss, epochs=3, state=state, max_steps=4)
    assert (first.steps, state.epoch, state.batch_in_epoch) == (4, 1, 1)  # stopped in the second epoch
    assert first.epoch_losses == [float(np.mean(first.losses[:3]))]
    resumed = LoopState(state.step, state.epoch, state.batch_in_epoch)  # as a checkpoint restores it
    second = optimize(model, opt, schedule, batches, loss, epochs=3, state=resumed,
                      after_step=lambda: model.weight.clamp_(max=1.0))
    assert (second.resumed_from, second.steps, second.epoch, len(second.losses)) == (4, 9, 3, 5)
    assert first.losses + second.losses[:1] == full.losses[:5]  # the clamp acts from step 5 on
    assert float(model.weight.detach()) == 1.0
