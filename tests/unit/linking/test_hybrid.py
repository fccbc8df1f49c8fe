"""Hybrid links: multimodal and character n-gram candidates under one score, the string weight chosen on validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from linkage_pipeline.evaluation import metrics
from linkage_pipeline.evaluation.report import linkage_evaluation_table
from linkage_pipeline.linking import hybrid
from linkage_pipeline.linking.by_embeddings import embedding_links
from linkage_pipeline.linking.strings import (
    pairwise_string_similarity,
    string_similarity_matrix,
)
from linkage_pipeline.multimodal.embed import method_embeddings
from linkage_pipeline.schema import EMBEDDING_LINKS, STRING_LINKS

N_PAIRS, DIM = 120, 32
LINKAGES = [("lists", "directory")]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _corpus(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Twin firms (one character apart, as 製薬 / 製菓) that the embeddings cannot tell apart and exact readings can.

    Each pair of firms shares one vector (both crops of both twins are noisy views of it), so the model links a query
    to its twin about half the time. Under ``clean`` every crop reads its firm's name exactly; under ``garbled`` the
    queries read random characters, so the n-grams carry nothing. Returns embeddings, string links (n-gram top 5)
    and regions (labels).
    """
    rng = np.random.default_rng(seed)
    pair = _unit(rng.normal(size=(N_PAIRS, DIM)))
    names = [f"{p:03d}東洋{kind}" for p in range(N_PAIRS) for kind in ("製薬", "製菓")]
    n = len(names)
    frames, regions, strings = [], [], []
    garbled = ["".join(rng.choice(list("壱弐参四伍六七八九拾"), size=6)) for _ in range(n)]
    for side, source, role in (("q", "lists", "query"), ("t", "directory", "target")):
        ids = [f"{side}{i:03d}" for i in range(n)]
        vec = _unit(np.repeat(pair, 2, axis=0) + rng.normal(scale=0.05, size=(n, DIM)))
        for condition, texts in (("clean", names), ("garbled", garbled if side == "q" else names)):
            frames.append(pd.DataFrame({"crop_id": ids, "source": source, "ocr": condition, "text": texts,
                                        "model_id": "m", "image_embedding": list(vec), "text_embedding": list(vec)}))
        regions.append(pd.DataFrame({"crop_id": ids, "kind": "entry", "source": source, "source_role": role,
                                     "true_entity_id": [f"F{i:04d}" for i in range(n)]}))
    emb = pd.concat(frames, ignore_index=True)
    for condition in ("clean", "garbled"):
        q = emb[(emb["source"] == "lists") & (emb["ocr"] == condition)]
        t = emb[(emb["source"] == "directory") & (emb["ocr"] == condition)]
        sim = string_similarity_matrix(q["text"].tolist(), t["text"].tolist(), method="ngram")
        top = np.argsort(-sim, axis=1, kind="stable")[:, :5]
        for i, row in enumerate(top):
            for rank, j in enumerate(row, start=1):
                strings.append((q["crop_id"].iloc[i], t["crop_id"].iloc[j], "lists", "directory", "ngram", condition,
                                rank, float(sim[i, j])))
    string_links = pd.DataFrame(strings, columns=list(STRING_LINKS))
    return emb, string_links, pd.concat(regions, ignore_index=True)


@pytest.fixture(scope="module")
def corpus() -> dict[str, pd.DataFrame]:
    emb, strings, regions = _corpus()
    links = embedding_links(emb, LINKAGES, methods=("multimodal",), weight=0.5, k=5, training="supervised")
    cands = hybrid.hybrid_candidates(links, strings, emb, LINKAGES, {"clean": 0.5, "garbled": 0.5})
    return {"emb": emb, "strings": strings, "regions": regions, "links": links, "cands": cands}


def test_pairwise_similarity_is_the_matrix_diagonal() -> None:
    queries = ["株式会社東洋製薬", "東洋製菓(株)", "", None, "ﾄｳﾖｳ 製薬", "日本鐵工所"]
    targets = ["東洋製薬株式會社", "東洋製菓", "東洋", "東洋製薬", "トウヨウ製薬", ""]
    for method in ("ngram", "levenshtein", "jaro_winkler"):
        diagonal = np.diag(string_similarity_matrix(queries, targets, method=method))
        np.testing.assert_allclose(pairwise_string_similarity(queries, targets, method=method), diagonal, atol=1e-6)
    got = pairwise_string_similarity(queries, targets, method="ngram")
    assert got[2] == 0.0 and got[5] == 0.0  # an empty reading never looks like a match
    assert got[4] == pytest.approx(1.0, abs=1e-6)  # NFKC and whitespace: ﾄｳﾖｳ 製薬 reads トウヨウ製薬
    with pytest.raises(ValueError, match="aligned lists; got 2 queries and 1 targets"):
        pairwise_string_similarity(["a", "b"], ["a"], method="ngram")
    with pytest.raises(ValueError, match="queries\\[1\\]"):
        pairwise_string_similarity(["a", 3], ["a", "b"], method="ngram")


