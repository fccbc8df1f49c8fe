"""Crop and text embeddings of a source's regions with one model, reusing those already computed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from linkage_pipeline.config import Rejection
from linkage_pipeline.multimodal.encoder import MultimodalEncoder, pool_embeddings
from linkage_pipeline.schema import CROP_EMBEDDINGS, empty_frame

logger = logging.getLogger(__name__)


#: Linking methods of the model: vision-only, language-only and the pooled embedding.
EMBEDDING_METHODS: tuple[str, ...] = ("vision", "language", "multimodal")
#: Image weight of each method (``multimodal`` uses the configured pooling weight).
_FIXED_WEIGHTS = {"vision": 1.0, "language": 0.0}




def _stack(values: Sequence[np.ndarray] | pd.Series, dim: int) -> np.ndarray:
    if len(values) == 0:
        return np.zeros((0, dim), np.float32)
    return np.stack([np.asarray(v, dtype=np.float32) for v in values])


def embed_crops(
    encoder: MultimodalEncoder,
    crops: pd.DataFrame,
    *,
    existing: pd.DataFrame | None = None,
    batch_size: int = 256,
    progress: Callable[[str], None] | None = None,
    rejected: list[Rejection] | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Embed every (crop, text condition) row with ``encoder``, reusing rows already embedded with it.

    Args:
        crops: One row per crop and text condition: ``crop_id``, ``source``, ``crop_path``, ``direction``,
            ``ocr`` (condition) and ``text``.
        existing: Earlier ``crop_embeddings`` rows; rows with this encoder's ``model_id`` and the same crop,
            condition and text are kept as they are, all others are recomputed (never mixed across models).
        batch_size: Crops per forward pass.
        progress: Called with a progress line after each image batch (e.g. the Dagster log).
        rejected: When given, a crop whose file cannot be read or holds no pixels is appended here as a
            :class:`Rejection` (stage ``crop_embeddings``, with the reason) and left out, and every other crop is
            embedded: one bad crop never fails a source. ``None``: such a crop raises.

    Returns:
        ``crop_embeddings`` rows in the order of ``crops`` (no rows, all columns, for no crops), and counts
        ``{"reused", "images", "texts", "seconds"}``. Each embedding is a function of its crop or text, the model
        and ``batch_size`` alone (see :mod:`linkage_pipeline.multimodal.encoder`): the rows embedded now equal those of a
        run that embeds every crop at once.

    Raises:
        ValueError: If a column is missing, the encoder has no model id, or (without ``rejected``) a crop file
            cannot be read or is empty (the message names the crop and the file).
    """
    missing = [c for c in ("crop_id", "source", "crop_path", "direction", "ocr", "text") if c not in crops.columns]
    if missing:
        raise ValueError(
            f"crops is missing columns {missing}; expected crop_id, source, crop_path, direction, ocr, text"
        )
    if not encoder.model_id:
        raise ValueError("the encoder has no model_id; load it from a saved folder (MultimodalEncoder.load) first")
    start = time.perf_counter()
    if crops.empty:
        # no linkable crop (a source without usable pages, or no title or entry found): an empty table, not an error
        return empty_frame(CROP_EMBEDDINGS), {"reused": 0.0, "images": 0.0, "texts": 0.0,
                                         "seconds": time.perf_counter() - start}
    rows = crops.reset_index(drop=True).copy()
    rows["text"] = rows["text"].fillna("").astype(str)
    dim = encoder.dim
    keep: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
    image_cache: dict[str, np.ndarray] = {}
    if existing is not None and not existing.empty:
        same = existing[existing["model_id"] == encoder.model_id]
        for r in same.itertuples(index=False):
            img = np.asarray(r.image_embedding, np.float32)
            keep[(r.crop_id, r.ocr, r.text)] = (img, np.asarray(r.text_embedding, np.float32))
            image_cache.setdefault(r.crop_id, img)
    keys = list(zip(rows["crop_id"], rows["ocr"], rows["text"], strict=True))
    todo = [i for i, key in enumerate(keys) if key not in keep]
    # one image embedding per crop, whatever the number of text conditions
    need_images = [c for c in dict.fromkeys(rows.loc[todo, "crop_id"]) if c not in image_cache]
    first = rows.drop_duplicates("crop_id").set_index("crop_id")
    loaded: dict[str, Image.Image] = {}
    for cid in need_images:
        path = first.at[cid, "crop_path"]
        try:
            with Image.open(path) as im:
                image = im.convert("L")
            if image.width == 0 or image.height == 0:
                raise ValueError(f"the image is {image.width}x{image.height} pixels; expected both sides > 0")
        except (OSError, ValueError) as exc:
            reason = f"crop {cid}: cannot read {path}: {exc}; re-materialize region_crops"
            if rejected is None:
                raise ValueError(reason) from exc
            rejected.append(Rejection(str(first.at[cid, "source"]), Path(str(path)).name, "crop_embeddings", reason))
            logger.warning("%s", reason)
            continue
        loaded[cid] = image
    unreadable = set(need_images) - set(loaded)
    if unreadable:
        # the crops that could not be read are left out, with every text condition of theirs
        rows = rows[~rows["crop_id"].isin(unreadable)].reset_index(drop=True)
        keys = list(zip(rows["crop_id"], rows["ocr"], rows["text"], strict=True))
        todo = [i for i, key in enumerate(keys) if key not in keep]
        need_images = list(loaded)
    n_img = len(need_images)
    for s in range(0, n_img, batch_size):
        ids = need_images[s : s + batch_size]
        images = [loaded.pop(cid) for cid in ids]
        emb = encoder.encode_images(images, directions=[first.at[c, "direction"] for c in ids], batch_size=batch_size)
        image_cache.update(zip(ids, emb, strict=True))
        if progress is not None:
            progress(f"embedded {min(s + batch_size, n_img)}/{n_img} crop images")
    texts = rows.loc[todo, "text"].tolist()
    text_emb = encoder.encode_texts(texts, batch_size=batch_size) if todo else np.zeros((0, dim), np.float32)
    image_out = np.zeros((len(rows), dim), np.float32)
    text_out = np.zeros((len(rows), dim), np.float32)
    todo_pos = {i: j for j, i in enumerate(todo)}
    for i, key in enumerate(keys):
        if i in todo_pos:
            image_out[i] = image_cache[key[0]]
            text_out[i] = text_emb[todo_pos[i]]
        else:
            image_out[i], text_out[i] = keep[key]
    out = pd.DataFrame(
        {
            "crop_id": rows["crop_id"],
            "source": rows["source"],
            "ocr": rows["ocr"],
            "text": rows["text"],
            "model_id": encoder.model_id,
            "image_embedding": list(image_out),
            "text_embedding": list(text_out),
        }
    )
    stats = {
        "reused": float(len(rows) - len(todo)),
        "images": float(n_img),
        "texts": float(len(todo)),
        "seconds": time.perf_counter() - start,
    }
    logger.info(
        "embedded %d crop images and %d texts with model %s (%d rows reused) in %.1fs",
        n_img,
        len(todo),
        encoder.model_id[:12],
        len(rows) - len(todo),
        stats["seconds"],
    )
    return out, stats


