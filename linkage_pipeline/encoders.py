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
import unicodedata
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

from linkage_pipeline.crops import (
    _column_extent,
    _turned_in_vertical,
    border_colour,
    ink_mask,
    pad_to_square,
    reflow_vertical,
    vertical_cells,
)
from linkage_pipeline.documents.firms import OLD_NEW_PAIRS, vocabulary_characters

logger = logging.getLogger(__name__)

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PREPROCESSING_FILE = "preprocessing.json"
MODEL_CARD_FILE = "model_card.json"
TOKENIZER_DIR = "tokenizer"
FORMAT_VERSION = 1
#: Model kinds a :class:`MultimodalEncoder` can hold.
MODEL_KINDS: tuple[str, ...] = ("clip", "rinna")
#: Texts are padded to the next multiple of this many tokens (at most ``max_length``), a function of their own
#: length alone; a step of 8 wastes under 8 tokens a text and keeps a run's batches to a few lengths.
TEXT_PAD_STEP = 8


# ------------------------------------------------------------------------------------------------ tokenizer
def _jis_x0208_characters() -> str:
    """Every character of JIS X 0208 (kana, the 6,355 level-1 and level-2 kanji, symbols), via EUC-JP."""
    chars = []
    for hi in range(0xA1, 0xFF):
        for lo in range(0xA1, 0xFF):
            try:
                chars.append(bytes((hi, lo)).decode("euc_jp"))
            except UnicodeDecodeError:
                continue
    return "".join(chars)


def tokenizer_characters() -> str:
    """The character vocabulary of our tokenizer, in a fixed order.

    Returns:
        Printable ASCII, half-width katakana excluded, JIS X 0208 (kana, common kanji, full-width forms), every
        character generated firm names can contain (old forms such as 會 and 鐵 included), and the NFKC forms
        of all of them (the tokenizer normalises to NFKC, as the OCR engines do). No duplicates, no whitespace.
    """
    raw = (
        "".join(chr(c) for c in range(0x21, 0x7F))
        + _jis_x0208_characters()
        + vocabulary_characters()
        + "".join(a + b for a, b in OLD_NEW_PAIRS)
        + "㈱㈲㈾㈴"
    )
    seen: dict[str, None] = {}
    for ch in raw:
        for c in (ch, *unicodedata.normalize("NFKC", ch)):
            if not c.isspace() and c not in seen:
                seen[c] = None
    return "".join(seen)


def build_char_tokenizer(characters: str | None = None, *, max_length: int = 48) -> Any:
    """Build a character-level WordLevel tokenizer (``[CLS] c1 c2 ... [SEP]``), NFKC-normalised.

    Args:
        characters: Characters of the vocabulary; ``None`` uses :func:`tokenizer_characters`.
        max_length: Longest token sequence, special tokens included (``>= 3``).

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with ``[PAD]`` = 0, ``[UNK]`` = 1, ``[CLS]`` = 2,
        ``[SEP]`` = 3; save it with ``save_pretrained`` and reload it with ``AutoTokenizer.from_pretrained``.

    Raises:
        ValueError: If ``max_length < 3`` or ``characters`` is empty.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if max_length < 3:
        raise ValueError(f"max_length must be >= 3 (CLS, one character, SEP), got {max_length}")
    chars = tokenizer_characters() if characters is None else characters
    if not chars:
        raise ValueError("characters is empty; expected at least one character for the vocabulary")
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in chars:
        if not ch.isspace() and ch not in vocab:
            vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.NFKC()
    # Whitespace carries no identity in a firm name (OCR inserts it at random); every other character is a token.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=max_length,
    )


# ------------------------------------------------------------------------------------------- dual encoders
class ClipDualEncoder(nn.Module):
    """A ``transformers.CLIPModel`` seen as two towers with projections (no logits, no loss)."""

    kind = "clip"

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.model.logit_scale

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Project the pooled (CLS, post-layernorm) vision output: (n, 3, S, S) float -> (n, d), not normalised."""
        out = self.model.vision_model(pixel_values=pixel_values)
        return self.model.visual_projection(out.pooler_output)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Project the pooled (end-of-text token) text output: (n, L) int64 -> (n, d), not normalised."""
        out = self.model.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return self.model.text_projection(out.pooler_output)


class RinnaDualEncoder(nn.Module):
    """The rinna japanese-clip layout: BERT text tower, ViT vision tower, bias-free projections of CLS tokens.

    Parameter names match rinna's ``CLIPModel`` (``text_model.*``, ``vision_model.*``, ``text_projection``,
    ``visual_projection``, ``logit_scale``), so its safetensors state dict loads strictly.
    """

    kind = "rinna"

    def __init__(
        self, text_config: Any, vision_config: Any, projection_dim: int, logit_scale_init_value: float = 2.6592
    ) -> None:
        super().__init__()
        from transformers import BertModel, ViTModel

        self.text_model = BertModel(text_config, add_pooling_layer=False)
        self.vision_model = ViTModel(vision_config, add_pooling_layer=False)
        self.text_projection = nn.Linear(text_config.hidden_size, projection_dim, bias=False)
        self.visual_projection = nn.Linear(vision_config.hidden_size, projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init_value)))

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Project the ViT's CLS token: (n, 3, S, S) float -> (n, d), not normalised."""
        out = self.vision_model(pixel_values=pixel_values)
        return self.visual_projection(out.last_hidden_state[:, 0, :])

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Project BERT's CLS token: (n, L) int64 -> (n, d), not normalised."""
        position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        out = self.text_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        return self.text_projection(out.last_hidden_state[:, 0, :])