def test_candidates_are_the_union_of_both_lists_with_both_scores(corpus) -> None:
    cands, links, strings, emb = corpus["cands"], corpus["links"], corpus["strings"], corpus["emb"]
    key = ["query_crop_id", "target_crop_id", "ocr"]
    union = pd.concat([links[key], strings[key]]).drop_duplicates()
    assert len(cands) == len(union) and not cands.duplicated(key).any()
    assert set(map(tuple, cands[key].to_numpy())) == set(map(tuple, union.to_numpy()))
    rows = emb[emb["ocr"] == "clean"].set_index("crop_id")
    vectors = dict(zip(rows.index, method_embeddings(rows.reset_index(), "multimodal", 0.5), strict=True))
    sample = cands[cands["ocr"] == "clean"].head(40)
    for r in sample.itertuples():
        assert r.cosine == pytest.approx(float(vectors[r.query_crop_id] @ vectors[r.target_crop_id]), abs=1e-5)
        expected = pairwise_string_similarity([rows.at[r.query_crop_id, "text"]], [rows.at[r.target_crop_id, "text"]],
                                              method="ngram")[0]
        assert r.ngram == pytest.approx(float(expected), abs=1e-6)
    # a condition the model has no index for (no pooling weight) gives no candidates; another linkage neither
    only_clean = hybrid.hybrid_candidates(links, strings, emb, LINKAGES, {"clean": 0.5})
    assert set(only_clean["ocr"]) == {"clean"}
    assert hybrid.hybrid_candidates(links, strings, emb, [("lists", "other")], 0.5).empty


def test_ranking_at_weight_zero_is_the_models_and_at_one_the_ngrams(corpus) -> None:
    cands, links, strings = corpus["cands"], corpus["links"], corpus["strings"]
    clean = cands[cands["ocr"] == "clean"]
    model_only = hybrid.hybrid_links(clean, 0.0, model_id="m", k=5)
    assert list(model_only.columns) == list(EMBEDDING_LINKS)
    assert set(model_only["method"]) == {"hybrid"} and set(model_only["training"]) == {"supervised"}
    expected = links[links["ocr"] == "clean"].sort_values(["query_crop_id", "rank"])
    got = model_only.sort_values(["query_crop_id", "rank"])
    assert got["target_crop_id"].tolist() == expected["target_crop_id"].tolist()
    np.testing.assert_allclose(got["score"], expected["score"], atol=1e-5)
    strings_only = hybrid.hybrid_links(clean, 1.0, model_id="m", k=1)
    best = strings[(strings["ocr"] == "clean") & (strings["rank"] == 1)].set_index("query_crop_id")["target_crop_id"]
    assert strings_only.set_index("query_crop_id")["target_crop_id"].to_dict() == best.to_dict()
    # ranks run 1..k per query, scores never rise along them
    for _, g in hybrid.hybrid_links(clean, 0.4, model_id="m", k=3).groupby("query_crop_id"):
        assert g["rank"].tolist() == list(range(1, len(g) + 1)) and len(g) <= 3
        assert (np.diff(g["score"].to_numpy()) <= 1e-12).all()


def test_the_string_weight_is_taken_only_where_it_links_significantly_more_validation_firms(corpus) -> None:
    cands, regions = corpus["cands"], corpus["regions"]
    betas, table = hybrid.choose_string_weights(cands, regions)
    rows = table.set_index("ocr")
    n_val = int((metrics.assign_split(regions.loc[regions["source_role"] == "query", "true_entity_id"].to_numpy())
                 == "val").sum())
    assert (rows["n_val"] == n_val).all() and n_val >= 20
    # exact readings tell the twins apart: a weight above 0 links more validation firms, far beyond chance
    clean = rows.loc["clean"]
    assert betas["clean"] > 0.0 and clean["chosen_by"] == "validation"
    accs = clean["val_top1_by_weight"]
    assert accs[betas["clean"]] == max(accs.values()) > accs[0.0] + 0.2
    assert clean["lost"] == 0 and clean["gained"] >= 10
    assert clean["p_value"] == pytest.approx(binomtest(clean["gained"], clean["gained"], 0.5,
                                                       alternative="greater").pvalue)
    # garbled readings add nothing: the model alone
    assert betas["garbled"] == 0.0 and rows.loc["garbled", "chosen_by"] == "default"
    # on the test firms the hybrid links are what the validation firms promised
    links = hybrid.hybrid_links(cands, betas, model_id="m")
    test = linkage_evaluation_table(links, regions, report_splits=("test",)).set_index("ocr")
    model_test = linkage_evaluation_table(corpus["links"], regions, report_splits=("test",)).set_index("ocr")
    assert test.loc["clean", "top1_accuracy"] == pytest.approx(1.0)
    assert model_test.loc["clean", "top1_accuracy"] < 0.8
    assert test.loc["garbled", "top1_accuracy"] == pytest.approx(model_test.loc["garbled", "top1_accuracy"])


