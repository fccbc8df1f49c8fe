"""The document chain on frames: layout regions of pages, crops of regions, OCR of crops, and their
incremental twins that redo only what changed.

Each function turns the rows of one stage's input table into the rows of its output table (contracts in
``schema.py``), recording what it could not process as :class:`~linkage_pipeline.config.Rejection` rows
instead of failing the whole source.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from linkage_pipeline import schema
from linkage_pipeline.config import Rejection, SourceConfig
from linkage_pipeline.documents import region_training
from linkage_pipeline.documents.crops import content_id, cut_regions, encode_png
from linkage_pipeline.documents.labels import read_labels
from linkage_pipeline.documents.layout import (
    DEFAULT_TIME_BUDGET_S,
    PageRejected,
    detect_layout,
    layout_to_records,
)
from linkage_pipeline.documents.ocr import OcrEngine
from linkage_pipeline.documents.pages import load_page_image
from linkage_pipeline.paths import atomic_write_bytes, safe_child
from linkage_pipeline.schema import empty_frame

logger = logging.getLogger(__name__)


def detect_page_regions(
    pages: pd.DataFrame,
    source: SourceConfig,
    *,
    time_budget_s: float | None = DEFAULT_TIME_BUDGET_S,
    source_classifier: bool = True,
    all_pages: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, list[Rejection]]:
    """Detects name regions on every page of one source.

    A page is rejected (its regions are not emitted, so never cut or read) when layout fails on it, finds no
    text, holds more regions than its size allows at its type size, runs over ``time_budget_s`` or is noise
    without paper (:class:`~linkage_pipeline.documents.layout.PageRejected`); a region of zero width or height is
    rejected on its own and its page kept.

    Args:
        pages: rows of ``page_images`` for the source.
        source: the source's configuration (direction, layout detector, language).
        time_budget_s: wall-clock seconds one page's layout may take (``None``: no budget).
        source_classifier: fit the ``ppocr`` line classifier on the source's labels when it has enough
            (:func:`region_training.source_classifiers`); False always runs the shipped one.
        all_pages: every page of the source, when ``pages`` are some of them (an incremental run): the source's
            classifier is fitted on the labels of all its pages, so new pages get the same one as the others.

    Returns:
        ``layout_regions`` rows (reading order per page) and rejections for pages that failed or had no text.
    """
    rows: list[dict] = []
    rejected: list[Rejection] = []
    classifiers = None
    if source.layout == "ppocr" and not pages.empty:
        context = pages if all_pages is None else all_pages
        labels = _labels_of(source, context) if source_classifier else None
        classifiers = region_training.source_classifiers(context, labels, source.direction, source.name)
    for page in pages.itertuples(index=False):
        try:
            image = np.asarray(load_page_image(Path(page.image_path)).convert("L"))
            layout = detect_layout(
                image, direction=source.direction, detector=source.layout, lang=source.language,
                time_budget_s=time_budget_s,
                classifier=None if classifiers is None else classifiers.for_page(page.page_id),
            )
        except PageRejected as exc:  # too many regions, over budget, or no paper: nothing of it goes on
            logger.warning("layout rejected %s/%s: %s", source.name, page.file, exc.reason)
            rejected.append(Rejection(source.name, page.file, "layout_regions", exc.reason))
            continue
        except Exception as exc:  # one bad page must not lose the others
            logger.warning("layout failed on %s/%s: %s", source.name, page.file, exc)
            rejected.append(Rejection(source.name, page.file, "layout_regions", f"layout detection failed: {exc}"))
            continue
        records = layout_to_records(layout)
        degenerate = [r for r in records if r["x1"] <= r["x0"] or r["y1"] <= r["y0"]]
        for rec in degenerate:  # nothing to crop, read or embed (detect_layout drops these; a box may round to it)
            box = (rec["x0"], rec["y0"], rec["x1"], rec["y1"])
            rejected.append(
                Rejection(source.name, page.file, "layout_regions",
                          f"region {box} has zero width or height; expected x0 < x1 and y0 < y1")
            )
        records = [r for r in records if r["x1"] > r["x0"] and r["y1"] > r["y0"]]
        if not records:
            rejected.append(Rejection(source.name, page.file, "layout_regions", "layout found no text regions on a page with ink"))
        for order, rec in enumerate(records):
            box = (int(rec["x0"]), int(rec["y0"]), int(rec["x1"]), int(rec["y1"]))
            rows.append(
                {
                    "region_id": content_id(f"{source.name}:{page.page_id}:{box}:{rec['kind']}".encode()),
                    "source": source.name,
                    "page_id": page.page_id,
                    "x0": box[0],
                    "y0": box[1],
                    "x1": box[2],
                    "y1": box[3],
                    "kind": rec["kind"],
                    "reading_order": order,
                    "score": float(rec.get("score") or 0.0),
                    "detector": source.layout,
                    "direction": source.direction,
                    "classifier": "size rules" if classifiers is None else classifiers.name,
                }
            )
    frame = pd.DataFrame(rows, columns=list(schema.LAYOUT_REGIONS)) if rows else empty_frame(schema.LAYOUT_REGIONS)
    return frame, rejected


def _labels_of(source: SourceConfig, pages: pd.DataFrame) -> pd.DataFrame | None:
    """The source's labels for fitting its line classifier (rejected rows are recorded by ``region_labels``)."""
    found, _ = read_labels(source, set(pages["file"].astype(str)))
    return found


