"""The review app's handlers on a small store: the queue page, verdicts written at once, undo, crops served
only from inside the artifact folder; and the training rows a fine-tune gets from the reviews."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from linkage_pipeline import schema
from linkage_pipeline.review import app, training, verdicts
from linkage_pipeline.store import Store

QUERIES = ["a1" * 8, "a2" * 8, "a3" * 8]
TARGETS = ["b1" * 8, "b2" * 8, "b3" * 8]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "db.duckdb", tmp_path / "art")
    crops = tmp_path / "art" / "crops"
    crops.mkdir(parents=True)
    regions, texts = [], []
    for i, crop in enumerate(QUERIES + TARGETS):
        path = crops / f"{crop}.png"
        Image.new("L", (40, 12), 255 - 20 * i).save(path)
        role = "query" if crop in QUERIES else "target"
        regions.append({"crop_id": crop, "source": "lists" if role == "query" else "dir", "source_role": role,
                        "crop_path": str(path), "direction": "horizontal", "kind": "entry",
                        "true_entity_id": None})
        for ocr, text in (("tesseract", f"名{i}"), ("rapidocr", f"名{i}*")):
            texts.append({"crop_id": crop, "ocr": ocr, "text": text})
    store.replace_table("stg_regions", pd.DataFrame(regions))
    store.replace_table("stg_crop_texts", pd.DataFrame(texts))
    cand = [(q, t, r + 1, s) for q, scores in zip(QUERIES, ([0.9, 0.89, 0.1], [0.8, 0.3, 0.2], [0.5, 0.49, 0.4]),
                                                    strict=True) for r, (t, s) in enumerate(zip(TARGETS, scores,
                                                                                                 strict=True))]
    emb = pd.DataFrame([{"query_crop_id": q, "target_crop_id": t, "query_source": "lists", "target_source": "dir",
                         "method": "multimodal", "ocr": "tesseract", "rank": r, "score": s, "training": "supervised",
                         "model_id": "m1"} for q, t, r, s in cand])
    store.replace_table("embedding_links", emb, schema.EMBEDDING_LINKS)
    top = emb[emb["rank"] == 1]
    links = top.assign(matched=top["score"] >= 0.6, threshold=0.6, run_id="r", reviewed=False)
    store.replace_table("record_links", links, schema.RECORD_LINKS)
    return store


def test_queue_page_shows_the_least_certain_link_first_with_its_candidates(store: Store) -> None:
    page = app.queue_page(store)
    assert [it["query"]["crop_id"] for it in page["items"]] == [QUERIES[0], QUERIES[2], QUERIES[1]]
    first = page["items"][0]
    assert [c["crop_id"] for c in first["candidates"]] == TARGETS
    assert first["candidates"][1]["text"] == "名4" and first["model_target"] == TARGETS[0]
    assert (page["method"], page["ocr"], page["remaining"]) == ("multimodal", "tesseract", 3)
    assert page["items"][1]["model_target"] is None  # below the threshold: no link, and the page gets JSON null
    json.dumps(page, allow_nan=False)  # what the server sends: no NaN or infinity anywhere


def test_each_verdict_is_written_at_once_and_undo_takes_back_the_latest(store: Store) -> None:
    out = app.record_verdict(store, {"query_crop_id": QUERIES[0], "verdict": "pick", "target_crop_id": TARGETS[1],
                                     "reviewer": "ann"})
    assert out["progress"]["reviewed"] == 1 and out["progress"]["corrections"] == 1
    app.record_verdict(store, {"query_crop_id": QUERIES[2], "verdict": "accept", "reviewer": "ann"})
    stored = store.read_table("link_reviews")
    assert stored["verdict"].tolist() == ["pick", "accept"]
    row = stored.iloc[0]
    assert (row["target_crop_id"], row["model_target_crop_id"], row["model_id"]) == (TARGETS[1], TARGETS[0], "m1")
    assert row["score"] == pytest.approx(0.89) and row["top_score"] == pytest.approx(0.9)
    assert pd.isna(stored.iloc[1]["model_target_crop_id"])  # below the threshold: the model had no match
    assert [it["query"]["crop_id"] for it in app.queue_page(store)["items"]] == [QUERIES[1]]
    undone = app.undo_last(store, "ann")
    assert undone["undone"] == QUERIES[2] and undone["progress"]["reviewed"] == 1
    assert [it["query"]["crop_id"] for it in app.queue_page(store)["items"]] == [QUERIES[2], QUERIES[1]]
    assert app.undo_last(store, "bob")["undone"] is None


@pytest.mark.parametrize(("payload", "message"), [
    ({"query_crop_id": "c0" * 8, "verdict": "none"}, "has no record link"),
    ({"query_crop_id": QUERIES[0], "verdict": "pick", "target_crop_id": "c0" * 8}, "is not a candidate"),
    ({"query_crop_id": "'; drop table link_reviews; --", "verdict": "none"}, "must be a crop id"),
    ({"query_crop_id": QUERIES[0], "verdict": "delete"}, "verdict must be one of"),
])
def test_a_bad_verdict_is_refused_and_nothing_is_written(store: Store, payload: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        app.record_verdict(store, {**payload, "reviewer": "ann"})
    assert not store.table_exists("link_reviews")


def test_crops_are_served_by_id_and_only_from_inside_the_artifact_folder(store: Store, tmp_path: Path) -> None:
    assert app.crop_file(store, QUERIES[0]).name == f"{QUERIES[0]}.png"
    outside = tmp_path / "secret.png"
    Image.new("L", (4, 4)).save(outside)
    regions = store.read_table("stg_regions")
    regions.loc[0, "crop_path"] = str(tmp_path / "art" / ".." / "secret.png")
    store.replace_table("stg_regions", regions)
    with pytest.raises(PermissionError, match="outside the artifact folder"):
        app.crop_file(store, QUERIES[0])
    with pytest.raises(ValueError, match="crop id"):
        app.crop_file(store, "../secret")
    with pytest.raises(FileNotFoundError):
        app.crop_file(store, "c0" * 8)


def test_page_shows_the_reviewer_name_as_text(store: Store) -> None:
    import asyncio

    from starlette.requests import Request

    server = app.create_app(store, reviewer='<script>alert("x")</script>')
    route = next(r for r in server.routes if getattr(r, "path", "") == "/")
    response = asyncio.run(route.endpoint(Request({"type": "http", "method": "GET", "path": "/", "headers": []})))
    body = response.body.decode()
    assert "<script>alert" not in body
    assert 'data-reviewer="&quot;&lt;script&gt;alert(\\&quot;x\\&quot;)&lt;/script&gt;&quot;"' in body
    assert json.loads(json.dumps('<script>alert("x")</script>'))  # the page parses it back with JSON.parse


def test_reviews_become_positive_pairs_and_hard_negatives(store: Store) -> None:
    for q, verdict, target in ((QUERIES[0], "pick", TARGETS[1]), (QUERIES[1], "accept", TARGETS[0]),
                               (QUERIES[2], "none", None)):
        app.record_verdict(store, {"query_crop_id": q, "verdict": verdict, "target_crop_id": target,
                                   "reviewer": "ann"})
    reviews = verdicts.in_force(store.read_table("link_reviews"))
    data, counts = training.review_training_set(reviews, store.read_table("embedding_links"),
                                                store.read_table("stg_regions"), store.read_table("stg_crop_texts"))
    # classes: {Q0, T1}, {Q1, T0}, {Q2} (no match), T2 (rejected everywhere); two readings per crop
    assert counts == {"pairs": 2, "negatives": 1, "classes": 4, "rows": 12}
    by_text = dict(zip(data.texts, data.labels.tolist(), strict=True))
    assert by_text["名0"] == by_text["名4"] and by_text["名1"] == by_text["名3"]
    assert len({by_text["名0"], by_text["名1"], by_text["名2"], by_text["名5"]}) == 4
    with pytest.raises(ValueError, match="fine-tuning needs at least 20"):
        training.fine_tune_on_reviews(store.artifact_dir, data, store.artifact_dir / "ft")
