"""Incremental string links (by_strings.relink_sources_by_strings) against a full comparison on fixed texts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from linkage_pipeline import schema
from linkage_pipeline.linking import by_strings, strings

FIRMS = ["東京紡績株式会社", "東京紡績(株)", "大阪製薬株式会社", "大阪製菓株式会社", "名古屋鉄工所", "横浜商会",
         "神戸海運株式会社", "京都織物會社", "京都織物会社", "札幌麦酒株式会社", "東京紡績株式会社"]  # one name twice
METHODS = strings.STRING_METHODS


def _texts(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["crop_id", "source", "ocr", "text"])


def _corpus(n_queries: int, n_targets: int) -> pd.DataFrame:
    rows = []
    for k in range(n_targets):
        rows.append((f"t{k:03d}", "directory", "ocr", FIRMS[k % len(FIRMS)]))
    for k in range(n_queries):
        name = FIRMS[(3 * k) % len(FIRMS)]
        rows.append((f"q{k:03d}", "lists", "ocr", name[:-1] if k % 2 else name))  # half of them truncated
    return _texts(rows)


def _full(texts: pd.DataFrame, k: int = 3) -> pd.DataFrame:
    return _sorted(by_strings.link_sources_by_strings(texts, [("lists", "directory")], methods=METHODS, k=k))


def _sorted(links: pd.DataFrame) -> pd.DataFrame:
    return links.sort_values(["method", "ocr", "query_crop_id", "rank"]).reset_index(drop=True)


def _relink(texts: pd.DataFrame, previous=None, k: int = 3):
    links, inputs, stats = by_strings.relink_sources_by_strings(
        texts, [("lists", "directory")], methods=METHODS, k=k,
        previous=None if previous is None else previous[0], previous_inputs=None if previous is None else previous[1])
    return _sorted(links), inputs, stats


def test_first_run_equals_the_full_comparison():
    texts = _corpus(8, 9)
    links, inputs, stats = _relink(texts)
    pd.testing.assert_frame_equal(links, _full(texts))
    assert stats == {"queries_searched": 8 * len(METHODS), "queries_checked": 0, "queries_changed": 0,
                     "queries_kept": 0}
    assert len(inputs) == 17 and set(inputs.columns) == set(schema.STRING_LINK_INPUTS)


def test_nothing_new_reuses_every_list():
    texts = _corpus(8, 9)
    first = _relink(texts)
    again, _, stats = _relink(texts, first[:2])
    pd.testing.assert_frame_equal(again, first[0])
    assert stats == {"queries_searched": 0, "queries_checked": 0, "queries_changed": 0,
                     "queries_kept": 8 * len(METHODS)}


def test_new_targets_and_queries_cost_only_themselves_and_equal_a_full_comparison():
    small, grown = _corpus(5, 6), _corpus(8, 11)  # three new queries, five new targets (one a duplicate name)
    links, inputs, stats = _relink(grown, _relink(small)[:2])
    pd.testing.assert_frame_equal(links, _full(grown))
    # the old queries' lists that the new targets changed: compare the full comparisons before and after
    before, after = (_full(t).query("query_crop_id < 'q005'").groupby(["method", "query_crop_id"])["target_crop_id"]
                     .apply(tuple) for t in (small, grown))
    changed = int((before != after).sum())
    assert changed == 12  # of 5 queries x 3 methods: the new targets include a second 東京紡績株式会社
    assert stats == {"queries_searched": 3 * len(METHODS), "queries_checked": 5 * len(METHODS),
                     "queries_changed": changed, "queries_kept": 0}
    assert sorted(inputs["crop_id"]) == sorted(grown["crop_id"])


@pytest.mark.parametrize("change", ["target text", "removed target"])
def test_a_changed_or_removed_target_compares_every_query_again(change):
    texts = _corpus(6, 8)
    first = _relink(texts)
    later = texts.copy()
    if change == "target text":
        later.loc[later["crop_id"] == "t002", "text"] = "大阪製菓(株)"  # an OCR engine now reads it differently
    else:
        later = later[later["crop_id"] != "t002"]
    links, _, stats = _relink(later, first[:2])
    pd.testing.assert_frame_equal(links, _full(later))
    assert stats == {"queries_searched": 6 * len(METHODS), "queries_checked": 0, "queries_changed": 0,
                     "queries_kept": 0}


def test_a_changed_query_text_is_compared_again_alone():
    texts = _corpus(6, 8)
    first = _relink(texts)
    later = texts.copy()
    later.loc[later["crop_id"] == "q001", "text"] = "名古屋鐵工所"
    links, _, stats = _relink(later, first[:2])
    pd.testing.assert_frame_equal(links, _full(later))
    assert stats == {"queries_searched": len(METHODS), "queries_checked": 0, "queries_changed": 0,
                     "queries_kept": 5 * len(METHODS)}


def test_a_raised_k_compares_again_and_a_repeated_target_counts_once():
    texts = _corpus(6, 8)
    first = _relink(texts, k=2)
    raised, _, stats = _relink(texts, first[:2], k=4)
    pd.testing.assert_frame_equal(raised, _full(texts, k=4))
    assert stats["queries_searched"] == 6 * len(METHODS)
    # a run stopped between writing the links and their inputs: the new targets are compared again, no duplicate
    grown = _corpus(6, 11)
    after, _, _ = _relink(grown, first[:2], k=2)
    stale_inputs = first[1]
    replay, _, stats = _relink(grown, (after, stale_inputs), k=2)
    pd.testing.assert_frame_equal(replay, _full(grown, k=2))
    assert stats["queries_checked"] == 6 * len(METHODS) and stats["queries_changed"] == 0


def test_ngram_scores_do_not_depend_on_the_other_texts():
    # the incremental merge compares scores computed in different batches: they must be bitwise equal (a pair's
    # shared n-grams are summed in n-gram order, whatever the vocabulary of the batch)
    rng = np.random.default_rng(0)
    alphabet = list("東京大阪紡績株式会社製薬菓名古屋鉄工所横浜商abcdefgh")

    def texts(n):
        return ["".join(rng.choice(alphabet, int(rng.integers(10, 30)))) for _ in range(n)]

    queries, targets, crowd = texts(100), texts(40), texts(200)
    alone = np.zeros((len(queries), len(targets)), dtype=np.float32)
    idx, scores = strings.topk_string_matches(queries, targets, method="ngram", k=len(targets))
    np.put_along_axis(alone, idx, scores, axis=1)
    among = np.zeros((len(queries), len(crowd) + len(targets)), dtype=np.float32)
    idx, scores = strings.topk_string_matches(queries, crowd + targets, method="ngram", k=among.shape[1])
    np.put_along_axis(among, idx, scores, axis=1)
    assert alone.max() > 0.3
    np.testing.assert_array_equal(among[:, len(crowd):], alone)


@pytest.mark.parametrize("empty_side", ["lists", "directory", "both"])
def test_a_linkage_with_an_empty_side_yields_no_links(empty_side: str) -> None:
    texts = _corpus(4, 6)
    if empty_side != "both":
        texts = texts[texts["source"] != empty_side]
    else:
        texts = texts.iloc[:0]
    links, inputs, stats = by_strings.relink_sources_by_strings(texts, [("lists", "directory")], methods=METHODS, k=3)
    assert links.empty and list(links.columns) == list(schema.STRING_LINKS)
    assert inputs.empty and list(inputs.columns) == list(schema.STRING_LINK_INPUTS)
    assert stats == {"queries_searched": 0, "queries_checked": 0, "queries_changed": 0, "queries_kept": 0}
    lines = by_strings.empty_linkages(texts["source"], [("lists", "directory")], what="OCR texts")
    sides = {"lists": "query source 'lists'", "directory": "target source 'directory'",
             "both": "query source 'lists' or target source 'directory'"}[empty_side]
    assert lines == [f"lists -> directory: no OCR texts in {sides}"]
    assert by_strings.empty_linkages(_corpus(2, 2)["source"], [("lists", "directory")], what="OCR texts") == []


def test_runnable_linkages_skip_those_with_an_unusable_side_and_refuse_when_none_is_left() -> None:
    from linkage_pipeline.linking.by_strings import runnable_linkages

    linkages = [("lists", "directory"), ("bad", "directory"), ("lists", "old")]
    run, lines = runnable_linkages(linkages, {"bad": "no crop_embeddings partition", "old": "another model"})
    assert run == [("lists", "directory")]
    assert lines == ["bad -> directory skipped (bad: no crop_embeddings partition)",
                     "lists -> old skipped (old: another model)"]
    assert runnable_linkages([], {"bad": "x"}) == ([], [])
    with pytest.raises(ValueError, match="no linkage can run: bad -> directory skipped"):
        runnable_linkages([("bad", "directory")], {"bad": "no crop_embeddings partition"})
