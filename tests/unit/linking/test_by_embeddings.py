"""Linking by embeddings (linking.by_embeddings): FAISS indexes per target source, nearest-neighbour links,
incremental indexes and relinking, the usable partitions of the linkage model, and tuning the pooling weight."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from linkage_pipeline.linking import index as linking_index
from linkage_pipeline.linking.by_embeddings import (
    embedding_links,
    index_targets,
    link_inputs,
    load_target_indexes,
    relink,
    tune_linking,
    update_target_indexes,
    usable_embeddings,
)
from linkage_pipeline.multimodal.embed import method_embeddings
from linkage_pipeline.schema import CROP_EMBEDDINGS, EMBEDDING_LINKS


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


def _unit(rng: np.random.Generator, n: int, d: int = 8) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _loaded(rows: pd.DataFrame) -> dict:
    return load_target_indexes(rows, "m")


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
    inputs = link_inputs(pd.concat([queries.iloc[:20], targets.iloc[:40]]))
    grown, linked, s2 = relink(queries, targets, [("q", "t")], _loaded(rows), previous=first,
                               previous_targets=linked, previous_inputs=inputs, weight=0.6)
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
    inputs = link_inputs(pd.concat([queries, targets]))
    _, _, s3 = relink(queries, targets, [("q", "t")], _loaded(rows), previous=grown, previous_targets=linked,
                      previous_inputs=inputs, weight=0.6)
    assert s3 == {"queries_searched": 0, "queries_checked": 0, "queries_changed": 0, "queries_kept": 90}
    # without the inputs of the earlier lists (a data directory written before they were kept) none is trusted
    _, _, s3b = relink(queries, targets, [("q", "t")], _loaded(rows), previous=grown, previous_targets=linked,
                       weight=0.6)
    assert s3b["queries_searched"] == 90 and s3b["queries_kept"] == 0
    _, _, s4 = relink(queries, targets, [("q", "t")], _loaded(rows), previous=grown, previous_targets=linked,
                      previous_inputs=inputs, weight=0.6, k=7)
    assert s4["queries_searched"] == 90


def _linked_once(seed: int, n_targets: int, n_queries: int, out) -> tuple:
    """Random targets and queries, their indexes saved under ``out`` and every query linked (weight 0.5)."""
    rng = np.random.default_rng(seed)
    targets = _frame("t", [f"t{i:03d}" for i in range(n_targets)], _unit(rng, n_targets), _unit(rng, n_targets))
    queries = _frame("q", [f"q{i:03d}" for i in range(n_queries)], _unit(rng, n_queries), _unit(rng, n_queries))
    rows, _ = update_target_indexes(targets, ["t"], out, weight=0.5)
    links, linked, _ = relink(queries, targets, [("q", "t")], _loaded(rows), weight=0.5)
    return targets, queries, links, linked


def test_a_removed_target_or_a_new_weight_rebuilds_and_relinks_everything(tmp_path) -> None:
    out = tmp_path / "idx"
    targets, queries, links, linked = _linked_once(1, 20, 6, out)
    fewer = targets.iloc[1:]
    rows, stats = update_target_indexes(fewer, ["t"], out, weight=0.5)
    assert stats["rebuilt"] == 3 and stats["extended"] == 0
    relinked, _, s = relink(queries, fewer, [("q", "t")], _loaded(rows), previous=links, previous_targets=linked,
                            previous_inputs=link_inputs(pd.concat([queries, targets])), weight=0.5)
    assert s["queries_searched"] == 18 and "t000" not in set(relinked["target_crop_id"])
    rows, stats = update_target_indexes(fewer, ["t"], out, weight=0.7)
    assert stats["rebuilt"] == 3


def test_a_text_read_again_relinks_what_it_can_change(tmp_path) -> None:
    """Same crop ids and model, new OCR texts (another reader): the index is rebuilt when a target's vector changed,
    every query is searched again when a target's text changed, only the changed query when a query's did; each
    result equals a full search on the new vectors."""
    out = tmp_path / "idx"
    targets, queries, links, linked = _linked_once(3, 30, 12, out)
    inputs = link_inputs(pd.concat([queries, targets]))

    def full(q: pd.DataFrame, t: pd.DataFrame) -> pd.DataFrame:
        return _sorted(relink(q, t, [("q", "t")], index_targets(t, ["t"], weight=0.5)[0], weight=0.5)[0])

    # one query re-read: it now reads as target t007 does
    reread_q = queries.copy()
    reread_q.loc[3, "text"] = "read again"
    reread_q.loc[3, "text_embedding"] = targets.loc[7, "text_embedding"]
    rows, stats = update_target_indexes(targets, ["t"], out, weight=0.5)
    assert stats["unchanged"] == 3
    got, _, s = relink(reread_q, targets, [("q", "t")], _loaded(rows), previous=links, previous_targets=linked,
                       previous_inputs=inputs, weight=0.5)
    assert (s["queries_searched"], s["queries_kept"]) == (3, 33)
    pd.testing.assert_frame_equal(_sorted(got)[["query_crop_id", "target_crop_id", "method", "rank"]],
                                  full(reread_q, targets)[["query_crop_id", "target_crop_id", "method", "rank"]])

    # one target re-read: its vectors change, so its indexes are rebuilt and every query is searched again
    reread_t = targets.copy()
    reread_t.loc[5, "text"] = "read again"
    reread_t.loc[5, "text_embedding"] = queries.loc[0, "text_embedding"]
    rows, stats = update_target_indexes(reread_t, ["t"], out, weight=0.5)
    assert stats["rebuilt"] == 2 and stats["unchanged"] == 1  # the vision index does not read the text
    got, _, s = relink(queries, reread_t, [("q", "t")], _loaded(rows), previous=links, previous_targets=linked,
                       previous_inputs=inputs, weight=0.5)
    assert s["queries_searched"] == 36 and s["queries_kept"] == 0
    a, b = _sorted(got), full(queries, reread_t)
    pd.testing.assert_frame_equal(a[["query_crop_id", "target_crop_id", "method", "rank"]],
                                  b[["query_crop_id", "target_crop_id", "method", "rank"]])
    np.testing.assert_allclose(a["score"], b["score"], atol=1e-6)
    assert ("q000", "t005") in set(zip(a.loc[a["method"] == "language", "query_crop_id"],
                                       a.loc[a["method"] == "language", "target_crop_id"]))


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


def test_usable_embeddings_leave_out_missing_and_stale_partitions_but_keep_empty_ones() -> None:
    eye = np.eye(2, dtype=np.float32)
    parts = {
        "lists": _frame("lists", ["a", "b"], eye, eye, "m1"),
        "missing": None,
        "old": _frame("old", ["c", "d"], eye, eye, "m0123456789abcdef"),
        "empty": _frame("empty", [], eye[:0], eye[:0], "m1"),
        "directory": _frame("directory", ["e"], eye[:1], eye[:1], "m1"),
    }
    rows, skipped = usable_embeddings(parts, "m1")
    assert rows["crop_id"].tolist() == ["a", "b", "e"] and list(rows.columns) == list(parts["lists"].columns)
    assert skipped == {
        "missing": "no crop_embeddings partition; materialize crop_embeddings for it",
        "old": "crop_embeddings made with model(s) ['m0123456789a'], not the linkage model m1; re-materialize "
               "crop_embeddings for it",
    }
    rows, skipped = usable_embeddings({"missing": None}, "m1")
    assert rows.empty and list(rows.columns) == list(CROP_EMBEDDINGS) and list(skipped) == ["missing"]


def test_saved_indexes_load_for_their_model_only(tmp_path) -> None:
    rng = np.random.default_rng(2)
    targets = _frame("t", [f"t{i}" for i in range(5)], _unit(rng, 5), _unit(rng, 5))
    rows, _ = update_target_indexes(targets, ["t"], tmp_path, methods=("vision",), weight=0.5)
    loaded = load_target_indexes(rows, "m")
    assert list(loaded) == [("t", "tesseract", "vision")] and loaded[("t", "tesseract", "vision")][1] == [
        f"t{i}" for i in range(5)]
    assert load_target_indexes(rows.iloc[:0], "m") == {}  # no index (every target source empty) is a result
    with pytest.raises(ValueError, match="faiss_indexes were not built with the linkage model other; re-materialize"):
        load_target_indexes(rows, "other")


def test_faiss_device_keeps_an_explicit_choice_and_resolves_auto() -> None:
    assert linking_index.faiss_device("cpu", "cuda") == "cpu"
    assert linking_index.faiss_device("cuda:1", "cpu") == "cuda:1"
    assert linking_index.faiss_device("auto", "cpu") == "cpu"
    expected = "cuda" if linking_index.faiss_gpu_available() else "cpu"
    assert linking_index.faiss_device("auto", "cuda") == expected


_IMAGE_DIMS = {10: 0, 20: 1, 30: 2, 40: 7}  # grey level of a crop -> its one-hot image embedding
_TEXT_DIMS = {"東洋紡績": 3, "大阪製薬": 4, "名古屋鉄工": 5, "横浜商会": 6}  # firm name -> one-hot text embedding


class _FakeEncoder:
    """What embed_crops needs of an encoder: an image's embedding is the one-hot row of its grey level's firm,
    a text's the one-hot row of its firm name (dims 0-2 and 7 for images, 3-6 for texts)."""

    model_id, dim = "fake", 8

    def encode_images(self, images, directions, batch_size):
        return np.eye(self.dim, dtype=np.float32)[[_IMAGE_DIMS[im.getpixel((0, 0))] for im in images]]

    def encode_texts(self, texts, batch_size):
        return np.eye(self.dim, dtype=np.float32)[[_TEXT_DIMS[t] for t in texts]]


