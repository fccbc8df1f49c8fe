"""The pooling weight per text condition: chosen on labelled validation firms, one index per condition's weight."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from linkage_pipeline.evaluation import metrics
from linkage_pipeline.linking.by_embeddings import (
    _mean_margin,
    _mean_reciprocal_rank,
    choose_pooling_weights,
    embedding_links,
    index_targets,
    mutual_neighbour_choice,
    mutual_neighbour_rate,
    mutual_neighbour_weight,
    relink,
    weight_of,
)
from linkage_pipeline.multimodal.embed import method_embeddings

N_FIRMS, DIM = 240, 32


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _corpus(seed: int = 0, image_noise: float = 0.25) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Embeddings of one query and one target crop per firm, in two text conditions, and their labels.

    Images are noisy views of each firm's vector (vision alone links some firms wrongly). Under ``noisy`` the
    readings are pure noise, so the best weight is the image's; under ``clean`` the readings are the firm's own
    vector, so text alone is perfect and the image only adds noise.
    """
    rng = np.random.default_rng(seed)
    firm = _unit(rng.normal(size=(N_FIRMS, DIM)))
    frames, regions = [], []
    for side, source, role in (("q", "lists", "query"), ("t", "directory", "target")):
        ids = [f"{side}{i:03d}" for i in range(N_FIRMS)]
        image = _unit(firm + rng.normal(scale=image_noise, size=firm.shape))
        for condition, text in (("noisy", _unit(rng.normal(size=firm.shape))), ("clean", firm)):
            frames.append(pd.DataFrame({
                "crop_id": ids, "source": source, "ocr": condition, "text": "x", "model_id": "m",
                "image_embedding": list(image), "text_embedding": list(text),
            }))
        regions.append(pd.DataFrame({
            "crop_id": ids, "kind": "entry", "source": source, "source_role": role,
            "true_entity_id": [f"F{i:04d}" for i in range(N_FIRMS)],
        }))
    return pd.concat(frames, ignore_index=True), pd.concat(regions, ignore_index=True)


def test_weights_are_chosen_per_condition_on_validation_firms() -> None:
    emb, regions = _corpus()
    weights, table = choose_pooling_weights(emb, regions, [("lists", "directory")], default=0.8)
    assert set(weights) == {"noisy", "clean"}
    assert weights["noisy"] >= 0.9  # the readings are noise: the image carries the link
    assert weights["clean"] <= 0.5  # the readings are exact: the default (0.8) would lose firms the text links
    rows = table.set_index("ocr")
    assert (rows["chosen_by"] == "validation").all()
    n_val = int((metrics.assign_split(np.array([f"F{i:04d}" for i in range(N_FIRMS)])) == "val").sum())
    assert (rows["n_val"] == n_val).all() and n_val >= 20
    # the chosen weight is at least as good on validation firms as language alone (0) and vision alone (1)
    for condition in ("noisy", "clean"):
        accs = rows.loc[condition, "val_top1_by_weight"]
        assert accs[weights[condition]] == max(accs.values()) >= max(accs[0.0], accs[1.0])
        assert rows.loc[condition, "val_top1"] == pytest.approx(accs[weights[condition]])


def test_ties_on_top1_go_to_the_higher_mean_reciprocal_rank() -> None:
    emb, regions = _corpus()
    # under noisy readings 0.9 and 1.0 link the same validation firms at top-1, and 1.0 ranks the true firm higher
    # where it misses; the default (0.0) is nearer 0.9, which the rank breaks the tie against
    weights, table = choose_pooling_weights(emb, regions, [("lists", "directory")], default=0.0)
    noisy = table.set_index("ocr").loc["noisy"]
    assert noisy["val_top1_by_weight"][0.9] == noisy["val_top1_by_weight"][1.0]
    assert noisy["val_mrr_by_weight"][1.0] > noisy["val_mrr_by_weight"][0.9]
    assert weights["noisy"] == 1.0
    rows = table.set_index("ocr")
    for condition in ("noisy", "clean"):
        accs, mrrs = rows.loc[condition, "val_top1_by_weight"], rows.loc[condition, "val_mrr_by_weight"]
        assert set(mrrs) == set(accs) and all(0.0 <= v <= 1.0 for v in mrrs.values())
        assert all(mrrs[w] >= accs[w] - 1e-12 for w in accs)  # a top-1 hit has reciprocal rank 1
        level = [w for w in accs if accs[w] == max(accs.values())]
        assert weights[condition] in level
        assert mrrs[weights[condition]] == max(mrrs[w] for w in level)
    # under clean readings every weight up to some point links every validation firm: a tie on top-1 (1.0) that
    # reciprocal rank cannot break either, so the weight whose true firms score furthest above the rest is taken
    clean = rows.loc["clean", "val_top1_by_weight"]
    level = [w for w, v in clean.items() if v == 1.0]
    assert len(level) >= 2
    margins = rows.loc["clean", "val_margin_by_weight"]
    assert set(margins) == set(clean) and all(margins[w] > 0 for w in level)  # linked right: positive margins
    assert weights["clean"] == max(level, key=lambda w: round(margins[w], 4))
    assert len({round(margins[w], 4) for w in level}) == len(level)  # the margin, not the default, decided


