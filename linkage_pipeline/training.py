"""The CLIPPINGS training recipe on synthetic firm-name crops: data, losses, hard-negative mining, trainers.

1. :func:`build_training_set` renders generated firm names (``vocabulary="train"``, disjoint from the demo
   and held-out firms) in several typefaces, both orientations, with light scan augmentations. Each view of a
   firm is printed the way some document would print it (:func:`~linkage_pipeline.documents.firms.mention`:
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
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from linkage_pipeline.documents.firms import (
    CONFUSABLE_INDUSTRIES,
    CONFUSABLE_STEMS,
    OLD_NEW_PAIRS,
    Firm,
    Vocabulary,
    generate_firms,
    mention,
)
from linkage_pipeline.documents.synthetic import DEMO_FONTS, FontFile, MissingFontError, find_font
from linkage_pipeline.encoders import MultimodalEncoder

logger = logging.getLogger(__name__)

Stage = Literal["clip", "supcon"]
#: Typefaces of the training renderings: the demo faces; the held-out faces stay unseen.
TRAIN_FONTS: tuple[str, ...] = DEMO_FONTS
#: How each view of a firm is printed: (mention style, direction); cycled over a firm's views.
DEFAULT_VIEWS: tuple[tuple[str, str], ...] = (
    ("directory", "vertical"),
    ("list", "horizontal"),
    ("title", "horizontal"),
    ("list", "vertical"),
)
#: Version of the rendering and view generation; bump it when they change so cached training sets are rebuilt.
DATA_VERSION = 1
CHECKPOINT_DIR = "last"
_STATE_FILE = "trainer_state.json"
#: Optimizer state: its tensors as safetensors, the rest (hyperparameters, structure) as JSON; never pickle.
_OPTIMIZER_TENSORS = "optimizer.safetensors"
_OPTIMIZER_META = "optimizer.json"
#: Where versions before safetensors-only checkpoints kept the optimizer state (a torch.save pickle).
_LEGACY_OPTIMIZER_FILE = "optimizer.pt"
_WEIGHTS_FILE = "model.safetensors"


# -------------------------------------------------------------------------------------------- rendering
def resolve_training_fonts(families: Sequence[str] | None = None) -> tuple[FontFile, ...]:
    """Installed typefaces among ``families`` (default :data:`TRAIN_FONTS`); missing ones are skipped.

    Raises:
        ValueError: If none of them is installed.
    """
    fams = TRAIN_FONTS if families is None else tuple(families)
    found = []
    for fam in fams:
        try:
            found.append(find_font(fam))
        except MissingFontError:
            logger.warning("training font %r is not installed; skipping it", fam)
    if not found:
        raise ValueError(f"none of the training fonts {list(fams)} is installed; expected at least one")
    return tuple(found)


@lru_cache(maxsize=8)
def _typeset(fonts: tuple[FontFile, ...]) -> Any:
    from linkage_pipeline.documents import synthetic

    return synthetic._Typeset(fonts)


def render_crop(
    text: str,
    font: FontFile,
    direction: str,
    rng: np.random.Generator,
    *,
    size: int | None = None,
    noise: float = 1.0,
) -> Image.Image:
    """Render one firm name as a scanned crop with light augmentations.

    Args:
        text: The printed name (non-empty).
        font: Typeface.
        direction: ``horizontal`` or ``vertical`` (one column, top to bottom).
        rng: Randomness (type size, spacing, ink, paper, blur, rotation, speckle).
        size: Type size in pixels; ``None`` draws 22..40.
        noise: Augmentation strength, 0 = clean.

    Returns:
        Greyscale (mode ``L``) crop with a small paper margin, dark ink on light paper.

    Raises:
        ValueError: If ``text`` is empty or ``direction`` unknown.
    """
    from linkage_pipeline.documents import synthetic

    if not text:
        raise ValueError("text is empty; expected a firm name to render")
    if direction not in ("horizontal", "vertical"):
        raise ValueError(f"direction must be 'horizontal' or 'vertical', got {direction!r}")
    size = int(rng.integers(22, 41)) if size is None else size
    spacing = float(rng.uniform(0.0, 0.25))
    bold = bool(rng.random() < 0.2)
    ink = synthetic._render_run(_typeset((font,)), font, text, size, direction, spacing, bold, rng)
    margin = int(rng.integers(2, 9))
    ink = np.pad(ink, margin)
    h, w = ink.shape
    if noise > 0:
        angle = float(rng.uniform(-1.5, 1.5)) * noise
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        ink = cv2.warpAffine(ink, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
        if rng.random() < 0.3:
            ink = (
                cv2.erode(ink, np.ones((2, 2), np.uint8))
                if rng.random() < 0.5
                else cv2.dilate(ink, np.ones((2, 2), np.uint8))
            )
    paper, tone = float(rng.uniform(200, 245)), float(rng.uniform(15, 70))
    img = paper * (1 - ink) + tone * ink
    if noise > 0:
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), float(rng.uniform(0.3, 1.1)) * min(noise, 1.5))
        scale = float(rng.uniform(0.45, 1.0)) ** min(noise, 1.5)
        small = cv2.resize(img, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        n_speck = int(noise * rng.uniform(0, 0.004) * h * w)
        ys, xs = rng.integers(0, h, n_speck), rng.integers(0, w, n_speck)
        img[ys, xs] = np.minimum(img[ys, xs], rng.uniform(40, 160, n_speck).astype(np.float32))
        img = img + rng.normal(0.0, 4.0 * noise, size=(h, w)).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), mode="L")


# ------------------------------------------------------------------------------------------ OCR noise
def _confusion_table() -> dict[str, tuple[str, ...]]:
    """Characters an OCR engine plausibly reads for each other: old/new forms and confusable name parts."""
    table: dict[str, set[str]] = {}

    def link(a: str, b: str) -> None:
        if len(a) == len(b):
            for x, y in zip(a, b, strict=True):
                if x != y:
                    table.setdefault(x, set()).add(y)
                    table.setdefault(y, set()).add(x)

    for a, b in (*OLD_NEW_PAIRS, *CONFUSABLE_STEMS, *CONFUSABLE_INDUSTRIES):
        link(a, b)
    return {k: tuple(sorted(v)) for k, v in table.items()}


_CONFUSIONS = _confusion_table()


def simulate_ocr(text: str, rng: np.random.Generator, *, error_rate: float = 0.08) -> str:
    """A cheap stand-in for OCR: NFKC text with character substitutions, drops and insertions.

    Args:
        text: The true printed text.
        rng: Randomness.
        error_rate: Probability of an error at each character, in [0, 1].

    Returns:
        The noisy reading (NFKC, as the OCR engines return it); may be empty for very short texts.

    Raises:
        ValueError: If ``error_rate`` is outside [0, 1].
    """
    if not 0.0 <= error_rate <= 1.0:
        raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
    out: list[str] = []
    for ch in unicodedata.normalize("NFKC", text):
        if rng.random() >= error_rate:
            out.append(ch)
            continue
        kind = rng.random()
        if kind < 0.6:
            options = _CONFUSIONS.get(ch)
            out.append(options[int(rng.integers(len(options)))] if options else "〓")
        elif kind < 0.85:
            continue  # dropped
        else:
            out.extend((ch, ch if rng.random() < 0.5 else "・"))
    return "".join(out)


# ----------------------------------------------------------------------------------------- data sets
@dataclass
class TrainingSet:
    """Rendered views of firms: one row per crop.

    Attributes:
        images: Crops (PIL ``L``).
        directions: ``horizontal``/``vertical`` per crop.
        texts: OCR reading of each crop (real engine or :func:`simulate_ocr`).
        true_texts: The printed text of each crop.
        labels: int64 (n,) class index of each crop (index into ``firms``).
        firms: The firms; class ``i`` is ``firms[i]``.
        info: How it was made (vocabulary, seed, fonts, OCR), for the model card.
    """

    images: list[Image.Image]
    directions: list[str]
    texts: list[str]
    true_texts: list[str]
    labels: np.ndarray
    firms: list[Firm]
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, rows: Sequence[int] | np.ndarray) -> TrainingSet:
        """The rows ``rows`` (labels and firms unchanged)."""
        idx = [int(i) for i in rows]
        return TrainingSet(
            [self.images[i] for i in idx],
            [self.directions[i] for i in idx],
            [self.texts[i] for i in idx],
            [self.true_texts[i] for i in idx],
            self.labels[idx],
            self.firms,
            dict(self.info),
        )


def build_training_set(
    n_firms: int,
    views_per_firm: int = 4,
    *,
    seed: int = 0,
    vocabulary: Vocabulary = "train",
    fonts: Sequence[str] | None = None,
    views: Sequence[tuple[str, str]] = DEFAULT_VIEWS,
    ocr: Any | None = None,
    ocr_error_rate: float = 0.08,
    noise: float = 1.0,
) -> TrainingSet:
    """Render ``views_per_firm`` views of each of ``n_firms`` generated firms and read them.

    Args:
        n_firms: Firms (classes), ``>= 2``.
        views_per_firm: Crops per firm, ``>= 1``; view ``j`` uses ``views[j % len(views)]``.
        seed: Seed of the firms, renderings and simulated OCR.
        vocabulary: Firm-name vocabulary; ``train`` is disjoint from the demo and held-out firms.
        fonts: Typeface families (default :data:`TRAIN_FONTS`); each crop draws one.
        views: ``(mention style, direction)`` pairs, e.g. ``("directory", "vertical")``.
        ocr: An ``OcrEngine`` (``linkage_pipeline.ocr.make_engine``) to read the crops; ``None`` uses
            :func:`simulate_ocr`.
        ocr_error_rate: Error rate of the simulated OCR.
        noise: Augmentation strength of the renderings.

    Returns:
        The set, ``n_firms * views_per_firm`` rows, firm-major.

    Raises:
        ValueError: If counts are out of range or a view names an unknown direction.
    """
    if n_firms < 2:
        raise ValueError(f"n_firms must be >= 2 (contrastive training needs negatives), got {n_firms}")
    if views_per_firm < 1:
        raise ValueError(f"views_per_firm must be >= 1, got {views_per_firm}")
    for style, direction in views:
        if direction not in ("horizontal", "vertical"):
            raise ValueError(f"view ({style!r}, {direction!r}) has an unknown direction; expected horizontal/vertical")
    start = time.perf_counter()
    font_files = resolve_training_fonts(fonts)
    firms = generate_firms(n_firms, seed, vocabulary=vocabulary)
    rng = np.random.default_rng([seed, 0x7452414E])
    images, directions, true_texts, labels = [], [], [], []
    for label, firm in enumerate(firms):
        for j in range(views_per_firm):
            style, direction = views[j % len(views)]
            text = mention(firm, rng, style)
            font = font_files[int(rng.integers(len(font_files)))]
            images.append(render_crop(text, font, direction, rng, noise=noise))
            directions.append(direction)
            true_texts.append(text)
            labels.append(label)
    if ocr is None:
        texts = [simulate_ocr(t, rng, error_rate=ocr_error_rate) for t in true_texts]
        ocr_name = f"simulated(error_rate={ocr_error_rate})"
    else:
        texts = [""] * len(images)
        for direction in ("horizontal", "vertical"):
            rows = [i for i, d in enumerate(directions) if d == direction]
            if rows:
                for i, result in zip(rows, ocr.read([images[i] for i in rows], direction=direction), strict=True):
                    texts[i] = result.text
        ocr_name = repr(ocr)
    info = {
        "vocabulary": vocabulary,
        "n_firms": n_firms,
        "views_per_firm": views_per_firm,
        "seed": seed,
        "fonts": [f.family for f in font_files],
        "views": [list(v) for v in views],
        "ocr": ocr_name,
        "noise": noise,
    }
    logger.info(
        "rendered %d crops of %d %s firms in %.1fs (OCR: %s)",
        len(images),
        n_firms,
        vocabulary,
        time.perf_counter() - start,
        ocr_name,
    )
    return TrainingSet(images, directions, texts, true_texts, np.asarray(labels, dtype=np.int64), firms, info)


def save_training_set(data: TrainingSet, path: str | Path) -> Path:
    """Write ``data`` to one Parquet file (crops as PNG bytes, firms and info as JSON metadata), atomically.

    Returns:
        ``path``.
    """
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    pngs = []
    for im in data.images:
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        pngs.append(buf.getvalue())
    table = pa.table(
        {
            "png": pa.array(pngs, type=pa.binary()),
            "direction": data.directions,
            "text": data.texts,
            "true_text": data.true_texts,
            "label": pa.array(data.labels, type=pa.int64()),
        }
    )
    firms = [asdict(f) for f in data.firms]
    meta = {b"firms": json.dumps(firms, ensure_ascii=False).encode(), b"info": json.dumps(data.info).encode()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(out)
    return out


def load_training_set(path: str | Path) -> TrainingSet:
    """Read a set written by :func:`save_training_set`.

    Raises:
        ValueError: If the file lacks the columns or metadata of a training set.
    """
    import io

    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    need = {"png", "direction", "text", "true_text", "label"}
    if not need <= set(table.column_names) or b"firms" not in meta:
        raise ValueError(f"{path} is not a training set: expected columns {sorted(need)} and firms metadata")
    cols = table.to_pydict()
    images = []
    for b in cols["png"]:
        with Image.open(io.BytesIO(b)) as im:
            images.append(im.convert("L"))
    firms = [Firm(**{**f, "aliases": tuple(f.get("aliases", ()))}) for f in json.loads(meta[b"firms"])]
    info = json.loads(meta.get(b"info", b"{}"))
    return TrainingSet(
        images, list(cols["direction"]), list(cols["text"]), list(cols["true_text"]),
        np.asarray(cols["label"], dtype=np.int64), firms, info,
    )


def concat_training_sets(parts: Sequence[TrainingSet]) -> TrainingSet:
    """One set from several, labels renumbered so that classes of different parts never collide."""
    if not parts:
        raise ValueError("no training sets to concatenate; expected at least one")
    images, directions, texts, true_texts, labels, firms, infos = [], [], [], [], [], [], []
    offset = 0
    for part in parts:
        images += part.images
        directions += part.directions
        texts += part.texts
        true_texts += part.true_texts
        labels.append(part.labels + offset)
        firms += part.firms
        infos.append(part.info)
        offset += len(part.firms)
    return TrainingSet(images, directions, texts, true_texts, np.concatenate(labels), firms, {"parts": infos})


def build_pretraining_set(n_firms: int, views_per_firm: int, *, seed: int, chunk: int = 4000) -> TrainingSet:
    """Renderings for language-image pretraining only, read by :func:`simulate_ocr` (cheap).

    The train vocabulary holds a few thousand distinct names, so ``n_firms`` are drawn in chunks of at most
    ``chunk`` with seeds ``seed, seed + 1, ...``; a name may recur across chunks, which is harmless for a loss
    that pairs each crop with its own reading only (the labels of this set are never used).
    """
    if n_firms < 1 or chunk < 2:
        raise ValueError(f"n_firms >= 1 and chunk >= 2 expected, got n_firms={n_firms}, chunk={chunk}")
    parts, left, i = [], n_firms, 0
    while left > 0:
        n = min(left, chunk)
        parts.append(build_training_set(max(n, 2), views_per_firm, seed=seed + i))
        left, i = left - n, i + 1
    return concat_training_sets(parts)


# ------------------------------------------------------------------------------------------------ losses
def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric CLIP loss: cross-entropy of image->text and text->image logits, matched pairs on the diagonal.

    Args:
        image_emb: float (n, d), any norm (normalised here).
        text_emb: float (n, d), row ``i`` pairs with image row ``i``.
        logit_scale: Log of the inverse temperature (CLIP's learnable ``logit_scale``).

    Returns:
        Scalar loss.

    Raises:
        ValueError: If shapes differ or the batch has fewer than 2 pairs.
    """
    if image_emb.shape != text_emb.shape or image_emb.ndim != 2 or image_emb.shape[0] < 2:
        raise ValueError(
            f"expected two (n >= 2, d) tensors of one shape, got {tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
        )
    scale = logit_scale.exp() if isinstance(logit_scale, torch.Tensor) else float(np.exp(logit_scale))
    logits = scale * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, ``L_out``), as CLIPPINGS uses on pooled embeddings.

    Args:
        z: float (n, d) embeddings (normalised here).
        labels: int (n,) class of each row.
        temperature: Softmax temperature ``> 0`` (Table S-1: 0.1).

    Returns:
        Scalar: mean over anchors that have at least one positive of
        ``-1/|P(i)| sum_{p in P(i)} log softmax_{j != i}(z_i . z_j / t)_p``; zero if no anchor has a positive.

    Raises:
        ValueError: If shapes disagree or ``temperature <= 0``.
    """
    if z.ndim != 2 or labels.shape != (z.shape[0],):
        raise ValueError(f"expected z (n, d) and labels (n,), got {tuple(z.shape)} and {tuple(labels.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = F.normalize(z, dim=-1)
    n = z.shape[0]
    sim = z @ z.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = pos.sum(dim=1)
    has = n_pos > 0
    if not bool(has.any()):
        return z.sum() * 0.0
    per_anchor = -(log_prob.masked_fill(~pos, 0.0).sum(dim=1)[has]) / n_pos[has]
    return per_anchor.mean()


# ------------------------------------------------------------------------------------------------ mining
def nearest_classes(class_emb: np.ndarray, k: int) -> np.ndarray:
    """Hard-negative sets: each class with its ``k - 1`` nearest other classes (cosine).

    Args:
        class_emb: float (C, d), one embedding per class (e.g. of one random view).
        k: Set size, ``1 <= k <= C``.

    Returns:
        int64 (C, k): row ``c`` is ``c`` followed by the ``k - 1`` most similar other classes, most similar first.

    Raises:
        ValueError: If ``k`` is out of range or ``class_emb`` is not 2-D.
    """
    if class_emb.ndim != 2:
        raise ValueError(f"class_emb must be (C, d), got shape {class_emb.shape}")
    c = class_emb.shape[0]
    if not 1 <= k <= c:
        raise ValueError(f"k must be in [1, {c}] (the number of classes), got {k}")
    e = class_emb.astype(np.float32)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    others = np.argsort(-sim, axis=1, kind="stable")[:, : k - 1]
    return np.concatenate([np.arange(c)[:, None], others], axis=1).astype(np.int64)


def hard_negative_batches(
    neighbours: np.ndarray, labels: np.ndarray, *, m: int, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """One epoch of batches: shuffled hard-negative sets, ``batch_size // (k * m)`` sets per batch.

    Each class of a batch contributes ``m`` views (rows of ``labels``), drawn without replacement when it has
    that many and with replacement otherwise; a class in two sets of one batch is taken once.

    Args:
        neighbours: int (C, k) from :func:`nearest_classes`.
        labels: int (n,) class of each training row.
        m: Views per class, ``>= 2`` (SupCon needs a positive).
        batch_size: Rows per batch, ``>= k * m``.
        rng: Randomness of the epoch.

    Returns:
        Row-index arrays (int64), one per batch, each at most ``batch_size`` long.

    Raises:
        ValueError: If ``m`` or ``batch_size`` are out of range.
    """
    c, k = neighbours.shape
    if m < 2:
        raise ValueError(f"m must be >= 2 views per class, got {m}")
    if batch_size < k * m:
        raise ValueError(f"batch_size must be >= k * m = {k * m}, got {batch_size}")
    rows_of: dict[int, np.ndarray] = {}
    for cls in np.unique(labels):
        rows_of[int(cls)] = np.flatnonzero(labels == cls)
    sets_per_batch = batch_size // (k * m)
    order = rng.permutation(c)
    batches = []
    for start in range(0, c, sets_per_batch):
        classes = list(dict.fromkeys(int(x) for x in neighbours[order[start : start + sets_per_batch]].ravel()))
        rows = []
        for cls in classes:
            pool = rows_of.get(cls)
            if pool is None or len(pool) == 0:
                continue
            rows.append(rng.choice(pool, size=m, replace=len(pool) < m))
        if rows:
            batches.append(np.concatenate(rows).astype(np.int64))
    return batches


# ----------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training stage (defaults: CLIPPINGS Table S-1, scaled to a small CPU model).

    Attributes:
        stage: ``clip`` (language-image pretraining) or ``supcon`` (supervised, pooled embedding).
        lr: Maximum learning rate of the cosine schedule.
        batch_size: Rows per batch (``B``).
        weight_decay: AdamW weight decay.
        temperature: SupCon temperature (the CLIP stage learns ``logit_scale`` instead).
        image_weight: ``w`` of the pooled embedding in the SupCon stage.
        unimodal_weight: SupCon stage: add ``unimodal_weight`` times the mean of the SupCon losses of the image
            and of the text embeddings alone to the pooled loss. The pooled loss alone lets the text side carry
            the batch and gives a randomly initialised image tower almost no signal; the unimodal terms train
            each tower to link on its own (the paper's vision-only and language-only rows).
        m: Views per class in a SupCon batch.
        k: Classes per hard-negative set (anchor + ``k - 1`` nearest).
        epochs: Passes over the data.
        t0: Steps to the first warm restart; ``t_mult`` multiplies the period after each restart.
        t_mult: Restart period factor.
        seed: Seed of batch order and view sampling.
        checkpoint_every: Steps between checkpoints (one is also written at the end).
        log_every: Steps between progress log lines.
        max_steps: Stop after this many steps in total (``None``: run all epochs).
    """

    stage: Stage = "clip"
    lr: float = 5e-4
    batch_size: int = 64
    weight_decay: float = 0.001
    temperature: float = 0.1
    image_weight: float = 0.5
    unimodal_weight: float = 0.0
    m: int = 3
    k: int = 3
    epochs: int = 1
    t0: int = 10
    t_mult: int = 2
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 10
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.stage not in ("clip", "supcon"):
            raise ValueError(f"stage must be 'clip' or 'supcon', got {self.stage!r}")
        if self.lr <= 0 or self.batch_size < 2 or self.epochs < 1 or self.t0 < 1 or self.t_mult < 1:
            raise ValueError(f"lr > 0, batch_size >= 2, epochs >= 1, t0 >= 1, t_mult >= 1 expected, got {self}")
        if not 0.0 <= self.image_weight <= 1.0:
            raise ValueError(f"image_weight must be in [0, 1], got {self.image_weight}")
        if self.unimodal_weight < 0:
            raise ValueError(f"unimodal_weight must be >= 0, got {self.unimodal_weight}")
        if self.stage == "supcon" and (self.m < 2 or self.k < 1 or self.batch_size < self.m * self.k):
            raise ValueError(
                f"supcon needs m >= 2, k >= 1 and batch_size >= m * k, got m={self.m}, k={self.k}, "
                f"batch_size={self.batch_size}"
            )


@dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes:
        steps: Global step reached (optimizer steps, all runs of this checkpoint directory together).
        epoch: Epoch reached (epochs fully done).
        losses: Loss of every step taken in this call, in order.
        resumed_from: Step the call resumed from (0 for a fresh start).
        seconds: Wall time of this call.
    """

    steps: int
    epoch: int
    losses: list[float]
    resumed_from: int
    seconds: float


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


def _epoch_batches(
    config: TrainConfig, labels: np.ndarray, epoch: int, neighbours: np.ndarray | None
) -> list[np.ndarray]:
    rng = np.random.default_rng([config.seed, epoch, 0x42415443])
    if config.stage == "clip":
        order = rng.permutation(len(labels))
        batches = [order[s : s + config.batch_size] for s in range(0, len(order), config.batch_size)]
        return [b for b in batches if len(b) >= 2]
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
) -> TrainResult:
    """Train ``encoder`` in place for one stage, resuming from ``checkpoint_dir`` when it holds a checkpoint.

    Args:
        encoder: A ``clip``-kind encoder (its device is used; training runs in float32).
        data: Training rows.
        config: Hyperparameters; a resumed run must use the same stage.
        checkpoint_dir: Where ``last/`` (weights, optimizer, trainer state) is written and resumed from;
            ``None`` trains without checkpoints.
        on_step: Called after every step with ``{"step", "epoch", "loss", "lr"}``.

    Returns:
        What was done; the encoder holds the trained weights (in eval mode).

    Raises:
        ValueError: If the data has fewer than 2 rows, or the checkpoint is of another stage.
    """
    if len(data) < 2:
        raise ValueError(f"need at least 2 training rows, got {len(data)}")
    start_time = time.perf_counter()
    model = encoder.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=config.t0, T_mult=config.t_mult, eta_min=0.0
    )
    step, epoch, batch_in_epoch = 0, 0, 0
    neighbours: np.ndarray | None = None
    history: list[float] = []
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
        step, epoch, batch_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
        history = [float(x) for x in state.get("losses", [])]
        if state.get("neighbours") is not None:
            neighbours = np.asarray(state["neighbours"], dtype=np.int64)
        logger.info(
            "resumed %s training from %s at step %d (epoch %d, batch %d)",
            config.stage,
            ckpt,
            step,
            epoch,
            batch_in_epoch,
        )
    resumed_from = step
    tensors = _prepare(encoder, data)
    if config.stage == "supcon" and neighbours is None:
        # Offline mining with the model as it enters this stage (the domain-adapted CLIP in the paper).
        k = min(config.k, int(data.labels.max()) + 1)
        emb = _class_embeddings(
            encoder, tensors, data.labels, config.image_weight, np.random.default_rng([config.seed, 0x4D494E45])
        )
        neighbours = nearest_classes(emb, k)
        logger.info("mined hard-negative sets: %d classes, k=%d", len(neighbours), k)

    def checkpoint() -> None:
        if ckpt is None:
            return
        _save_checkpoint(
            ckpt,
            encoder,
            optimizer,
            scheduler,
            {
                "step": step,
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "config": asdict(config),
                "losses": history,
                "data": data.info,
                "neighbours": neighbours.tolist() if neighbours is not None else None,
            },
        )

    losses: list[float] = []
    done = False
    window_start, window_rows = time.perf_counter(), 0
    while epoch < config.epochs and not done:
        batches = _epoch_batches(config, data.labels, epoch, neighbours)
        model.train()
        while batch_in_epoch < len(batches):
            if config.max_steps is not None and step >= config.max_steps:
                done = True
                break
            rows = batches[batch_in_epoch]
            img, txt = _batch_features(encoder, tensors, rows)
            if config.stage == "clip":
                loss = clip_loss(img, txt, model.logit_scale)
            else:
                z = config.image_weight * F.normalize(img, dim=-1) + (1 - config.image_weight) * F.normalize(
                    txt, dim=-1
                )
                batch_labels = torch.from_numpy(data.labels[rows]).to(encoder.device)
                loss = supcon_loss(z, batch_labels, config.temperature)
                if config.unimodal_weight > 0:
                    loss = loss + config.unimodal_weight * (
                        supcon_loss(img, batch_labels, config.temperature)
                        + supcon_loss(txt, batch_labels, config.temperature)
                    ) / 2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if config.stage == "clip":
                with torch.no_grad():  # CLIP clamps the inverse temperature at 100
                    model.logit_scale.clamp_(0, float(np.log(100)))
            step += 1
            batch_in_epoch += 1
            value = float(loss.detach())
            losses.append(value)
            history.append(value)
            window_rows += len(rows)
            lr = float(scheduler.get_last_lr()[0])
            if on_step is not None:
                on_step({"step": step, "epoch": epoch, "loss": value, "lr": lr})
            if step % config.log_every == 0:
                elapsed = time.perf_counter() - window_start
                logger.info(
                    "%s step %d epoch %d loss %.4f lr %.2e (%.0f rows/s)",
                    config.stage,
                    step,
                    epoch,
                    value,
                    lr,
                    window_rows / max(elapsed, 1e-9),
                )
                window_start, window_rows = time.perf_counter(), 0
            if step % config.checkpoint_every == 0:
                checkpoint()
        else:
            epoch += 1
            batch_in_epoch = 0
    checkpoint()
    model.eval()
    return TrainResult(step, epoch, losses, resumed_from, time.perf_counter() - start_time)


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
    from linkage_pipeline.encoders import Preprocessing

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
    from linkage_pipeline.encoders import pool_embeddings

    out = {}
    for w in weights:
        q, t = pool_embeddings(qi, qt, w), pool_embeddings(ti, tt, w)
        best = np.argmax(q @ t.T, axis=1)
        out[float(w)] = float(np.mean(targets.labels[best] == queries.labels))
    return out


__all__ = [
    "DEFAULT_VIEWS",
    "TRAIN_FONTS",
    "TrainConfig",
    "Recipe",
    "TrainResult",
    "TrainingSet",
    "build_pretraining_set",
    "build_training_set",
    "concat_training_sets",
    "load_training_set",
    "save_training_set",
    "clip_loss",
    "hard_negative_batches",
    "load_checkpoint_state",
    "nearest_classes",
    "render_crop",
    "resolve_training_fonts",
    "retrieval_top1",
    "simulate_ocr",
    "supcon_loss",
    "train",
    "train_recipe",
]
