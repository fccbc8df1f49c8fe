"""A source's own line classifier: when one is fitted, that every labelled page is classified by a model fitted on
other pages (cross-fitting), and what layout_regions says ran."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from linkage_pipeline.config import SourceConfig
from linkage_pipeline.documents import region_training
from linkage_pipeline.documents.chain import detect_page_regions, expected_classifier
from linkage_pipeline.documents.labels import read_labels
from linkage_pipeline.documents.pages import scan_pages
from linkage_pipeline.synthetic.corpus import generate_corpus


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> tuple[SourceConfig, pd.DataFrame, pd.DataFrame]:
    out = tmp_path_factory.mktemp("labelled")
    generate_corpus(out, seed=5, n_firms=30, n_list_pages=4, style="dense")  # 4 directory pages, ~300 labels
    source = SourceConfig(name="firm_directory", role="target", direction="vertical", path=out / "firm_directory")
    pages, rejected = scan_pages(source, out / "render")
    assert rejected == [] and len(pages) == 4
    labels, rejected = read_labels(source, set(pages["file"]))
    assert rejected == [] and labels is not None
    return source, pages, labels


def test_which_classifier_a_source_gets(directory) -> None:
    source, pages, labels = directory
    assert region_training.classifier_name(pages, None, source.name) == "default"
    two_pages = labels[labels["page"].isin(sorted(labels["page"].unique())[:2])]
    assert region_training.classifier_name(pages, two_pages, source.name) == "default"  # too few pages
    only_body = labels[labels["role"] == "body"]
    assert region_training.classifier_name(pages, only_body, source.name) == "default"  # a single kind
    name = region_training.classifier_name(pages, labels, source.name)
    assert name.startswith("source:firm_directory@")
    edited = labels.assign(role=labels["role"].where(labels.index != labels.index[0], "body"))
    assert region_training.classifier_name(pages, edited, source.name) not in (name, "default")  # new labels refit


def test_labelled_pages_are_classified_by_models_fitted_on_other_pages(directory) -> None:
    source, pages, labels = directory
    fitted = region_training.source_classifiers(pages, labels, source.direction, source.name)
    assert fitted.name == region_training.classifier_name(pages, labels, source.name)
    assert set(fitted.by_page) == set(pages["page_id"])
    # four labelled pages, four folds: four different models, none of them the one fitted on all pages
    models = {id(fitted.for_page(p)) for p in pages["page_id"]}
    assert len(models) == 4 and id(fitted.other) not in models
    assert fitted.for_page("a page without labels") is fitted.other


def test_layout_regions_name_the_classifier_that_ran(directory) -> None:
    source, pages, _ = directory
    regions, rejected = detect_page_regions(pages, source)
    assert rejected == []
    assert set(regions["classifier"]) == {expected_classifier(source, pages)}
    assert regions["classifier"].iloc[0].startswith("source:firm_directory@")
    shipped, _ = detect_page_regions(pages, source, source_classifier=False)
    assert set(shipped["classifier"]) == {"default"}
    assert set(regions["kind"]) == set(shipped["kind"]) == {"heading", "entry", "body"}


def test_a_new_page_of_a_labelled_source_gets_the_source_classifier(directory) -> None:
    """An incremental run detects only the new page, but with the classifier fitted on the whole source, so the
    next run keeps its regions instead of detecting it again."""
    from linkage_pipeline.documents.chain import detect_page_regions_incremental

    source, pages, _ = directory
    first = detect_page_regions_incremental(pages, source, None)
    missing = pages["page_id"].iloc[3]  # as if that page had just been added
    grown = detect_page_regions_incremental(pages, source, first.rows[first.rows["page_id"] != missing])
    assert (grown.done, grown.reused) == (1, 3)
    assert set(grown.rows["classifier"]) == {expected_classifier(source, pages)}
    again = detect_page_regions_incremental(pages, source, grown.rows)
    assert (again.done, again.reused) == (0, 4)
