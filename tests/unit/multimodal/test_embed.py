"""Embedding crops (multimodal.embed): incremental per model and text, rejected crops, embedding inputs.

The linking tests (indexes, nearest-neighbour links, incremental relinking) are in tests/unit/linking/test_by_embeddings.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixtures.tiny import TINY
from PIL import Image, ImageDraw

from linkage_pipeline.multimodal.embed import embed_crops, embedding_inputs
from linkage_pipeline.multimodal.encoder import MultimodalEncoder


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    a, b = MultimodalEncoder.create(seed=1, **TINY), MultimodalEncoder.create(seed=2, **TINY)
    a.save(root / "a")
    b.save(root / "b")
    return MultimodalEncoder.load(root / "a"), MultimodalEncoder.load(root / "b")


@pytest.fixture(scope="module")
def crop_rows(tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("crops")
    rows = []
    for i in range(6):
        img = Image.new("L", (60, 20), 230)
        ImageDraw.Draw(img).rectangle((4 + 5 * i, 4, 14 + 5 * i, 16), fill=30)
        path = root / f"c{i}.png"
        img.save(path)
        for cond, text in (("tesseract", f"東洋{i}"), ("ground_truth", f"東洋紡績{i}")):
            rows.append(
                {
                    "crop_id": f"c{i}",
                    "source": "s",
                    "crop_path": str(path),
                    "direction": "horizontal",
                    "ocr": cond,
                    "text": text,
                }
            )
    return pd.DataFrame(rows)


def test_embed_crops_rows_are_unit_vectors_with_the_model_id(saved_models, crop_rows) -> None:
    a, _ = saved_models
    out, stats = embed_crops(a, crop_rows)
    assert len(out) == 12 and set(out["model_id"]) == {a.model_id}
    img = np.stack(out["image_embedding"])
    txt = np.stack(out["text_embedding"])
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    # one image per crop, shared by its text conditions
    assert stats["images"] == 6 and stats["texts"] == 12 and stats["reused"] == 0
    by_crop = out.groupby("crop_id")["image_embedding"].apply(lambda s: np.ptp(np.stack(s), axis=0).max())
    assert (by_crop == 0).all()
    # embeddings equal a direct call of the encoder
    direct = a.encode_texts(crop_rows["text"].tolist())
    np.testing.assert_allclose(txt, direct, atol=1e-5)


def test_embedding_is_incremental_per_model_and_text(saved_models, crop_rows) -> None:
    a, b = saved_models
    first, _ = embed_crops(a, crop_rows)
    again, stats = embed_crops(a, crop_rows, existing=first)
    assert stats == {**stats, "reused": 12.0, "images": 0.0, "texts": 0.0}
    for col in ("image_embedding", "text_embedding"):
        np.testing.assert_array_equal(np.stack(again[col]), np.stack(first[col]))
    changed = crop_rows.copy()
    changed.loc[0, "text"] = "大阪製藥"
    _, stats = embed_crops(a, changed, existing=first)
    assert (stats["reused"], stats["images"], stats["texts"]) == (11.0, 0.0, 1.0)
    # another model never reuses rows of the first: everything is recomputed, nothing is mixed
    other, stats = embed_crops(b, crop_rows, existing=first)
    assert (stats["reused"], stats["images"], stats["texts"]) == (0.0, 6.0, 12.0)
    assert set(other["model_id"]) == {b.model_id}


def test_unreadable_crop_names_the_crop_and_file(saved_models, crop_rows) -> None:
    a, _ = saved_models
    bad = crop_rows.copy()
    bad.loc[bad["crop_id"] == "c3", "crop_path"] = "/nonexistent/c3.png"
    with pytest.raises(ValueError, match="crop c3: cannot read /nonexistent/c3.png"):
        embed_crops(a, bad)


def test_an_unreadable_or_empty_crop_is_rejected_and_the_others_embedded(saved_models, crop_rows, tmp_path) -> None:
    a, _ = saved_models
    whole, _ = embed_crops(a, crop_rows)
    bad = crop_rows.copy()
    bad.loc[bad["crop_id"] == "c3", "crop_path"] = "/nonexistent/c3.png"
    (tmp_path / "c4.png").write_bytes(b"")  # zero bytes: no image at all
    bad.loc[bad["crop_id"] == "c4", "crop_path"] = str(tmp_path / "c4.png")
    rejected: list = []
    out, stats = embed_crops(a, bad, rejected=rejected)
    assert [(r.source, r.file, r.stage) for r in rejected] == [("s", "c3.png", "crop_embeddings"),
                                                                ("s", "c4.png", "crop_embeddings")]
    assert "crop c3: cannot read /nonexistent/c3.png" in rejected[0].reason
    assert sorted(set(out["crop_id"])) == ["c0", "c1", "c2", "c5"] and len(out) == 8
    assert stats["images"] == 4.0
    # the crops that were embedded are the rows of a run without the bad ones
    keep = whole[whole["crop_id"].isin(["c0", "c1", "c2", "c5"])].reset_index(drop=True)
    np.testing.assert_array_equal(np.stack(out["image_embedding"]), np.stack(keep["image_embedding"]))


def test_embedding_inputs_keep_linkable_crops_and_add_ground_truth() -> None:
    regions = pd.DataFrame({"region_id": ["r1", "r2", "r3"], "kind": ["title", "heading", "entry"]})
    crops = pd.DataFrame(
        {
            "crop_id": ["c1", "c2", "c3"],
            "region_id": ["r1", "r2", "r3"],
            "source": "s",
            "crop_path": ["p1", "p2", "p3"],
            "direction": "vertical",
        }
    )
    ocr = pd.DataFrame({"crop_id": ["c1", "c2", "c3"], "ocr": "tesseract", "text": ["a", "b", "c"]})
    labelled = pd.DataFrame({"region_id": ["r3"], "text": ["C"]})
    out = embedding_inputs(regions, crops, ocr, labelled)
    assert list(zip(out["crop_id"], out["ocr"], out["text"])) == [
        ("c3", "ground_truth", "C"),
        ("c1", "tesseract", "a"),
        ("c3", "tesseract", "c"),
    ]
