"""The evaluation tables (layout, OCR, linkage) and the paper's Table 1 markdown, on small frames with known scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixtures.tiny import TINY
from PIL import Image, ImageDraw

from linkage_pipeline import schema
from linkage_pipeline.documents.labels import label_regions
from linkage_pipeline.evaluation import report
from linkage_pipeline.linking import hybrid
from linkage_pipeline.linking.by_embeddings import embedding_links, mutual_neighbour_weight
from linkage_pipeline.multimodal.encoder import MultimodalEncoder


def _regions() -> pd.DataFrame:
    """layout_regions of two sources: ``a`` has a labelled page a.png and an unlabelled b.png; ``z`` no labels."""
    rows = [
        ("r1", "a", "pa", (0, 0, 10, 10), "entry"),
        ("r2", "a", "pa", (20, 20, 30, 30), "title"),
        ("r3", "a", "pa", (50, 50, 60, 60), "entry"),  # no label here: a false detection
        ("r4", "a", "pb", (0, 0, 10, 10), "entry"),  # page without labels: not counted
        ("r9", "z", "pz", (0, 0, 10, 10), "entry"),
    ]
    return pd.DataFrame(
        [(r, s, p, *box, k) for r, s, p, box, k in rows],
        columns=["region_id", "source", "page_id", "x0", "y0", "x1", "y1", "kind"],
    )


def _pages() -> pd.DataFrame:
    return pd.DataFrame({"page_id": ["pa", "pb", "pz"], "file": ["a.png", "b.png", "z.png"]})


def _labels() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": ["a", "a", "a"],
            "label_index": [0, 1, 2],
            "page": ["a.png", "a.png", "a.png"],
            "x0": [0, 20, 70],
            "y0": [0, 21, 70],
            "x1": [10, 30, 80],
            "y1": [10, 30, 80],
            "text": ["三井物産", "取引先", "東京會社"],
            "entity_id": ["e1", None, "e2"],
            "role": ["supplier", "heading", "entry"],
        }
    )


def test_label_regions_matches_one_to_one_by_iou() -> None:
    matched = label_regions(_regions(), _pages(), _labels())
    assert list(matched.columns) == list(schema.LABELLED_REGIONS)
    assert matched["region_id"].tolist() == ["r1", "r2"]  # r3 overlaps no label, the third label is missed
    assert matched["label_index"].tolist() == [0, 1]
    assert matched["page"].tolist() == ["a.png", "a.png"] and matched["source"].tolist() == ["a", "a"]
    assert matched["iou"].tolist() == pytest.approx([1.0, 90 / 100])  # r2 covers 10x10, the label 10x9 inside it
    assert matched["entity_id"].tolist() == ["e1", ""]  # a label without an entity reads as ""
    assert matched["role"].tolist() == ["supplier", "heading"]
    # a stricter threshold drops the partial overlap
    assert label_regions(_regions(), _pages(), _labels(), iou_threshold=0.95)["region_id"].tolist() == ["r1"]
    assert label_regions(_regions(), _pages(), _labels().iloc[:0]).columns.tolist() == list(schema.LABELLED_REGIONS)


def test_layout_evaluation_table_scores_each_labelled_source() -> None:
    regions, pages, labels = _regions(), _pages(), _labels()
    table = report.layout_evaluation_table(regions, pages, labels, label_regions(regions, pages, labels))
    assert list(table.columns) == list(schema.LAYOUT_EVALUATION)
    assert table["source"].tolist() == ["a"]  # z has no labels: no row
    row = table.iloc[0]
    assert (row["n_detected"], row["n_labelled"], row["n_matched"]) == (3, 3, 2)  # r4's page has no labels
    assert row["precision"] == pytest.approx(2 / 3) and row["recall"] == pytest.approx(2 / 3)
    assert row["f1"] == pytest.approx(2 / 3)
    assert row["mean_iou"] == pytest.approx((1.0 + 0.9) / 2)
    assert row["kind_accuracy"] == pytest.approx(0.5)  # r1 entry = supplier, r2 title != heading


def test_layout_evaluation_table_without_labels_has_its_columns_and_no_rows() -> None:
    table = report.layout_evaluation_table(_regions(), _pages(), _labels().iloc[:0], label_regions(
        _regions(), _pages(), _labels().iloc[:0]))
    assert table.empty and list(table.columns) == list(schema.LAYOUT_EVALUATION)


def test_ocr_evaluation_table_character_error_rate_per_source_and_engine() -> None:
    matched = pd.DataFrame(
        {
            "region_id": ["r1", "r2", "r3", "r9"],
            "source": ["a", "a", "a", "z"],
            "text": ["三井物産", "取引先", "東京會社", "大阪"],
            "role": ["supplier", "heading", "customer", "entry"],
        }
    )
    crops = pd.DataFrame({"region_id": ["r1", "r2", "r3", "r9", "r5"], "crop_id": ["c1", "c2", "c3", "c9", "c5"]})
    reads = [
        ("c1", "tesseract", "三井 物産"),  # one inserted space: an edit, yet an exact match once normalised
        ("c3", "tesseract", "東京会社"),  # new form for old: one substitution, not folded
        ("c1", "manga", "三井物"),  # one character missing
        ("c3", "manga", "東京會社"),
        ("c2", "tesseract", "XXXX"),  # a heading: not scored
        ("c5", "tesseract", "XXXX"),  # no label: not scored
        ("c9", "tesseract", None),  # read nothing: every character is an error
    ]
    ocr = pd.DataFrame(reads, columns=["crop_id", "ocr", "text"])
    table = report.ocr_evaluation_table(crops, ocr, matched)
    assert list(table.columns) == list(schema.OCR_EVALUATION)
    assert table[["source", "ocr"]].values.tolist() == [["a", "manga"], ["a", "tesseract"], ["z", "tesseract"]]
    assert table["cer"].tolist() == pytest.approx([1 / 8, 2 / 8, 1.0])
    assert table["exact_match"].tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert table["n"].tolist() == [2, 2, 1]


# ------------------------------------------------------------------------------------------------ linkage
# e1..e6 fall in splits test, train, val, val, test, val (assign_split, pinned in test_metrics.py)


def _stg_regions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "crop_id": ["q1", "q2", "q3", "q4", "q5", "q6", "h1", None, "t1", "t2", "t3", "t4", "t5"],
            "kind": ["entry"] * 6 + ["heading", "entry"] + ["entry"] * 5,
            "source_role": ["query"] * 8 + ["target"] * 5,
            "true_entity_id": ["e1", "e2", "e3", "e4", "e5", "e6", "e1", "e2", "e1", "e2", "e3", "e4", "e5"],
        }
    )


def _links(rows, method: str = "levenshtein", **extra) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["query_crop_id", "target_crop_id", "rank", "score"])
    return frame.assign(query_source="q", target_source="t", method=method, ocr="tesseract", **extra)


STRING_ROWS = [
    ("q1", "t1", 1, 0.95), ("q1", "t2", 2, 0.5),  # rank 2 is not scored
    ("q2", "t2", 1, 0.9), ("q3", "t3", 1, 0.9), ("q4", "t4", 1, 0.8),
    ("q5", "t1", 1, 0.85),  # wrong firm
    ("q6", "t1", 1, 0.3),  # e6 is not in the target: right only as a no-match
    ("h1", "t1", 1, 0.99),  # a heading is no query
]


def test_linkage_evaluation_table_top1_accuracy_and_nomatch() -> None:
    table = report.linkage_evaluation_table(_links(STRING_ROWS), _stg_regions())
    assert list(table.columns) == list(schema.LINKAGE_EVALUATION)
    assert table[["method", "training", "ocr", "split"]].values.tolist() == [
        ["levenshtein", "none", "tesseract", "test"], ["levenshtein", "none", "tesseract", "all"]
    ]
    assert table["top1_accuracy"].tolist() == pytest.approx([1 / 2, 4 / 5])  # q1 right, q5 wrong; + q2..q4 right
    assert table["n"].tolist() == [2, 5] and table["n_with_nomatch"].tolist() == [2, 6]
    # tuned on val (q3 0.9 and q4 0.8 right, q6 0.3 no-match): midway between 0.3 and 0.8; q6 then counts as right
    assert table["nomatch_threshold"].tolist() == pytest.approx([0.55, 0.55])
    assert table["top1_accuracy_with_nomatch"].tolist() == pytest.approx([1 / 2, 5 / 6])
    supervised = report.linkage_evaluation_table(_links(STRING_ROWS, "vision"), _stg_regions(), training="supervised",
                                                 report_splits=("val",))
    assert supervised[["method", "training", "split"]].values.tolist() == [["vision", "supervised", "val"]]
    assert supervised["top1_accuracy"].item() == 1.0 and supervised["n"].item() == 2


def test_linkage_evaluation_table_without_links_or_labels_is_empty_with_columns() -> None:
    assert report.linkage_evaluation_table(_links([]), _stg_regions()).columns.tolist() == list(schema.LINKAGE_EVALUATION)
    unlabelled = _stg_regions().assign(true_entity_id=None)
    assert report.linkage_evaluation_table(_links(STRING_ROWS), unlabelled).empty


def _table_rows() -> pd.DataFrame:
    rows = [
        ("multimodal", "supervised", "tesseract", "test", 0.9, 0.85, 4, 5),
        ("levenshtein", "none", "tesseract", "test", 0.5, 0.6, 4, 5),
        ("levenshtein", "none", "ground_truth", "test", 0.75, 0.8, 4, 5),
        ("vision", "self_supervised", "tesseract", "test", 0.25, 0.2, 4, 5),
        ("jaro_winkler", "none", "tesseract", "test", 0.123456, 0.1, 3, 5),
        ("levenshtein", "none", "tesseract", "all", 0.1, 0.1, 9, 12),
    ]
    columns = ["method", "training", "ocr", "split", "top1_accuracy", "top1_accuracy_with_nomatch", "n", "n_with_nomatch"]
    return pd.DataFrame(rows, columns=columns)


def test_table_one_markdown_orders_training_then_method() -> None:
    text = report.table_one_markdown(_table_rows(), "test", "top1_accuracy")
    lines = text.splitlines()
    assert lines[0] == "test split, top1_accuracy (n = 4 queries)"
    assert lines[1] == ""
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == ["training", "method", "ground_truth", "tesseract"]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[4:]]
    assert body == [
        ["none", "levenshtein", "0.75", "0.5"],
        ["none", "jaro_winkler", "nan", "0.123"],  # rounded to three places; no ground-truth row
        ["self_supervised", "vision", "nan", "0.25"],
        ["supervised", "multimodal", "nan", "0.9"],
    ]


def test_table_one_markdown_with_nomatch_counts_every_query_and_empty_split() -> None:
    text = report.table_one_markdown(_table_rows(), "all", "top1_accuracy_with_nomatch")
    assert text.splitlines()[0] == "all split, top1_accuracy_with_nomatch (n = 12 queries)"
    assert report.table_one_markdown(_table_rows(), "val") == "_no labelled queries in this split_"


# --------------------------------------------------------------------------------- linkage_evaluation_report


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[MultimodalEncoder, pd.DataFrame]:
    """A tiny saved model and embedding inputs for the query crops q1..q6 and target crops t1..t5."""
    root = tmp_path_factory.mktemp("report")
    MultimodalEncoder.create(seed=3, **TINY).save(root / "model")
    rows = []
    for i, crop in enumerate(["q1", "q2", "q3", "q4", "q5", "q6", "t1", "t2", "t3", "t4", "t5"]):
        img = Image.new("L", (60, 20), 230)
        ImageDraw.Draw(img).rectangle((4 + 4 * (i % 6), 4, 14 + 4 * (i % 6), 16), fill=30)
        img.save(root / f"{crop}.png")
        source = "q" if crop.startswith("q") else "t"
        rows.append((crop, source, str(root / f"{crop}.png"), "horizontal", "tesseract", f"東洋{i % 6}"))
    inputs = pd.DataFrame(rows, columns=["crop_id", "source", "crop_path", "direction", "ocr", "text"])
    return MultimodalEncoder.load(root / "model"), inputs


MODEL = {"model_id": "m1", "pooling_weight": 0.5, "pretrained_path": "/models/pretrained"}


def _embedding_links() -> pd.DataFrame:
    right = _links(STRING_ROWS[2:5], "vision", training="supervised", model_id="m1")  # q2..q4 right
    other = _links([("q1", "t2", 1, 0.9)], "vision", training="supervised", model_id="m0")  # an older model
    self_sup = _links([("q1", "t2", 1, 0.9)], "vision", training="self_supervised", model_id="m1")
    return pd.concat([right, other, self_sup], ignore_index=True)


def test_linkage_evaluation_report_strings_and_the_supervised_model() -> None:
    strings = _links(STRING_ROWS)
    table, embedded = report.linkage_evaluation_report(
        strings, _stg_regions(), embedding_links=_embedding_links(), model=MODEL, linkages=[("q", "t")]
    )
    assert embedded is None
    assert table[["method", "training", "split"]].values.tolist() == [
        ["levenshtein", "none", "test"], ["levenshtein", "none", "all"],
        ["vision", "supervised", "test"], ["vision", "supervised", "all"],
    ]
    vision = table[table["method"] == "vision"]
    # only model m1's supervised links: q2..q4 right, q1 and q5 without a candidate (wrong)
    assert vision["top1_accuracy"].tolist() == pytest.approx([0.0, 3 / 5])
    # no linkage model: the string rows alone
    only_strings, _ = report.linkage_evaluation_report(strings, _stg_regions(), embedding_links=_embedding_links())
    pd.testing.assert_frame_equal(only_strings, report.linkage_evaluation_table(strings, _stg_regions()))


def test_linkage_evaluation_report_embeds_with_the_pretrained_model_and_reuses_the_cache(pretrained) -> None:
    encoder, inputs = pretrained
    choices: dict = {}
    table, embedded = report.linkage_evaluation_report(
        _links(STRING_ROWS), _stg_regions(), embedding_links=_embedding_links(), model=MODEL,
        linkages=[("q", "t")], pretrained=encoder, inputs=inputs, choices=choices,
    )
    assert list(embedded.columns) == list(schema.CROP_EMBEDDINGS)
    assert len(embedded) == 11 and set(embedded["model_id"]) == {encoder.model_id}
    # the self-supervised rows are those of the pretrained model's own links; too few validation queries to choose
    # a weight on, so by the mutual-neighbour rule, whose ties go to the grid weight nearest the linkage model's
    mutual, rates, test = mutual_neighbour_weight(embedded, [("q", "t")], default=0.5)
    assert len(rates) == 11 and mutual == 0.5  # both towers link all five pairs here: every weight ties
    assert test["gained"] == test["lost"] == 0 and test["p_value"] == 1.0
    links = embedding_links(embedded, [("q", "t")], weight=mutual, training="self_supervised")
    # and its hybrid rows, the string weight chosen by the supervised model's rules (here the image votes)
    candidates = hybrid.hybrid_candidates(links, _links(STRING_ROWS), embedded, [("q", "t")], {"tesseract": mutual})
    betas, string_table = hybrid.choose_string_weights(candidates, _stg_regions(), judge=hybrid.judge_links(links))
    assert string_table["n_votes"].tolist() == [6]  # q1..q6, each with a vision top-1
    links = pd.concat([links, hybrid.hybrid_links(candidates, betas, model_id=encoder.model_id,
                                                  training="self_supervised")], ignore_index=True)
    expected = report.linkage_evaluation_table(links, _stg_regions(), training="self_supervised",
                                               weights={"tesseract": mutual})
    assert expected.loc[expected["method"] == "multimodal", "pooling_weight"].tolist() == [0.5, 0.5]
    assert expected.loc[expected["method"] != "multimodal", "pooling_weight"].isna().all()
    got = table[table["training"] == "self_supervised"].reset_index(drop=True)
    assert len(got) == 8  # vision, language, multimodal, hybrid x test, all
    pd.testing.assert_frame_equal(got, expected)
    assert choices["self_supervised_pooling"] == {"tesseract": 0.5} and choices["self_supervised_string"] == betas
    pd.testing.assert_frame_equal(choices["self_supervised_string_table"], string_table)
    # a card weight off the grid: the mutual rule scores it beside the grid and keeps it (on five pairs no other
    # weight can win the sign test), unlabelled="card" takes it without scoring, as faiss_index's
    # unlabelled_weight: card does
    off_grid = {**MODEL, "pooling_weight": 0.52}
    for rule, scored_weights in (("mutual", 12), ("card", 0)):
        rule_choices: dict = {}
        scored, _ = report.linkage_evaluation_report(
            _links(STRING_ROWS), _stg_regions(), embedding_links=_embedding_links(), model=off_grid,
            linkages=[("q", "t")], pretrained=encoder, inputs=inputs, cached=embedded, unlabelled=rule,
            choices=rule_choices,
        )
        rows = scored[(scored["training"] == "self_supervised") & (scored["method"] == "multimodal")]
        pooling = rule_choices["self_supervised_pooling_table"].iloc[0]
        assert len(pooling["mutual_by_weight"]) == scored_weights and pooling["chosen_by"] == "default", rule
        assert rows["pooling_weight"].tolist() == [0.52, 0.52], rule
    with pytest.raises(ValueError, match="unlabelled must be 'mutual' or 'card', got 'labels'"):
        report.linkage_evaluation_report(_links(STRING_ROWS), _stg_regions(), unlabelled="labels")
    with pytest.raises(ValueError, match=r"unlabelled_string_weight must be one of \['votes', 'none'\], got 'ngram'"):
        report.linkage_evaluation_report(_links(STRING_ROWS), _stg_regions(), unlabelled_string_weight="ngram")
    assert table["training"].tolist()[:4] == ["none", "none", "supervised", "supervised"]
    # given the cache back, nothing is embedded again and the same table comes out
    again, cached = report.linkage_evaluation_report(
        _links(STRING_ROWS), _stg_regions(), embedding_links=_embedding_links(), model=MODEL,
        linkages=[("q", "t")], pretrained=encoder, inputs=inputs, cached=embedded,
    )
    pd.testing.assert_frame_equal(again, table)
    np.testing.assert_array_equal(np.stack(cached["image_embedding"]), np.stack(embedded["image_embedding"]))


def test_linkage_evaluation_report_needs_the_model_row_and_inputs_with_an_encoder(pretrained) -> None:
    encoder, inputs = pretrained
    with pytest.raises(ValueError, match="pretrained needs the linkage_model row"):
        report.linkage_evaluation_report(_links(STRING_ROWS), _stg_regions(), pretrained=encoder, inputs=inputs)
    with pytest.raises(ValueError, match="the embedding inputs"):
        report.linkage_evaluation_report(_links(STRING_ROWS), _stg_regions(), model=MODEL, pretrained=encoder)
