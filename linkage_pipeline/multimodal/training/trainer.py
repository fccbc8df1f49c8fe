"""The CLIPPINGS training recipe on synthetic firm-name crops: data, losses, hard-negative mining, trainers.

1. :func:`build_training_set` renders generated firm names (``vocabulary="train"``, disjoint from the demo
   and held-out firms) in several typefaces, both orientations, with light scan augmentations. Each view of a
   firm is printed the way some document would print it (:func:`~linkage_pipeline.synthetic.firms.mention`:
   old/new character forms, ``株式會社``/``（株）``/none, short forms), so views of one firm are positives and the
   confusable siblings that :func:`generate_firms` draws are hard negatives. The text side is OCR of the
   rendering by a real engine (real OCR noise) or, cheaply, :func:`simulate_ocr`.
2. :func:`train` runs either stage: ``"clip"`` (language-image pretraining, symmetric CLIP loss on crop/OCR
   pairs) or ``"supcon"`` (supervised contrastive loss on the pooled embedding, batches built by offline
   hard-negative mining: each anchor class with its ``k - 1`` nearest classes, ``m`` views each). AdamW with
   cosine annealing and warm restarts (first restart after 10 steps, factor 2, minimum 0), as in the paper's
   Table S-1. Progress is logged; a checkpoint (safetensors weights, optimizer state, JSON trainer state) is
   written every ``checkpoint_every`` steps and training resumes from it. On the CPU a run is a deterministic
   function of its seed.

The loop itself (:func:`optimize`, with :func:`make_optimizer` and :func:`shuffled_batches`) and its
:class:`TrainResult` also serve the dataframe API's text-encoder fine-tuning (:func:`linkage_pipeline.api.train_model`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from linkage_pipeline.multimodal.encoder import MultimodalEncoder
from linkage_pipeline.multimodal.training.data import TrainingSet
from linkage_pipeline.multimodal.training.losses import (
    clip_loss,
    distillation_loss,
    supcon_loss,
)
from linkage_pipeline.multimodal.training.mining import (
    hard_negative_batches,
    nearest_classes,
)

logger = logging.getLogger(__name__)


Stage = Literal["clip", "supcon"]
CHECKPOINT_DIR = "last"
_STATE_FILE = "trainer_state.json"
#: Optimizer state: its tensors as safetensors, the rest (hyperparameters, structure) as JSON; never pickle.
_OPTIMIZER_TENSORS = "optimizer.safetensors"
_OPTIMIZER_META = "optimizer.json"
#: Where versions before safetensors-only checkpoints kept the optimizer state (a torch.save pickle).
_LEGACY_OPTIMIZER_FILE = "optimizer.pt"
_WEIGHTS_FILE = "model.safetensors"


# ----------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training stage (defaults: CLIPPINGS Table S-1, scaled to a small CPU model).

    Attributes:
        lr: Maximum learning rate of the cosine schedule.
        weight_decay: AdamW weight decay.
        t0: Steps to the first warm restart; ``t_mult`` multiplies the period after each restart.
        t_mult: Restart period factor.
        batch_size: Rows per batch (``B``).
        stage: ``clip`` (language-image pretraining) or ``supcon`` (supervised, pooled embedding).
        temperature: SupCon temperature (the CLIP stage learns ``logit_scale`` instead).
        image_weight: ``w`` of the pooled embedding in the SupCon stage.
        unimodal_weight: SupCon stage: add ``unimodal_weight`` times the mean of the SupCon losses of the image
            and of the text embeddings alone to the pooled loss. The pooled loss alone lets the text side carry
            the batch and gives a randomly initialised image tower almost no signal; the unimodal terms train
            each tower to link on its own (the paper's vision-only and language-only rows).
        distil_weight: SupCon stage: when > 0, add ``distil_weight`` times the similarity distillation loss
            (:func:`~linkage_pipeline.multimodal.training.losses.distillation_loss`) against a teacher's embeddings
            of the same rows (``train(..., teacher=...)``; e.g. an ensemble of models trained with other seeds).
        distil_temperature: Softmax temperature of the distillation loss.
        instance_weight: CLIP stage: when > 0, batches are built as in SupCon (each class with its ``k - 1``
            most similar classes by string similarity, ``m`` views each), the CLIP loss counts every view of a
            class as a positive, and ``instance_weight`` times the SupCon losses of the pooled, image and text
            embeddings over the classes is added. With label-free data (one class per printed name, views made by
            :mod:`~linkage_pipeline.multimodal.training.label_free`) this is the self-supervised stage.
        m: Views per class in a SupCon batch.
        k: Classes per hard-negative set (anchor + ``k - 1`` nearest).
        max_steps: Stop after this many steps in total (``None``: run all epochs).
        epochs: Passes over the data.
        seed: Seed of batch order and view sampling.
        checkpoint_every: Steps between checkpoints (one is also written at the end).
        log_every: Steps between progress log lines.
    """

    # the optimiser
    lr: float = 5e-4
    weight_decay: float = 0.001
    t0: int = 10
    t_mult: int = 2
    batch_size: int = 64
    # what the stage optimises, and the loss and batch-mining settings of SupCon
    stage: Stage = "clip"
    temperature: float = 0.1
    image_weight: float = 0.5
    unimodal_weight: float = 0.0
    distil_weight: float = 0.0
    distil_temperature: float = 0.1
    instance_weight: float = 0.0
    m: int = 3
    k: int = 3
    # how long, and the bookkeeping
    max_steps: int | None = None
    epochs: int = 1
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 10

    @property
    def grouped(self) -> bool:
        """Whether batches hold ``m`` views of each of their classes (SupCon, or CLIP with an instance loss)."""
        return self.stage == "supcon" or self.instance_weight > 0

    def __post_init__(self) -> None:
        # (holds, what is expected): one row per rule, checked in order.
        rules = (
            (self.stage in ("clip", "supcon"), "stage must be 'clip' or 'supcon'"),
            (self.lr > 0 and self.batch_size >= 2, "lr > 0 and batch_size >= 2 expected"),
            (self.epochs >= 1 and self.t0 >= 1 and self.t_mult >= 1, "epochs >= 1, t0 >= 1 and t_mult >= 1 expected"),
            (0.0 <= self.image_weight <= 1.0, "image_weight must be in [0, 1]"),
            (self.unimodal_weight >= 0 and self.instance_weight >= 0, "unimodal_weight must be >= 0 and instance_weight must be >= 0"),
            (self.distil_weight >= 0 and self.distil_temperature > 0, "distil_weight >= 0 and distil_temperature > 0 expected"),
            (self.distil_weight == 0 or self.stage == "supcon", "distil_weight > 0 only in the supcon stage"),
            (not self.grouped or (self.m >= 2 and self.k >= 1 and self.batch_size >= self.m * self.k),
             "clip with instance_weight > 0, like supcon needs m >= 2, k >= 1 and batch_size >= m * k"),
        )
        for holds, expected in rules:
            if not holds:
                raise ValueError(f"{expected}, got {self}")