class ConvVisionTower(nn.Module):
    """A small CNN vision tower with the interface of CLIP's vision model (``pooler_output``).

    3x3 convolutions with batch norm and ReLU; the first, second, third and last layers have stride 2, the
    others stride 1; then global average pooling over positions (a bag of glyph features, which suits names
    whose legal-form words move from front to back) and a layer norm. Input: (n, C, S, S); the channels are
    averaged (grey scans come as 3 equal channels for checkpoint compatibility).
    """

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        last = len(widths) - 1
        for i, width in enumerate(widths):
            stride = 2 if i in (0, 1, 2, last) else 1
            layers += [nn.Conv2d(c_in, int(width), 3, stride, 1, bias=False), nn.BatchNorm2d(int(width)), nn.ReLU()]
            c_in = int(width)
        self.features = nn.Sequential(*layers)
        self.post_layernorm = nn.LayerNorm(c_in)

    def forward(self, pixel_values: torch.Tensor, **_: Any) -> Any:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        x = self.features(pixel_values.mean(dim=1, keepdim=True))
        pooled = self.post_layernorm(x.mean(dim=(2, 3)))
        return BaseModelOutputWithPooling(last_hidden_state=x.flatten(2).transpose(1, 2), pooler_output=pooled)


def _build_clip_model(config: Any) -> Any:
    """``CLIPModel(config)``, with the vision model replaced by :class:`ConvVisionTower` for a ``cnn`` tower."""
    from transformers import CLIPModel

    model = CLIPModel(config)
    if getattr(config.vision_config, "tower", "vit") == "cnn":
        model.vision_model = ConvVisionTower(config.vision_config.cnn_widths)
    return model


