"""The default layout step (ppocr lines + the shipped line classifier) on dense pages: directory entries with body
text, supply lists running names inline, titles only a little larger than names. The corpus is drawn with a seed
the classifier was never trained on (its corpora: seeds 101, 102, 201)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from linkage_pipeline.documents.layout import detect_layout, layout_to_records
from linkage_pipeline.evaluation.metrics import ROLE_TO_KIND, layout_metrics, match_regions_to_labels
from linkage_pipeline.synthetic.corpus import generate_corpus

DIRECTIONS = {"firm_directory": "vertical", "supplier_lists": "horizontal"}


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dense")
    generate_corpus(out, seed=5, n_firms=30, n_list_pages=4, style="dense")
    return out


def _detect(corpus: Path, source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    labels = pd.read_csv(corpus / source / "labels.csv", dtype={"page": str, "entity_id": str, "text": str})
    rows = []
    for page in sorted(labels["page"].unique()):
        image = np.asarray(Image.open(corpus / source / "pages" / page).convert("L"))
        for i, r in enumerate(layout_to_records(detect_layout(image, direction=DIRECTIONS[source]))):
            rows.append({**r, "region_id": f"{page}:{i}", "page": page})
    return pd.DataFrame(rows), labels


@pytest.mark.parametrize("source", ["firm_directory", "supplier_lists"])
def test_dense_pages_are_found_name_by_name_and_line_by_line(dense: Path, source: str) -> None:
    regions, labels = _detect(dense, source)
    matched = match_regions_to_labels(regions, labels, iou_threshold=0.5)
    scores = layout_metrics(regions, labels, matched)
    # measured on this corpus: directory 0.956 / 0.981, lists 1.0 / 1.0; kinds 1.0 of matched regions
    assert scores["precision"] >= 0.90 and scores["recall"] >= 0.90, scores
    assert scores["kind_accuracy"] >= 0.95, scores
    if source == "firm_directory":  # body text is found, and is never taken for a name
        assert (labels["role"] == "body").sum() > 100
        body = matched[matched["role"] == "body"]
        kinds = regions.set_index("region_id").loc[body["region_id"], "kind"]
        assert (kinds == "body").mean() >= 0.95


def test_every_list_page_has_its_title_even_when_set_barely_larger(dense: Path) -> None:
    regions, labels = _detect(dense, "supplier_lists")
    matched = match_regions_to_labels(regions, labels, iou_threshold=0.5)
    kinds = regions.set_index("region_id")["kind"]
    titles = matched[matched["role"] == "title"]
    assert len(titles) == labels["role"].eq("title").sum() == 4
    assert (titles["region_id"].map(kinds) == "title").all()
    names = matched[matched["role"].map(ROLE_TO_KIND) == "entry"]
    assert (names["region_id"].map(kinds) == "entry").mean() >= 0.97
