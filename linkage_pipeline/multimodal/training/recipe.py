"""The CLIPPINGS recipe: label-free language-image pretraining, then supervised contrastive training; optionally,
distillation of several supervised models (e.g. trained with other seeds) into one model of the same size."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from linkage_pipeline.multimodal import registry
from linkage_pipeline.multimodal.checkpoints import PRETRAINED_SUBDIR, shipped_model_dir
from linkage_pipeline.multimodal.encoder import MultimodalEncoder
from linkage_pipeline.multimodal.preprocessing import Preprocessing
from linkage_pipeline.multimodal.training import data as training_data
from linkage_pipeline.multimodal.training.data import TrainingSet
from linkage_pipeline.multimodal.training.trainer import (
    TrainConfig,
    teacher_embeddings,
    train,
)

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- recipe
@dataclass(frozen=True)
class Recipe:
    """The whole recipe of the shipped model: architecture, then CLIP pretraining, then SupCon training.

    Attributes:
        vision_tower: ``cnn`` (small convolutional tower; what ships) or ``vit``.
        image_size: Side of the square model input.
        layout: ``grid`` (character cells laid out in rows; orientation-free) or ``line`` (re-flowed line).
        seed: Seed of the weight initialisation.
        text_fold: Fold 旧字体 to 新字体 in every text the model reads, in training and when linking (the table of
            :func:`~linkage_pipeline.multimodal.variants.japanese_old_new`, kept in the model's preprocessing).
        text_drop: When linking, read every text that holds a legal form of
            :data:`~linkage_pipeline.multimodal.training.label_free.LEGAL_FORM_LEXICON` twice, with and without it,
            and use the mean of the two text embeddings (``Preprocessing.text_drop``). Training reads each text once.
        clip: Language-image pretraining stage.
        supcon: Supervised contrastive stage on the pooled embedding.
        distil: Distillation stage (not part of :func:`train_recipe`; :func:`distil_stage` runs it): SupCon as in
            ``supcon`` plus ``distil_weight`` times the similarity distillation loss against an ensemble of
            supervised models, starting from one of them, at a lower learning rate for a shorter schedule.
    """

    vision_tower: str = "cnn"
    image_size: int = 64
    layout: str = "grid"
    seed: int = 0
    text_fold: bool = True
    text_drop: bool = True
    # Both stages stop at the end of a warm-restart cycle (10 * (2**n - 1) steps with t0=10, t_mult=2), so
    # training ends at a small learning rate rather than just after a restart.
    # The CLIP stage is the label-free one: crop/reading pairs plus an instance loss over printed names whose views
    # come from knowledge that needs no labels (label_free.py); batches hold 16 sets of 4 string-similar names x 3.
    clip: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            stage="clip", lr=2e-3, batch_size=192, m=3, k=4, instance_weight=1.0, epochs=100, max_steps=2550,
            log_every=50, checkpoint_every=250,
        )
    )
    supcon: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            stage="supcon", lr=2e-3, batch_size=63, m=3, k=3, epochs=100, max_steps=5110, unimodal_weight=1.0,
            log_every=100, checkpoint_every=300,
        )
    )
    distil: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            stage="supcon", lr=1e-3, batch_size=63, m=3, k=3, epochs=100, max_steps=1270, unimodal_weight=1.0,
            distil_weight=10.0, distil_temperature=0.1, log_every=100, checkpoint_every=300,
        )
    )


def recipe_preprocessing(recipe: Recipe) -> Preprocessing:
    """The preprocessing of a new model of ``recipe``: its image size and layout, with ``text_fold`` the
    旧字体 -> 新字体 table (Debian's ``unicode-data`` must be installed) and with ``text_drop`` the legal forms."""
    from linkage_pipeline.multimodal import variants
    from linkage_pipeline.multimodal.training.label_free import LEGAL_FORM_LEXICON

    fold = variants.japanese_old_new() if recipe.text_fold else ()
    drop = tuple(form for forms in LEGAL_FORM_LEXICON for form in forms) if recipe.text_drop else ()
    return Preprocessing(image_size=recipe.image_size, layout=recipe.layout, text_fold=tuple(fold), text_drop=drop)


def train_recipe(
    data: TrainingSet,
    recipe: Recipe,
    work_dir: str | Path,
    *,
    device: str = "cpu",
    stages: Sequence[str] = ("clip", "supcon"),
    start_from: str | Path | None = None,
    card: dict[str, Any] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Path]:
    """Run the recipe's stages on ``data`` and save each stage's model under ``work_dir``.

    ``work_dir/checkpoints/<stage>/`` holds the resumable checkpoints; ``work_dir/<stage>/`` the saved model.
    A stage whose saved model exists with the same data and config is not retrained (its folder is reused).

    Args:
        data: Training rows.
        recipe: Architecture and stage configs.
        work_dir: Output folder.
        device: Torch device for training.
        stages: Which stages to run, in order (``("supcon",)`` with ``start_from`` fine-tunes a saved model).
        start_from: Saved model to start from (default: a new model of the recipe's architecture).
        card: Extra model-card entries.
        on_step: Progress callback of :func:`train` (gets ``stage`` too).

    Returns:
        ``{stage: saved model folder}``.
    """
    root = Path(work_dir)
    if start_from is not None:
        encoder = MultimodalEncoder.load(start_from, device=device, dtype="float32")
    else:
        encoder = MultimodalEncoder.create(
            seed=recipe.seed,
            device=device,
            dtype="float32",
            vision_tower=recipe.vision_tower,
            preprocessing=recipe_preprocessing(recipe),
        )
    configs = {"clip": recipe.clip, "supcon": recipe.supcon}
    out: dict[str, Path] = {}
    history: dict[str, Any] = dict((card or {}).get("training", {}))
    for stage in stages:
        if stage not in configs:
            raise ValueError(f"unknown stage {stage!r}; expected clip or supcon")
        config = configs[stage]
        callback = None if on_step is None else (lambda info, _s=stage: on_step({**info, "stage": _s}))
        result = train(encoder, data, config, checkpoint_dir=root / "checkpoints" / stage, on_step=callback)
        history[stage] = {
            "config": asdict(config),
            "steps": result.steps,
            "seconds_this_run": round(result.seconds, 1),
            "resumed_from": result.resumed_from,
            "final_loss": float(np.mean(result.losses[-20:])) if result.losses else None,
        }
        folder = root / stage
        encoder.save(
            folder,
            card={
                **(card or {}),
                "training": dict(history),
                "recipe": {"vision_tower": recipe.vision_tower, "image_size": recipe.image_size, "layout": recipe.layout},
                "data": data.info,
                "parent_model_id": encoder.model_id,
            },
        )
        out[stage] = folder
    return out


# ------------------------------------------------------------------------------------ one stage at a time
#: The recipe's stages, in order; each names its config field of :class:`Recipe`.
STAGES: tuple[str, ...] = ("clip", "supcon")


def stage_config(
    base: TrainConfig,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    max_steps: int | None = None,
    seed: int = 0,
    distil_weight: float | None = None,
) -> TrainConfig:
    """``base`` with the given overrides; ``None`` keeps the recipe's value.

    Args:
        base: The recipe's config of the stage.
        epochs: Epochs, ``> 0``.
        lr: Peak learning rate, ``> 0``.
        batch_size: Crops per batch, ``> 0``.
        max_steps: Step limit, ``>= 0``; ``0`` means no limit (all epochs).
        seed: Seed of the stage (always set).
        distil_weight: Weight of the distillation loss, ``>= 0`` (the ``distil`` stage; 0: SupCon alone).

    Raises:
        ValueError: If an override is out of range.
    """
    changes: dict[str, Any] = {}
    for name, value in (("epochs", epochs), ("lr", lr), ("batch_size", batch_size)):
        if value is not None:
            if value <= 0:
                raise ValueError(f"{name} must be > 0 (or null for the recipe's), got {value}")
            changes[name] = value
    if distil_weight is not None:
        if distil_weight < 0:
            raise ValueError(f"distil_weight must be >= 0 (or null for the recipe's), got {distil_weight}")
        changes["distil_weight"] = distil_weight
    if max_steps is not None:
        if max_steps < 0:
            raise ValueError(f"max_steps must be >= 0 (0: no limit; null: the recipe's), got {max_steps}")
        changes["max_steps"] = max_steps or None
    return replace(base, seed=seed, **changes)


def stage_data(model_dir: str | Path, stage: str) -> tuple[TrainingSet, str, bool]:
    """The training crops of ``stage`` and the SHA-256 of their file.

    The CLIP stage trains on the label-free pretraining set when it exists (so the pretrained model, the
    self-supervised rows of the evaluation, never sees a firm label) and on the training crops otherwise; the
    SupCon stage always on the training crops.

    Returns:
        The set, the hex digest of its file, and whether it is the label-free set.

    Raises:
        ValueError: If the file the stage needs is missing.
    """
    data_path = Path(model_dir) / training_data.TRAINING_CROPS_FILE
    extra_path = Path(model_dir) / training_data.PRETRAINING_EXTRA_FILE
    label_free = stage == "clip" and extra_path.is_file()
    path = extra_path if label_free else data_path
    if not path.is_file():
        raise ValueError(f"{path} is missing; materialize training_crops first")
    return training_data.load_training_set(path), hashlib.sha256(path.read_bytes()).hexdigest(), label_free


def parent_model(trained_models: pd.DataFrame | None, stage: str) -> tuple[str | None, str]:
    """The model a stage starts from: none for ``clip``, the latest CLIP model for ``supcon``.

    Args:
        trained_models: ``trained_models`` rows, or ``None`` when none were written.
        stage: ``clip`` or ``supcon``.

    Returns:
        ``(path, model_id)`` of the parent, ``(None, "")`` for ``clip``.

    Raises:
        ValueError: For ``supcon`` without any CLIP model.
    """
    if stage != "supcon":
        return None, ""
    clips = registry.stage_models(trained_models, "clip")
    if clips.empty:
        raise ValueError("no pretrained model yet; materialize pretrained_model first")
    return str(clips["path"].iloc[-1]), str(clips["model_id"].iloc[-1])


def architecture(recipe: Recipe) -> dict[str, Any]:
    """What a new model of ``recipe`` is built from: every argument of the model config (each tower's sizes and
    widths, with our defaults filled in), the vocabulary size, the crop layout and the initialisation seed.

    These are our own arguments, not the transformers config, so upgrading transformers does not restart training.
    """
    import inspect

    from linkage_pipeline.multimodal.tokenizer import build_char_tokenizer
    from linkage_pipeline.multimodal.towers import small_clip_config

    prep = recipe_preprocessing(recipe)
    args = {name: p.default for name, p in inspect.signature(small_clip_config).parameters.items()
            if p.default is not inspect.Parameter.empty}
    args.update(image_size=prep.image_size, max_length=prep.max_length, vision_tower=recipe.vision_tower,
                vocab_size=len(build_char_tokenizer(max_length=prep.max_length)))
    out = {"model": args, "layout": recipe.layout, "grid_cols": prep.grid_cols, "seed": recipe.seed}
    if prep.text_fold:
        out["text_fold"] = [list(pair) for pair in prep.text_fold]
    return out


def run_folder(
    model_dir: str | Path,
    stage: str,
    data_sha: str,
    config: TrainConfig,
    parent: str,
    arch: dict[str, Any] | None = None,
) -> Path:
    """``model_dir/runs/<stage>-<key>``, one per (data, stage config, parent, architecture).

    Re-materializing with the same inputs resumes the run's checkpoints; any change starts a fresh folder. The
    architecture (:func:`architecture`) is part of the key, so a recipe whose model differs (another input size,
    tower or width) never resumes, or reuses, a run of another model.
    """
    settings = asdict(config)
    if config.distil_weight == 0:  # keys of runs from before distillation existed stay the same
        settings.pop("distil_weight")
        settings.pop("distil_temperature")
    parts = [data_sha, settings, parent] + ([] if arch is None else [arch])
    key = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(model_dir) / "runs" / f"{stage}-{key}"


def write_card_linking(folder: str | Path, card: dict[str, Any], linking: dict[str, Any]) -> dict[str, Any]:
    """Record the tuned pooling weight and threshold as ``card["linking"]`` in ``folder/model_card.json``.

    Returns:
        The card (unchanged, and the file untouched, when ``linking`` is empty).
    """
    return registry.update_card(folder, linking=linking) if linking else card


def trained_model_row(
    card: dict[str, Any], stage: str, folder: Path, parent: str, data_sha: str, config: TrainConfig
) -> pd.DataFrame:
    """One ``trained_models`` row (schema ``TRAINED_MODELS``) for a saved stage, stamped now (UTC, ns)."""
    return pd.DataFrame(
        [
            {
                "model_id": card["model_id"],
                "stage": stage,
                "path": str(folder),
                "parent_model_id": parent,
                "data_sha256": data_sha,
                "config": json.dumps(asdict(config)),
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z",
            }
        ]
    )


def train_stage(
    model_dir: str | Path,
    stage: str,
    trained_models: pd.DataFrame | None,
    *,
    overrides: dict[str, Any] | None = None,
    device: str = "cpu",
    tune: Callable[[Path], dict[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Path, dict[str, Any], pd.DataFrame]:
    """Train one stage of the recipe on ``model_dir``'s training crops (what the training assets run).

    ``supcon`` starts from the latest CLIP model of ``trained_models`` and gets a copy of it as its
    ``pretrained/`` companion; ``tune`` (given the saved folder) then picks the pooling weight and threshold that
    are written to the model card.

    Args:
        model_dir: Folder of the training crops and of the runs.
        stage: ``clip`` or ``supcon``.
        trained_models: ``trained_models`` rows, or ``None``.
        overrides: Keyword arguments of :func:`stage_config` (``None`` values keep the recipe's).
        device: Torch device for training.
        tune: Returns the card's ``linking`` entry for a supervised model (``{}``: none); ``None``: no tuning.
        log: Receives progress lines.

    Returns:
        The saved model folder, its model card, and its ``trained_models`` row.

    Raises:
        ValueError: On an unknown stage, missing training crops, or ``supcon`` without a CLIP model.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    say = log or logger.info
    data, data_sha, label_free = stage_data(model_dir, stage)
    recipe = Recipe()
    config = stage_config(getattr(recipe, stage), **(overrides or {}))
    if stage == "clip" and not label_free:
        # the instance loss needs classes that carry no firm label; without the label-free set, plain CLIP
        config = replace(config, instance_weight=0.0)
    recipe = replace(recipe, **{stage: config})
    start_from, parent = parent_model(trained_models, stage)
    work_dir = run_folder(model_dir, stage, data_sha, config, parent, architecture(recipe))
    say(f"training stage {stage} on {len(data)} crops in {work_dir} (device {device})")

    def progress(info: dict[str, Any]) -> None:
        if info["step"] % config.log_every == 0:
            say(f"{stage} step {info['step']} epoch {info['epoch']} loss {info['loss']:.4f} lr {info['lr']:.2e}")

    out = train_recipe(data, recipe, work_dir, device=device, stages=(stage,), start_from=start_from, on_step=progress)
    folder = out[stage]
    if stage == "supcon":
        registry.attach_pretrained(folder, Path(str(start_from)))
    card = registry.read_card(folder)
    if stage == "supcon" and tune is not None:
        card = write_card_linking(folder, card, tune(folder))
    return folder, card, trained_model_row(card, stage, folder, parent, data_sha, config)


# ------------------------------------------------------------------------------------------- distillation
#: ``teachers`` names: the shipped model, and every supervised model the training assets saved.
SHIPPED, TRAINED = "shipped", "trained"


def resolve_models(names: Sequence[str], trained_models: pd.DataFrame | None) -> list[Path]:
    """Model folders of ``names``: ``"shipped"``, ``"trained"`` (every supervised model of ``trained_models``,
    oldest first) or a model folder; duplicates are dropped, order kept.

    Raises:
        ValueError: Without names, for ``"trained"`` with no supervised model, or a folder without a model.
    """
    if not names:
        raise ValueError("no models named; expected 'shipped', 'trained' or model folders")
    out: list[Path] = []
    for name in names:
        if name == SHIPPED:
            paths = [shipped_model_dir()]
        elif name == TRAINED:
            rows = registry.stage_models(trained_models, "supcon")
            if rows.empty:
                raise ValueError("'trained' names no model: materialize supervised_model first")
            paths = [Path(str(p)) for p in rows["path"]]
        else:
            paths = [Path(name).expanduser().resolve()]
        for path in paths:
            if not (path / "model.safetensors").is_file():
                raise ValueError(f"model {name!r}: {path} has no model.safetensors; expected a saved model folder")
            if path.resolve() not in [p.resolve() for p in out]:
                out.append(path)
    return out


def distil_stage(
    model_dir: str | Path,
    teachers: Sequence[str | Path],
    start_from: str | Path,
    *,
    overrides: dict[str, Any] | None = None,
    device: str = "cpu",
    tune: Callable[[Path, float], dict[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Path, dict[str, Any], pd.DataFrame]:
    """Distil an ensemble of supervised models into one model of the size of ``start_from``.

    The teachers embed every training crop once (:func:`~linkage_pipeline.multimodal.training.trainer.teacher_embeddings`:
    the ensemble's similarity is the mean of its members' cosines); the student, initialised from ``start_from``,
    is trained with the recipe's ``distil`` config: SupCon on the labels plus the similarity distillation loss. It
    keeps the pooling weight of its start model's card (the default for sources without labels), and ``tune``
    chooses the no-match threshold at that weight; the student's ``pretrained/`` companion is its start model's.

    Args:
        model_dir: Folder of the training crops and of the runs.
        teachers: Model folders of the ensemble.
        start_from: Model folder the student starts from (usually one of the teachers).
        overrides: Keyword arguments of :func:`stage_config`.
        device: Torch device.
        tune: ``(saved folder, pooling weight) -> card linking entry`` (``{}``: none); ``None``: no tuning.
        log: Receives progress lines.

    Returns:
        The saved model folder, its model card, and its ``trained_models`` row (stage ``distil``).

    Raises:
        ValueError: Without teachers, or if the training crops are missing.
    """
    say = log or logger.info
    if not teachers:
        raise ValueError("distillation needs at least one teacher model folder")
    data, data_sha, _ = stage_data(model_dir, "supcon")
    recipe = Recipe()
    config = stage_config(recipe.distil, **(overrides or {}))
    members = [MultimodalEncoder.load(t, device=device, dtype="float32") for t in teachers]
    student = MultimodalEncoder.load(start_from, device=device, dtype="float32")
    parent = student.model_id
    key = parent + ":" + ",".join(m.model_id for m in members)
    work_dir = run_folder(model_dir, "distil", data_sha, config, key, architecture(recipe))
    say(f"distilling {len(members)} teachers into {start_from} on {len(data)} crops in {work_dir} (device {device})")
    t0 = time.perf_counter()
    teacher = teacher_embeddings(members, data)
    say(f"teacher embeddings of {len(data)} crops in {time.perf_counter() - t0:.0f} s")
    teacher_rows = [{"model_id": m.model_id, "path": str(t)} for m, t in zip(members, teachers, strict=True)]
    del members

    def progress(info: dict[str, Any]) -> None:
        if info["step"] % config.log_every == 0:
            say(f"distil step {info['step']} epoch {info['epoch']} loss {info['loss']:.4f} lr {info['lr']:.2e}")

    result = train(student, data, config, checkpoint_dir=work_dir / "checkpoints" / "distil", on_step=progress,
                   teacher=teacher)
    parent_card = registry.read_card(start_from)
    history = dict(parent_card.get("training", {}))
    history["distil"] = {
        "config": asdict(config),
        "teachers": teacher_rows,
        "start_model_id": parent,
        "start_parent_model_id": parent_card.get("parent_model_id", ""),
        "steps": result.steps,
        "seconds_this_run": round(result.seconds, 1),
        "resumed_from": result.resumed_from,
        "final_loss": float(np.mean(result.losses[-20:])) if result.losses else None,
    }
    folder = work_dir / "distil"
    student.card = {k: v for k, v in student.card.items() if k != "linking"}
    student.save(folder, card={"training": history, "data": data.info, "parent_model_id": parent})
    start_pretrained = Path(start_from) / PRETRAINED_SUBDIR
    if start_pretrained.is_dir():
        registry.attach_pretrained(folder, start_pretrained)
    card = registry.read_card(folder)
    weight = float(parent_card.get("linking", {}).get("pooling_weight", 0.5))
    linking = (tune(folder, weight) if tune is not None else {}) or {"pooling_weight": weight}
    rule = (f"the start model's card weight ({weight}), kept: the student starts from that model and the recipe "
            "does not choose the weight again" + ("; the no-match threshold is chosen at that weight on the "
                                                  "validation firms" if "nomatch_threshold" in linking else ""))
    card = write_card_linking(folder, card, {**linking, "pooling_weight_rule": rule})
    return folder, card, trained_model_row(card, "distil", folder, parent, data_sha, config)


# -------------------------------------------------------------------------------------------- evaluation
def retrieval_top1(
    encoder: MultimodalEncoder,
    queries: TrainingSet,
    targets: TrainingSet,
    *,
    weights: Sequence[float] = (0.0, 0.5, 1.0),
) -> dict[float, float]:
    """Top-1 accuracy of nearest-neighbour linking of ``queries`` to ``targets`` by class, per image weight.

    Args:
        encoder: The model.
        queries: Query crops; their labels must index the same firms as ``targets``'.
        targets: Target crops.
        weights: Image weights ``w`` of the pooled embedding (0 = language-only, 1 = vision-only).

    Returns:
        ``{w: accuracy}``, accuracy in [0, 1] over all queries.
    """
    qi = encoder.encode_images(queries.images, directions=queries.directions)
    qt = encoder.encode_texts(queries.texts)
    ti = encoder.encode_images(targets.images, directions=targets.directions)
    tt = encoder.encode_texts(targets.texts)
    from linkage_pipeline.multimodal.encoder import pool_embeddings

    out = {}
    for w in weights:
        q, t = pool_embeddings(qi, qt, w), pool_embeddings(ti, tt, w)
        best = np.argmax(q @ t.T, axis=1)
        out[float(w)] = float(np.mean(targets.labels[best] == queries.labels))
    return out
