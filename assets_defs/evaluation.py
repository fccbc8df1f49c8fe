"""Evaluation assets: detected regions matched to labels, and layout / OCR / linkage scores in DuckDB."""


import json
from collections.abc import Callable, Iterator

import dagster as dg
import pandas as pd

from assets_defs._common import preview, reviews_in_force, selected_results, table_step
from assets_defs.documents import layout_regions, ocr_texts, region_labels
from assets_defs.linking import string_links
from assets_defs.model import all_embedding_inputs
from assets_defs.partitions import document_sources_partitions
from linkage_pipeline import schema
from linkage_pipeline.documents import labels as documents_labels
from linkage_pipeline.evaluation import report
from linkage_pipeline.linking import by_embeddings
from linkage_pipeline.multimodal import registry as model_registry
from linkage_pipeline.review import verdicts
from linkage_pipeline.store import Store
from resources import ComputeResource, LinkageStore


@dg.asset(
    group_name="evaluation",
    partitions_def=document_sources_partitions,
    deps=[layout_regions, region_labels],
    kinds={"parquet"},
)
def labelled_regions(context: dg.AssetExecutionContext, linkage_store: LinkageStore) -> dg.MaterializeResult:
    """One row per detected region matched (IoU >= 0.5, one-to-one) to a labelled box; refreshed per source."""
    store, name = linkage_store.store(), context.partition_key
    regions = store.read_partition("layout_regions", name, schema.LAYOUT_REGIONS)
    pages = store.read_partition("page_images", name, schema.PAGE_IMAGES)
    labels = store.read_partition("region_labels", name, schema.REGION_LABELS)
    matched = documents_labels.label_regions(regions, pages, labels)
    n = store.write_partition("labelled_regions", name, matched, schema.LABELLED_REGIONS)
    empty = {}
    if n == 0:
        why = "no labels (labels.csv or VOC XML)" if labels.empty else "no detected regions" if regions.empty else "no region overlaps a label"
        empty = {"empty": f"no labelled regions in source {name!r}: {why}"}
    return dg.MaterializeResult(metadata={**empty, "matched": n, "regions": len(regions), "labels": len(labels)})


def _evaluation_result(
    linkage_store: LinkageStore,
    name: str,
    contract: dict[str, str],
    make_table: Callable[..., pd.DataFrame],
    inputs: dict[str, dict[str, str]],
    why_empty: str,
) -> dg.MaterializeResult:
    """Reads every partition of the ``inputs`` tables (name -> contract), makes an evaluation table from them in
    that order, writes it and says so in the metadata (with the reason when it has no rows)."""
    store = linkage_store.store()
    table = make_table(*(store.read_partitions(table, columns) for table, columns in inputs.items()))
    store.replace_table(name, table, contract)
    empty = {"empty": why_empty} if table.empty else {}
    return dg.MaterializeResult(metadata={**empty, "rows": len(table), "table": preview(table)})


@dg.asset(group_name="evaluation", deps=[labelled_regions], kinds={"duckdb"}, pool="duckdb")
def layout_evaluation(linkage_store: LinkageStore) -> dg.MaterializeResult:
    """One row per labelled source: precision and recall of detected regions at IoU >= 0.5; refreshed on demand."""
    inputs = {"layout_regions": schema.LAYOUT_REGIONS, "page_images": schema.PAGE_IMAGES,
              "region_labels": schema.REGION_LABELS, "labelled_regions": schema.LABELLED_REGIONS}
    return _evaluation_result(linkage_store, "layout_evaluation", schema.LAYOUT_EVALUATION,
                              report.layout_evaluation_table, inputs,
                              "no labelled source: no labels.csv rows to score layout on")


@dg.asset(group_name="evaluation", deps=[labelled_regions, ocr_texts], kinds={"duckdb"}, pool="duckdb")
def ocr_evaluation(linkage_store: LinkageStore) -> dg.MaterializeResult:
    """One row per labelled source and OCR engine: character error rate on matched regions; refreshed on demand."""
    inputs = {"region_crops": schema.REGION_CROPS, "ocr_texts": schema.OCR_TEXTS,
              "labelled_regions": schema.LABELLED_REGIONS}
    return _evaluation_result(linkage_store, "ocr_evaluation", schema.OCR_EVALUATION, report.ocr_evaluation_table,
                              inputs, "no OCR text of a labelled region to score")


class LinkageEvaluationConfig(dg.Config):
    """Whether to add the self-supervised rows (the linkage model before supervised training, when known), and how
    their pooling weight is chosen where a text condition has too few validation queries: ``mutual`` (the
    mutual-neighbour rule) or ``card`` (the linkage model's card weight), as ``faiss_index``'s
    ``unlabelled_weight`` chooses the supervised model's (set both alike); likewise ``unlabelled_string_weight``
    for the string weight of their hybrid rows (``votes`` or ``none``, as ``embedding_links``')."""

    self_supervised: bool = True
    unlabelled_weight: str = "mutual"
    unlabelled_string_weight: str = "votes"