#: firm, split, (query grey, tesseract reading), (target grey, text); the rapidocr readings are all right.
_TUNING = [
    ("firm0", "val", (10, "東洋紡績"), (10, "東洋紡績")),
    ("firm17", "val", (30, "名古屋鉄工"), (30, "名古屋鉄工")),
    ("firm8", "val", (20, "名古屋鉄工"), (20, "大阪製薬")),  # tesseract reads firm17's name on it
    ("firm4", "test", (10, "横浜商会"), (40, "横浜商会")),  # its image looks like firm0's: a test firm, not counted
]


def _tuning_inputs(tmp_path) -> tuple[pd.DataFrame, pd.DataFrame]:
    inputs, regions = [], []
    for i, (firm, _, (q_grey, q_text), (t_grey, t_text)) in enumerate(_TUNING):
        for role, crop, grey, text, right in (("query", f"q{i}", q_grey, q_text, t_text),
                                              ("target", f"t{i}", t_grey, t_text, t_text)):
            path = tmp_path / f"{crop}.png"
            Image.new("L", (8, 8), grey).save(path)
            source = "lists" if role == "query" else "directory"
            inputs += [(crop, source, str(path), "horizontal", "tesseract", text),
                       (crop, source, str(path), "horizontal", "rapidocr", right)]
            regions.append((crop, "entry", role, firm))
    return (pd.DataFrame(inputs, columns=["crop_id", "source", "crop_path", "direction", "ocr", "text"]),
            pd.DataFrame(regions, columns=["crop_id", "kind", "source_role", "true_entity_id"]))


