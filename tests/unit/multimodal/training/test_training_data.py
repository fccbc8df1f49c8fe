"""The training crops: labelled train-split rows, the per-configuration cache of synthetic sets, their assembly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from linkage_pipeline.multimodal.training.data import (
    DATA_VERSION,
    assemble_training_crops,
    build_training_set,
    cached_training_set,
    labelled_training_rows,
    load_training_set,
    training_set_key,
)


def _labelled(tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Crops of F1, F2 (train split), F0 (validation) and F4 (test), one unlabelled crop and one header."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (entity, kind) in enumerate(
        [("F2", "entry"), ("F1", "title"), ("F1", "entry"), ("F0", "entry"), ("F4", "entry"), ("", "entry"),
         ("F1", "header")]
    ):
        path = tmp_path / f"c{i}.png"
        Image.new("L", (8 + i, 4), color=10 * i).save(path)
        rows.append({"crop_id": f"c{i}", "crop_path": str(path), "kind": kind, "true_entity_id": entity,
                     "direction": "vertical" if i % 2 else "horizontal", "true_text": f"name of {entity}"})
    rows.append({**rows[0], "crop_id": None})  # a region without a crop
    texts = pd.DataFrame(
        [{"crop_id": f"c{i}", "ocr": ocr, "text": f"{ocr}:{i}"} for i in range(7)
         for ocr in ("tesseract", "ground_truth", "rapidocr")]
    )
    return pd.DataFrame(rows), texts


def test_labelled_rows_are_the_train_split_crops_read_by_every_engine(tmp_path: Path) -> None:
    regions, texts = _labelled(tmp_path)
    data = labelled_training_rows(regions, texts)
    # F1 (title c1, entry c2) and F2 (c0), each read by rapidocr and tesseract; ground truth, F0, F4, the
    # unlabelled crop and the header are left out
    assert data.texts == ["rapidocr:1", "tesseract:1", "rapidocr:2", "tesseract:2", "rapidocr:0", "tesseract:0"]
    assert data.labels.tolist() == [0, 0, 0, 0, 1, 1] and data.labels.dtype == np.int64
    assert [f.entity_id for f in data.firms] == ["F1", "F2"]
    assert [f.canonical for f in data.firms] == ["name of F1", "name of F2"]
    assert data.directions == ["vertical", "vertical", "horizontal", "horizontal", "horizontal", "horizontal"]
    assert data.true_texts == ["name of F1"] * 4 + ["name of F2"] * 2
    assert [im.size for im in data.images] == [(9, 4), (9, 4), (10, 4), (10, 4), (8, 4), (8, 4)]
    assert data.images[0] is data.images[1]  # each crop file is read once
    assert data.info == {"origin": "labelled crops", "split": "train", "n_firms": 2}
    val = labelled_training_rows(regions, texts, split="val")
    assert [f.entity_id for f in val.firms] == ["F0"] and val.texts == ["rapidocr:3", "tesseract:3"]
    assert len(labelled_training_rows(regions, texts[texts["ocr"] == "ground_truth"])) == 0


def test_training_set_key_is_stable_and_changes_with_the_configuration() -> None:
    # the key of the default configuration (as the training_crops asset computes it, data version 2: the
    # training typefaces grew from the 5 sparse-demo faces to 28)
    assert DATA_VERSION == 2
    assert training_set_key([1200, 6, 1, "tesseract"]) == "d5da123f9ba2"
    assert training_set_key([1200, 6, 1, "tesseract"]) == training_set_key((1200, 6, 1, "tesseract"))
    assert training_set_key([1200, 6, 2, "tesseract"]) != training_set_key([1200, 6, 1, "tesseract"])


def test_cached_training_set_builds_once_and_copies(tmp_path: Path) -> None:
    calls = []

    def build():
        calls.append(1)
        return build_training_set(2, 2, seed=3)

    path = cached_training_set(tmp_path, [2, 2, 3], build, copy_to=tmp_path / "copy.parquet")
    assert path == tmp_path / f"synthetic-{training_set_key([2, 2, 3])}.parquet"
    assert cached_training_set(tmp_path, [2, 2, 3], build) == path and len(calls) == 1
    assert (tmp_path / "copy.parquet").read_bytes() == path.read_bytes()
    assert load_training_set(path).true_texts == build_training_set(2, 2, seed=3).true_texts


def test_assemble_training_crops_adds_labels_and_the_pretraining_set(tmp_path: Path) -> None:
    regions, texts = _labelled(tmp_path / "crops")
    model_dir = tmp_path / "model"

    def no_engine(name: str):
        raise AssertionError(f"simulated OCR needs no engine, asked for {name}")

    kwargs = {"n_firms": 3, "views_per_firm": 2, "seed": 1, "ocr": "simulated", "ocr_engine": no_engine}
    data, summary, stats = assemble_training_crops(
        model_dir, **kwargs, pretraining_names=2, pretraining_views=2, regions=regions, crop_texts=texts
    )
    assert stats == {"rows": 12, "classes": 5, "labelled_rows": 6, "pretraining_only_rows": 4,
                     "path": model_dir / "training_crops.parquet"}
    assert list(summary.columns) == ["label", "direction", "text", "true_text"]
    assert summary["label"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 3, 3, 4, 4]
    assert load_training_set(stats["path"]).texts == data.texts
    extra = load_training_set(model_dir / "pretraining_extra.parquet")
    assert len(extra) == 4 and extra.info["origin"] == "label-free names"
    assert len(list(model_dir.glob("synthetic-*.parquet"))) == 2
    # without the pretraining set its copy goes; without labels only the synthetic crops remain
    _, summary, stats = assemble_training_crops(model_dir, **kwargs, pretraining_names=0)
    assert not (model_dir / "pretraining_extra.parquet").exists()
    assert (stats["rows"], stats["labelled_rows"], len(summary)) == (6, 0, 6)


def test_assemble_training_crops_reads_the_set_again_only_for_a_new_reader(tmp_path: Path) -> None:
    from linkage_pipeline.documents.ocr import OcrResult

    reads: list[str] = []

    class Engine:
        def __init__(self, reader: str) -> None:
            self.reader = reader

        def read(self, images, *, direction):
            reads.append(self.reader)
            return [OcrResult(f"{self.reader}{i}", 0.9) for i in range(len(images))]

    def build(reader: str) -> list[str]:
        data, _, _ = assemble_training_crops(tmp_path, n_firms=2, views_per_firm=1, seed=0, ocr="tesseract",
                                             ocr_engine=lambda name: Engine(reader), pretraining_names=0)
        return sorted({t[0] for t in data.texts})

    assert build("a") == ["a"] and reads
    n = len(reads)
    assert build("a") == ["a"] and len(reads) == n  # same reader: the cached set, nothing read
    assert build("b") == ["b"] and len(reads) > n  # a new reader (say, a new tesseract) reads the crops again
    assert len(list(tmp_path.glob("synthetic-*.parquet"))) == 2
