"""Frame-level stage functions: one call per asset, tables in, tables out.

Each function turns the rows of one stage's input table into the rows of its output table (column contracts
in ``schema.py``), recording what it could not process as :class:`Rejection` rows instead of failing the
whole source.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from linkage_pipeline import evaluation, network, schema
from linkage_pipeline.checks import require_columns
from linkage_pipeline.crops import content_id, cut_regions, encode_png
from linkage_pipeline.documents.pages import load_page_image
from linkage_pipeline.documents.sources import Rejection, SourceConfig
from linkage_pipeline.layout import DEFAULT_TIME_BUDGET_S, PageRejected, detect_layout, layout_to_records
from linkage_pipeline.ocr import OcrEngine
from linkage_pipeline.paths import atomic_write_bytes, safe_child
from linkage_pipeline.strings import normalize, topk_string_matches

if TYPE_CHECKING:  # training imports torch; this module must stay light
    from linkage_pipeline.training import TrainingSet

logger = logging.getLogger(__name__)


def empty_frame(contract: Mapping[str, str]) -> pd.DataFrame:
    """No rows, the columns of ``contract`` (object dtype, so any Parquet type of the contract accepts them)."""
    return pd.DataFrame({c: pd.Series(dtype="object") for c in contract})


def detect_page_regions(
    pages: pd.DataFrame, source: SourceConfig, *, time_budget_s: float | None = DEFAULT_TIME_BUDGET_S
) -> tuple[pd.DataFrame, list[Rejection]]:
    """Detects name regions on every page of one source.

    A page is rejected (its regions are not emitted, so never cut or read) when layout fails on it, finds no
    text, holds more regions than its size allows at its type size, runs over ``time_budget_s`` or is noise
    without paper (:class:`~linkage_pipeline.layout.PageRejected`); a region of zero width or height is
    rejected on its own and its page kept.

    Args:
        pages: rows of ``page_images`` for the source.
        source: the source's configuration (direction, layout detector, language).
        time_budget_s: wall-clock seconds one page's layout may take (``None``: no budget).

    Returns:
        ``layout_regions`` rows (reading order per page) and rejections for pages that failed or had no text.
    """
    rows: list[dict] = []
    rejected: list[Rejection] = []
    for page in pages.itertuples(index=False):
        try:
            image = np.asarray(load_page_image(Path(page.image_path)).convert("L"))
            layout = detect_layout(
                image, direction=source.direction, detector=source.layout, lang=source.language,
                time_budget_s=time_budget_s,
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
                }
            )
    frame = pd.DataFrame(rows, columns=list(schema.LAYOUT_REGIONS)) if rows else empty_frame(schema.LAYOUT_REGIONS)
    return frame, rejected


def extract_crops(
    pages: pd.DataFrame, regions: pd.DataFrame, source: SourceConfig, crop_dir: Path
) -> tuple[pd.DataFrame, list[Rejection]]:
    """Cuts every region out of its page: a tight crop (for OCR) and its square padding (for the encoders).

    Files are written as ``<crop_dir>/<source>/<crop_id>.png`` and ``<crop_id>.square.png``; a file that already
    exists with the same content id is kept. A region that cannot be cut (zero width or height, off its page) or
    written is rejected with its reason and the others are cut: no single crop fails a source.
    """
    out_dir = safe_child(Path(crop_dir), source.name)
    out_dir.mkdir(parents=True, exist_ok=True)
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
                    "engine": name,
                    "text": [r.text for r in results],
                    "confidence": [float(r.confidence) for r in results],
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True) if frames else empty_frame(schema.OCR_TEXTS)
    return frame, timings


LABELLED_REGIONS = {
    "region_id": "VARCHAR",
    "source": "VARCHAR",
    "page": "VARCHAR",
    "label_index": "INTEGER",
    "iou": "DOUBLE",
    "text": "VARCHAR",
    "entity_id": "VARCHAR",
    "role": "VARCHAR",
}


def label_regions(
    regions: pd.DataFrame, pages: pd.DataFrame, labels: pd.DataFrame, *, iou_threshold: float = 0.5
) -> pd.DataFrame:
    """Matches detected regions to labelled boxes (one-to-one by IoU) so any labelled corpus can be scored."""
    if regions.empty or labels is None or labels.empty:
        return empty_frame(LABELLED_REGIONS)
    with_page = regions.merge(pages[["page_id", "file"]], on="page_id", how="left").rename(columns={"file": "page"})
    matches = evaluation.match_regions_to_labels(with_page, labels, iou_threshold=iou_threshold)
    out = matches.merge(with_page[["region_id", "source", "page"]], on="region_id", how="left")
    out["entity_id"] = out["entity_id"].fillna("").astype(str)
    return out[list(LABELLED_REGIONS)].sort_values("region_id").reset_index(drop=True)


STRING_LINKS = {
    "query_crop_id": "VARCHAR",
    "target_crop_id": "VARCHAR",
    "query_source": "VARCHAR",
    "target_source": "VARCHAR",
    "method": "VARCHAR",
    "ocr": "VARCHAR",
    "rank": "INTEGER",
    "score": "DOUBLE",
}


def string_links(
    queries: pd.DataFrame,
    targets: pd.DataFrame,
    *,
    methods: Sequence[str],
    condition: str,
    k: int = 5,
    workers: int = -1,
) -> pd.DataFrame:
    """Top-k target crops for every query crop by each string method.

    Args:
        queries: rows with query_crop_id/crop_id, source and text.
        targets: rows with crop_id, source and text.
        methods: string methods (``strings.STRING_METHODS``).
        condition: the text condition recorded in the ``ocr`` column (engine name or ``ground_truth``).
    """
    frames = []
    q_ids = queries["crop_id"].to_numpy()
    t_ids = targets["crop_id"].to_numpy()
    q_src = queries["source"].iloc[0] if len(queries) else ""
    t_src = targets["source"].iloc[0] if len(targets) else ""
    for method in methods:
        idx, scores = topk_string_matches(
            queries["text"].fillna("").tolist(), targets["text"].fillna("").tolist(), method=method, k=k, workers=workers
        )
        n_q, kk = idx.shape
        if kk == 0:
            continue
        frames.append(
            pd.DataFrame(
                {
                    "query_crop_id": np.repeat(q_ids, kk),
                    "target_crop_id": t_ids[idx.reshape(-1)],
                    "query_source": q_src,
                    "target_source": t_src,
                    "method": method,
                    "ocr": condition,
                    "rank": np.tile(np.arange(1, kk + 1), n_q),
                    "score": scores.reshape(-1).astype(float),
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else empty_frame(STRING_LINKS)


def empty_linkages(sources: Iterable[str], linkages: Sequence[tuple[str, str]], *, what: str) -> list[str]:
    """One line for every linkage with no rows on its query or target side, naming the empty side(s).

    Such a linkage yields zero links (a source without a usable page, a list without a title): a result, not a
    failure, and these lines say so in the metadata.

    Args:
        sources: The ``source`` column of the rows to link (``stg_crop_texts``, ``crop_embeddings``, ...).
        linkages: (query source, target source) pairs.
        what: What a row is, for the message (``"OCR texts"``, ``"crop embeddings"``).

    Returns:
        ``"<query> -> <target>: no <what> in query source '<query>'"`` (or target, or both), in linkage order.
    """
    have = set(sources)
    lines = []
    for query, target in linkages:
        sides = [f"{role} source {name!r}" for role, name in (("query", query), ("target", target)) if name not in have]
        if sides:
            lines.append(f"{query} -> {target}: no {what} in {' or '.join(sides)}")
    return lines


def runnable_linkages(
    linkages: Sequence[tuple[str, str]], skipped: Mapping[str, str]
) -> tuple[list[tuple[str, str]], list[str]]:
    """The linkages whose two sources are both usable, and one line for each that is skipped.

    Args:
        linkages: (query source, target source) pairs.
        skipped: Why each unusable source is left out (e.g. its embeddings are missing or of another model).

    Raises:
        ValueError: If linkages exist and every one of them is skipped (nothing could be linked).
    """
    run, lines = [], []
    for query, target in linkages:
        why = [f"{name}: {skipped[name]}" for name in (query, target) if name in skipped]
        if why:
            lines.append(f"{query} -> {target} skipped ({'; '.join(why)})")
        else:
            run.append((query, target))
    if linkages and not run:
        raise ValueError("no linkage can run: " + "; ".join(lines))
    return run, lines


def link_sources_by_strings(
    crop_texts: pd.DataFrame,
    linkages: Sequence[tuple[str, str]],
    *,
    methods: Sequence[str],
    k: int = 5,
    workers: int = -1,
) -> pd.DataFrame:
    """String links for every (query source, target source) linkage and every text condition both sides have.

    Args:
        crop_texts: rows of ``stg_crop_texts`` (crop_id, source, condition, text).
        linkages: (query source, target source) pairs.
    """
    frames = []
    for query_source, target_source in linkages:
        q_all = crop_texts[crop_texts["source"] == query_source]
        t_all = crop_texts[crop_texts["source"] == target_source]
        for condition in sorted(set(q_all["condition"]) & set(t_all["condition"])):
            q = q_all[q_all["condition"] == condition].sort_values("crop_id")
            t = t_all[t_all["condition"] == condition].sort_values("crop_id")
            frames.append(string_links(q, t, methods=methods, condition=condition, k=k, workers=workers))
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else empty_frame(STRING_LINKS)


#: The crop texts earlier string links were computed from: one row per source, text condition and crop, with a hash
#: of the text (an OCR engine that now reads a crop differently makes it a new text).
STRING_LINK_INPUTS = {"source": "VARCHAR", "ocr": "VARCHAR", "crop_id": "VARCHAR", "text_hash": "VARCHAR"}


def _text_hashes(texts: pd.Series) -> list[str]:
    return [content_id(t.encode("utf-8")) for t in texts.fillna("").astype(str)]


def topk_rows(found: pd.DataFrame, k: int) -> pd.DataFrame:
    """Best ``k`` rows per ``query_crop_id`` by ``score``, ties by ``target_crop_id`` (the order of a full search
    over targets sorted by id), ``rank`` renumbered from 1; a target listed twice for a query counts once (a run
    stopped between writing links and what they were computed from lists it again)."""
    found = found.sort_values(["query_crop_id", "score", "target_crop_id"], ascending=[True, False, True],
                              kind="stable")
    found = found.drop_duplicates(["query_crop_id", "target_crop_id"])
    found = found.groupby("query_crop_id", sort=False).head(k).copy()
    found["rank"] = found.groupby("query_crop_id", sort=False).cumcount() + 1
    return found


def relink_sources_by_strings(
    crop_texts: pd.DataFrame,
    linkages: Sequence[tuple[str, str]],
    *,
    methods: Sequence[str],
    k: int = 5,
    workers: int = -1,
    previous: pd.DataFrame | None = None,
    previous_inputs: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """:func:`link_sources_by_strings`, recomputing only what new or changed texts can change.

    For each linkage, text condition and method, when ``previous`` holds its top-k lists and ``previous_inputs``
    the texts they were computed from: a query whose text is unchanged is compared with the targets added since
    only, and its list merged with the new hits; a new or changed query is compared with every target; a query
    that is gone is dropped. When a target was removed or its text changed, every query is compared again. Scores
    depend on the two texts alone, so the result equals a full :func:`link_sources_by_strings`.

    Args:
        crop_texts: rows of ``stg_crop_texts`` (crop_id, source, condition, text).
        linkages: (query source, target source) pairs.
        methods: string methods (``strings.STRING_METHODS``).
        previous: earlier ``string_links`` rows.
        previous_inputs: earlier :data:`STRING_LINK_INPUTS` rows.

    Returns:
        ``string_links`` rows, the :data:`STRING_LINK_INPUTS` rows for the next call, and counts
        ``{"queries_searched", "queries_checked", "queries_kept"}`` per method: compared with every target, with
        the new targets only, and reused untouched.
    """
    stats = {"queries_searched": 0, "queries_checked": 0, "queries_kept": 0}
    texts = crop_texts.assign(text_hash=_text_hashes(crop_texts["text"]))
    before: dict[tuple[str, str], dict[str, str]] = {}
    if previous_inputs is not None and not previous_inputs.empty:
        before = {key: dict(zip(g["crop_id"], g["text_hash"]))
                  for key, g in previous_inputs.groupby(["source", "ocr"], sort=False)}
    prev = previous if previous is not None and not previous.empty else None
    frames, used = [], set()
    for query_source, target_source in linkages:
        q_all = texts[texts["source"] == query_source]
        t_all = texts[texts["source"] == target_source]
        for condition in sorted(set(q_all["condition"]) & set(t_all["condition"])):
            used |= {(query_source, condition), (target_source, condition)}
            q = q_all[q_all["condition"] == condition].sort_values("crop_id")
            t = t_all[t_all["condition"] == condition].sort_values("crop_id")
            t_before = before.get((target_source, condition))
            t_now = dict(zip(t["crop_id"], t["text_hash"]))
            old = None
            if prev is not None and t_before is not None and all(t_now.get(c) == h for c, h in t_before.items()):
                q_before = before.get((query_source, condition), {})
                same_text = q["crop_id"].map(q_before) == q["text_hash"]
                old = prev[(prev["query_source"] == query_source) & (prev["target_source"] == target_source)
                           & (prev["ocr"] == condition) & prev["query_crop_id"].isin(set(q["crop_id"][same_text]))]
            added = t[~t["crop_id"].isin(set(t_before))] if old is not None else t.iloc[:0]
            for method in methods:
                kept = None
                if old is not None:
                    kept = old[old["method"] == method]
                    # a list shorter than k (k was raised since) is compared again
                    kept = kept[kept.groupby("query_crop_id")["target_crop_id"].transform("size")
                                == min(k, len(t_before))]
                seen = set(kept["query_crop_id"]) if kept is not None else set()
                fresh = q[~q["crop_id"].isin(seen)]
                parts = []
                if len(fresh):
                    parts.append(string_links(fresh, t, methods=[method], condition=condition, k=k, workers=workers))
                    stats["queries_searched"] += len(fresh)
                if seen:
                    parts.append(kept)
                    if len(added):
                        q_seen = q[q["crop_id"].isin(seen)]
                        parts.append(string_links(q_seen, added, methods=[method], condition=condition, k=k,
                                                  workers=workers))
                        stats["queries_checked"] += len(seen)
                    else:
                        stats["queries_kept"] += len(seen)
                parts = [p[["query_crop_id", "target_crop_id", "score"]] for p in parts if len(p)]
                if not parts:
                    continue
                out = topk_rows(pd.concat(parts, ignore_index=True), k)
                frames.append(out.assign(query_source=query_source, target_source=target_source, method=method,
                                         ocr=condition))
    links = pd.concat(frames, ignore_index=True)[list(STRING_LINKS)] if frames else empty_frame(STRING_LINKS)
    # a bool array, not a list: an empty list would select no columns instead of no rows
    keep = np.array([(src, cond) in used for src, cond in zip(texts["source"], texts["condition"])], dtype=bool)
    inputs = texts[keep].rename(columns={"condition": "ocr"})[list(STRING_LINK_INPUTS)].reset_index(drop=True)
    return links, inputs, stats


# ------------------------------------------------------------------------------------------- evaluation
#: Column contracts of the evaluation tables (an empty table keeps its columns and types).
LAYOUT_EVALUATION = {
    "source": "VARCHAR",
    "precision": "DOUBLE",
    "recall": "DOUBLE",
    "f1": "DOUBLE",
    "mean_iou": "DOUBLE",
    "n_detected": "BIGINT",
    "n_labelled": "BIGINT",
    "n_matched": "BIGINT",
    "kind_accuracy": "DOUBLE",
}
OCR_EVALUATION = {"source": "VARCHAR", "engine": "VARCHAR", "cer": "DOUBLE", "exact_match": "DOUBLE", "n": "BIGINT"}
LINKAGE_EVALUATION = {
    "method": "VARCHAR",
    "training": "VARCHAR",
    "ocr": "VARCHAR",
    "split": "VARCHAR",
    "top1_accuracy": "DOUBLE",
    "top1_accuracy_with_nomatch": "DOUBLE",
    "nomatch_threshold": "DOUBLE",
    "n": "BIGINT",
    "n_with_nomatch": "BIGINT",
}


def layout_evaluation_table(
    regions: pd.DataFrame, pages: pd.DataFrame, labels: pd.DataFrame, matched: pd.DataFrame
) -> pd.DataFrame:
    """One row per labelled source: detection precision/recall at IoU >= 0.5 and kind accuracy.

    Args:
        regions: ``layout_regions`` rows (all sources).
        pages: ``page_images`` rows (for the page file names labels refer to).
        labels: ``region_labels`` rows (all sources).
        matched: ``labelled_regions`` rows (all sources).
    """
    regions = regions.merge(pages[["page_id", "file"]], on="page_id", how="left").rename(columns={"file": "page"})
    rows = []
    for source, src_labels in labels.groupby("source", sort=True):
        src_regions = regions[regions["source"] == source]
        metrics = evaluation.layout_metrics(src_regions, src_labels, matched[matched["source"] == source])
        rows.append({"source": source, **metrics})
    columns = ["source", "precision", "recall", "f1", "mean_iou", "n_detected", "n_labelled", "n_matched", "kind_accuracy"]
    return pd.DataFrame(rows, columns=columns)


def ocr_evaluation_table(crops: pd.DataFrame, ocr: pd.DataFrame, matched: pd.DataFrame) -> pd.DataFrame:
    """One row per labelled source and OCR engine: character error rate and exact-match share on matched regions."""
    joined = (
        matched[["region_id", "source", "text", "role"]]
        .rename(columns={"text": "true_text"})
        .merge(crops[["region_id", "crop_id"]], on="region_id")
        .merge(ocr[["crop_id", "engine", "text"]], on="crop_id")
    )
    joined = joined[joined["role"] != "heading"]
    rows = []
    for (source, engine), g in joined.groupby(["source", "engine"], sort=True):
        pred = g["text"].fillna("").tolist()
        truth = g["true_text"].fillna("").tolist()
        rows.append(
            {
                "source": source,
                "engine": engine,
                "cer": evaluation.character_error_rate(pred, truth),
                "exact_match": float(np.mean([normalize(p) == normalize(t) for p, t in zip(pred, truth, strict=True)])),
                "n": len(g),
            }
        )
    return pd.DataFrame(rows, columns=["source", "engine", "cer", "exact_match", "n"])


def _truth_frames(regions: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str], set[str]]:
    """Query rows (query_id, entity_id, split), target crop -> entity map, and the entity ids in the targets."""
    labelled = regions[regions["crop_id"].notna() & regions["kind"].isin(["title", "entry"])]
    q = labelled[labelled["source_role"] == "query"]
    t = labelled[labelled["source_role"] == "target"]
    entity = q["true_entity_id"].fillna("").astype(str)
    queries = pd.DataFrame(
        {
            "query_id": q["crop_id"].to_numpy(),
            "entity_id": entity.replace("", None).to_numpy(),
            "split": evaluation.assign_split(entity.to_numpy()),
        }
    )
    target_entity = {
        str(c): str(e) for c, e in zip(t["crop_id"], t["true_entity_id"], strict=True) if isinstance(e, str) and e
    }
    return queries, target_entity, set(target_entity.values())


def linkage_evaluation_table(
    links: pd.DataFrame,
    regions: pd.DataFrame,
    *,
    training: str = "none",
    report_splits: Sequence[str] = ("test", "all"),
) -> pd.DataFrame:
    """Rows of ``linkage_evaluation`` for every method and text condition in ``links`` (top-1 of each query).

    Args:
        links: ``string_links``-shaped rows (query_crop_id, target_crop_id, method, ocr, rank, score).
        regions: ``stg_regions`` rows (crop ids with source role and true entity ids).
        training: what the method was trained with (``none`` for string matching).
        report_splits: splits to report (the no-match threshold is always tuned on ``val``).
    """
    columns = list(evaluation.LINKAGE_EVALUATION_COLUMNS)
    queries, target_entity, target_ids = _truth_frames(regions)
    if links.empty or queries["entity_id"].isna().all():
        return pd.DataFrame(columns=columns)
    top1 = links[links["rank"] == 1]
    top1 = top1[top1["query_crop_id"].isin(set(queries["query_id"]))]
    frame = pd.DataFrame(
        {
            "query_id": top1["query_crop_id"].to_numpy(),
            "target_entity_id": top1["target_crop_id"].map(target_entity).to_numpy(),
            "score": top1["score"].to_numpy(),
            "method": top1["method"].to_numpy(),
            "training": training,
            "ocr": top1["ocr"].to_numpy(),
        }
    )
    return evaluation.linkage_evaluation_rows(queries, frame, target_ids, report_splits=report_splits)[columns]


_TRAINING_ORDER = {"none": 0, "self_supervised": 1, "supervised": 2}
_METHOD_ORDER = {"levenshtein": 0, "jaro_winkler": 1, "ngram": 2, "vision": 3, "language": 4, "multimodal": 5}


def table_one_markdown(table: pd.DataFrame, split: str = "test", value: str = "top1_accuracy") -> str:
    """The paper's Table 1 layout of ``linkage_evaluation`` rows: method x training down, text condition across."""
    rows = table[table["split"] == split]
    if rows.empty:
        return "_no labelled queries in this split_"
    pivot = rows.pivot_table(index=["training", "method"], columns="ocr", values=value, aggfunc="first")
    order = sorted(pivot.index, key=lambda k: (_TRAINING_ORDER.get(k[0], 9), _METHOD_ORDER.get(k[1], 9), k))
    pivot = pivot.loc[order].round(3)
    n = int(rows["n" if value == "top1_accuracy" else "n_with_nomatch"].max())
    return f"{split} split, {value} (n = {n} queries)\n\n" + pivot.reset_index().to_markdown(index=False)