def test_tune_linking_picks_the_weight_that_is_right_on_every_validation_firm(tmp_path) -> None:
    from linkage_pipeline.evaluation.metrics import assign_split

    assert assign_split([f for f, *_ in _TUNING]).tolist() == [s for _, s, *_ in _TUNING]
    inputs, regions = _tuning_inputs(tmp_path)
    tuned = tune_linking(_FakeEncoder(), inputs, regions, [("lists", "directory")], ocr="tesseract",
                         also=["rapidocr"])
    # firm8's query (its image, firm17's text) scores w^2 / n against its own target and (1 - w)^2 / n against
    # firm17's: right only when the image weighs more (at w = 0.5 they tie and t1, firm17's, ranks first by id).
    # rapidocr is right at every weight, so the mean over both is 1.0 from 0.6 on and 0.6 is nearest to 0.5
    assert tuned["pooling_weight"] == 0.6
    assert (tuned["val_top1"], tuned["val_top1_mean"], tuned["val_top1_with_nomatch"]) == (1.0, 1.0, 1.0)
    assert (tuned["n_val"], tuned["ocr"], tuned["ocrs"]) == (3, "tesseract", "tesseract,rapidocr")
    # every validation query is right: the threshold links every score, the lowest being firm8's own target
    # at w = 0.6: 0.6^2 / (0.6^2 + 0.4^2)
    assert tuned["nomatch_threshold"] == pytest.approx(0.36 / 0.52, abs=1e-6)
    # rapidocr alone: right at every weight, so the tie goes to 0.5
    alone = tune_linking(_FakeEncoder(), inputs, regions, [("lists", "directory")], ocr="rapidocr")
    assert (alone["pooling_weight"], alone["val_top1"], alone["ocrs"]) == (0.5, 1.0, "rapidocr")
    with pytest.raises(ValueError, match="no labelled validation queries for OCR condition 'paddle'"):
        tune_linking(_FakeEncoder(), inputs, regions, [("lists", "directory")], ocr="paddle")