def _ranked_links() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Four queries (q4's firm is not among the targets), three targets, links ranked under two conditions."""
    regions = pd.DataFrame({
        "crop_id": ["q1", "q2", "q3", "q4", "t1", "t2", "t3"],
        "kind": "entry",
        "source_role": ["query"] * 4 + ["target"] * 3,
        "true_entity_id": ["A", "B", "C", "Z", "A", "B", "C"],
    })
    links = pd.DataFrame({
        "query_crop_id": ["q1", "q1", "q2", "q2", "q2", "q3", "q3", "q4", "q1"],
        "target_crop_id": ["t1", "t2", "t3", "t1", "t2", "t1", "t2", "t1", "t2"],
        "ocr": ["x"] * 8 + ["y"],
        "rank": [1, 2, 1, 2, 3, 1, 2, 1, 1],
        "score": [0.9, 0.6, 0.8, 0.7, 0.5, 0.7, 0.4, 0.9, 0.3],
    })
    return regions, links


def test_mean_reciprocal_rank_counts_the_first_link_to_the_true_firm() -> None:
    regions, links = _ranked_links()
    # q1 at rank 1, q2 at rank 3, q3 never (0); q4's firm is not among the targets and is not counted; under "y"
    # q1's only link is wrong
    got = _mean_reciprocal_rank(links, regions, {"q1", "q2", "q3", "q4"})
    assert got == pytest.approx({"x": (1 + 1 / 3 + 0) / 3, "y": 0.0})
    assert _mean_reciprocal_rank(links, regions, {"q2"}) == pytest.approx({"x": 1 / 3})
    assert _mean_reciprocal_rank(links, regions, set()) == {}


def test_mean_margin_is_the_true_firms_score_over_the_best_other_firms() -> None:
    from linkage_pipeline.evaluation import report

    regions, links = _ranked_links()
    truth = report._truth_frames(regions)
    # q1 right by 0.3; q2's firm at rank 3: 0.5 - 0.8; q3's firm not among its links: its last minus its first
    # link (a bound); q4's firm is not among the targets and is not counted; under "y" q1's only link is wrong
    # and its firm is not among its links: 0.3 - 0.3
    got = _mean_margin(links, {"q1", "q2", "q3", "q4"}, truth=truth)
    assert got == pytest.approx({"x": (0.3 - 0.3 - 0.3) / 3, "y": 0.0})
    assert _mean_margin(links, {"q1"}, truth=truth) == pytest.approx({"x": 0.3, "y": 0.0})
    assert _mean_margin(links, set(), truth=truth) == {}


def test_test_firms_never_influence_the_weight() -> None:
    emb, regions = _corpus()
    weights, _ = choose_pooling_weights(emb, regions, [("lists", "directory")], default=0.5)
    split = dict(zip(regions["crop_id"], metrics.assign_split(regions["true_entity_id"].to_numpy()), strict=True))
    test_queries = emb["crop_id"].map(split).eq("test") & emb["crop_id"].str.startswith("q")
    scrambled = emb.copy()
    rng = np.random.default_rng(1)
    scrambled.loc[test_queries, "image_embedding"] = pd.Series(
        list(_unit(rng.normal(size=(int(test_queries.sum()), DIM)))), index=scrambled.index[test_queries])
    again, _ = choose_pooling_weights(scrambled, regions, [("lists", "directory")], default=0.5)
    assert again == weights


def test_without_labels_or_with_few_validation_queries_the_default_is_kept() -> None:
    emb, regions = _corpus()
    weights, table = choose_pooling_weights(emb, None, [("lists", "directory")], default=0.7)
    assert weights == {"noisy": 0.7, "clean": 0.7}
    assert (table["chosen_by"] == "default").all() and table["val_top1"].isna().all()
    few, table = choose_pooling_weights(emb, regions, [("lists", "directory")], default=0.7, min_queries=10_000)
    assert few == {"noisy": 0.7, "clean": 0.7}
    assert (table["n_val"] > 0).all()  # counted, but too few to choose on
    with pytest.raises(ValueError, match="weight must be in"):
        choose_pooling_weights(emb, regions, [("lists", "directory")], default=1.5)


def test_mutual_neighbour_rate_counts_queries_whose_nearest_target_points_back() -> None:
    q = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], np.float32)
    t = np.array([[0.96, 0.28], [0.0, 1.0]], np.float32)
    # q0 -> t0 -> nearest query of t0 is q0 (0.96 > 0.936): mutual; q1 -> t0, not mutual; q2 -> t1 -> q2: mutual
    assert mutual_neighbour_rate(q, t) == pytest.approx(2 / 3)
    assert np.isnan(mutual_neighbour_rate(q[:0], t))
    # a sample of the queries is scored against every target and every query: a fixed subset, the same each time
    rng = np.random.default_rng(3)
    big_q, big_t = rng.normal(size=(300, 8)).astype(np.float32), rng.normal(size=(200, 8)).astype(np.float32)
    full = mutual_neighbour_rate(big_q, big_t)
    sampled = mutual_neighbour_rate(big_q, big_t, max_queries=50)
    assert sampled == mutual_neighbour_rate(big_q, big_t, max_queries=50) and 0.0 <= sampled <= 1.0
    assert 0.0 < full < 1.0