RECORD_LINKS = {
    "query_crop_id": "VARCHAR",
    "target_crop_id": "VARCHAR",
    "query_source": "VARCHAR",
    "target_source": "VARCHAR",
    "rank": "INTEGER",
    "score": "DOUBLE",
    "matched": "BOOLEAN",
    "method": "VARCHAR",
    "ocr": "VARCHAR",
    "threshold": "DOUBLE",
    "model_id": "VARCHAR",  # the embedding model for vision/language/multimodal links, "" for string methods
    "run_id": "VARCHAR",  # the Dagster run that wrote the link ("" outside Dagster)
}
_MODEL_METHODS = ("vision", "language", "multimodal")


def select_record_links(
    links: pd.DataFrame,
    regions: pd.DataFrame,
    *,
    method: str = "auto",
    condition: str = "auto",
    threshold: float | None = None,
    margin: float = 0.0,
    default_threshold: float = 0.0,
    default_method: str = "jaro_winkler",
    default_condition: str | None = None,
    model_id: str = "",
) -> tuple[pd.DataFrame, dict[str, object]]:
    """Chooses one method/condition and turns its candidates into accepted links.

    ``auto`` picks the method/condition with the best validation-split accuracy (including no-match) when labels
    exist; the ground-truth text condition is never picked. A query is linked to its top-1 target when the score
    reaches the threshold (tuned on the validation split unless given), and also to further candidates within
    ``margin`` of the top-1 score (one firm listed more than once). A query with no accepted link gets one row
    with ``matched = False`` and its best candidate, so every query is accounted for. Without labels the
    ``default_method`` on ``default_condition`` (else the last condition name) is used with ``default_threshold``
    (for the model's methods, the threshold stored with the model).

    Returns:
        ``record_links`` rows and a dict describing the choice (method, condition, threshold, how chosen,
        validation scores). No candidate links (every linkage has an empty side) give no rows and a choice whose
        ``chosen_by`` says so, with NaN threshold and scores.
    """
    if links.empty:
        nan = float("nan")
        return empty_frame(RECORD_LINKS), {
            "method": method, "condition": condition, "threshold": nan if threshold is None else float(threshold),
            "chosen_by": "no candidate links", "threshold_from": "no candidate links",
            "val_top1": nan, "val_top1_with_nomatch": nan,
        }
    usable = links[links["ocr"] != "ground_truth"]
    evaluated = linkage_evaluation_table(usable, regions, report_splits=("val",))
    val = evaluated.dropna(subset=["top1_accuracy_with_nomatch"])
    chosen_by = "configuration"
    if method == "auto" or condition == "auto":
        cands = val
        if method != "auto":
            cands = cands[cands["method"] == method]
        if condition != "auto":
            cands = cands[cands["ocr"] == condition]
        if not cands.empty:
            # Ranked on the validation split only, never on test firms.
            best = cands.sort_values(["top1_accuracy_with_nomatch", "method", "ocr"], ascending=[False, True, True]).iloc[0]
            method, condition = str(best["method"]), str(best["ocr"])
            chosen_by = "best validation accuracy"
        else:
            method = default_method if method == "auto" else method
            if condition == "auto":
                conditions = sorted(set(usable["ocr"]))
                condition = default_condition if default_condition in conditions else conditions[-1]
            chosen_by = "default (no labels)"
    chosen = usable[(usable["method"] == method) & (usable["ocr"] == condition)]
    if chosen.empty:
        raise ValueError(
            f"no string links for method {method!r} and OCR condition {condition!r}; available: "
            f"{sorted(set(zip(usable['method'], usable['ocr'], strict=True)))}"
        )
    if threshold is None:
        row = evaluated[(evaluated["method"] == method) & (evaluated["ocr"] == condition)]
        t = row["nomatch_threshold"].dropna()
        threshold = float(t.iloc[0]) if len(t) else default_threshold
        chosen_by_threshold = "tuned on the validation split" if len(t) else "default (no validation labels)"
    else:
        chosen_by_threshold = "configuration"
    chosen = chosen.sort_values(["query_crop_id", "rank"])
    best_score = chosen.groupby("query_crop_id")["score"].transform("max")
    accept = (chosen["score"] >= threshold) & (chosen["score"] >= best_score - margin)
    accepted = chosen[accept]
    unmatched_ids = set(chosen["query_crop_id"]) - set(accepted["query_crop_id"])
    unmatched = chosen[chosen["query_crop_id"].isin(unmatched_ids) & (chosen["rank"] == 1)]
    out = pd.concat([accepted.assign(matched=True), unmatched.assign(matched=False)], ignore_index=True)
    out = out.assign(threshold=threshold, model_id=model_id if method in _MODEL_METHODS else "", run_id="")
    out = out.sort_values(["query_crop_id", "rank"]).reset_index(drop=True)
    return out[list(RECORD_LINKS)], {
        "method": method,
        "condition": condition,
        "threshold": threshold,
        "chosen_by": chosen_by,
        "threshold_from": chosen_by_threshold,
        **_validation_scores(evaluated, method, condition),
    }


