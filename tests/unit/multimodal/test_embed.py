"""The multimodal chain's frame functions: incremental embedding per model, and nearest-neighbour links."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixtures.tiny import TINY
from PIL import Image, ImageDraw

from linkage_pipeline.linking.by_embeddings import (
    embedding_links,
    index_targets,
    relink,
    update_target_indexes,
)
from linkage_pipeline.multimodal.embed import (
    embed_crops,
    embedding_inputs,
    method_embeddings,
)
from linkage_pipeline.multimodal.encoder import MultimodalEncoder
from linkage_pipeline.schema import EMBEDDING_LINKS


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


def _frame(source: str, ids: list[str], img: np.ndarray, txt: np.ndarray, model: str = "m") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "crop_id": ids,
            "source": source,
            "ocr": "tesseract",
            "text": [f"text of {i}" for i in ids],
            "model_id": model,
            "image_embedding": list(img),
            "text_embedding": list(txt),
        }
    )


def test_links_rank_by_cosine_and_methods_use_their_tower() -> None:
    # target i: image e_i, text e_(i-1 mod 4); query i: image e_i, text e_i
    eye = np.eye(4, dtype=np.float32)
    targets = _frame("t", ["t0", "t1", "t2", "t3"], eye, np.roll(eye, 1, axis=0))
    queries = _frame("q", ["q0", "q1", "q2", "q3"], eye, eye)
    links = embedding_links(pd.concat([targets, queries]), [("q", "t")], k=2)
    assert list(links.columns) == list(EMBEDDING_LINKS)
    top = links[links["rank"] == 1].set_index(["method", "query_crop_id"])["target_crop_id"]
    assert [top[("vision", f"q{i}")] for i in range(4)] == ["t0", "t1", "t2", "t3"]
    assert [top[("language", f"q{i}")] for i in range(4)] == ["t1", "t2", "t3", "t0"]
    assert top[("vision", "q0")] == "t0"
    vision = links[(links["method"] == "vision") & (links["rank"] == 1)]
    np.testing.assert_allclose(vision["score"], 1.0, atol=1e-6)
    mm = method_embeddings(targets, "multimodal", 0.5)
    np.testing.assert_allclose(mm[0], (eye[0] + eye[3]) / np.sqrt(2), atol=1e-6)


def test_links_refuse_mixed_models() -> None:
    eye = np.eye(2, dtype=np.float32)
    mixed = pd.concat([_frame("t", ["a", "b"], eye, eye, "m1"), _frame("q", ["c", "d"], eye, eye, "m2")])
    with pytest.raises(ValueError, match="embeddings of 2 models are mixed"):
        embedding_links(mixed, [("q", "t")])


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


def _unit(rng: np.random.Generator, n: int, d: int = 8) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _loaded(rows: pd.DataFrame) -> dict:
    from linkage_pipeline.linking.index import load_index

    out = {}
    for r in rows.itertuples(index=False):
        index, meta = load_index(r.path)
        out[(r.target_source, r.ocr, r.method)] = (index, meta.ids)
    return out


def _sorted(links: pd.DataFrame) -> pd.DataFrame:
    return links.sort_values(["method", "query_crop_id", "rank"]).reset_index(drop=True)


def test_grown_indexes_and_relinked_queries_equal_a_full_search(tmp_path) -> None:
    rng = np.random.default_rng(0)
    targets = _frame("t", [f"t{i:03d}" for i in range(50)], _unit(rng, 50), _unit(rng, 50))
    queries = _frame("q", [f"q{i:03d}" for i in range(30)], _unit(rng, 30), _unit(rng, 30))
    out = tmp_path / "idx"
    rows, stats = update_target_indexes(targets.iloc[:40], ["t"], out, weight=0.6)
    assert stats == {"unchanged": 0, "extended": 0, "rebuilt": 3, "vectors_added": 120}
    first, linked, s1 = relink(queries.iloc[:20], targets.iloc[:40], [("q", "t")], _loaded(rows), weight=0.6)
    assert s1["queries_searched"] == 20 * 3 and len(first) == 20 * 3 * 5

    # 10 new targets and 10 new queries: the indexes grow, old queries are checked against the new targets only
    rows, stats = update_target_indexes(targets, ["t"], out, weight=0.6)
    assert stats == {"unchanged": 0, "extended": 3, "rebuilt": 0, "vectors_added": 30}
    grown, linked, s2 = relink(queries, targets, [("q", "t")], _loaded(rows), previous=first,
                               previous_targets=linked, weight=0.6)
    assert s2["queries_searched"] == 10 * 3 and s2["queries_checked"] == 20 * 3 and s2["queries_kept"] == 0
    assert 0 < s2["queries_changed"] <= s2["queries_checked"]
    full = relink(queries, targets, [("q", "t")], index_targets(targets, ["t"], weight=0.6)[0], weight=0.6)[0]
    a, b = _sorted(grown), _sorted(full)
    cols = ["query_crop_id", "target_crop_id", "method", "rank"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    np.testing.assert_allclose(a["score"], b["score"], atol=1e-6)

    # nothing new: nothing searched; k raised: every list is searched again
    rows, stats = update_target_indexes(targets, ["t"], out, weight=0.6)
    assert stats["unchanged"] == 3 and stats["vectors_added"] == 0
    _, _, s3 = relink(queries, targets, [("q", "t")], _loaded(rows), previous=grown, previous_targets=linked, weight=0.6)
    assert s3 == {"queries_searched": 0, "queries_checked": 0, "queries_changed": 0, "queries_kept": 90}
    _, _, s4 = relink(queries, targets, [("q", "t")], _loaded(rows), previous=grown, previous_targets=linked,
                      weight=0.6, k=7)
    assert s4["queries_searched"] == 90


def test_a_removed_target_or_a_new_weight_rebuilds_and_relinks_everything(tmp_path) -> None:
    rng = np.random.default_rng(1)
    targets = _frame("t", [f"t{i:03d}" for i in range(20)], _unit(rng, 20), _unit(rng, 20))
    queries = _frame("q", [f"q{i:03d}" for i in range(6)], _unit(rng, 6), _unit(rng, 6))
    out = tmp_path / "idx"
    rows, _ = update_target_indexes(targets, ["t"], out, weight=0.5)
    links, linked, _ = relink(queries, targets, [("q", "t")], _loaded(rows), weight=0.5)
    fewer = targets.iloc[1:]
    rows, stats = update_target_indexes(fewer, ["t"], out, weight=0.5)
    assert stats["rebuilt"] == 3 and stats["extended"] == 0
    relinked, _, s = relink(queries, fewer, [("q", "t")], _loaded(rows), previous=links, previous_targets=linked,
                            weight=0.5)
    assert s["queries_searched"] == 18 and "t000" not in set(relinked["target_crop_id"])
    rows, stats = update_target_indexes(fewer, ["t"], out, weight=0.7)
    assert stats["rebuilt"] == 3


def test_links_do_not_depend_on_which_queries_are_searched_together() -> None:
    """A query searched alone (FAISS's SIMD loop) or among 2000 (BLAS) gets the same list, scores and order; two
    targets with the same vector (one firm listed twice) tie exactly and rank by id. Before, scores were FAISS's
    float32 values, which differ in the last bits between the two paths (an incremental run searches a new page's
    queries alone, a full run all of them), so scores changed and near-ties could swap places."""
    rng = np.random.default_rng(5)
    img, txt = _unit(rng, 100, 128), _unit(rng, 100, 128)
    img[41], txt[41] = img[7], txt[7]  # t041 is a copy of t007
    targets = _frame("t", [f"t{i:03d}" for i in range(100)], img, txt)
    q_img = np.concatenate([img[:30] + 0.3 * _unit(rng, 30, 128), _unit(rng, 1970, 128)])
    q_txt = np.concatenate([txt[:30] + 0.3 * _unit(rng, 30, 128), _unit(rng, 1970, 128)])
    queries = _frame("q", [f"q{i:04d}" for i in range(2000)], q_img / np.linalg.norm(q_img, axis=1, keepdims=True),
                     q_txt / np.linalg.norm(q_txt, axis=1, keepdims=True))
    indexes, _ = index_targets(targets, ["t"], weight=0.5)
    together = relink(queries, targets, [("q", "t")], indexes, weight=0.5)[0]
    for i in (7, 12, 1500):
        alone = relink(queries.iloc[[i]], targets, [("q", "t")], indexes, weight=0.5)[0]
        mine = together[together["query_crop_id"] == f"q{i:04d}"]
        pd.testing.assert_frame_equal(_sorted(alone), _sorted(mine), check_exact=True)
    q7 = _sorted(together[(together["query_crop_id"] == "q0007") & (together["method"] == "multimodal")])
    assert q7["target_crop_id"].tolist()[:2] == ["t007", "t041"]
    assert q7["score"].iloc[0] == q7["score"].iloc[1]


def test_empty_texts_never_match_each_other() -> None:
    # q0 and t0 were both read as nothing (same "text" embedding, the encoder's output for no characters); their
    # images differ. The language method must not call them a perfect match; multimodal falls back to the image.
    eye = np.eye(3, dtype=np.float32)
    same_text = np.tile(eye[2], (2, 1))
    targets = _frame("t", ["t0", "t1"], eye[[0, 1]], same_text).assign(text=["", "東洋紡績"])
    queries = _frame("q", ["q0"], eye[[1]], same_text[:1]).assign(text=[""])
    links = embedding_links(pd.concat([targets, queries]), [("q", "t")], k=2)
    language = links[links["method"] == "language"].set_index("target_crop_id")["score"]
    np.testing.assert_allclose(language.to_numpy(), 0.0, atol=1e-7)
    mm = method_embeddings(pd.concat([targets, queries]), "multimodal", 0.5)
    np.testing.assert_allclose(mm[0], eye[0], atol=1e-6)  # t0: no text, image alone
    np.testing.assert_allclose(mm[2], eye[1], atol=1e-6)  # q0: no text, image alone
    top = links[(links["method"] == "multimodal") & (links["rank"] == 1)]["target_crop_id"].tolist()
    assert top == ["t1"]  # q0's image is t1's; the shared empty reading no longer pulls it to t0