@dataclass
class TrainResult:
    """What a training run did: :func:`train` and :func:`linkage_pipeline.api.train_model` return it.

    Attributes:
        steps: Global step reached (optimizer steps, all runs of this checkpoint directory together).
        epoch: Epoch reached (epochs fully done).
        losses: Loss of every step taken in this call, in order.
        resumed_from: Step the call resumed from (0 for a fresh start).
        seconds: Wall time of this call.
        epoch_losses: Mean loss of each epoch finished in this call (NaN for an epoch without a step).
        model_dir: Where the trained model was saved (:func:`~linkage_pipeline.api.train_model`); ``None`` when
            the caller keeps the model in memory (:func:`train`).
    """

    steps: int
    epoch: int
    losses: list[float]
    resumed_from: int = 0
    seconds: float = 0.0
    epoch_losses: list[float] = field(default_factory=list)
    model_dir: Path | None = None

    @property
    def step_losses(self) -> list[float]:
        """:attr:`losses` under the dataframe API's name."""
        return self.losses


@dataclass
class LoopState:
    """Where :func:`optimize` stands: a checkpoint saves it and a resumed run starts from it.

    Attributes:
        step: Optimizer steps taken (all runs together).
        epoch: Epochs fully done.
        batch_in_epoch: Batches of the current epoch done.
        losses: Loss of every step taken by this call's loop.
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    losses: list[float] = field(default_factory=list)


Schedule = Literal["constant", "cosine_restarts"]


def make_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, schedule: Schedule, t0: int = 10, t_mult: int = 2
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over ``model``'s parameters and its learning-rate schedule.

    Args:
        model: The model trained.
        lr: Learning rate (the maximum of the cosine schedule).
        weight_decay: AdamW weight decay.
        schedule: ``"constant"`` (``lr`` throughout) or ``"cosine_restarts"`` (cosine annealing to 0 with warm
            restarts, the first after ``t0`` steps, the period multiplied by ``t_mult`` after each).
        t0: Steps to the first restart (cosine only).
        t_mult: Restart period factor (cosine only).

    Returns:
        ``(optimizer, scheduler)``.

    Raises:
        ValueError: On an unknown schedule.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if schedule == "cosine_restarts":
        scheduler: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=t0, T_mult=t_mult, eta_min=0.0
        )
    elif schedule == "constant":
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    else:
        raise ValueError(f"schedule must be 'constant' or 'cosine_restarts', got {schedule!r}")
    return optimizer, scheduler


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The random generator of one epoch's batches: a function of the seed and the epoch alone (so resumable)."""
    return np.random.default_rng([seed, epoch, 0x42415443])