def _validation_scores(evaluated: pd.DataFrame, method: str, condition: str) -> dict[str, float]:
    """Validation top-1 (and with no-match) of the chosen method and condition; NaN without labels."""
    row = evaluated[(evaluated["method"] == method) & (evaluated["ocr"] == condition)] if len(evaluated) else evaluated
    if len(row) == 0:
        return {"val_top1": float("nan"), "val_top1_with_nomatch": float("nan")}
    return {
        "val_top1": float(row["top1_accuracy"].iloc[0]),
        "val_top1_with_nomatch": float(row["top1_accuracy_with_nomatch"].iloc[0]),
    }


# ---------------------------------------------------------------------------------------------- network
#: Column contracts of the network tables (see :func:`network.centrality_table` and :func:`network.anchor_distances`).
FIRM_CENTRALITY = {
    "node_id": "VARCHAR",
    "label": "VARCHAR",
    "in_degree": "BIGINT",
    "out_degree": "BIGINT",
    "degree_centrality": "DOUBLE",
    "betweenness": "DOUBLE",
}
FIRM_ANCHOR_DISTANCES = {
    "anchor_id": "VARCHAR",
    "anchor_label": "VARCHAR",
    "node_id": "VARCHAR",
    "label": "VARCHAR",
    "undirected_distance": "BIGINT",
    "distance_to_anchor": "BIGINT",
    "distance_from_anchor": "BIGINT",
}


