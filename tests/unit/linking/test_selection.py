"""Record-link selection (linking.selection): the method/OCR choice on validation firms, thresholds and margin,
the defaults without labels, the candidates and defaults from the linkage model, and the accuracy history."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from linkage_pipeline import schema
from linkage_pipeline.evaluation.metrics import assign_split
from linkage_pipeline.linking import selection

#: Four validation firms found in the target and one (F4) that is not; every firm is in the "val" split.
FIRMS = ["firm0", "firm8", "firm17", "firm22", "firm27"]


def _regions(labelled: bool = True) -> pd.DataFrame:
    rows = [(f"q{i}", "entry", "query", f if labelled else None) for i, f in enumerate(FIRMS)]
    rows += [(f"t{i}", "entry", "target", f if labelled else None) for i, f in enumerate(FIRMS[:4])]
    return pd.DataFrame(rows, columns=["crop_id", "kind", "source_role", "true_entity_id"])


#: (method, ocr, query, [(target, score), ...] best first)
CANDIDATES = [
    # 3 of 4 right (q3 goes to t0); the no-match query q4 scores lowest: threshold between 0.5 and 0.8 -> 0.65
    ("jaro_winkler", "tesseract", "q0", [("t0", 0.90), ("t1", 0.86)]),
    ("jaro_winkler", "tesseract", "q1", [("t1", 0.80), ("t2", 0.30)]),
    ("jaro_winkler", "tesseract", "q2", [("t2", 0.85), ("t0", 0.20)]),
    ("jaro_winkler", "tesseract", "q3", [("t0", 0.70), ("t3", 0.60)]),
    ("jaro_winkler", "tesseract", "q4", [("t1", 0.50), ("t0", 0.10)]),
    # 4 of 4 right, q4 at 0.40: threshold midway between 0.40 and 0.88 -> 0.64; every validation query right
    ("levenshtein", "rapidocr", "q0", [("t0", 0.95), ("t2", 0.10)]),
    ("levenshtein", "rapidocr", "q1", [("t1", 0.90), ("t0", 0.10)]),
    ("levenshtein", "rapidocr", "q2", [("t2", 0.92), ("t1", 0.10)]),
    ("levenshtein", "rapidocr", "q3", [("t3", 0.88), ("t1", 0.10)]),
    ("levenshtein", "rapidocr", "q4", [("t2", 0.40), ("t1", 0.10)]),
    # perfect, but the ground-truth text is never chosen for record links
    *[("ngram", "ground_truth", f"q{i}", [(f"t{i}", 1.0)]) for i in range(4)],
]


def _links() -> pd.DataFrame:
    rows = [
        (q, t, "lists", "directory", method, ocr, rank, score)
        for method, ocr, q, hits in CANDIDATES
        for rank, (t, score) in enumerate(hits, start=1)
    ]
    return pd.DataFrame(rows, columns=list(schema.STRING_LINKS))


def test_the_fixture_firms_are_validation_firms() -> None:
    assert set(assign_split(FIRMS)) == {"val"}


def test_auto_picks_the_best_validation_accuracy_and_tunes_its_threshold() -> None:
    links, choice = selection.select_record_links(_links(), _regions())
    assert choice == {
        "method": "levenshtein", "ocr": "rapidocr", "threshold": pytest.approx(0.64),
        "chosen_by": "best validation accuracy", "threshold_from": "tuned on the validation split",
        "val_top1": 1.0, "val_top1_with_nomatch": 1.0, "reviews_applied": 0, "reviews_accepted": 0,
        "reviews_corrected": 0, "reviews_not_applied": 0,
    }
    assert list(links.columns) == list(schema.RECORD_LINKS)
    assert list(zip(links["query_crop_id"], links["target_crop_id"], links["matched"])) == [
        ("q0", "t0", True), ("q1", "t1", True), ("q2", "t2", True), ("q3", "t3", True), ("q4", "t2", False)]
    assert (links["model_id"] == "").all()  # a string method: no model


def test_hybrid_links_are_chosen_only_where_they_are_strictly_better() -> None:
    """With a string weight of 0 the hybrid links are the multimodal links: a tie goes to multimodal, even though
    'hybrid' sorts first by name; one more validation query right and the hybrid links are chosen, with a model id."""
    best = [(m, o, q, hits) for m, o, q, hits in CANDIDATES if m == "levenshtein"]
    same = [(name, "rapidocr", q, hits) for _, _, q, hits in best for name in ("multimodal", "hybrid")]
    links = pd.DataFrame([(q, t, "lists", "directory", m, o, r, sc) for m, o, q, hits in same
                          for r, (t, sc) in enumerate(hits, start=1)], columns=list(schema.STRING_LINKS))
    _, choice = selection.select_record_links(links, _regions(), model_id="m1")
    assert (choice["method"], choice["chosen_by"]) == ("multimodal", "best validation accuracy")
    # multimodal now links q3 wrongly: hybrid is strictly better on the validation firms
    worse = links.copy()
    row = (worse["method"] == "multimodal") & (worse["query_crop_id"] == "q3") & (worse["rank"] == 1)
    worse.loc[row, "target_crop_id"] = "t1"
    chosen, choice = selection.select_record_links(worse, _regions(), model_id="m1")
    assert choice["method"] == "hybrid" and choice["val_top1"] == 1.0
    assert (chosen["model_id"] == "m1").all()


def test_a_tie_with_no_match_queries_goes_to_the_better_top1() -> None:
    # jaro_winkler/tesseract: top-1 0.75, 0.8 with the no-match query; ngram/rapidocr: every top-1 right, but the
    # no-match query (0.70) scores above a right one (0.60), so no threshold does better than 0.8 either
    level = [("ngram", "rapidocr", f"q{i}", [(f"t{i}", sc), ("t0" if i else "t1", 0.1)])
             for i, sc in enumerate((0.9, 0.8, 0.85, 0.6))] + [("ngram", "rapidocr", "q4", [("t2", 0.7)])]
    rows = [c for c in CANDIDATES if c[0] == "jaro_winkler"] + level
    links = pd.DataFrame([(q, t, "lists", "directory", m, o, r, sc) for m, o, q, hits in rows
                          for r, (t, sc) in enumerate(hits, start=1)], columns=list(schema.STRING_LINKS))
    _, choice = selection.select_record_links(links, _regions())
    assert (choice["method"], choice["ocr"]) == ("ngram", "rapidocr")
    assert (choice["val_top1"], choice["val_top1_with_nomatch"]) == (1.0, pytest.approx(0.8))


def test_an_explicit_method_and_ocr_use_their_own_tuned_threshold() -> None:
    links, choice = selection.select_record_links(_links(), _regions(), method="jaro_winkler", ocr="tesseract",
                                                  model_id="m1")
    assert (choice["method"], choice["ocr"], choice["chosen_by"]) == ("jaro_winkler", "tesseract", "configuration")
    assert choice["threshold"] == pytest.approx(0.65)
    assert (choice["val_top1"], choice["val_top1_with_nomatch"]) == (0.75, pytest.approx(0.8))
    matched = links[links["matched"]]
    assert list(zip(matched["query_crop_id"], matched["target_crop_id"])) == [
        ("q0", "t0"), ("q1", "t1"), ("q2", "t2"), ("q3", "t0")]  # q3 at 0.70 clears 0.65: a wrong link
    # the method alone: the OCR condition is chosen among that method's (never ground_truth)
    _, choice = selection.select_record_links(_links(), _regions(), method="jaro_winkler")
    assert (choice["ocr"], choice["chosen_by"]) == ("tesseract", "best validation accuracy")


def test_a_configured_threshold_and_margin_keep_near_ties() -> None:
    links, choice = selection.select_record_links(_links(), _regions(), method="jaro_winkler", ocr="tesseract",
                                                  threshold=0.85, margin=0.05)
    assert (choice["threshold"], choice["threshold_from"]) == (0.85, "configuration")
    rows = list(zip(links["query_crop_id"], links["target_crop_id"], links["rank"], links["matched"]))
    # q0: 0.90 and 0.86 (within 0.05); q2 at exactly 0.85; q1, q3, q4 below: their best candidate, unmatched
    assert rows == [("q0", "t0", 1, True), ("q0", "t1", 2, True), ("q1", "t1", 1, False), ("q2", "t2", 1, True),
                    ("q3", "t0", 1, False), ("q4", "t1", 1, False)]
    assert (links["threshold"] == 0.85).all()


def test_without_labels_the_defaults_are_used() -> None:
    links, choice = selection.select_record_links(
        _links(), _regions(labelled=False), default_method="jaro_winkler", default_ocr="tesseract",
        default_threshold=0.75)
    assert (choice["method"], choice["ocr"], choice["threshold"]) == ("jaro_winkler", "tesseract", 0.75)
    assert (choice["chosen_by"], choice["threshold_from"]) == ("default (no labels)", "default (no validation labels)")
    assert math.isnan(choice["val_top1"]) and math.isnan(choice["val_top1_with_nomatch"])
    assert links.loc[links["matched"], "query_crop_id"].tolist() == ["q0", "q1", "q2"]
    # a default OCR condition the links do not have: the last condition name (never ground_truth)
    _, choice = selection.select_record_links(_links(), _regions(labelled=False), default_ocr="paddle")
    assert (choice["method"], choice["ocr"], choice["threshold"]) == ("jaro_winkler", "tesseract", 0.0)


def test_no_candidates_and_unknown_methods() -> None:
    links, choice = selection.select_record_links(_links().iloc[:0], _regions(), threshold=0.3)
    assert links.empty and list(links.columns) == list(schema.RECORD_LINKS)
    assert (choice["chosen_by"], choice["threshold"]) == ("no candidate links", 0.3)
    with pytest.raises(ValueError, match="no string links for method 'vision' and OCR condition 'tesseract'"):
        selection.select_record_links(_links(), _regions(), method="vision", ocr="tesseract")


def _model(threshold: float = 0.42) -> pd.Series:
    return pd.Series({"model_id": "m1", "nomatch_threshold": threshold, "pooling_weight": 0.6})


def _sources() -> pd.DataFrame:
    return pd.DataFrame({"name": ["directory", "lists"], "role": ["target", "query"],
                         "primary_ocr": ["tesseract", "rapidocr"]})


def _embedding_links() -> pd.DataFrame:
    rows = []
    for model_id, training in (("m1", "supervised"), ("m0", "supervised"), ("m1", "self_supervised")):
        rows += [(f"q{i}", f"t{i}", "lists", "directory", "multimodal", "rapidocr", 1, 0.9, training, model_id)
                 for i in range(4)]
    return pd.DataFrame(rows, columns=list(schema.EMBEDDING_LINKS))


def test_candidates_add_the_supervised_links_of_the_linkage_model_and_its_defaults() -> None:
    strings = _links()
    candidates, defaults = selection.record_link_candidates(strings, _embedding_links(), _model(), _sources())
    assert len(candidates) == len(strings) + 4 and list(candidates.columns) == list(schema.STRING_LINKS)
    assert candidates.index.tolist() == list(range(len(candidates)))
    assert defaults == selection.RecordLinkDefaults(method="multimodal", ocr="rapidocr", threshold=0.42,
                                                    model_id="m1")
    # a model without a stored threshold links at 0; no embedding links: the string baseline's defaults
    _, defaults = selection.record_link_candidates(strings, _embedding_links(), _model(float("nan")), _sources())
    assert defaults.threshold == 0.0
    only, defaults = selection.record_link_candidates(strings, None, None, None)
    assert len(only) == len(strings) and defaults == selection.RecordLinkDefaults()
    # links of another model only: stale, left out, string defaults
    stale = _embedding_links().query("model_id == 'm0'")
    only, defaults = selection.record_link_candidates(strings, stale, _model(), _sources())
    assert len(only) == len(strings) and defaults.method == "jaro_winkler"
    with pytest.raises(ValueError, match="embedding_links need the linkage_model row and document_sources"):
        selection.record_link_candidates(strings, _embedding_links(), None, _sources())


def _history(*runs: tuple[float, bool]) -> pd.DataFrame:
    return pd.DataFrame([{"run_id": f"r{i}", "model_id": "", "method": "jaro_winkler", "ocr": "tesseract",
                          "val_top1": acc, "val_top1_with_nomatch": acc, "passed": passed,
                          "recorded_at": "2026-01-01T00:00:00Z"} for i, (acc, passed) in enumerate(runs)])


@pytest.mark.parametrize(
    ("history", "current", "passed", "previous"),
    [
        (None, 0.7, True, None),  # first run: nothing to compare
        (_history((0.9, True), (0.5, False)), 0.89, True, 0.9),  # the failed run is never the reference
        (_history((0.9, True)), 0.85, False, 0.9),  # a drop of 0.05 > 0.02
        (_history((0.9, True)), float("nan"), True, None),  # no labels: not compared
    ],
)
def test_each_run_is_appended_with_its_accuracy_check(history, current, passed, previous) -> None:
    choice = {"method": "levenshtein", "ocr": "rapidocr", "val_top1": current, "val_top1_with_nomatch": current}
    runs, drop = selection.record_link_run(history, choice, run_id="now", model_id="m1",
                                           recorded_at="2026-12-06T08:00:00Z", max_accuracy_drop=0.02)
    assert list(runs.columns) == list(schema.RECORD_LINK_RUNS)
    assert len(runs) == (0 if history is None else len(history)) + 1
    last = runs.iloc[-1]
    assert (last["run_id"], last["model_id"], last["method"], last["ocr"], bool(last["passed"])) == (
        "now", "m1", "levenshtein", "rapidocr", passed)
    assert drop.passed == passed
    assert drop.metadata.get("previous") == previous


def test_the_check_compares_the_accuracy_the_choice_is_made_by() -> None:
    # the choice moved to another method of equal accuracy with no-match queries and lower top-1 without: no loss
    history = _history((0.9, True)).assign(val_top1=0.99, val_top1_with_nomatch=0.925)
    tie = {"method": "multimodal", "ocr": "rapidocr", "val_top1": 0.94, "val_top1_with_nomatch": 0.925}
    runs, drop = selection.record_link_run(history, tie, run_id="now", model_id="m1",
                                           recorded_at="2026-12-06T08:00:00Z", max_accuracy_drop=0.02)
    assert drop.passed and bool(runs["passed"].iloc[-1])
    assert "validation top-1 with no-match queries 0.925 against 0.925" in drop.description
    worse = {**tie, "val_top1": 0.99, "val_top1_with_nomatch": 0.90}  # top-1 level, the record links worse
    _, drop = selection.record_link_run(history, worse, run_id="later", model_id="m1",
                                        recorded_at="2026-12-06T09:00:00Z", max_accuracy_drop=0.02)
    assert not drop.passed and "drop +0.025" in drop.description


def test_record_links_of_one_run_choose_record_and_stamp_the_run() -> None:
    links, runs, choice, drop = selection.record_links(
        _links(), _embedding_links(), _model(), _sources(), _regions(), _history((1.0, True)), run_id="run-7",
        recorded_at="2026-12-06T08:00:00Z")
    # the model's multimodal links are right on every validation query (q4 has none: a right no-match), as are
    # levenshtein's; equal accuracies go to the method name first
    assert (choice["method"], choice["ocr"]) == ("levenshtein", "rapidocr")
    assert (links["run_id"] == "run-7").all() and (links["model_id"] == "").all()
    assert runs["run_id"].tolist() == ["r0", "run-7"] and runs["model_id"].tolist() == ["", "m1"]
    assert drop.passed and np.isclose(drop.metadata["current"], 1.0)
    # without labels: the model's method on the query source's primary OCR, at the model's threshold
    links, runs, choice, drop = selection.record_links(
        _links(), _embedding_links(), _model(), _sources(), _regions(labelled=False), None, run_id="run-8",
        recorded_at="2026-12-06T09:00:00Z")
    assert (choice["method"], choice["ocr"], choice["threshold"]) == ("multimodal", "rapidocr", 0.42)
    assert links["model_id"].tolist() == ["m1"] * 4 and links["matched"].all()
    assert runs["run_id"].tolist() == ["run-8"] and drop.passed


def _review(q: str, verdict: str, target: str | None = None) -> pd.DataFrame:
    from linkage_pipeline.review import verdicts

    crop = {f"q{i}": f"{i:02d}" * 8 for i in range(5)} | {f"t{i}": f"{i + 10:02d}" * 8 for i in range(4)}
    return verdicts.review_row(query_crop_id=crop[q], verdict=verdict, reviewer="ann",
                               target_crop_id=crop.get(target) if target else None).assign(
        query_crop_id=q, target_crop_id=target)


def test_reviews_are_labels_for_the_choice_and_decide_their_links_on_an_unlabelled_corpus() -> None:
    """Without labels the default method runs at threshold 0; two reviews give validation labels: the method with
    the better accuracy on them is chosen, its threshold tuned on them, and the reviewed links are the verdicts."""
    from linkage_pipeline.review import verdicts

    reviews = verdicts.in_force(pd.concat([_review("q3", "pick", "t3"), _review("q4", "none")], ignore_index=True))
    links, choice = selection.select_record_links(_links(), _regions(labelled=False), reviews=reviews)
    # on the two reviewed queries levenshtein/rapidocr is right (q3 -> t3, q4 lowest), jaro_winkler wrong on q3
    assert (choice["method"], choice["ocr"]) == ("levenshtein", "rapidocr")
    assert choice["chosen_by"] == "best validation accuracy (on 2 reviews)"
    assert choice["threshold_from"] == "tuned on 2 reviews"
    assert 0.40 < choice["threshold"] < 0.88
    assert math.isnan(choice["val_top1"])  # the accuracy history sees labelled firms only: there are none
    assert (choice["reviews_applied"], choice["reviews_accepted"], choice["reviews_corrected"]) == (2, 2, 0)
    got = links.set_index("query_crop_id")
    assert got.loc[["q3", "q4"], "reviewed"].tolist() == [True, True]
    assert got.loc[["q3", "q4"], "matched"].tolist() == [True, False]
    assert not got.loc[["q0", "q1", "q2"], "reviewed"].any()


def test_labelled_validation_firms_keep_the_choice_and_reviews_decide_their_own_links() -> None:
    """With labelled validation firms (a random sample) the choice and threshold are made on them alone, not on the
    reviews (the hardest links first); a review still decides its own link."""
    from linkage_pipeline.review import verdicts

    plain, plain_choice = selection.select_record_links(_links(), _regions())
    reviews = verdicts.in_force(_review("q3", "pick", "t0"))  # a reviewer disagrees with the labels of q3
    links, choice = selection.select_record_links(_links(), _regions(), reviews=reviews)
    same = ("method", "ocr", "threshold", "chosen_by", "threshold_from", "val_top1")
    assert {k: choice[k] for k in same} == {k: plain_choice[k] for k in same}
    assert choice["reviews_applied"] == 1 and choice["reviews_corrected"] == 1
    assert links.set_index("query_crop_id").loc["q3", "target_crop_id"] == "t0"
    assert plain.set_index("query_crop_id").loc["q3", "target_crop_id"] == "t3"