# ------------------------------------------------------------------------------------------------- config
def small_clip_config(
    vocab_size: int,
    *,
    image_size: int = 80,
    patch_size: int = 8,
    vision_hidden: int = 128,
    vision_layers: int = 3,
    text_hidden: int = 128,
    text_layers: int = 2,
    heads: int = 4,
    projection_dim: int = 128,
    max_length: int = 48,
    vision_tower: str = "vit",
    cnn_widths: Sequence[int] = (32, 48, 96, 96, 192),
) -> Any:
    """A small CLIP for firm-name crops (grey scans, 3 channels for checkpoint compatibility).

    Args:
        vocab_size: Tokenizer vocabulary size.
        image_size: Side of the square input, pixels; a multiple of ``patch_size``, 32..224.
        patch_size: ViT patch side, pixels.
        vision_hidden: Vision width; ``vision_layers`` transformer layers, MLP 2x the width.
        text_hidden: Text width; ``text_layers`` layers, MLP 2x the width.
        heads: Attention heads of both towers (divides both widths).
        projection_dim: Dimension ``d`` of the joint embedding.
        max_length: Longest token sequence.
        vision_tower: ``vit`` (CLIP's ViT) or ``cnn`` (:class:`ConvVisionTower`, a small strided CNN with
            global average pooling; learns from a few thousand synthetic crops in CPU minutes where the ViT
            learns nothing). Stored in the vision config, so :meth:`MultimodalEncoder.load` rebuilds it.
        cnn_widths: Channels of the CNN's 3x3 conv layers (``cnn`` only); its last width is the vision width.

    Returns:
        A ``transformers.CLIPConfig`` (no dropout, so training on CPU is deterministic by seed).

    Raises:
        ValueError: If the sizes do not fit together.
    """
    from transformers import CLIPConfig

    if vision_tower not in ("vit", "cnn"):
        raise ValueError(f"vision_tower must be 'vit' or 'cnn', got {vision_tower!r}")
    if vision_tower == "cnn":
        if not cnn_widths or min(cnn_widths) < 1:
            raise ValueError(f"cnn_widths must be positive channel counts, got {cnn_widths}")
        vision_hidden = int(cnn_widths[-1])
    if image_size % patch_size or not 32 <= image_size <= 224:
        raise ValueError(f"image_size must be a multiple of patch_size in [32, 224], got {image_size}/{patch_size}")
    if (vision_tower == "vit" and vision_hidden % heads) or text_hidden % heads:
        raise ValueError(f"heads={heads} must divide vision_hidden={vision_hidden} and text_hidden={text_hidden}")
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    text = {
        "vocab_size": vocab_size,
        "hidden_size": text_hidden,
        "intermediate_size": 2 * text_hidden,
        "num_hidden_layers": text_layers,
        "num_attention_heads": heads,
        "max_position_embeddings": max_length,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 3,
        "projection_dim": projection_dim,
        "attention_dropout": 0.0,
    }
    vision = {
        "image_size": image_size,
        "patch_size": patch_size,
        "num_channels": 3,
        "hidden_size": vision_hidden,
        "intermediate_size": 2 * vision_hidden,
        "num_hidden_layers": vision_layers,
        "num_attention_heads": heads if vision_hidden % heads == 0 else 1,
        "projection_dim": projection_dim,
        "attention_dropout": 0.0,
    }
    if vision_tower == "cnn":
        # The ViT part of the config is not built (no layers); the CNN replaces it (see _build_clip_model).
        vision.update(tower="cnn", cnn_widths=[int(w) for w in cnn_widths], num_hidden_layers=0)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


@dataclass(frozen=True)
class Preprocessing:
    """How crops become pixel tensors.

    Attributes:
        image_size: Side of the square model input, pixels.
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel standard deviation divided by.
        reflow_vertical: Re-flow vertical crops into one horizontal line before padding (DESIGN section 4).
        text_prefix_cls: Prepend ``[CLS]`` and add no other special token (rinna's tokenisation).
        max_length: Longest token sequence.
        layout: ``line`` (the crop as printed, vertical crops re-flowed into one line) or ``grid`` (the
            character cells laid out row-major in a grid of ``grid_cols`` columns, each cell padded to a square
            of side ``image_size // grid_cols``, so a character keeps that many pixels whatever the name's
            length); the line or grid is then padded to a square, never squashed.
        grid_cols: Columns of the ``grid`` layout.
    """

    image_size: int = 80
    # Paper maps to about 0 and ink to about -2.5: with a large constant background every crop starts
    # out nearly identical to a random ViT (cosine 0.999), and CLIP pretraining sits at the uniform loss.
    mean: tuple[float, float, float] = (0.85, 0.85, 0.85)
    std: tuple[float, float, float] = (0.3, 0.3, 0.3)
    reflow_vertical: bool = True
    text_prefix_cls: bool = False
    max_length: int = 48
    layout: str = "line"
    grid_cols: int = 4

    def __post_init__(self) -> None:
        if self.layout not in ("line", "grid"):
            raise ValueError(f"layout must be 'line' or 'grid', got {self.layout!r}")
        if self.grid_cols < 1 or self.image_size // self.grid_cols < 4:
            raise ValueError(f"grid_cols={self.grid_cols} leaves cells under 4 px at image_size={self.image_size}")


