"""The model shipped with the package: a small multimodal encoder trained by the project's own recipe.

``default/`` holds the supervised model (safetensors weights, config, preprocessing, tokenizer, model card);
``default/pretrained/`` holds the same model after language-image pretraining only, for the paper's
self-supervised rows. ``linkage-pipeline train-default`` (the training assets) reproduces both.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_MODEL_DIR = Path(__file__).resolve().parent / "default"
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


__all__ = ["PRETRAINED_SUBDIR", "SHIPPED_MODEL_DIR", "shipped_model_dir", "shipped_pretrained_dir"]
