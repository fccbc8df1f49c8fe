"""The CLIPPINGS recipe: language-image pretraining, then supervised contrastive training."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from linkage_pipeline.multimodal.encoder import MultimodalEncoder
from linkage_pipeline.multimodal.training.data import TrainingSet
from linkage_pipeline.multimodal.training.trainer import TrainConfig, train

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
        clip: Language-image pretraining stage.
        supcon: Supervised contrastive stage on the pooled embedding.
    """

    vision_tower: str = "cnn"
    image_size: int = 64
    layout: str = "grid"
    seed: int = 0
    # Both stages stop at the end of a warm-restart cycle (10 * (2**n - 1) steps with t0=10, t_mult=2), so
    # training ends at a small learning rate rather than just after a restart.
    clip: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            stage="clip", lr=2e-3, batch_size=256, epochs=100, max_steps=2550, log_every=50, checkpoint_every=250
        )
    )
    supcon: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            stage="supcon", lr=2e-3, batch_size=63, m=3, k=3, epochs=100, max_steps=5110, unimodal_weight=1.0,
            log_every=100, checkpoint_every=300,
        )
    )


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
    from linkage_pipeline.multimodal.preprocessing import Preprocessing

    root = Path(work_dir)
    if start_from is not None:
        encoder = MultimodalEncoder.load(start_from, device=device, dtype="float32")
    else:
        encoder = MultimodalEncoder.create(
            seed=recipe.seed,
            device=device,
            dtype="float32",
            vision_tower=recipe.vision_tower,
            preprocessing=Preprocessing(image_size=recipe.image_size, layout=recipe.layout),
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