# ---------------------------------------------------------------------------------------------- grid layout
def character_tiles(img: Image.Image, direction: str) -> tuple[list[Image.Image], int]:
    """Cut a text crop (``L``) into one tile per character cell, in reading order, and its border colour.

    Vertical crops are cut by :func:`~linkage_pipeline.crops.vertical_cells` (over the column's ink width; a
    glyph that vertical setting turns is turned back); horizontal crops by the same projection cut applied to
    the crop turned a quarter (over the line's ink height). A crop without ink is one tile.
    """
    background = border_colour(img)
    bg = int(background if isinstance(background, int) else background[0])
    if direction == "vertical":
        cells = vertical_cells(img)
        if not cells:
            return [img], bg
        mask = ink_mask(img)
        left, right = _column_extent(mask)
        tiles = []
        for top, bottom in cells:
            tile = img.crop((left, top, right, bottom))
            if _turned_in_vertical(mask[top:bottom, left:right], right - left):
                tile = tile.rotate(90, expand=True, fillcolor=bg)
            tiles.append(tile)
        return tiles, bg
    # Turned a quarter clockwise, the line reads top to bottom; cell rows there are columns here.
    cells = vertical_cells(img.transpose(Image.Transpose.ROTATE_270))
    if not cells:
        return [img], bg
    rows = np.flatnonzero(ink_mask(img).any(axis=1))
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    return [img.crop((left, y0, right, y1)) for left, right in cells], bg


