"""Multimodal (crop image + OCR text) encoders: the CLIPPINGS embedding, our own small CLIP, checkpoint loaders.

A :class:`MultimodalEncoder` wraps a dual encoder (an image tower and a text tower with projections into one
space), its tokenizer and its image preprocessing. It embeds crops (``encode_images``), OCR texts
(``encode_texts``) and the CLIPPINGS pooled embedding ``z = L2norm(w * f(image) + (1 - w) * g(text))``
(``encode_pooled``), all L2-normalised float32 arrays.

Three kinds of model directory load, all from local files only (nothing is downloaded at run time):

- our own format (:meth:`MultimodalEncoder.save` / :meth:`MultimodalEncoder.load`): ``model.safetensors``,
  ``config.json`` (a ``transformers.CLIPConfig``), ``tokenizer/`` (our character-level tokenizer),
  ``preprocessing.json`` and ``model_card.json`` (config, data, metrics, code version);
- a Hugging Face CLIP checkpoint directory (:func:`load_hf_clip`);
- the rinna japanese-clip layout (:func:`load_rinna_clip`): a BERT text tower whose CLS token is projected,
  a ViT vision tower, bias-free projections and its own tokenizer.

The model id is a hash of the weights file, so embeddings, indexes and links made with different weights never mix.

Embeddings do not depend on what else is embedded with them. Float rounding follows the shapes of a forward pass
(BLAS and oneDNN pick their kernels and blocking by matrix size, and padding a text to a longer batch-mate changes
the length of its attention sums), so every forward pass of a tower runs on exactly ``batch_size`` rows (a short
batch is filled with copies of its first row), and a text is padded to the multiple of :data:`TEXT_PAD_STEP` tokens
above its own length, whatever its batch-mates: a crop embedded alone, in a run of thousands, or with a new page
added later gives the same bits for the same model, ``batch_size``, device, precision and thread count (what an
incremental run and a from-scratch run compare).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from linkage_pipeline.device import resolve_device, resolve_dtype
from linkage_pipeline.documents.crops import (
    pad_to_square,
    reflow_vertical,
)
from linkage_pipeline.multimodal.preprocessing import (
    Preprocessing,
    grid_layout,
    model_identity,
    preprocessing_from_json,
    text_translation,
    text_without,
)
from linkage_pipeline.multimodal.tokenizer import build_char_tokenizer
from linkage_pipeline.multimodal.towers import (
    ClipDualEncoder,
    build_clip_model,
    small_clip_config,
)

logger = logging.getLogger(__name__)


WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PREPROCESSING_FILE = "preprocessing.json"
MODEL_CARD_FILE = "model_card.json"
TOKENIZER_DIR = "tokenizer"
FORMAT_VERSION = 1
#: Texts are padded to the next multiple of this many tokens (at most ``max_length``), a function of their own
#: length alone; a step of 8 wastes under 8 tokens a text and keeps a run's batches to a few lengths.
TEXT_PAD_STEP = 8


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _l2(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def _batches(n: int, order: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


@dataclass
class MultimodalEncoder:
    """A dual encoder with its tokenizer and preprocessing, ready to embed crops and OCR texts.

    Attributes:
        model: A :class:`ClipDualEncoder` or :class:`RinnaDualEncoder`.
        tokenizer: A ``transformers`` tokenizer for the text tower.
        preprocessing: Image and text preprocessing.
        device: Where the model runs.
        dtype: Inference precision; ``float16``/``bfloat16`` run under autocast (weights stay float32).
        model_id: ``sha256`` of the weights file it was loaded from, combined with the text fold table when the
            preprocessing has one (:func:`~linkage_pipeline.multimodal.preprocessing.model_identity`; ``None`` for
            an unsaved model).
        card: The model card (config, data, metrics, code version).
    """

    model: nn.Module
    tokenizer: Any
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    model_id: str | None = None
    card: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------- construction
    @classmethod
    def create(
        cls,
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        preprocessing: Preprocessing | None = None,
        **config_overrides: Any,
    ) -> MultimodalEncoder:
        """A new small CLIP with random weights (deterministic by ``seed``) and our character tokenizer.

        Args:
            seed: Seed of the weight initialisation.
            device: ``"cpu"``, ``"cuda:N"`` or ``"auto"``.
            dtype: Inference precision (``None``: float16 on CUDA, float32 on CPU).
            preprocessing: Preprocessing; its ``image_size`` and ``max_length`` override the config's.
            **config_overrides: Keyword arguments of :func:`small_clip_config`.

        Returns:
            The encoder, in eval mode, on ``device``.
        """
        prep = preprocessing or Preprocessing(
            image_size=config_overrides.get("image_size", 80), max_length=config_overrides.get("max_length", 48)
        )
        config_overrides = {**config_overrides, "image_size": prep.image_size, "max_length": prep.max_length}
        tokenizer = build_char_tokenizer(max_length=prep.max_length)
        config = small_clip_config(len(tokenizer), **config_overrides)
        torch.manual_seed(seed)
        model = ClipDualEncoder(build_clip_model(config))
        dev = resolve_device(device)
        model.to(dev).eval()
        return cls(model, tokenizer, prep, dev, resolve_dtype(dtype, dev), None, {})

    def to(self, device: str | torch.device, dtype: str | torch.dtype | None = None) -> MultimodalEncoder:
        """Move to ``device`` (and set the inference precision); returns self."""
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model.to(self.device)
        return self

    @property
    def kind(self) -> str:
        """``clip`` (our own or a Hugging Face CLIP) or ``rinna``."""
        return str(getattr(self.model, "kind", "clip"))

    @property
    def dim(self) -> int:
        """Embedding dimension ``d``."""
        return int(
            self.model.visual_projection.out_features
            if self.kind == "rinna"
            else self.model.model.visual_projection.out_features
        )

    def n_parameters(self) -> int:
        """Number of parameters of both towers and projections."""
        return sum(p.numel() for p in self.model.parameters())

    # ------------------------------------------------------------------------------------ preprocessing
    def prepare_image(self, img: Image.Image, direction: str = "horizontal") -> np.ndarray:
        """One crop -> model input: re-flow (vertical) or lay out in a grid, pad to a square, resize, normalise.

        Args:
            img: Crop, any PIL mode, both sides > 0.
            direction: ``horizontal`` or ``vertical``.

        Returns:
            float32 (3, S, S) with ``S = preprocessing.image_size``.

        Raises:
            ValueError: If ``direction`` is unknown or the crop is empty.
        """
        if direction not in ("horizontal", "vertical"):
            raise ValueError(f"direction must be 'horizontal' or 'vertical', got {direction!r}")
        if img.width == 0 or img.height == 0:
            raise ValueError(f"crop has size {img.width}x{img.height}; expected both sides > 0")
        grey = img.convert("L")
        size = self.preprocessing.image_size
        if self.preprocessing.layout == "grid":
            square = grid_layout(grey, direction, size, self.preprocessing.grid_cols)
            return self._normalise(square)
        if direction == "vertical" and self.preprocessing.reflow_vertical:
            try:
                grey = reflow_vertical(grey)
            except ValueError:  # no cells found (blank or odd crop): use it as printed
                logger.debug("reflow_vertical failed on a %dx%d crop; using it unflowed", *grey.size)
        square = pad_to_square(grey).resize((size, size), Image.Resampling.BILINEAR)
        return self._normalise(square)

    def _normalise(self, square: Image.Image) -> np.ndarray:
        size = self.preprocessing.image_size
        arr = np.asarray(square, dtype=np.float32) / 255.0
        mean = np.asarray(self.preprocessing.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.preprocessing.std, dtype=np.float32)[:, None, None]
        return (np.broadcast_to(arr, (3, size, size)) - mean) / std

    def pixel_values(
        self, images: Sequence[Image.Image], directions: Sequence[str] | str = "horizontal"
    ) -> torch.Tensor:
        """Crops -> float32 tensor (n, 3, S, S) on the CPU (see :meth:`prepare_image`)."""
        dirs = [directions] * len(images) if isinstance(directions, str) else list(directions)
        if len(dirs) != len(images):
            raise ValueError(f"got {len(images)} images but {len(dirs)} directions; expected one per image")
        size = self.preprocessing.image_size
        if not images:
            return torch.zeros((0, 3, size, size), dtype=torch.float32)
        return torch.from_numpy(np.stack([self.prepare_image(im, d) for im, d in zip(images, dirs, strict=True)]))

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (after ``preprocessing.text_fold``), special tokens included, truncated to
        ``preprocessing.max_length``."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        if not texts:
            return []
        if self.preprocessing.text_fold:
            table = text_translation(self.preprocessing)
            texts = [t.translate(table) for t in texts]
        max_len = self.preprocessing.max_length
        if self.preprocessing.text_prefix_cls:
            enc = self.tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max_len - 1)
            return [[self.tokenizer.cls_token_id, *x] for x in enc["input_ids"]]
        return [list(x) for x in self.tokenizer(list(texts), truncation=True, max_length=max_len)["input_ids"]]

    def padded_length(self, n_tokens: int) -> int:
        """The length a text of ``n_tokens`` tokens is padded to by :meth:`encode_texts`: the next multiple of
        :data:`TEXT_PAD_STEP`, at most ``preprocessing.max_length``."""
        step = -(-max(int(n_tokens), 1) // TEXT_PAD_STEP) * TEXT_PAD_STEP
        return max(int(n_tokens), min(step, self.preprocessing.max_length))

    def _pad(self, ids: Sequence[Sequence[int]], length: int, rows: int) -> dict[str, torch.Tensor]:
        """``rows`` x ``length`` int64 ids and mask; rows past ``len(ids)`` repeat the first text."""
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((rows, length), pad, dtype=torch.long)
        mask = torch.zeros((rows, length), dtype=torch.long)
        for i in range(rows):
            x = ids[i] if i < len(ids) else ids[0]
            input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, : len(x)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def tokenize(self, texts: Sequence[str], *, length: int | None = None) -> dict[str, torch.Tensor]:
        """Texts -> ``input_ids`` and ``attention_mask``, int64 (n, L), on the CPU.

        Args:
            texts: Texts; ``None`` or non-strings count as empty.
            length: Pad to this many tokens (at least the longest text's); ``None`` pads to the longest.

        Raises:
            ValueError: If ``length`` is shorter than a text's token count.
        """
        ids = self.token_ids(texts)
        longest = max((len(x) for x in ids), default=1)
        if length is not None and length < longest:
            raise ValueError(f"length={length} is shorter than the longest text ({longest} tokens)")
        if not ids:
            return {"input_ids": torch.zeros((0, longest), dtype=torch.long),
                    "attention_mask": torch.zeros((0, longest), dtype=torch.long)}
        return self._pad(ids, longest if length is None else length, len(ids))

    # ----------------------------------------------------------------------------------------- encoding
    def _autocast(self) -> Any:
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def encode_images(
        self,
        images: Sequence[Image.Image],
        *,
        directions: Sequence[str] | str = "horizontal",
        batch_size: int = 128,
    ) -> np.ndarray:
        """Embed crops with the vision tower.

        Args:
            images: Crops (PIL, any mode).
            directions: One text direction for all crops or one per crop; vertical crops are re-flowed when
                ``preprocessing.reflow_vertical``.
            batch_size: Crops per forward pass, ``>= 1``.

        Returns:
            float32 (n, d), rows L2-normalised; (0, d) for no crops. Every forward pass runs on exactly
            ``batch_size`` crops (the last batch filled with copies of its first crop), so a crop's embedding
            does not depend on the other crops (see the module docstring).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        dirs = [directions] * len(images) if isinstance(directions, str) else list(directions)
        if len(dirs) != len(images):
            raise ValueError(f"got {len(images)} images but {len(dirs)} directions; expected one per image")
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        self.model.eval()
        with torch.no_grad(), self._autocast():
            for idx in _batches(len(images), np.arange(len(images)), batch_size):
                px = self.pixel_values([images[i] for i in idx], [dirs[i] for i in idx])
                if len(idx) < batch_size:
                    px = torch.cat([px, px[:1].expand(batch_size - len(idx), -1, -1, -1)])
                out[idx] = self.model.image_features(px.to(self.device))[: len(idx)].float().cpu().numpy()
        return _l2(out)

    def encode_texts(self, texts: Sequence[str], *, batch_size: int = 256) -> np.ndarray:
        """Embed OCR texts with the text tower, texts of one padded length per batch.

        Each text is padded to :meth:`padded_length` of its own token count, texts of one padded length are
        batched together (in the order given), and every forward pass runs on exactly ``batch_size`` rows (the
        last batch of a length filled with copies of its first text): a text's embedding does not depend on the
        other texts (see the module docstring).

        Args:
            texts: Texts; ``None`` or non-strings count as empty.
            batch_size: Texts per forward pass, ``>= 1``.

        Returns:
            float32 (n, d), rows L2-normalised, in the order given; (0, d) for no texts.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        rest = text_without(self.preprocessing, list(texts))
        again = [i for i, r in enumerate(rest) if r is not None]
        # the texts read once more without their legal form (preprocessing.text_drop) go in the same passes, so the
        # batches of each length fill up; every embedding depends on its own text alone, so nothing else changes
        both = self._encode_texts([*texts, *(rest[i] for i in again)], batch_size)
        out = both[: len(texts)]
        if again:
            out[again] = _l2(out[again] + both[len(texts):])  # the mean of the two readings
        return out

    def _encode_texts(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """L2-normalised text-tower embeddings of ``texts`` as read (see :meth:`encode_texts`)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        ids = self.token_ids(texts)
        padded = np.asarray([self.padded_length(len(x)) for x in ids], dtype=np.int64)
        self.model.eval()
        with torch.no_grad(), self._autocast():
            for length in np.unique(padded):
                members = np.flatnonzero(padded == length)
                for idx in _batches(len(members), members, batch_size):
                    enc = self._pad([ids[i] for i in idx], int(length), batch_size)
                    feats = self.model.text_features(
                        enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
                    )
                    out[idx] = feats[: len(idx)].float().cpu().numpy()
        return _l2(out)

    def encode_pooled(
        self,
        images: Sequence[Image.Image],
        texts: Sequence[str],
        weight: float = 0.5,
        *,
        directions: Sequence[str] | str = "horizontal",
        batch_size: int = 128,
    ) -> np.ndarray:
        """The CLIPPINGS pooled embedding ``L2norm(w * img + (1 - w) * txt)`` of L2-normalised parts.

        Args:
            images: Crops.
            texts: Their OCR texts, one per crop.
            weight: Image weight ``w`` in [0, 1]; 1 is vision-only, 0 language-only.
            directions: Text direction of all crops or of each.
            batch_size: Items per forward pass.

        Returns:
            float32 (n, d), rows L2-normalised.

        Raises:
            ValueError: If lengths differ or ``weight`` is outside [0, 1].
        """
        if len(images) != len(texts):
            raise ValueError(f"got {len(images)} images but {len(texts)} texts; expected one text per image")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {weight}")
        return pool_embeddings(
            self.encode_images(images, directions=directions, batch_size=batch_size),
            self.encode_texts(texts, batch_size=max(batch_size, 1)),
            weight,
        )

    # ---------------------------------------------------------------------------------------- save/load
    def save(self, directory: str | Path, *, card: dict[str, Any] | None = None) -> str:
        """Write the model in our format and return its model id.

        Writes ``model.safetensors``, ``config.json``, ``preprocessing.json``, ``tokenizer/`` and
        ``model_card.json`` (``card`` merged over the current card, plus kind, parameters, format and code
        versions and the model id).

        Args:
            directory: Target folder (created).
            card: Model card entries (``config``, ``data``, ``metrics``, ...).

        Returns:
            The model id (``sha256`` of ``model.safetensors``, with the text fold table when there is one).

        Raises:
            ValueError: If the model is not a ``clip`` model (rinna checkpoints are read-only here).
        """
        if self.kind != "clip":
            raise ValueError(f"only 'clip' models can be saved in our format, this one is {self.kind!r}")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.model.model.state_dict().items()}
        save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
        (out / CONFIG_FILE).write_text(self.model.model.config.to_json_string(), encoding="utf-8")
        prep = json.dumps(asdict(self.preprocessing), indent=2, ensure_ascii=False)
        (out / PREPROCESSING_FILE).write_text(prep, encoding="utf-8")
        self.tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
        self.model_id = model_identity(file_sha256(out / WEIGHTS_FILE), self.preprocessing)
        self.card = {
            **self.card,
            **(card or {}),
            "model_id": self.model_id,
            "kind": self.kind,
            "n_parameters": self.n_parameters(),
            "format_version": FORMAT_VERSION,
            "code_version": _code_version(),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (out / MODEL_CARD_FILE).write_text(
            json.dumps(self.card, indent=2, ensure_ascii=False, default=str), encoding="utf-8"
        )
        logger.info("saved model %s (%d parameters) to %s", self.model_id[:12], self.n_parameters(), out)
        return self.model_id

    @classmethod
    def load(
        cls, directory: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None
    ) -> MultimodalEncoder:
        """Load a model saved by :meth:`save` (local files only).

        Args:
            directory: Folder written by :meth:`save`.
            device: ``"cpu"``, ``"cuda:N"`` or ``"auto"``.
            dtype: Inference precision (``None``: float16 on CUDA, float32 on CPU).

        Returns:
            The encoder in eval mode; ``model_id`` is the hash of the weights file (and text fold table).

        Raises:
            ValueError: If the folder lacks a file of our format.
        """
        from transformers import AutoTokenizer, CLIPConfig

        src = Path(directory)
        missing = [n for n in (WEIGHTS_FILE, CONFIG_FILE, PREPROCESSING_FILE, TOKENIZER_DIR) if not (src / n).exists()]
        if missing:
            raise ValueError(
                f"{src} is not a model in our format: missing {missing}; expected the files written by "
                "MultimodalEncoder.save (use load_hf_clip or load_rinna_clip for other checkpoints)"
            )
        config = CLIPConfig.from_json_file(str(src / CONFIG_FILE))
        prep_raw = json.loads((src / PREPROCESSING_FILE).read_text(encoding="utf-8"))
        try:
            prep = preprocessing_from_json(prep_raw)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{src / PREPROCESSING_FILE}: {exc}") from exc
        model = build_clip_model(config)
        model.load_state_dict(load_file(str(src / WEIGHTS_FILE)), strict=True)
        tokenizer = AutoTokenizer.from_pretrained(str(src / TOKENIZER_DIR), local_files_only=True)
        card_path = src / MODEL_CARD_FILE
        card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.exists() else {}
        dev = resolve_device(device)
        dual = ClipDualEncoder(model).to(dev).eval()
        return cls(dual, tokenizer, prep, dev, resolve_dtype(dtype, dev),
                   model_identity(file_sha256(src / WEIGHTS_FILE), prep), card)


def pool_embeddings(image_emb: np.ndarray, text_emb: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """``L2norm(w * L2norm(img) + (1 - w) * L2norm(txt))``, row by row.

    Args:
        image_emb: float (n, d).
        text_emb: float (n, d).
        weight: Image weight in [0, 1].

    Returns:
        float32 (n, d), rows L2-normalised.

    Raises:
        ValueError: If shapes differ or ``weight`` is outside [0, 1].
    """
    if image_emb.shape != text_emb.shape:
        raise ValueError(f"image and text embeddings differ in shape: {image_emb.shape} vs {text_emb.shape}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    return _l2(weight * _l2(np.asarray(image_emb, np.float32)) + (1 - weight) * _l2(np.asarray(text_emb, np.float32)))


def _code_version() -> str:
    """Package version plus a short hash of this module's and the training module's source."""
    try:
        from importlib.metadata import version

        pkg = version("linkage_pipeline")
    except Exception:  # run from a checkout that is not installed
        pkg = "unknown"
    h = hashlib.sha256()
    for name in ("encoders.py", "training.py"):
        path = Path(__file__).with_name(name)
        if path.is_file():
            h.update(path.read_bytes())
    return f"{pkg}+src.{h.hexdigest()[:12]}"