def test_without_labels_mutual_neighbours_choose_each_conditions_weight() -> None:
    emb, _ = _corpus(image_noise=0.15)
    weights, table = choose_pooling_weights(emb, None, [("lists", "directory")], default=0.5, unlabelled="mutual")
    # the same choice validation labels make (see above), made without any label: under noisy readings the image
    # weight finds far more mutual neighbours than the default (a sign test over the queries); under clean readings
    # every weight up to the default finds all of them, so the default stays
    assert weights["noisy"] >= 0.9 and weights["clean"] == 0.5
    rows = table.set_index("ocr")
    assert rows.loc["noisy", "chosen_by"] == "mutual_neighbours" and rows.loc["noisy", "mutual_p"] < 1e-6
    assert rows.loc["clean", "chosen_by"] == "default" and rows.loc["clean", "mutual_gained"] == 0
    assert rows["val_top1"].isna().all()
    rates = rows.loc["noisy", "mutual_by_weight"]
    assert set(rates) == {round(w, 2) for w in np.linspace(0, 1, 11)} and rates[1.0] > rates[0.0]
    weight, by_weight, test = mutual_neighbour_weight(emb[emb["ocr"] == "noisy"], [("lists", "directory")],
                                                      default=0.5)
    assert weight == weights["noisy"] and by_weight == rows.loc["noisy", "mutual_by_weight"]
    assert test["p_value"] == rows.loc["noisy", "mutual_p"] and test["gained"] > test["lost"]
    # labels, where there are enough, still decide
    _, labelled = choose_pooling_weights(emb, _corpus(image_noise=0.15)[1], [("lists", "directory")], default=0.5,
                                         unlabelled="mutual")
    assert (labelled["chosen_by"] == "validation").all()
    # a function of the embeddings alone, not of their order: a source grown page by page gets the weight a fresh
    # build of the same pages gets
    shuffled = emb.sample(frac=1.0, random_state=4).reset_index(drop=True)
    assert choose_pooling_weights(shuffled, None, [("lists", "directory")], default=0.5, unlabelled="mutual")[0] == weights
    # noisier images: the image weight still has the highest rate, but its lead over the default (gained on some
    # queries, lost on almost as many) is one a sign test cannot tell from chance, so the default is kept
    weak, table = choose_pooling_weights(_corpus()[0], None, [("lists", "directory")], default=0.5, unlabelled="mutual")
    row = table.set_index("ocr").loc["noisy"]
    rates = row["mutual_by_weight"]
    assert max(rates, key=rates.get) == 1.0 and rates[1.0] > rates[0.5]
    assert weak["noisy"] == 0.5 and row["chosen_by"] == "default" and row["mutual_p"] > 0.05
    assert row["mutual_gained"] > row["mutual_lost"] > 0
    # a linkage with an empty side gives no rate: the default is kept
    kept, table = choose_pooling_weights(emb, None, [("lists", "nowhere")], default=0.7, unlabelled="mutual")
    assert kept == {"noisy": 0.7, "clean": 0.7} and (table["chosen_by"] == "default").all()
    with pytest.raises(ValueError, match="unlabelled must be one of"):
        choose_pooling_weights(emb, None, [("lists", "directory")], default=0.5, unlabelled="guess")


