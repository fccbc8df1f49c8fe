"""Loading models from local directories: our own format, Hugging Face CLIP checkpoints, the rinna layout,
and the model shipped with the package (``linkage_pipeline/models/default``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from linkage_pipeline.device import resolve_device, resolve_dtype
from linkage_pipeline.multimodal.encoder import (
    CONFIG_FILE,
    PREPROCESSING_FILE,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
    MultimodalEncoder,
    file_sha256,
)
from linkage_pipeline.multimodal.preprocessing import Preprocessing, model_identity
from linkage_pipeline.multimodal.towers import ClipDualEncoder, RinnaDualEncoder

SHIPPED_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "default"
PRETRAINED_SUBDIR = "pretrained"


def shipped_model_dir() -> Path:
    """Folder of the shipped supervised model.

    Raises:
        FileNotFoundError: If the package was installed without its model files.
    """
    if not (SHIPPED_MODEL_DIR / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the shipped model is missing from {SHIPPED_MODEL_DIR}; reinstall the package or train one with the "
            "training assets (group 'model' in the UI)"
        )
    return SHIPPED_MODEL_DIR


def shipped_pretrained_dir() -> Path:
    """Folder of the shipped model after language-image pretraining only (the self-supervised baseline)."""
    path = SHIPPED_MODEL_DIR / PRETRAINED_SUBDIR
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"the shipped pretrained-only model is missing from {path}")
    return path


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
    dev = resolve_device(device)
    dual = ClipDualEncoder(model).to(dev).eval()
    card = {"source": str(src), "kind": "hf_clip"}
    return MultimodalEncoder(
        dual, tokenizer, preprocessing, dev, resolve_dtype(dtype, dev),
        model_identity(file_sha256(weights), preprocessing), card
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
    dev = resolve_device(device)
    model.to(dev).eval()
    card = {"source": str(src), "kind": "rinna"}
    return MultimodalEncoder(
        model, tokenizer, preprocessing, dev, resolve_dtype(dtype, dev),
        model_identity(file_sha256(weights), preprocessing), card
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