def _index_weights(store: Store, model: pd.Series | None) -> dict[str, float] | None:
    """The pooling weight per text condition of the linkage model's multimodal indexes (``faiss_indexes``)."""
    if model is None or not store.table_exists("faiss_indexes"):
        return None
    return by_embeddings.index_weights(store.read_table("faiss_indexes"), str(model["model_id"]))


@table_step(
    dg.AssetSpec(
        "linkage_evaluation",
        deps=[string_links, "embedding_links", "stg_regions", "linkage_model", "link_reviews"],
        kinds={"duckdb"},
        description="One row per linking method, training and OCR condition and split: top-1 accuracy as in "
        "CLIPPINGS Table 1 / S-2; refreshed on demand.",
    ),
    dg.AssetSpec(
        "self_supervised_embeddings",
        deps=["linkage_model", "layout_regions", "region_crops", "ocr_texts", "labelled_regions"],
        kinds={"parquet"},
        skippable=True,  # written only when the linkage model names its pretrained start
        description="One row per crop and text condition embedded with the linkage model's pretrained start "
        "(kept between runs: only new crops are embedded); refreshed with linkage_evaluation.",
    ),
    group="evaluation",
)
def linkage_evaluation(
    context: dg.AssetExecutionContext, config: LinkageEvaluationConfig, linkage_store: LinkageStore,
    compute: ComputeResource,
) -> Iterator[dg.MaterializeResult]:
    """Both tables come from one computation, so both are written whichever of them is selected."""
    store, registry = linkage_store.store(), linkage_store.registry()
    has_model = store.table_exists("embedding_links") and store.table_exists("linkage_model")
    model = store.read_table("linkage_model").iloc[0] if has_model else None
    pretrained = inputs = cached = None
    reviews = reviews_in_force(store)
    if model is not None:  # a model fine-tuned on reviews is scored on the half it never learnt from
        fine_tuned = model_registry.fine_tuned_on_reviews(str(model["path"]))
        reviews = verdicts.reviews_for_tuning(reviews, fine_tuned=fine_tuned)
    if model is not None and config.self_supervised and model["pretrained_path"]:
        pretrained, inputs = compute.encoder(model["pretrained_path"]), all_embedding_inputs(store)
        cached = store.read_partition("self_supervised_embeddings", "all", schema.CROP_EMBEDDINGS)
    choices: dict[str, object] = {}
    table, embedded = report.linkage_evaluation_report(
        store.read_table("string_links"), store.read_table("stg_regions"),
        embedding_links=store.read_table("embedding_links") if has_model else None, model=model,
        linkages=[(lk.query, lk.target) for lk in registry.linkages], pretrained=pretrained, inputs=inputs, cached=cached,
        weights=_index_weights(store, model), reviews=reviews, unlabelled=config.unlabelled_weight,
        unlabelled_string_weight=config.unlabelled_string_weight, choices=choices,
    )
    if embedded is not None:  # one fixed partition: the cache spans every source
        n = store.write_partition("self_supervised_embeddings", "all", embedded, schema.CROP_EMBEDDINGS)
        yield from selected_results(context, dg.MaterializeResult(asset_key="self_supervised_embeddings",
                                                                  metadata={"rows": n}))
    store.replace_table("linkage_evaluation", table, schema.LINKAGE_EVALUATION)
    empty = {"empty": "no labelled query with a link: no links, or no labels on the query sources"} if table.empty else {}
    yield from selected_results(context, dg.MaterializeResult(asset_key="linkage_evaluation", metadata={
        **empty, "rows": len(table), "model_id": "" if model is None else str(model["model_id"]),
        "table_1_test": dg.MetadataValue.md(report.table_one_markdown(table, "test", "top1_accuracy")),
        "table_s2_test": dg.MetadataValue.md(report.table_one_markdown(table, "test", "top1_accuracy_with_nomatch")),
        "reviewed": dg.MetadataValue.md(report.table_one_markdown(table, "reviewed", "top1_accuracy")),
        "table": preview(table, n=60), **_self_supervised_choices(choices),
    }))


def _self_supervised_choices(choices: dict[str, object]) -> dict[str, object]:
    """Metadata: the pooling and string weights the self-supervised rows used, and how the string weights were
    chosen."""
    if not choices:
        return {}
    table = choices["self_supervised_string_table"]
    assert isinstance(table, pd.DataFrame)
    return {"self_supervised_pooling_weights": json.dumps(choices["self_supervised_pooling"]),
            "self_supervised_string_weights": preview(table.drop(columns=["val_top1_by_weight",
                                                                          "agreement_by_weight"]))}
