"""Evaluation assets: detected regions matched to labels, and layout / OCR / linkage scores in DuckDB."""


import dagster as dg
import pandas as pd

from assets_defs._common import preview
from assets_defs.documents import layout_regions, ocr_texts, region_labels
from assets_defs.linking import string_links
from assets_defs.model import all_embedding_inputs
from assets_defs.partitions import document_sources_partitions
from linkage_pipeline import schema
from linkage_pipeline.documents import labels as documents_labels
from linkage_pipeline.evaluation import report
from linkage_pipeline.linking import by_embeddings
from linkage_pipeline.multimodal import embed
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
        why = "no labels.csv rows" if labels.empty else "no detected regions" if regions.empty else "no region overlaps a label"
        empty = {"empty": f"no labelled regions in source {name!r}: {why}"}
    return dg.MaterializeResult(metadata={**empty, "matched": n, "regions": len(regions), "labels": len(labels)})


def _evaluation_result(store, name: str, table: pd.DataFrame, contract: dict, why_empty: str) -> dg.MaterializeResult:
    """Writes an evaluation table and says so in the metadata (with the reason when it has no rows)."""
    store.replace_table(name, table, contract)
    empty = {"empty": why_empty} if table.empty else {}
    return dg.MaterializeResult(metadata={**empty, "rows": len(table), "table": preview(table)})


@dg.asset(group_name="evaluation", deps=[labelled_regions], kinds={"duckdb"}, pool="duckdb")
def layout_evaluation(linkage_store: LinkageStore) -> dg.MaterializeResult:
    """One row per labelled source: precision and recall of detected regions at IoU >= 0.5; refreshed on demand."""
    store = linkage_store.store()
    table = report.layout_evaluation_table(
        store.read_partitions("layout_regions", schema.LAYOUT_REGIONS),
        store.read_partitions("page_images", schema.PAGE_IMAGES),
        store.read_partitions("region_labels", schema.REGION_LABELS),
        store.read_partitions("labelled_regions", schema.LABELLED_REGIONS),
    )
    return _evaluation_result(store, "layout_evaluation", table, schema.LAYOUT_EVALUATION,
                              "no labelled source: no labels.csv rows to score layout on")


@dg.asset(group_name="evaluation", deps=[labelled_regions, ocr_texts], kinds={"duckdb"}, pool="duckdb")
def ocr_evaluation(linkage_store: LinkageStore) -> dg.MaterializeResult:
    """One row per labelled source and OCR engine: character error rate on matched regions; refreshed on demand."""
    store = linkage_store.store()
    table = report.ocr_evaluation_table(
        store.read_partitions("region_crops", schema.REGION_CROPS),
        store.read_partitions("ocr_texts", schema.OCR_TEXTS),
        store.read_partitions("labelled_regions", schema.LABELLED_REGIONS),
    )
    return _evaluation_result(store, "ocr_evaluation", table, schema.OCR_EVALUATION,
                              "no OCR text of a labelled region to score")


class LinkageEvaluationConfig(dg.Config):
    """Whether to add the self-supervised rows (the linkage model before supervised training, when known)."""

    self_supervised: bool = True


@dg.asset(
    group_name="evaluation",
    deps=[string_links, "embedding_links", "stg_regions", "linkage_model"],
    kinds={"duckdb"},
    pool="duckdb",
)
def linkage_evaluation(
    config: LinkageEvaluationConfig, linkage_store: LinkageStore, compute: ComputeResource
) -> dg.MaterializeResult:
    """One row per linking method, training and OCR condition and split: top-1 accuracy as in CLIPPINGS Table 1 / S-2."""
    store, registry = linkage_store.store(), linkage_store.registry()
    regions = store.read_table("stg_regions")
    frames = [report.linkage_evaluation_table(store.read_table("string_links"), regions)]
    model_id = ""
    if store.table_exists("embedding_links") and store.table_exists("linkage_model"):
        model = store.read_table("linkage_model").iloc[0]
        model_id = str(model["model_id"])
        emb = store.read_table("embedding_links")
        emb = emb[(emb["model_id"] == model_id) & (emb["training"] == "supervised")]
        frames.append(report.linkage_evaluation_table(emb, regions, training="supervised"))
        if config.self_supervised and model["pretrained_path"]:
            pretrained = compute.encoder(model["pretrained_path"])
            # kept between runs like crop_embeddings: only crops new to the pretrained model are embedded
            cached = store.read_partition("self_supervised_embeddings", "all", schema.CROP_EMBEDDINGS)
            embedded, _ = embed.embed_crops(pretrained, all_embedding_inputs(store), existing=cached)
            store.write_partition("self_supervised_embeddings", "all", embedded, schema.CROP_EMBEDDINGS)
            links = by_embeddings.embedding_links(
                embedded, [(lk.query, lk.target) for lk in registry.linkages],
                weight=float(model["pooling_weight"]), training="self_supervised",
            )
            frames.append(report.linkage_evaluation_table(links, regions, training="self_supervised"))
    table = pd.concat([f for f in frames if not f.empty], ignore_index=True) if any(not f.empty for f in frames) else frames[0]
    store.replace_table("linkage_evaluation", table, schema.LINKAGE_EVALUATION)
    empty = {"empty": "no labelled query with a link: no links, or no labels on the query sources"} if table.empty else {}
    return dg.MaterializeResult(
        metadata={
            **empty,
            "rows": len(table),
            "model_id": model_id,
            "table_1_test": dg.MetadataValue.md(report.table_one_markdown(table, "test", "top1_accuracy")),
            "table_s2_test": dg.MetadataValue.md(report.table_one_markdown(table, "test", "top1_accuracy_with_nomatch")),
            "table": preview(table, n=60),
        }
    )
