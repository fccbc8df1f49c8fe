"""Fine-tuning a text encoder on pairs of rows known to match."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from linkage_pipeline.api.text import (
    TextEncoder,
    cached_encoder,
    check_frame,
    check_has,
    check_k,
)

if TYPE_CHECKING:
    from linkage_pipeline.multimodal.training.trainer import TrainResult


# ---------------------------------------------------------------------------------------------- training
def train_model(
    pairs: pd.DataFrame,
    base_model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    left_col: str = "left",
    right_col: str = "right",
    label_col: str | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 2e-5,
    temperature: float = 0.05,
    max_length: int | None = None,
    device: str = "auto",
    seed: int = 0,
) -> TrainResult:
    """Fine-tune a text model on labelled pairs with a supervised contrastive, in-batch-negatives loss.

    Each positive pair ``(a, b)`` is a class; within a batch, ``a`` must pick its ``b`` among all the batch's
    right texts and ``b`` its ``a`` among the left texts (symmetric InfoNCE, MultipleNegativesRanking-style,
    cosine similarities divided by ``temperature``). Other rows whose right text equals this row's right text are
    masked out, so exact duplicates are never pushed apart. Rows labelled 0 in ``label_col`` are dropped.

    Args:
        pairs: One row per pair, texts in ``left_col`` and ``right_col``.
        base_model_dir: Local sentence-transformers-compatible directory to start from.
        out_dir: Where the tuned model is saved (safetensors weights, tokenizer, pooling config).
        left_col: Column of left texts.
        right_col: Column of right texts.
        label_col: Optional 0/1 column; only rows with 1 are used.
        epochs: Passes over the pairs.
        batch_size: Pairs per batch (>= 2: the other pairs are the negatives).
        learning_rate: AdamW learning rate (constant; AdamW's default weight decay 0.01).
        temperature: Softmax temperature on cosine similarities.
        max_length: Token limit; ``None`` reads it from the base directory.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        seed: Seed of the shuffling (batches of each epoch as
            :func:`~linkage_pipeline.multimodal.training.trainer.shuffled_batches` cuts them) and of torch.

    Returns:
        A :class:`~linkage_pipeline.multimodal.training.trainer.TrainResult` with ``model_dir`` set; its ``losses``
        (also ``step_losses``) hold every step's loss and ``epoch_losses`` each epoch's mean.

    Example:
        >>> res = train_model(pairs, minilm_dir, "models/firms", epochs=2)  # doctest: +SKIP
        >>> merge(a, b, on="name", model=res.model_dir)  # doctest: +SKIP
    """
    import torch

    from linkage_pipeline.multimodal.training.trainer import (
        epoch_rng,
        make_optimizer,
        optimize,
        shuffled_batches,
    )

    pairs = check_frame(pairs, "pairs")
    check_has(pairs, [left_col, right_col] + ([label_col] if label_col else []), "pairs")
    epochs = check_k(epochs, "epochs")
    batch_size = check_k(batch_size, "batch_size")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (in-batch negatives), got {batch_size}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    data = pairs if label_col is None else pairs[pairs[label_col].astype(int) == 1]
    data = data[[left_col, right_col]].dropna()
    if len(data) < 2:
        raise ValueError(f"train_model needs at least 2 positive pairs, got {len(data)}")
    lefts = [str(v) for v in data[left_col]]
    rights = [str(v) for v in data[right_col]]

    torch.manual_seed(seed)
    enc = TextEncoder(base_model_dir, device=device, max_length=max_length)
    model = enc.model
    # AdamW's default weight decay (0.01) and a constant learning rate, as this trainer always used.
    opt, schedule = make_optimizer(model, learning_rate, 0.01, "constant")

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        za = torch.nn.functional.normalize(enc._embed([lefts[t] for t in idx]), dim=-1)
        zb = torch.nn.functional.normalize(enc._embed([rights[t] for t in idx]), dim=-1)
        logits = za @ zb.T / temperature
        r = [rights[t] for t in idx]
        same = torch.tensor([[r[p] == r[q] and p != q for q in range(len(idx))] for p in range(len(idx))],
                            device=logits.device)
        logits = logits.masked_fill(same, float("-inf"))
        target = torch.arange(len(idx), device=logits.device)
        return (torch.nn.functional.cross_entropy(logits, target)
                + torch.nn.functional.cross_entropy(logits.T, target)) / 2

    def epoch_batches(epoch: int) -> list[np.ndarray]:
        return shuffled_batches(len(lefts), batch_size, epoch_rng(seed, epoch))

    result = optimize(model, opt, schedule, epoch_batches, batch_loss, epochs=epochs, log_every=0, name="train_model")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    enc.tokenizer.save_pretrained(str(out))
    _write_sentence_transformers_config(Path(base_model_dir), out, enc)
    cached_encoder.cache_clear()  # a re-trained directory must not be served from the cache
    return dataclasses.replace(result, model_dir=out)


def _write_sentence_transformers_config(base: Path, out: Path, enc: TextEncoder) -> None:
    """Copy (or write) the sentence-transformers side files so the output is a complete ST directory."""
    for name in ("modules.json", "config_sentence_transformers.json"):
        if (base / name).is_file():
            shutil.copy(base / name, out / name)
    if not (out / "modules.json").is_file():
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]
        (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "2_Normalize").mkdir(exist_ok=True)
    (out / "1_Pooling").mkdir(exist_ok=True)
    pooling = {
        "word_embedding_dimension": enc.dim,
        "pooling_mode_cls_token": enc.pooling == "cls",
        "pooling_mode_mean_tokens": enc.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": enc.max_length, "do_lower_case": False}, indent=2)
    )