def test_without_enough_evidence_the_model_alone_is_kept(corpus) -> None:
    cands, regions = corpus["cands"], corpus["regions"]
    # the same gain, held to a level it cannot reach: the test decides, not the best validation top-1
    betas, table = hybrid.choose_string_weights(cands, regions, significance=1e-30)
    assert betas == {"clean": 0.0, "garbled": 0.0}
    assert table.set_index("ocr").loc["clean", "gained"] >= 10
    # no labels, or too few validation queries
    betas, table = hybrid.choose_string_weights(cands, None)
    assert betas == {"clean": 0.0, "garbled": 0.0} and (table["chosen_by"] == "default").all()
    betas, table = hybrid.choose_string_weights(cands, regions, min_queries=10_000)
    assert betas == {"clean": 0.0, "garbled": 0.0} and (table["val_top1_by_weight"].map(len) == 0).all()
    with pytest.raises(ValueError, match="significance must be in \\(0, 1\\), got 0"):
        hybrid.choose_string_weights(cands, regions, significance=0)
    with pytest.raises(ValueError, match="string weights must be in \\[0, 1\\], got 1.5"):
        hybrid.choose_string_weights(cands, regions, weights=(0.0, 1.5))
    empty = hybrid.hybrid_candidates(corpus["links"].iloc[:0], corpus["strings"].iloc[:0], corpus["emb"], LINKAGES, 0.5)
    assert empty.empty and hybrid.hybrid_links(empty, 0.5, model_id="m").empty
    assert hybrid.choose_string_weights(empty, regions)[0] == {}


def _judge(cands: pd.DataFrame, pick: dict[str, str]) -> pd.DataFrame:
    """Judge rows (as :func:`hybrid.judge_links` gives) picking ``pick[query]`` for every query of ``cands``."""
    rows = cands.drop_duplicates(["query_crop_id", "ocr"])[["query_source", "target_source", "ocr", "query_crop_id"]]
    return rows.assign(target_crop_id=rows["query_crop_id"].map(pick)).reset_index(drop=True)


def test_without_labels_the_image_tower_votes_for_the_string_weight(corpus) -> None:
    cands, regions, links = corpus["cands"], corpus["regions"], corpus["links"]
    queries = regions[regions["source_role"] == "query"]
    targets = regions[regions["source_role"] == "target"].set_index("true_entity_id")["crop_id"]
    truth = dict(zip(queries["crop_id"], queries["true_entity_id"].map(targets), strict=True))
    # a judge that is right about every query: on clean readings it sides with the n-grams, where they tell twins apart
    betas, table = hybrid.choose_string_weights(cands, None, judge=_judge(cands, truth))
    rows = table.set_index("ocr")
    assert betas["clean"] > 0.0 and rows.loc["clean", "chosen_by"] == "image_votes"
    assert rows.loc["clean", "n_votes"] == len(queries) and rows.loc["clean", "n_val"] == 0
    agree = rows.loc["clean", "agreement_by_weight"]
    assert agree[betas["clean"]] == max(agree.values()) > agree[0.0] + 0.2
    assert rows.loc["clean", "lost"] == 0 and rows.loc["clean", "gained"] >= 20
    # garbled readings: the n-grams cannot win the judge over, the model alone stays
    assert betas["garbled"] == 0.0 and rows.loc["garbled", "chosen_by"] == "default"
    test = linkage_evaluation_table(hybrid.hybrid_links(cands, betas, model_id="m"), regions,
                                    report_splits=("test",)).set_index("ocr")
    assert test.loc["clean", "top1_accuracy"] == pytest.approx(1.0)
    # a judge that always sides with the model alone (as an image tower pooled into the model leans): beta 0
    model_top1 = links[links["rank"] == 1].drop_duplicates("query_crop_id")
    own = dict(zip(model_top1["query_crop_id"], model_top1["target_crop_id"], strict=True))
    betas, table = hybrid.choose_string_weights(cands, None, judge=_judge(cands, own))
    assert betas == {"clean": 0.0, "garbled": 0.0} and (table["gained"] == 0).all()
    # labelled conditions are decided on the validation firms, not by the votes; "none" keeps beta 0 without labels
    _, table = hybrid.choose_string_weights(cands, regions, judge=_judge(cands, own))
    assert table.set_index("ocr").loc["clean", "chosen_by"] == "validation"
    betas, table = hybrid.choose_string_weights(cands, None, judge=_judge(cands, truth), unlabelled="none")
    assert betas == {"clean": 0.0, "garbled": 0.0} and (table["n_votes"] == 0).all()
    with pytest.raises(ValueError, match="unlabelled must be one of \\['votes', 'none'\\], got 'strings'"):
        hybrid.choose_string_weights(cands, None, unlabelled="strings")


def test_the_judge_is_the_vision_towers_top_link(corpus) -> None:
    emb = corpus["emb"]
    links = embedding_links(emb, LINKAGES, methods=("vision", "multimodal"), weight=0.5, k=3, training="supervised")
    judge = hybrid.judge_links(links)
    vision = links[(links["method"] == "vision") & (links["rank"] == 1)]
    assert len(judge) == len(vision) == 2 * 2 * N_PAIRS  # every query crop, both conditions
    merged = judge.merge(vision, on=["query_source", "target_source", "ocr", "query_crop_id"], suffixes=("", "_v"))
    assert (merged["target_crop_id"] == merged["target_crop_id_v"]).all()
