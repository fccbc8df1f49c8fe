"""Which model links: the shipped one, the latest trained by the training assets, or a local checkpoint folder."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from linkage_pipeline.multimodal.checkpoints import PRETRAINED_SUBDIR, shipped_model_dir

MODEL_CHOICES: tuple[str, ...] = ("auto", "shipped", "trained", "directory")


@dataclass(frozen=True)
class ModelChoice:
    """The model the pipeline links with."""

    path: Path
    pretrained_path: Path | None
    chosen_by: str


def _pretrained_of(path: Path) -> Path | None:
    p = path / PRETRAINED_SUBDIR
    return p if (p / "model.safetensors").is_file() else None


def stage_models(trained: pd.DataFrame | None, stage: str) -> pd.DataFrame:
    """The ``trained_models`` rows of ``stage`` (``clip``, ``supcon``, ``distil`` or ``reviewed``), oldest first (no
    rows for ``None``)."""
    if trained is None or trained.empty:
        return pd.DataFrame()
    return trained[trained["stage"] == stage].sort_values("created_at")


def choose_model(choice: str, directory: str, trained: pd.DataFrame | None) -> ModelChoice:
    """Resolve the configured model.

    Args:
        choice: ``auto`` (the latest supervised model of the training assets, distilled, or fine-tuned on link
            reviews, that was adopted (:func:`adopted_trained`; a fine-tune: better on its held-back reviews), if
            any, else the shipped one),
            ``shipped``, ``trained`` (the latest supervised model; an error if none) or ``directory``.
        directory: The folder for ``directory`` (ours, a Hugging Face CLIP or the rinna layout).
        trained: ``trained_models`` rows (may be ``None`` when the training assets never ran).

    Raises:
        ValueError: On an unknown choice, a missing folder, or ``trained`` with no trained model.
    """
    if choice not in MODEL_CHOICES:
        raise ValueError(f"model choice must be one of {MODEL_CHOICES}, got {choice!r}")
    # a model fine-tuned on link reviews (stage "reviewed") counts as the latest supervised model too
    reviewed = stage_models(trained, "reviewed")
    if not reviewed.empty:  # only fine-tunes that linked the held-back reviews better than their start
        reviewed = reviewed[[_adopted(Path(str(p))) for p in reviewed["path"]]]
    supervised = pd.concat([stage_models(trained, "supcon"), stage_models(trained, "distil"), reviewed])
    supervised = supervised.sort_values("created_at") if not supervised.empty else supervised
    if choice == "auto" and not supervised.empty:
        # auto: only trained models that linked the validation firms better than the model they would replace
        supervised = supervised[[adopted_trained(Path(str(p))) for p in supervised["path"]]]
    if choice == "directory":
        path = Path(directory).expanduser().resolve()
        if not (path / "config.json").is_file():
            raise ValueError(f"model directory {path} has no config.json; expected a saved model folder")
        return ModelChoice(path, _pretrained_of(path), f"directory {path}")
    if choice in ("trained", "auto") and not supervised.empty:
        path = Path(str(supervised["path"].iloc[-1]))
        if not (path / "model.safetensors").is_file():
            raise ValueError(f"the latest trained model {path} is missing; re-materialize supervised_model")
        return ModelChoice(path, _pretrained_of(path), "latest trained model (supervised_model)")
    if choice == "trained":
        raise ValueError("no trained model yet; materialize training_crops, pretrained_model and supervised_model")
    path = shipped_model_dir()
    return ModelChoice(path, _pretrained_of(path), "shipped model")


def card_defaults(path: Path) -> tuple[float, float]:
    """The pooling weight and no-match threshold recorded in a model card (0.5 and NaN when absent)."""
    linking = read_card(path).get("linking", {})
    return float(linking.get("pooling_weight", 0.5)), float(linking.get("nomatch_threshold", float("nan")))


def read_card(path: str | Path) -> dict:
    """The model card of the model at ``path`` ({} when it has none)."""
    card_path = Path(path) / "model_card.json"
    return json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {}


def update_card(path: str | Path, **entries: object) -> dict:
    """Write ``entries`` into the model card of the model at ``path`` (over its keys of those names); returns it."""
    card = {**read_card(path), **entries}
    (Path(path) / "model_card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False), encoding="utf-8")
    return card


def _adopted(path: Path) -> bool:
    return bool(read_card(path).get("review_check", {}).get("adopted", False))


def adopted_trained(path: Path) -> bool:
    """Whether ``auto`` may link with the trained model at ``path``: its card's ``adoption`` says it linked the
    validation firms better than the model it would replace (:func:`adoption`). A card without the record (a
    model saved before the check existed, or a fine-tune on reviews, which has its own) counts as adopted."""
    return bool(read_card(path).get("adoption", {}).get("adopted", True))


def adoption(new: Mapping[str, Any], baseline: Mapping[str, Any], baseline_path: Path | str) -> dict[str, Any]:
    """Whether a newly trained model replaces ``baseline`` for ``auto``, from both models' settings tuned on the
    same validation firms (:func:`~linkage_pipeline.linking.by_embeddings.tune_linking`: ``val_top1_mean``, the
    mean validation top-1 over the OCR conditions at each model's best pooling weight).

    It is adopted only when its mean is strictly higher: a model trained from scratch on a few hundred labelled
    firms can link worse than the shipped one, and the pipeline should not switch to it unasked (``linkage_model``
    config ``model: trained`` still does). Without validation labels nothing can be compared and it is not adopted.

    Returns:
        The card's ``adoption`` record: adopted, why, val_top1_mean, baseline_val_top1_mean, n_val, baseline
        (the folder).
    """
    mine, theirs = new.get("val_top1_mean"), baseline.get("val_top1_mean")
    record: dict[str, Any] = {"baseline": str(baseline_path), "val_top1_mean": mine, "baseline_val_top1_mean": theirs,
                              "n_val": new.get("n_val", 0)}
    if mine is None:
        return {**record, "adopted": False,
                "why": "no labelled validation firms to compare it with the model it would replace on"}
    if theirs is None:
        return {**record, "adopted": False,
                "why": "the model it would replace could not be scored on the validation firms (see the run log)"}
    adopted = float(mine) > float(theirs)
    why = (f"mean validation top-1 {float(mine):.3f} against {float(theirs):.3f} for the model it would replace; "
           + ("adopted" if adopted else "not adopted: linkage_model keeps that model (config model: trained uses "
                                        "this one)"))
    return {**record, "adopted": adopted, "why": why}


def fine_tuned_on_reviews(path: str | Path) -> bool:
    """Whether the model at ``path`` was fine-tuned on link reviews (its card says so)."""
    return read_card(path).get("fine_tuned_on") == "link reviews"


def attach_pretrained(supervised_dir: Path, pretrained_dir: Path) -> Path:
    """Copy the pretrained-only model into ``supervised_dir/pretrained`` (the shipped layout); returns it."""
    dst = supervised_dir / PRETRAINED_SUBDIR
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(pretrained_dir, dst, ignore=shutil.ignore_patterns(PRETRAINED_SUBDIR))
    return dst


def linkage_model_row(choice: ModelChoice, model_id: str) -> pd.DataFrame:
    """The one ``linkage_model`` row (schema ``LINKAGE_MODEL``) of the chosen model.

    Args:
        choice: From :func:`choose_model`.
        model_id: The loaded model's id.

    Returns:
        One row: model_id, path, pretrained_path ("" when none), chosen_by, and the pooling weight and
        no-match threshold of the model card (:func:`card_defaults`).
    """
    weight, threshold = card_defaults(choice.path)
    return pd.DataFrame(
        [
            {
                "model_id": model_id,
                "path": str(choice.path),
                "pretrained_path": str(choice.pretrained_path or ""),
                "chosen_by": choice.chosen_by,
                "pooling_weight": weight,
                "nomatch_threshold": threshold,
            }
        ]
    )


def record_trained_model(trained: pd.DataFrame | None, row: pd.DataFrame) -> pd.DataFrame:
    """``trained_models`` with ``row`` added, replacing any earlier row of the same model id.

    Args:
        trained: The table so far, or ``None`` when it does not exist yet.
        row: One ``trained_models`` row.

    Returns:
        The earlier rows of other models, then ``row``.
    """
    if trained is None:
        return row
    return pd.concat([trained[trained["model_id"] != row["model_id"].iloc[0]], row])