def test_links_and_indexes_use_each_conditions_weight() -> None:
    emb, _ = _corpus()
    weights = {"noisy": 0.9, "clean": 0.1}
    links = embedding_links(emb, [("lists", "directory")], methods=("multimodal",), weight=weights)
    for condition, w in weights.items():
        alone = embedding_links(emb[emb["ocr"] == condition], [("lists", "directory")], methods=("multimodal",),
                                weight=w)
        got = links[links["ocr"] == condition].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, alone.reset_index(drop=True))
    indexes, rows = index_targets(emb, ["directory"], methods=("multimodal",), weight=weights)
    assert rows.set_index("ocr")["weight"].to_dict() == weights
    target = emb[(emb["source"] == "directory") & (emb["ocr"] == "clean")].sort_values("crop_id")
    index, _ = indexes[("directory", "clean", "multimodal")]
    assert np.allclose(index.reconstruct_n(0, index.ntotal), method_embeddings(target, "multimodal", 0.1), atol=1e-6)
    # relinking records the weight of each condition with the targets it searched
    queries = emb[emb["source"] == "lists"]
    _, linked, _ = relink(queries, emb[emb["source"] == "directory"], [("lists", "directory")], indexes,
                          methods=("multimodal",), weight=weights)
    assert linked.groupby("ocr")["weight"].first().to_dict() == weights
    with pytest.raises(ValueError, match="no pooling weight for text condition 'clean'"):
        embedding_links(emb, [("lists", "directory")], methods=("multimodal",), weight={"noisy": 0.5})


def test_weight_of_checks_the_range() -> None:
    assert weight_of(0.25, "any") == 0.25
    assert weight_of({"a": 0.75}, "a") == 0.75
    with pytest.raises(ValueError, match=r"weight must be in \[0, 1\], got 1.2 for 'a'"):
        weight_of({"a": 1.2}, "a")


def test_mutual_neighbour_choice_moves_from_the_default_only_on_a_significant_sign_test() -> None:
    default = np.array([True] * 50 + [False] * 50)
    # 12 queries become mutual at 0.9 and 2 stop being so: p = P(X >= 12 | n = 14, 1/2) < 0.05
    better = default.copy()
    better[50:62], better[:2] = True, False
    weight, test = mutual_neighbour_choice({0.5: default, 0.9: better}, 0.5)
    assert weight == 0.9 and (test["gained"], test["lost"]) == (12, 2) and test["p_value"] < 0.05
    # a higher rate from 6 queries against 4: kept at the default
    slight = default.copy()
    slight[50:56], slight[:4] = True, False
    weight, test = mutual_neighbour_choice({0.5: default, 0.9: slight}, 0.5)
    assert weight == 0.5 and test["best"] == 0.9 and test["p_value"] > 0.05
    # the default need not be on the grid of the others; ties of the rate go to the weight nearest the default
    weight, test = mutual_neighbour_choice({0.3: default, 0.35: default, 0.4: default}, 0.35)
    assert weight == 0.35 and test == {"best": 0.35, "gained": 0, "lost": 0, "p_value": 1.0}
    with pytest.raises(ValueError, match="same queries"):
        mutual_neighbour_choice({0.5: default, 0.9: default[:10]}, 0.5)
    with pytest.raises(ValueError, match="at least one"):
        mutual_neighbour_choice({}, 0.5)