@dataclass(frozen=True)
class NetworkResult:
    """What :func:`build_network` produced: tables for DuckDB and files for people."""

    centrality: pd.DataFrame
    anchor_distances: pd.DataFrame
    graphml_path: Path
    plot_path: Path
    n_nodes: int
    n_edges: int


def build_network(
    edges: pd.DataFrame, out_dir: Path, *, anchors: Sequence[str] = (), max_plot_nodes: int = 150
) -> NetworkResult:
    """Builds the supply-chain graph from ``mart_supply_chain_edges`` rows and writes its GraphML and plot.

    Anchors default to the three firms with the highest degree when none are named. No edges (no list entry was
    linked) is a result: an empty graph, empty tables with their columns, a GraphML file without nodes and a plot
    that says "empty network"; named anchors are then not looked up.

    Raises:
        ValueError: If ``edges`` lacks a column, or a named anchor is not a firm of a non-empty network.
    """
    require_columns(edges, ("supplier_id", "supplier_label", "customer_id", "customer_label"), "edges")
    nodes = pd.concat(
        [
            edges[["supplier_id", "supplier_label"]].set_axis(["node_id", "label"], axis=1),
            edges[["customer_id", "customer_label"]].set_axis(["node_id", "label"], axis=1),
        ],
        ignore_index=True,
    ).drop_duplicates("node_id")
    graph = network.build_supply_chain_graph(edges, nodes)
    centrality = network.centrality_table(graph)
    if graph.number_of_nodes() == 0:
        if anchors:
            logger.info("supply-chain network is empty: anchors %s not looked up", list(anchors))
        anchors = []
    elif not anchors:
        anchors = centrality.sort_values(["degree_centrality", "node_id"], ascending=[False, True])["node_id"].head(3).tolist()
    distances = network.anchor_distances(graph, list(anchors))
    out_dir.mkdir(parents=True, exist_ok=True)
    graphml_path, plot_path = out_dir / "supply_chain.graphml", out_dir / "supply_chain.png"
    network.write_graphml(graph, graphml_path)
    # drawing (spring layout, CJK font) is the slow part; the same edges give the same picture
    key = hashlib.sha256(graphml_path.read_bytes() + str(max_plot_nodes).encode()).hexdigest()
    key_path = out_dir / "supply_chain.png.key"
    if not (plot_path.is_file() and key_path.is_file() and key_path.read_text() == key):
        network.plot_network(graph, plot_path, max_nodes=max_plot_nodes)
        atomic_write_bytes(key_path, key.encode())
    return NetworkResult(centrality, distances, graphml_path, plot_path, graph.number_of_nodes(), graph.number_of_edges())


