"""Training sets: rendered and labelled crops with their OCR texts, saved as Parquet."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from linkage_pipeline.evaluation import metrics
from linkage_pipeline.multimodal.training.augment import render_crop, simulate_ocr
from linkage_pipeline.multimodal.training.degrade import TRAIN_FAMILY, degrade
from linkage_pipeline.synthetic.firms import (
    Firm,
    Vocabulary,
    generate_firms,
    mention,
)
from linkage_pipeline.synthetic.fonts import resolve_training_fonts

logger = logging.getLogger(__name__)


#: How each view of a firm is printed: (mention style, direction); cycled over a firm's views.
DEFAULT_VIEWS: tuple[tuple[str, str], ...] = (
    ("directory", "vertical"),
    ("list", "horizontal"),
    ("title", "horizontal"),
    ("list", "vertical"),
)
#: Version of the rendering and view generation; bump it when they change so cached training sets are rebuilt.
DATA_VERSION = 2


# ----------------------------------------------------------------------------------------- data sets
@dataclass
class TrainingSet:
    """Rendered views of firms: one row per crop.

    Attributes:
        images: Crops (PIL ``L``).
        directions: ``horizontal``/``vertical`` per crop.
        texts: OCR reading of each crop (real engine or :func:`simulate_ocr`).
        true_texts: The printed text of each crop.
        labels: int64 (n,) class index of each crop (index into ``firms``).
        firms: The firms; class ``i`` is ``firms[i]``.
        info: How it was made (vocabulary, seed, fonts, OCR), for the model card.
    """

    images: list[Image.Image]
    directions: list[str]
    texts: list[str]
    true_texts: list[str]
    labels: np.ndarray
    firms: list[Firm]
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, rows: Sequence[int] | np.ndarray) -> TrainingSet:
        """The rows ``rows`` (labels and firms unchanged)."""
        idx = [int(i) for i in rows]
        return TrainingSet(
            [self.images[i] for i in idx],
            [self.directions[i] for i in idx],
            [self.texts[i] for i in idx],
            [self.true_texts[i] for i in idx],
            self.labels[idx],
            self.firms,
            dict(self.info),
        )


def build_training_set(
    n_firms: int,
    views_per_firm: int = 4,
    *,
    seed: int = 0,
    vocabulary: Vocabulary = "train",
    fonts: Sequence[str] | None = None,
    views: Sequence[tuple[str, str]] = DEFAULT_VIEWS,
    ocr: Any | None = None,
    ocr_error_rate: float = 0.08,
    noise: float = 1.0,
    degradations: bool = True,
) -> TrainingSet:
    """Render ``views_per_firm`` views of each of ``n_firms`` generated firms and read them.

    Args:
        n_firms: Firms (classes), ``>= 2``.
        views_per_firm: Crops per firm, ``>= 1``; view ``j`` uses ``views[j % len(views)]``.
        seed: Seed of the firms, renderings and simulated OCR.
        vocabulary: Firm-name vocabulary; ``train`` is disjoint from the demo and held-out firms.
        fonts: Typeface families (default :data:`TRAIN_FONTS`); each crop draws one.
        views: ``(mention style, direction)`` pairs, e.g. ``("directory", "vertical")``.
        ocr: An ``OcrEngine`` (``linkage_pipeline.documents.ocr.make_engine``) to read the crops; ``None`` uses
            :func:`simulate_ocr`.
        ocr_error_rate: Error rate of the simulated OCR.
        noise: Augmentation strength of the renderings.
        degradations: Also apply scan degradations of the train family
            (:data:`~linkage_pipeline.multimodal.training.degrade.TRAIN_FAMILY`: ink spread and erosion, broken
            strokes, JPEG, paper texture, warped baselines, crops cut short or catching a neighbouring line, ...).

    Returns:
        The set, ``n_firms * views_per_firm`` rows, firm-major.

    Raises:
        ValueError: If counts are out of range or a view names an unknown direction.
    """
    if n_firms < 2:
        raise ValueError(f"n_firms must be >= 2 (contrastive training needs negatives), got {n_firms}")
    if views_per_firm < 1:
        raise ValueError(f"views_per_firm must be >= 1, got {views_per_firm}")
    for style, direction in views:
        if direction not in ("horizontal", "vertical"):
            raise ValueError(f"view ({style!r}, {direction!r}) has an unknown direction; expected horizontal/vertical")
    start = time.perf_counter()
    font_files = resolve_training_fonts(fonts)
    firms = generate_firms(n_firms, seed, vocabulary=vocabulary)
    rng = np.random.default_rng([seed, 0x7452414E])
    images, directions, true_texts, labels = [], [], [], []
    for label, firm in enumerate(firms):
        for j in range(views_per_firm):
            style, direction = views[j % len(views)]
            text = mention(firm, rng, style)
            font = font_files[int(rng.integers(len(font_files)))]
            img = render_crop(text, font, direction, rng, noise=noise)
            if degradations:
                arr, _ = degrade(np.asarray(img), rng, TRAIN_FAMILY, direction=direction)
                img = Image.fromarray(arr, mode="L")
            images.append(img)
            directions.append(direction)
            true_texts.append(text)
            labels.append(label)
    if ocr is None:
        texts = [simulate_ocr(t, rng, error_rate=ocr_error_rate) for t in true_texts]
        ocr_name = f"simulated(error_rate={ocr_error_rate})"
    else:
        texts = [""] * len(images)
        for direction in ("horizontal", "vertical"):
            rows = [i for i, d in enumerate(directions) if d == direction]
            if rows:
                for i, result in zip(rows, ocr.read([images[i] for i in rows], direction=direction), strict=True):
                    texts[i] = result.text
        ocr_name = repr(ocr)
    info = {
        "vocabulary": vocabulary,
        "n_firms": n_firms,
        "views_per_firm": views_per_firm,
        "seed": seed,
        "fonts": [f.family for f in font_files],
        "views": [list(v) for v in views],
        "ocr": ocr_name,
        "noise": noise,
        "degradations": TRAIN_FAMILY.name if degradations else None,
    }
    logger.info(
        "rendered %d crops of %d %s firms in %.1fs (OCR: %s)",
        len(images),
        n_firms,
        vocabulary,
        time.perf_counter() - start,
        ocr_name,
    )
    return TrainingSet(images, directions, texts, true_texts, np.asarray(labels, dtype=np.int64), firms, info)


def save_training_set(data: TrainingSet, path: str | Path) -> Path:
    """Write ``data`` to one Parquet file (crops as PNG bytes, firms and info as JSON metadata), atomically.

    Returns:
        ``path``.
    """
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    pngs = []
    for im in data.images:
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        pngs.append(buf.getvalue())
    table = pa.table(
        {
            "png": pa.array(pngs, type=pa.binary()),
            "direction": data.directions,
            "text": data.texts,
            "true_text": data.true_texts,
            "label": pa.array(data.labels, type=pa.int64()),
        }
    )
    firms = [asdict(f) for f in data.firms]
    meta = {b"firms": json.dumps(firms, ensure_ascii=False).encode(), b"info": json.dumps(data.info).encode()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(out)
    return out


def load_training_set(path: str | Path) -> TrainingSet:
    """Read a set written by :func:`save_training_set`.

    Raises:
        ValueError: If the file lacks the columns or metadata of a training set.
    """
    import io

    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    need = {"png", "direction", "text", "true_text", "label"}
    if not need <= set(table.column_names) or b"firms" not in meta:
        raise ValueError(f"{path} is not a training set: expected columns {sorted(need)} and firms metadata")
    cols = table.to_pydict()
    images = []
    for b in cols["png"]:
        with Image.open(io.BytesIO(b)) as im:
            images.append(im.convert("L"))
    firms = [Firm(**{**f, "aliases": tuple(f.get("aliases", ()))}) for f in json.loads(meta[b"firms"])]
    info = json.loads(meta.get(b"info", b"{}"))
    return TrainingSet(
        images, list(cols["direction"]), list(cols["text"]), list(cols["true_text"]),
        np.asarray(cols["label"], dtype=np.int64), firms, info,
    )


def concat_training_sets(parts: Sequence[TrainingSet]) -> TrainingSet:
    """One set from several, labels renumbered so that classes of different parts never collide."""
    if not parts:
        raise ValueError("no training sets to concatenate; expected at least one")
    images, directions, texts, true_texts, labels, firms, infos = [], [], [], [], [], [], []
    offset = 0
    for part in parts:
        images += part.images
        directions += part.directions
        texts += part.texts
        true_texts += part.true_texts
        labels.append(part.labels + offset)
        firms += part.firms
        infos.append(part.info)
        offset += len(part.firms)
    return TrainingSet(images, directions, texts, true_texts, np.concatenate(labels), firms, {"parts": infos})


def labelled_training_rows(regions: pd.DataFrame, crop_texts: pd.DataFrame, *, split: str = "train") -> TrainingSet:
    """The labelled crops of firms in the ``split`` split (by firm hash, as the evaluation) as training rows.

    Each crop contributes its readings by every OCR engine (ground truth excluded); crops of one entity are
    views of one class. Firms of the validation and test splits are never returned, so evaluating a model
    trained on these rows stays honest.

    Args:
        regions: ``stg_regions`` rows (crop_path, direction, true_entity_id, true_text).
        crop_texts: ``stg_crop_texts`` rows (crop_id, ocr, text).
        split: Which split's firms to return.

    Returns:
        A :class:`TrainingSet` (possibly empty).
    """
    lab = regions[regions["crop_id"].notna() & regions["true_entity_id"].fillna("").astype(str).ne("")]
    lab = lab[lab["kind"].isin(["title", "entry"])].drop_duplicates("crop_id")
    lab = lab[metrics.assign_split(lab["true_entity_id"].astype(str).to_numpy()) == split]
    texts = crop_texts[crop_texts["ocr"] != "ground_truth"][["crop_id", "ocr", "text"]]
    rows = lab.merge(texts, on="crop_id").sort_values(["true_entity_id", "crop_id", "ocr"])
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


# ------------------------------------------------------------------------------------- the training crops
#: File names under the model folder: the training crops of the supervised stage, and the label-free set of the
#: language-image pretraining (:mod:`~linkage_pipeline.multimodal.training.label_free`).
TRAINING_CROPS_FILE = "training_crops.parquet"
PRETRAINING_EXTRA_FILE = "pretraining_extra.parquet"


def training_set_key(key_parts: Sequence[Any]) -> str:
    """Stable 12-hex-digit key of a synthetic training set's configuration (and of :data:`DATA_VERSION`).

    Args:
        key_parts: JSON-serialisable values that determine the set (counts, seed, OCR name).

    Returns:
        The first 12 hex digits of the SHA-256 of ``json.dumps([*key_parts, DATA_VERSION])``.
    """
    return hashlib.sha256(json.dumps([*key_parts, DATA_VERSION]).encode()).hexdigest()[:12]


def cached_training_set(
    path_dir: str | Path,
    key_parts: Sequence[Any],
    build: Callable[[], TrainingSet],
    *,
    copy_to: str | Path | None = None,
) -> Path:
    """Path of the synthetic training set ``path_dir/synthetic-<key>.parquet``, built by ``build`` only when missing.

    Rendering and OCR take minutes, so each configuration's set is kept and reused.

    Args:
        path_dir: Folder of the cached sets.
        key_parts: The configuration (see :func:`training_set_key`).
        build: Makes the set when it is not cached yet.
        copy_to: When given, the cached file is also copied there.

    Returns:
        The cached file.
    """
    path = Path(path_dir) / f"synthetic-{training_set_key(key_parts)}.parquet"
    if path.is_file():
        logger.info("reusing synthetic training crops %s", path.name)
    else:
        save_training_set(build(), path)
    if copy_to is not None:
        shutil.copyfile(path, copy_to)
    return path


def assemble_training_crops(
    model_dir: str | Path,
    *,
    n_firms: int,
    views_per_firm: int,
    seed: int,
    ocr: str,
    ocr_engine: Callable[[str], Any],
    pretraining_names: int,
    pretraining_views: int = 3,
    regions: pd.DataFrame | None = None,
    crop_texts: pd.DataFrame | None = None,
) -> tuple[TrainingSet, pd.DataFrame, dict[str, Any]]:
    """The training crops of both stages, written to ``model_dir/training_crops.parquet``.

    The synthetic renderings (cached per configuration) plus, when ``regions`` and ``crop_texts`` are given, the
    labelled crops of train-split firms. With ``pretraining_names > 0`` the label-free set of the language-image
    pretraining (:func:`~linkage_pipeline.multimodal.training.label_free.build_label_free_set`: one class per
    printed name, views made by knowledge that needs no labels) is cached and copied to
    ``model_dir/pretraining_extra.parquet`` (only the CLIP stage reads it); with 0 that file is removed and the
    CLIP stage pretrains on the training crops.

    Args:
        model_dir: Folder of the training sets.
        n_firms: Firms of the synthetic set.
        views_per_firm: Renderings per firm (of both synthetic sets).
        seed: Seed of the synthetic set (the pretraining set uses ``seed + 1000``).
        ocr: OCR engine name, or ``simulated``.
        ocr_engine: Makes the engine of a name (its ``reader`` is part of the cache key).
        pretraining_names: Printed names of the label-free pretraining set (0: none).
        pretraining_views: Views per name of that set (>= 2).
        regions: ``stg_regions`` rows, or ``None`` for no labelled crops.
        crop_texts: ``stg_crop_texts`` rows, or ``None``.

    Returns:
        The set; one summary row per crop (label int64, direction, text, true_text); and stats ``rows``,
        ``classes``, ``labelled_rows``, ``pretraining_only_rows`` and ``path``.
    """
    model_dir = Path(model_dir)
    engine = None if ocr == "simulated" else ocr_engine(ocr)
    # a real engine's reader (version, model, parsing rule) is part of the key: a new one reads the set again
    synthetic_path = cached_training_set(
        model_dir,
        [n_firms, views_per_firm, seed, ocr] + ([] if engine is None else [engine.reader]),
        lambda: build_training_set(n_firms, views_per_firm, seed=seed, ocr=engine),
    )
    parts = [load_training_set(synthetic_path)]
    extra_path = model_dir / PRETRAINING_EXTRA_FILE
    if pretraining_names > 0:
        from linkage_pipeline.multimodal.training.label_free import (
            OPEN_SHARE,
            build_label_free_set,
        )

        cached_training_set(
            model_dir,
            ["label-free", pretraining_names, pretraining_views, seed + 1000, "open", OPEN_SHARE],
            lambda: build_label_free_set(pretraining_names, pretraining_views, seed=seed + 1000),
            copy_to=extra_path,
        )
    elif extra_path.exists():
        extra_path.unlink()
    n_labelled = 0
    if regions is not None and crop_texts is not None:
        labelled = labelled_training_rows(regions, crop_texts)
        if len(labelled):
            parts.append(labelled)
            n_labelled = len(labelled)
    data = concat_training_sets(parts) if len(parts) > 1 else parts[0]
    path = save_training_set(data, model_dir / TRAINING_CROPS_FILE)
    summary = pd.DataFrame(
        {"label": data.labels, "direction": data.directions, "text": data.texts, "true_text": data.true_texts}
    )
    stats = {
        "rows": len(data),
        "classes": len(data.firms),
        "labelled_rows": n_labelled,
        "pretraining_only_rows": pretraining_names * pretraining_views,
        "path": path,
    }
    return data, summary, stats