def grid_layout(img: Image.Image, direction: str, size: int, cols: int) -> Image.Image:
    """The ``grid`` layout of :class:`Preprocessing`: character cells row-major in ``cols`` columns, square.

    Returns:
        ``L`` image of side ``size``: cells of side ``size // cols`` (each tile padded to a square, never
        squashed), the grid padded to a square with the border colour and resized to ``size`` (a no-op up to
        ``cols`` rows; names longer than ``cols * cols`` characters shrink).
    """
    tiles, bg = character_tiles(img, direction)
    cell = max(4, size // cols)
    n_cols = min(cols, len(tiles))
    n_rows = -(-len(tiles) // cols)
    canvas = Image.new("L", (n_cols * cell, n_rows * cell), bg)
    inner = cell - 2
    for i, tile in enumerate(tiles):
        square = pad_to_square(tile, fill=bg).resize((inner, inner), Image.Resampling.BILINEAR)
        canvas.paste(square, ((i % cols) * cell + 1, (i // cols) * cell + 1))
    return pad_to_square(canvas, fill=bg).resize((size, size), Image.Resampling.BILINEAR)


# ------------------------------------------------------------------------------------------------ encoder
def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; expected 'cpu' or 'auto'")
    return dev


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)} or a torch.dtype")
    return _DTYPES[dtype]


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
        model_id: ``sha256`` of the weights file it was loaded from (``None`` for an unsaved model).
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
        model = ClipDualEncoder(_build_clip_model(config))
        dev = _resolve_device(device)
        model.to(dev).eval()
        return cls(model, tokenizer, prep, dev, _resolve_dtype(dtype, dev), None, {})

    def to(self, device: str | torch.device, dtype: str | torch.dtype | None = None) -> MultimodalEncoder:
        """Move to ``device`` (and set the inference precision); returns self."""
        self.device = _resolve_device(device)
        self.dtype = _resolve_dtype(dtype, self.device)
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
        """Token ids of each text, special tokens included, truncated to ``preprocessing.max_length``."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        if not texts:
            return []
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
            The model id (``sha256`` of ``model.safetensors``).

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
        (out / PREPROCESSING_FILE).write_text(json.dumps(asdict(self.preprocessing), indent=2), encoding="utf-8")
        self.tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
        self.model_id = file_sha256(out / WEIGHTS_FILE)
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
            The encoder in eval mode; ``model_id`` is the hash of the weights file.

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
        prep = Preprocessing(**{k: tuple(v) if isinstance(v, list) else v for k, v in prep_raw.items()})
        model = _build_clip_model(config)
        model.load_state_dict(load_file(str(src / WEIGHTS_FILE)), strict=True)
        tokenizer = AutoTokenizer.from_pretrained(str(src / TOKENIZER_DIR), local_files_only=True)
        card_path = src / MODEL_CARD_FILE
        card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.exists() else {}
        dev = _resolve_device(device)
        dual = ClipDualEncoder(model).to(dev).eval()
        return cls(dual, tokenizer, prep, dev, _resolve_dtype(dtype, dev), file_sha256(src / WEIGHTS_FILE), card)


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


def _check_safetensors(src: Path) -> Path:
    weights = src / WEIGHTS_FILE
    if not weights.is_file():
        found = sorted(p.name for p in src.glob("*.bin")) + sorted(p.name for p in src.glob("*.pt"))
        hint = f" (found pickle weights {found}; convert them to safetensors first)" if found else ""
        raise ValueError(f"{src} has no {WEIGHTS_FILE}{hint}; expected safetensors weights (never pickle)")
    return weights


def load_hf_clip(
    directory: str | Path,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    *,
    preprocessing: Preprocessing | None = None,
) -> MultimodalEncoder:
    """Load a Hugging Face CLIP checkpoint directory (``CLIPModel.from_pretrained``, local files only).

    Args:
        directory: Holds ``config.json``, ``model.safetensors`` and a tokenizer (in the folder or ``tokenizer/``).
        device: ``"cpu"``, ``"cuda:N"`` or ``"auto"``.
        dtype: Inference precision.
        preprocessing: Defaults to the checkpoint's image size with the CLIP mean/std (from
            ``preprocessor_config.json`` when present), no re-flow change (vertical crops are re-flowed).

    Returns:
        The encoder; ``model_id`` is the hash of the weights file.

    Raises:
        ValueError: If the folder has no safetensors weights or no config.
    """
    from transformers import AutoTokenizer, CLIPModel

    src = Path(directory)
    if not (src / CONFIG_FILE).is_file():
        raise ValueError(f"{src} has no {CONFIG_FILE}; expected a Hugging Face CLIP checkpoint directory")
    weights = _check_safetensors(src)
    model = CLIPModel.from_pretrained(str(src), local_files_only=True, use_safetensors=True)
    tok_dir = src / TOKENIZER_DIR if (src / TOKENIZER_DIR).is_dir() else src
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    if preprocessing is None:
        mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
        pp = src / "preprocessor_config.json"
        if pp.is_file():
            raw = json.loads(pp.read_text(encoding="utf-8"))
            mean, std = tuple(raw.get("image_mean", mean)), tuple(raw.get("image_std", std))
        preprocessing = Preprocessing(
            image_size=int(model.config.vision_config.image_size),
            mean=mean,
            std=std,
            max_length=int(model.config.text_config.max_position_embeddings),
        )
    dev = _resolve_device(device)
    dual = ClipDualEncoder(model).to(dev).eval()
    card = {"source": str(src), "kind": "hf_clip"}
    return MultimodalEncoder(
        dual, tokenizer, preprocessing, dev, _resolve_dtype(dtype, dev), file_sha256(weights), card
    )


def load_rinna_clip(
    directory: str | Path,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    *,
    preprocessing: Preprocessing | None = None,
) -> MultimodalEncoder:
    """Load a checkpoint in the rinna japanese-clip layout from a local directory.

    The folder holds ``config.json`` (``model_type`` ``clip`` with a ``bert`` ``text_config`` and a ``vit``
    ``vision_config``, ``projection_dim``), ``model.safetensors`` with rinna's parameter names, and the
    tokenizer (in the folder or ``tokenizer/``), loaded with ``AutoTokenizer``. Texts are tokenised as rinna
    does: no special tokens, ``[CLS]`` prepended, positions from 0.

    Args:
        directory: The checkpoint folder.
        device: ``"cpu"``, ``"cuda:N"`` or ``"auto"``.
        dtype: Inference precision.
        preprocessing: Defaults to the ViT's image size, CLIP mean/std, ``text_prefix_cls=True``.

    Returns:
        The encoder; ``model_id`` is the hash of the weights file.

    Raises:
        ValueError: If the config is not of that layout or weights are missing or do not match it.
    """
    from transformers import AutoTokenizer, BertConfig, ViTConfig

    src = Path(directory)
    if not (src / CONFIG_FILE).is_file():
        raise ValueError(f"{src} has no {CONFIG_FILE}; expected a rinna japanese-clip checkpoint directory")
    raw = json.loads((src / CONFIG_FILE).read_text(encoding="utf-8"))
    text_raw, vision_raw = dict(raw.get("text_config") or {}), dict(raw.get("vision_config") or {})
    if text_raw.get("model_type") != "bert" or vision_raw.get("model_type") not in ("vit",):
        raise ValueError(
            f"{src / CONFIG_FILE} has text_config.model_type={text_raw.get('model_type')!r} and "
            f"vision_config.model_type={vision_raw.get('model_type')!r}; expected 'bert' and 'vit' (rinna layout)"
        )
    weights = _check_safetensors(src)
    text_raw.pop("model_type")
    vision_raw.pop("model_type")
    text_config, vision_config = BertConfig(**text_raw), ViTConfig(**vision_raw)
    model = RinnaDualEncoder(
        text_config,
        vision_config,
        int(raw.get("projection_dim", 512)),
        float(raw.get("logit_scale_init_value", 2.6592)),
    )
    state = load_file(str(weights))
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{weights} does not match the rinna layout: missing {missing[:5]}, unexpected "
            f"{list(result.unexpected_keys)[:5]}; expected text_model.*, vision_model.*, *_projection.weight"
        )
    tok_dir = src / TOKENIZER_DIR if (src / TOKENIZER_DIR).is_dir() else src
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    if getattr(tokenizer, "do_lower_case", None) is False:  # rinna sets it after loading (a config bug)
        tokenizer.do_lower_case = True
    if preprocessing is None:
        preprocessing = Preprocessing(
            image_size=int(vision_config.image_size),
            mean=(0.48145466, 0.4578275, 0.40821073),
            std=(0.26862954, 0.26130258, 0.27577711),
            text_prefix_cls=True,
            max_length=min(77, int(text_config.max_position_embeddings)),
        )
    dev = _resolve_device(device)
    model.to(dev).eval()
    card = {"source": str(src), "kind": "rinna"}
    return MultimodalEncoder(
        model, tokenizer, preprocessing, dev, _resolve_dtype(dtype, dev), file_sha256(weights), card
    )


def load_encoder(
    directory: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None
) -> MultimodalEncoder:
    """Load any supported model directory: ours, a Hugging Face CLIP, or the rinna layout.

    Raises:
        ValueError: If the folder is none of them.
    """
    src = Path(directory)
    if (src / PREPROCESSING_FILE).is_file():
        return MultimodalEncoder.load(src, device, dtype)
    if not (src / CONFIG_FILE).is_file():
        raise ValueError(f"{src} has no {CONFIG_FILE}; expected a model directory (ours, HF CLIP or rinna)")
    raw = json.loads((src / CONFIG_FILE).read_text(encoding="utf-8"))
    if (raw.get("text_config") or {}).get("model_type") == "bert":
        return load_rinna_clip(src, device, dtype)
    return load_hf_clip(src, device, dtype)


def throughput(
    encoder: MultimodalEncoder,
    images: Sequence[Image.Image],
    texts: Sequence[str],
    *,
    batch_size: int = 128,
    repeats: int = 1,
) -> float:
    """Crops per second of ``encode_pooled`` (preprocessing, both towers and pooling) on ``images``/``texts``."""
    encoder.encode_pooled(images[: min(8, len(images))], texts[: min(8, len(texts))])  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        encoder.encode_pooled(images, texts, batch_size=batch_size)
    return repeats * len(images) / max(time.perf_counter() - start, 1e-9)


__all__ = [
    "MODEL_KINDS",
    "SPECIAL_TOKENS",
    "TEXT_PAD_STEP",
    "ClipDualEncoder",
    "ConvVisionTower",
    "MultimodalEncoder",
    "Preprocessing",
    "RinnaDualEncoder",
    "build_char_tokenizer",
    "character_tiles",
    "file_sha256",
    "grid_layout",
    "load_encoder",
    "load_hf_clip",
    "load_rinna_clip",
    "pool_embeddings",
    "small_clip_config",
    "throughput",
    "tokenizer_characters",
]