def method_embeddings(frame: pd.DataFrame, method: str, weight: float) -> np.ndarray:
    """The float32 (n, d) embeddings of ``method`` (vision, language or multimodal at ``weight``) of the rows.

    A row whose text is empty (OCR read nothing) has no text to compare: its ``language`` embedding is the zero
    vector (inner product 0 with everything, so two empty readings never look alike) and its ``multimodal``
    embedding is its image embedding alone.
    """
    if method not in EMBEDDING_METHODS:
        raise ValueError(f"method must be one of {EMBEDDING_METHODS}, got {method!r}")
    if len(frame) == 0:
        return np.zeros((0, 0), np.float32)
    dim = len(frame["image_embedding"].iloc[0])
    w = _FIXED_WEIGHTS.get(method, weight)
    image = _stack(frame["image_embedding"], dim)
    pooled = pool_embeddings(image, _stack(frame["text_embedding"], dim), w)
    if method != "vision":
        no_text = ~frame["text"].fillna("").astype(str).str.strip().astype(bool).to_numpy()
        if no_text.any():
            pooled[no_text] = 0.0 if method == "language" else pool_embeddings(image[no_text], image[no_text], 1.0)
    return pooled


def check_one_model(frame: pd.DataFrame) -> str:
    models = sorted(set(frame["model_id"]))
    if len(models) != 1:
        raise ValueError(
            f"embeddings of {len(models)} models are mixed ({[m[:12] for m in models]}); re-embed every source "
            "with one model before linking"
        )
    return str(models[0])


def embedding_inputs(
    regions: pd.DataFrame, crops: pd.DataFrame, ocr: pd.DataFrame, labelled: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The rows :func:`embed_crops` takes for one source: linkable crops (titles and entries) x text conditions.

    Args:
        regions: ``layout_regions`` rows (for the kind of each region).
        crops: ``region_crops`` rows.
        ocr: ``ocr_texts`` rows (one per crop and engine).
        labelled: ``labelled_regions`` rows; their true texts give the ``ground_truth`` condition (the upper
            bound of the evaluation). ``None`` or empty: OCR conditions only.

    Returns:
        crop_id, source, crop_path, direction, ocr, text; sorted by condition and crop id.
    """
    linkable = regions.loc[regions["kind"].isin(["title", "entry"]), ["region_id"]]
    base = crops.merge(linkable, on="region_id")[["crop_id", "region_id", "source", "crop_path", "direction"]]
    frames = [
        base.merge(ocr[["crop_id", "ocr", "text"]], on="crop_id"),
    ]
    if labelled is not None and not labelled.empty:
        truth = labelled[labelled["text"].notna()][["region_id", "text"]]
        frames.append(base.merge(truth, on="region_id").assign(ocr="ground_truth"))
    out = pd.concat(frames, ignore_index=True)
    cols = ["crop_id", "source", "crop_path", "direction", "ocr", "text"]
    return out[cols].sort_values(["ocr", "crop_id"]).reset_index(drop=True)


def empty_source_message(source: str, n_pages: int, n_regions: int, n_crops: int, n_texts: int) -> str:
    """Why a source has no crop embeddings: its counts at each earlier stage (for the asset metadata and log)."""
    return (
        f"no linkable crops in source {source!r} ({n_pages} usable pages, {n_regions} regions, {n_crops} crops, "
        f"{n_texts} OCR texts; rejected files are in rejected_inputs): its linkages yield no links"
    )


def embedding_run_stats(stats: dict[str, float]) -> dict[str, float | int]:
    """Metadata of one :func:`embed_crops` run from its counts: reused and embedded rows, seconds, crops/s."""
    computed = stats["images"] + stats["texts"]
    return {
        "reused_rows": int(stats["reused"]),
        "embedded_images": int(stats["images"]),
        "embedded_texts": int(stats["texts"]),
        "seconds": stats["seconds"],
        "crops_per_s": stats["images"] / max(stats["seconds"], 1e-9) if computed else 0.0,
    }