# ----------------------------------------------------------------------------------------------- training
def labelled_training_rows(regions: pd.DataFrame, crop_texts: pd.DataFrame, *, split: str = "train") -> TrainingSet:
    """The labelled crops of firms in the ``split`` split (by firm hash, as the evaluation) as training rows.

    Each crop contributes its readings by every OCR engine (ground truth excluded); crops of one entity are
    views of one class. Firms of the validation and test splits are never returned, so evaluating a model
    trained on these rows stays honest.

    Args:
        regions: ``stg_regions`` rows (crop_path, direction, true_entity_id, true_text).
        crop_texts: ``stg_crop_texts`` rows (crop_id, condition, text).
        split: Which split's firms to return.

    Returns:
        A :class:`~linkage_pipeline.training.TrainingSet` (possibly empty).
    """
    from PIL import Image

    from linkage_pipeline.documents.firms import Firm
    from linkage_pipeline.training import TrainingSet

    lab = regions[regions["crop_id"].notna() & regions["true_entity_id"].fillna("").astype(str).ne("")]
    lab = lab[lab["kind"].isin(["title", "entry"])].drop_duplicates("crop_id")
    lab = lab[evaluation.assign_split(lab["true_entity_id"].astype(str).to_numpy()) == split]
    texts = crop_texts[crop_texts["condition"] != "ground_truth"][["crop_id", "condition", "text"]]
    rows = lab.merge(texts, on="crop_id").sort_values(["true_entity_id", "crop_id", "condition"])
    entities = sorted(set(rows["true_entity_id"].astype(str)))
    index = {e: i for i, e in enumerate(entities)}
    truth = rows.drop_duplicates("true_entity_id").set_index("true_entity_id")["true_text"]
    images, cache = [], {}
    for path in rows["crop_path"]:
        if path not in cache:
            with Image.open(path) as im:
                cache[path] = im.convert("L")
        images.append(cache[path])
    return TrainingSet(
        images,
        rows["direction"].tolist(),
        rows["text"].fillna("").tolist(),
        rows["true_text"].fillna("").tolist(),
        np.asarray([index[str(e)] for e in rows["true_entity_id"]], dtype=np.int64),
        [Firm(entity_id=e, canonical=str(truth.get(e, "")) or e) for e in entities],
        {"origin": "labelled crops", "split": split, "n_firms": len(entities)},
    )


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
    ``layout_regions``); regions of unchanged pages (same page id, detector and direction) are kept.

    Page ids are content hashes, so an edited page is a new page and its old regions are dropped. A page that
    had no regions before is detected again (it may have been rejected). Rows are ordered by page id and
    reading order, whether built at once or bit by bit.
    """
    t0 = time.perf_counter()
    kept = _kept_rows(previous, "page_id", pages["page_id"], {"detector": source.layout, "direction": source.direction})
    todo = pages[~pages["page_id"].isin(set(kept["page_id"]))]
    new, rejected = detect_page_regions(todo, source)
    rows = _combined(kept, new, schema.LAYOUT_REGIONS, ["page_id", "reading_order", "region_id"])
    return IncrementalResult(rows, rejected, len(todo), kept["page_id"].nunique(), {"layout": time.perf_counter() - t0})


def extract_crops_incremental(
    pages: pd.DataFrame, regions: pd.DataFrame, source: SourceConfig, crop_dir: Path, previous: pd.DataFrame | None
) -> IncrementalResult:
    """:func:`extract_crops` on the regions not cut before; a region of ``previous`` (the source's earlier
    ``region_crops``) is kept when it is still detected and both its crop files still exist."""
    t0 = time.perf_counter()
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
    ``ocr_texts``) are kept for crops still present (crop ids are content hashes of the crop image).

    ``done`` and ``reused`` count (crop, engine) reads; ``seconds`` is per engine.
    """
    frames, done, reused, timings = [], 0, 0, {}
    for name in source.ocr:
        kept = _kept_rows(previous, "crop_id", crops["crop_id"], {"engine": name})
        todo = crops[~crops["crop_id"].isin(set(kept["crop_id"]))]
        new, seconds = read_crops(todo, source, engines, names=(name,))
        timings[name] = seconds.get(name, 0.0)
        frames += [kept, new]
        done, reused = done + len(todo), reused + len(kept)
    parts = [f for f in frames if not f.empty]
    rows = (
        pd.concat([p[list(schema.OCR_TEXTS)] for p in parts], ignore_index=True)
        .sort_values(["engine", "crop_id"], kind="stable")
        .reset_index(drop=True)
        if parts
        else empty_frame(schema.OCR_TEXTS)
    )
    return IncrementalResult(rows, [], done, reused, timings)