def shuffled_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Rows ``0..n-1`` in a random order, cut into batches of ``batch_size``; a last batch of one row is dropped.

    Returns:
        int64 arrays of row positions (in-batch contrastive losses need at least two rows per batch).
    """
    order = rng.permutation(n)
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    return [b for b in batches if len(b) >= 2]


def optimize(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch_batches: Callable[[int], list[np.ndarray]],
    batch_loss: Callable[[np.ndarray], torch.Tensor],
    *,
    epochs: int,
    state: LoopState | None = None,
    max_steps: int | None = None,
    after_step: Callable[[], None] | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    checkpoint: Callable[[LoopState], None] | None = None,
    checkpoint_every: int = 0,
    log_every: int = 10,
    name: str = "train",
) -> TrainResult:
    """The one training loop: epochs of batches, one optimizer and schedule step per batch, resumable.

    Args:
        model: Put in train mode at each epoch's start and in eval mode at the end.
        optimizer: From :func:`make_optimizer`.
        scheduler: Stepped after every optimizer step.
        epoch_batches: The batches (row positions) of an epoch, given its number; must be a function of the epoch
            alone so that a resumed run sees the batches of the interrupted one (e.g. :func:`shuffled_batches`
            with :func:`epoch_rng`).
        batch_loss: The scalar loss of a batch.
        epochs: Epochs in total (counting those done before a resume).
        state: Where to start (a resumed checkpoint's step, epoch and batch); ``None`` starts afresh. Updated in
            place.
        max_steps: Stop at this global step (``None``: run all epochs).
        after_step: Run under ``torch.no_grad`` after each optimizer step (e.g. clamping a parameter).
        on_step: Called after every step with ``{"step", "epoch", "loss", "lr"}``.
        checkpoint: Called with the state every ``checkpoint_every`` steps and once at the end.
        checkpoint_every: Steps between checkpoints (0: only at the end).
        log_every: Steps between progress log lines (0: none).
        name: Label of the log lines.

    Returns:
        The steps reached and this call's losses (``model_dir`` is ``None``).
    """
    state = state if state is not None else LoopState()
    resumed_from, start_time = state.step, time.perf_counter()
    epoch_losses: list[float] = []
    done = False
    window_start, window_rows = time.perf_counter(), 0
    while state.epoch < epochs and not done:
        batches = epoch_batches(state.epoch)
        model.train()
        first = len(state.losses)
        while state.batch_in_epoch < len(batches):
            if max_steps is not None and state.step >= max_steps:
                done = True
                break
            rows = batches[state.batch_in_epoch]
            loss = batch_loss(rows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if after_step is not None:
                with torch.no_grad():
                    after_step()
            state.step += 1
            state.batch_in_epoch += 1
            value = float(loss.detach())
            state.losses.append(value)
            window_rows += len(rows)
            lr = float(scheduler.get_last_lr()[0])
            if on_step is not None:
                on_step({"step": state.step, "epoch": state.epoch, "loss": value, "lr": lr})
            if log_every and state.step % log_every == 0:
                elapsed = time.perf_counter() - window_start
                logger.info("%s step %d epoch %d loss %.4f lr %.2e (%.0f rows/s)", name, state.step, state.epoch,
                            value, lr, window_rows / max(elapsed, 1e-9))
                window_start, window_rows = time.perf_counter(), 0
            if checkpoint is not None and checkpoint_every and state.step % checkpoint_every == 0:
                checkpoint(state)
        else:
            done_losses = state.losses[first:]
            epoch_losses.append(float(np.mean(done_losses)) if done_losses else float("nan"))
            logger.info("%s epoch %d/%d mean loss %.4f", name, state.epoch + 1, epochs, epoch_losses[-1])
            state.epoch += 1
            state.batch_in_epoch = 0
    if checkpoint is not None:
        checkpoint(state)
    model.eval()
    return TrainResult(state.step, state.epoch, list(state.losses), resumed_from, time.perf_counter() - start_time,
                       epoch_losses)


@dataclass
class _Tensors:
    pixels: torch.Tensor  # (n, S, S) float16, normalised grey channel
    input_ids: torch.Tensor  # (n, L) int64
    attention_mask: torch.Tensor  # (n, L) int64


def _prepare(encoder: MultimodalEncoder, data: TrainingSet) -> _Tensors:
    """Preprocess every crop and text once (augmentation is offline, in the renderings)."""
    px = encoder.pixel_values(data.images, data.directions)[:, 0].to(torch.float16)
    enc = encoder.tokenize(data.texts)
    return _Tensors(px, enc["input_ids"], enc["attention_mask"])


def _batch_features(encoder: MultimodalEncoder, t: _Tensors, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.from_numpy(rows)
    px = t.pixels[idx].float().unsqueeze(1).expand(-1, 3, -1, -1).to(encoder.device)
    mask = t.attention_mask[idx]
    length = int(mask.sum(dim=1).max())
    ids = t.input_ids[idx, :length].to(encoder.device)
    img = encoder.model.image_features(px)
    txt = encoder.model.text_features(ids, mask[:, :length].to(encoder.device))
    return img, txt


def _class_embeddings(
    encoder: MultimodalEncoder, t: _Tensors, labels: np.ndarray, weight: float, rng: np.random.Generator
) -> np.ndarray:
    """Pooled embedding of one random view per class: float32 (C, d)."""
    n_classes = int(labels.max()) + 1
    rows = np.array([rng.choice(np.flatnonzero(labels == c)) if (labels == c).any() else 0 for c in range(n_classes)])
    out = []
    encoder.model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), 256):
            img, txt = _batch_features(encoder, t, rows[start : start + 256])
            z = weight * F.normalize(img, dim=-1) + (1 - weight) * F.normalize(txt, dim=-1)
            out.append(F.normalize(z, dim=-1).float().cpu().numpy())
    return np.concatenate(out)


def teacher_embeddings(
    teachers: list[MultimodalEncoder], data: TrainingSet, *, batch_size: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and text embeddings of every training row by a teacher: one model, or an ensemble of several.

    Each member's embeddings are L2-normalised and concatenated, divided by ``sqrt(len(teachers))``, so the rows
    are unit vectors whose inner products are the mean of the members' cosine similarities. Each member
    preprocesses the crops its own way. The crops are fixed (augmentation is offline, in the renderings), so this
    is computed once per training run.

    Returns:
        float32 ``(image, text)``, each (n, sum of the members' dimensions), on the CPU.

    Raises:
        ValueError: Without a teacher or rows.
    """
    if not teachers or len(data) == 0:
        raise ValueError(f"need at least one teacher and one row, got {len(teachers)} teachers and {len(data)} rows")
    images, texts = [], []
    for encoder in teachers:
        tensors = _prepare(encoder, data)
        encoder.model.eval()
        parts: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        with torch.no_grad():
            for start in range(0, len(data), batch_size):
                img, txt = _batch_features(encoder, tensors, np.arange(start, min(start + batch_size, len(data))))
                parts[0].append(F.normalize(img.float(), dim=-1).cpu())
                parts[1].append(F.normalize(txt.float(), dim=-1).cpu())
        images.append(torch.cat(parts[0]))
        texts.append(torch.cat(parts[1]))
    scale = float(np.sqrt(len(teachers)))
    return torch.cat(images, dim=1) / scale, torch.cat(texts, dim=1) / scale


def _epoch_batches(
    config: TrainConfig, labels: np.ndarray, epoch: int, neighbours: np.ndarray | None
) -> list[np.ndarray]:
    rng = epoch_rng(config.seed, epoch)
    if not config.grouped:
        return shuffled_batches(len(labels), config.batch_size, rng)
    if neighbours is None:
        raise ValueError("supcon batches need hard-negative neighbour sets; none were mined")
    return hard_negative_batches(neighbours, labels, m=config.m, batch_size=config.batch_size, rng=rng)


def _encode_state(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` as JSON, with each tensor moved to ``tensors`` under a dotted key and referenced by it."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().to("cpu").contiguous()
        return {"__tensor__": key}
    if isinstance(value, dict):  # keys may be ints (parameter ids): kept as pairs so their type survives
        return {"__dict__": [[k, _encode_state(v, f"{key}.{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode_state(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode_state(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"optimizer state entry {key} is a {type(value).__name__}; expected tensors, numbers, strings, "
                     "lists, tuples or dicts")


def _decode_state(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode_state(v, tensors) for v in value]
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__tuple__" in value:
            return tuple(_decode_state(v, tensors) for v in value["__tuple__"])
        return {k: _decode_state(v, tensors) for k, v in value["__dict__"]}
    return value


def _save_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Writes the optimizer state as ``optimizer.safetensors`` (tensors) and ``optimizer.json`` (the rest)."""
    tensors: dict[str, torch.Tensor] = {}
    meta = _encode_state(optimizer.state_dict(), "optimizer", tensors)
    save_file(tensors, str(directory / _OPTIMIZER_TENSORS), metadata={"format": "pt"})
    (directory / _OPTIMIZER_META).write_text(json.dumps(meta), encoding="utf-8")


def _load_optimizer(optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Restores the optimizer state written by :func:`_save_optimizer` (no pickle is read).

    Raises:
        ValueError: when the checkpoint keeps its optimizer state as a pickle (older versions) or lacks it.
    """
    tensors_file, meta_file = directory / _OPTIMIZER_TENSORS, directory / _OPTIMIZER_META
    if not (tensors_file.is_file() and meta_file.is_file()):
        legacy = directory / _LEGACY_OPTIMIZER_FILE
        if legacy.exists():
            raise ValueError(f"checkpoint {directory} keeps its optimizer state in {legacy.name} (pickle), which is "
                             f"never loaded; expected {_OPTIMIZER_TENSORS} (safetensors) and {_OPTIMIZER_META}: "
                             "train into a new checkpoint_dir")
        raise ValueError(f"checkpoint {directory} has no {_OPTIMIZER_TENSORS} and {_OPTIMIZER_META}; expected both "
                         "beside its trainer state")
    tensors = load_file(str(tensors_file), device="cpu")  # load_state_dict moves each entry to its parameter
    optimizer.load_state_dict(_decode_state(json.loads(meta_file.read_text(encoding="utf-8")), tensors))


def _save_checkpoint(
    directory: Path, encoder: MultimodalEncoder, optimizer: torch.optim.Optimizer, scheduler: Any, state: dict[str, Any]
) -> None:
    """Write the checkpoint to a temporary folder, then swap it in (a crash leaves the old or the new one)."""
    tmp, final, old = (
        directory / (CHECKPOINT_DIR + ".tmp"),
        directory / CHECKPOINT_DIR,
        directory / (CHECKPOINT_DIR + ".old"),
    )
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().to("cpu").contiguous() for k, v in encoder.model.state_dict().items()}
    save_file(weights, str(tmp / _WEIGHTS_FILE), metadata={"format": "pt"})
    _save_optimizer(optimizer, tmp)
    full = {**state, "scheduler": scheduler.state_dict()}
    (tmp / _STATE_FILE).write_text(json.dumps(full, indent=1, default=float), encoding="utf-8")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint_state(directory: str | Path) -> dict[str, Any] | None:
    """The trainer state (step, epoch, config, losses, ...) of the last checkpoint in ``directory``, or None."""
    path = Path(directory) / CHECKPOINT_DIR / _STATE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def train(
    encoder: MultimodalEncoder,
    data: TrainingSet,
    config: TrainConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    teacher: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> TrainResult:
    """Train ``encoder`` in place for one stage, resuming from ``checkpoint_dir`` when it holds a checkpoint.

    Args:
        encoder: A ``clip``-kind encoder (its device is used; training runs in float32).
        data: Training rows.
        config: Hyperparameters; a resumed run must use the same stage.
        checkpoint_dir: Where ``last/`` (weights, optimizer, trainer state) is written and resumed from;
            ``None`` trains without checkpoints.
        on_step: Called after every step with ``{"step", "epoch", "loss", "lr"}``.
        teacher: ``(image, text)`` embeddings of every row by a teacher (:func:`teacher_embeddings`); required
            when ``config.distil_weight > 0``, ignored otherwise.

    Returns:
        What was done; the encoder holds the trained weights (in eval mode).

    Raises:
        ValueError: If the data has fewer than 2 rows, the checkpoint is of another stage, or distillation lacks
            a teacher of one row per training row.
    """
    if len(data) < 2:
        raise ValueError(f"need at least 2 training rows, got {len(data)}")
    if config.distil_weight > 0 and (teacher is None or len(teacher[0]) != len(data) or len(teacher[1]) != len(data)):
        got = "none" if teacher is None else f"{len(teacher[0])} and {len(teacher[1])} rows"
        raise ValueError(f"distil_weight > 0 needs teacher image and text embeddings of all {len(data)} training "
                         f"rows, got {got}")
    start_time = time.perf_counter()
    model = encoder.model
    optimizer, scheduler = make_optimizer(
        model, config.lr, config.weight_decay, "cosine_restarts", t0=config.t0, t_mult=config.t_mult
    )
    loop = LoopState()
    neighbours: np.ndarray | None = None
    history: list[float] = []  # losses of the runs before a resume
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    state = load_checkpoint_state(ckpt) if ckpt is not None else None
    if state is not None and ckpt is not None:
        if state.get("config", {}).get("stage") != config.stage:
            raise ValueError(
                f"checkpoint in {ckpt} is of stage {state.get('config', {}).get('stage')!r}; "
                f"expected {config.stage!r} (use another checkpoint_dir per stage)"
            )
        model.load_state_dict(load_file(str(ckpt / CHECKPOINT_DIR / _WEIGHTS_FILE), device=str(encoder.device)))
        _load_optimizer(optimizer, ckpt / CHECKPOINT_DIR)
        scheduler.load_state_dict(state["scheduler"])
        loop = LoopState(int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"]))
        history = [float(x) for x in state.get("losses", [])]
        if state.get("neighbours") is not None:
            neighbours = np.asarray(state["neighbours"], dtype=np.int64)
        logger.info("resumed %s training from %s at step %d (epoch %d, batch %d)", config.stage, ckpt, loop.step,
                    loop.epoch, loop.batch_in_epoch)
    tensors = _prepare(encoder, data)
    if config.stage == "supcon" and neighbours is None:
        # Offline mining with the model as it enters this stage (the domain-adapted CLIP in the paper).
        k = min(config.k, int(data.labels.max()) + 1)
        emb = _class_embeddings(
            encoder, tensors, data.labels, config.image_weight, np.random.default_rng([config.seed, 0x4D494E45])
        )
        neighbours = nearest_classes(emb, k)
        logger.info("mined hard-negative sets: %d classes, k=%d", len(neighbours), k)
    elif config.grouped and neighbours is None:
        # No model worth asking yet (CLIP starts from random weights): the nearest names by string similarity.
        from linkage_pipeline.multimodal.training.label_free import string_neighbours

        k = min(config.k, len(data.firms))
        neighbours = string_neighbours([f.canonical for f in data.firms], k)
        logger.info("string-similar hard-negative sets: %d classes, k=%d", len(neighbours), k)

    def checkpoint(at: LoopState) -> None:
        if ckpt is None:
            return
        _save_checkpoint(
            ckpt,
            encoder,
            optimizer,
            scheduler,
            {
                "step": at.step,
                "epoch": at.epoch,
                "batch_in_epoch": at.batch_in_epoch,
                "config": asdict(config),
                "losses": history + at.losses,
                "data": data.info,
                "neighbours": neighbours.tolist() if neighbours is not None else None,
            },
        )

    def batch_loss(rows: np.ndarray) -> torch.Tensor:
        img, txt = _batch_features(encoder, tensors, rows)
        if not config.grouped:
            return clip_loss(img, txt, model.logit_scale)
        batch_labels = torch.from_numpy(data.labels[rows]).to(encoder.device)
        z = config.image_weight * F.normalize(img, dim=-1) + (1 - config.image_weight) * F.normalize(txt, dim=-1)
        loss = supcon_loss(z, batch_labels, config.temperature)
        unimodal_weight = 1.0 if config.stage == "clip" else config.unimodal_weight
        if unimodal_weight > 0:
            loss = loss + unimodal_weight * (
                supcon_loss(img, batch_labels, config.temperature) + supcon_loss(txt, batch_labels, config.temperature)
            ) / 2
        if config.stage == "clip":
            return clip_loss(img, txt, model.logit_scale, batch_labels) + config.instance_weight * loss
        if config.distil_weight > 0 and teacher is not None:
            idx = torch.from_numpy(rows)
            loss = loss + config.distil_weight * distillation_loss(
                img, txt, teacher[0][idx].to(encoder.device), teacher[1][idx].to(encoder.device),
                image_weight=config.image_weight, temperature=config.distil_temperature,
            )
        return loss

    def clamp_logit_scale() -> None:  # CLIP clamps the inverse temperature at 100
        model.logit_scale.clamp_(0, float(np.log(100)))

    result = optimize(
        model,
        optimizer,
        scheduler,
        lambda epoch: _epoch_batches(config, data.labels, epoch, neighbours),
        batch_loss,
        epochs=config.epochs,
        state=loop,
        max_steps=config.max_steps,
        after_step=clamp_logit_scale if config.stage == "clip" else None,
        on_step=on_step,
        checkpoint=checkpoint,
        checkpoint_every=config.checkpoint_every,
        log_every=config.log_every,
        name=config.stage,
    )
    return replace(result, seconds=time.perf_counter() - start_time)