def expected_classifier(source: SourceConfig, pages: pd.DataFrame) -> str:
    """The ``classifier`` value :func:`detect_page_regions` writes for these pages (without fitting anything)."""
    if source.layout != "ppocr":
        return "size rules"
    return region_training.classifier_name(pages, _labels_of(source, pages), source.name)


def name_regions(regions: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``layout_regions`` that are cropped, read and linked: kind in ``schema.NAME_KINDS``.

    A frame without a ``kind`` column (boxes given by hand, not detected) is taken whole.
    """
    if "kind" not in regions.columns:
        return regions
    return regions[regions["kind"].isin(schema.NAME_KINDS)]


def extract_crops(
    pages: pd.DataFrame, regions: pd.DataFrame, source: SourceConfig, crop_dir: Path
) -> tuple[pd.DataFrame, list[Rejection]]:
    """Cuts every name region out of its page: a tight crop (for OCR) and its square padding (for the encoders).

    Only regions whose kind is in ``schema.NAME_KINDS`` (title, heading, entry) are cut; ``body`` text regions
    stay in ``layout_regions`` (and are scored by the layout evaluation) but are never cropped, read or linked.
    Files are written as ``<crop_dir>/<source>/<crop_id>.png`` and ``<crop_id>.square.png``; a file that already
    exists with the same content id is kept. A region that cannot be cut (zero width or height, off its page) or
    written is rejected with its reason and the others are cut: no single crop fails a source.
    """
    out_dir = safe_child(Path(crop_dir), source.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    regions = name_regions(regions)
    rows: list[dict] = []
    rejected: list[Rejection] = []
    page_by_id = {p.page_id: p for p in pages.itertuples(index=False)}
    for page_id, group in regions.groupby("page_id", sort=True):
        page = page_by_id.get(page_id)
        if page is None:
            continue
        try:
            image = load_page_image(Path(page.image_path)).convert("RGB")
        except Exception as exc:
            rejected.append(Rejection(source.name, page.file, "region_crops", f"page could not be read: {exc}"))
            continue
        regs = list(group.sort_values("reading_order").itertuples(index=False))
        cut, refused = cut_regions(image, [(r.x0, r.y0, r.x1, r.y1) for r in regs])
        for i, reason in refused:
            rejected.append(Rejection(source.name, page.file, "region_crops", f"region {regs[i].region_id}: {reason}"))
        for crop in cut:
            reg = regs[crop.index]
            try:
                data = encode_png(crop.tight)
                crop_id = content_id(reg.region_id.encode() + data)
                crop_path = out_dir / f"{crop_id}.png"
                square_path = out_dir / f"{crop_id}.square.png"
                if not crop_path.exists():
                    atomic_write_bytes(crop_path, data)
                if not square_path.exists():
                    atomic_write_bytes(square_path, encode_png(crop.square))
            except (OSError, ValueError) as exc:
                logger.warning("crop of region %s not written: %s", reg.region_id, exc)
                rejected.append(Rejection(source.name, page.file, "region_crops",
                                          f"region {reg.region_id}: crop not written: {exc}"))
                continue
            rows.append(
                {
                    "crop_id": crop_id,
                    "region_id": reg.region_id,
                    "source": source.name,
                    "page_id": page_id,
                    "crop_path": str(crop_path),
                    "square_path": str(square_path),
                    "width": crop.tight.width,
                    "height": crop.tight.height,
                    "direction": reg.direction,
                }
            )
    frame = pd.DataFrame(rows, columns=list(schema.REGION_CROPS)) if rows else empty_frame(schema.REGION_CROPS)
    return frame, rejected


def read_crops(
    crops: pd.DataFrame, source: SourceConfig, engines: Mapping[str, OcrEngine], *, names: Sequence[str] | None = None
) -> tuple[pd.DataFrame, dict[str, float]]:
    """OCRs every crop of one source with each configured engine (or only the engines in ``names``).

    Returns:
        ``ocr_texts`` rows (one per crop and engine) and seconds spent per engine.
    """
    from PIL import Image

    images = []
    for path in crops["crop_path"]:
        with Image.open(path) as im:
            images.append(im.convert("RGB"))
    frames = []
    timings: dict[str, float] = {}
    for name in source.ocr if names is None else names:
        engine = engines[name]
        t0 = time.perf_counter()
        results = engine.read(images, direction=source.direction) if images else []
        timings[name] = time.perf_counter() - t0
        frames.append(
            pd.DataFrame(
                {
                    "crop_id": crops["crop_id"].to_numpy(),
                    "source": source.name,
                    "ocr": name,
                    "text": [r.text for r in results],
                    "confidence": [float(r.confidence) for r in results],
                    "reader": engine.reader if results else "",
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True) if frames else empty_frame(schema.OCR_TEXTS)
    return frame, timings


@dataclass(frozen=True)
class IncrementalResult:
    """Rows of a per-source stage built incrementally: ``done`` units computed now, ``reused`` kept from before."""

    rows: pd.DataFrame
    rejected: list[Rejection]
    done: int
    reused: int
    seconds: dict[str, float]


def _kept_rows(previous: pd.DataFrame | None, key: str, wanted: pd.Series, same: Mapping[str, object]) -> pd.DataFrame:
    """Rows of ``previous`` whose ``key`` is still wanted and whose ``same`` columns hold the given values
    (no rows, but the ``key`` column, when there is nothing earlier)."""
    if previous is None:
        return pd.DataFrame({key: pd.Series(dtype="object")})
    keep = previous[key].isin(set(wanted))
    for col, value in same.items():
        keep &= previous[col] == value
    return previous[keep]


def _combined(kept: pd.DataFrame, new: pd.DataFrame, contract: Mapping[str, str], order: list[str]) -> pd.DataFrame:
    parts = [f for f in (kept, new) if not f.empty]
    if not parts:
        return empty_frame(contract)
    out = pd.concat([p[list(contract)] for p in parts], ignore_index=True)
    return out.sort_values(order, kind="stable").reset_index(drop=True)


def detect_page_regions_incremental(
    pages: pd.DataFrame, source: SourceConfig, previous: pd.DataFrame | None
) -> IncrementalResult:
    """:func:`detect_page_regions` on the pages without regions in ``previous`` (the source's earlier
    ``layout_regions``); regions of unchanged pages (same page id, detector, direction and line classifier: new
    labels for a source refit its classifier, so every page is classified again) are kept.

    Page ids are content hashes, so an edited page is a new page and its old regions are dropped. A page that
    had no regions before is detected again (it may have been rejected). Rows are ordered by page id and
    reading order, whether built at once or bit by bit.
    """
    t0 = time.perf_counter()
    same = {"detector": source.layout, "direction": source.direction, "classifier": expected_classifier(source, pages)}
    kept = _kept_rows(previous, "page_id", pages["page_id"], same)
    todo = pages[~pages["page_id"].isin(set(kept["page_id"]))]
    new, rejected = detect_page_regions(todo, source, all_pages=pages)
    rows = _combined(kept, new, schema.LAYOUT_REGIONS, ["page_id", "reading_order", "region_id"])
    return IncrementalResult(rows, rejected, len(todo), kept["page_id"].nunique(), {"layout": time.perf_counter() - t0})


def extract_crops_incremental(
    pages: pd.DataFrame, regions: pd.DataFrame, source: SourceConfig, crop_dir: Path, previous: pd.DataFrame | None
) -> IncrementalResult:
    """:func:`extract_crops` on the name regions not cut before; a region of ``previous`` (the source's earlier
    ``region_crops``) is kept when it is still detected and both its crop files still exist."""
    t0 = time.perf_counter()
    regions = name_regions(regions)
    kept = _kept_rows(previous, "region_id", regions["region_id"], {})
    if not kept.empty:
        on_disk = [Path(a).is_file() and Path(b).is_file() for a, b in zip(kept["crop_path"], kept["square_path"], strict=True)]
        kept = kept[np.array(on_disk, dtype=bool)]
    todo = regions[~regions["region_id"].isin(set(kept["region_id"]))]
    new, rejected = extract_crops(pages, todo, source, crop_dir)
    rows = _combined(kept, new, schema.REGION_CROPS, ["page_id", "region_id"])
    return IncrementalResult(rows, rejected, len(new), len(kept), {"crops": time.perf_counter() - t0})


def read_crops_incremental(
    crops: pd.DataFrame, source: SourceConfig, engines: Mapping[str, OcrEngine], previous: pd.DataFrame | None
) -> IncrementalResult:
    """:func:`read_crops` on the (crop, engine) pairs not read before; texts in ``previous`` (the source's earlier
    ``ocr_texts``) are kept for crops still present (crop ids are content hashes of the crop image) that the engine's
    current :attr:`~linkage_pipeline.documents.ocr.OcrEngine.reader` read.

    ``done`` and ``reused`` count (crop, engine) reads; ``seconds`` is per engine.
    """
    frames, done, reused, timings = [], 0, 0, {}
    for name in source.ocr:
        # a text read by another reader (engine version, model, parsing rule) is read again
        same = {"ocr": name} if previous is None or previous.empty else {"ocr": name, "reader": engines[name].reader}
        kept = _kept_rows(previous, "crop_id", crops["crop_id"], same)
        todo = crops[~crops["crop_id"].isin(set(kept["crop_id"]))]
        new, seconds = read_crops(todo, source, engines, names=(name,))
        timings[name] = seconds.get(name, 0.0)
        frames += [kept, new]
        done, reused = done + len(todo), reused + len(kept)
    parts = [f for f in frames if not f.empty]
    rows = (
        pd.concat([p[list(schema.OCR_TEXTS)] for p in parts], ignore_index=True)
        .sort_values(["ocr", "crop_id"], kind="stable")
        .reset_index(drop=True)
        if parts
        else empty_frame(schema.OCR_TEXTS)
    )
    return IncrementalResult(rows, [], done, reused, timings)
