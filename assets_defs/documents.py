"""Per-source assets: pages -> layout regions -> crops -> OCR texts, plus the labels used for evaluation."""


import time
from collections.abc import Iterator

import dagster as dg
import pandas as pd

from assets_defs._common import (
    check_result,
    preview,
    selected_results,
    table_step,
    write_rejections,
)
from assets_defs.partitions import document_sources_partitions
from linkage_pipeline import schema
from linkage_pipeline.documents import chain
from linkage_pipeline.documents.labels import read_labels
from linkage_pipeline.documents.pages import scan_pages
from linkage_pipeline.evaluation import quality
from resources import EnginesResource, LinkageStore


class IncrementalConfig(dg.Config):
    """Per-source stages keep the rows of unchanged pages, regions and crops from the source's last run."""

    recompute: bool = False  # True: redo every page, region and crop of the source (e.g. after an engine upgrade)


def _write_logged_rejections(
    context: dg.AssetExecutionContext, store, stage: str, source: str, rejected: list
) -> int:
    """:func:`write_rejections`, with a warning in the run's log for each rejected file."""
    n = write_rejections(store, stage, source, rejected)
    for r in rejected:
        context.log.warning(f"rejected {r.source}/{r.file}: {r.reason}")
    return n


@table_step(
    dg.AssetSpec("document_sources", kinds={"duckdb"},
                 description="One row per document source declared in sources.yaml; refreshed when "
                 "sources.yaml changes."),
    dg.AssetSpec("source_linkages", kinds={"duckdb"},
                 description="One row per linkage (query source -> target source) declared in sources.yaml; "
                 "refreshed with document_sources."),
    group="documents",
)
def document_sources(context: dg.AssetExecutionContext, linkage_store: LinkageStore) -> Iterator[dg.MaterializeResult]:
    """Both tables (and the rejected entries of sources.yaml) are written whichever of them is selected."""
    store, registry = linkage_store.store(), linkage_store.registry()
    frame = pd.DataFrame([s.to_record() for s in registry.sources], columns=list(schema.DOCUMENT_SOURCES))
    store.replace_table("document_sources", frame, schema.DOCUMENT_SOURCES)
    linkages = pd.DataFrame([vars(lk) for lk in registry.linkages], columns=list(schema.SOURCE_LINKAGES))
    n_linkages = store.replace_table("source_linkages", linkages, schema.SOURCE_LINKAGES)
    n_rejected = write_rejections(store, "sources", "sources_yaml", registry.rejected)
    yield from selected_results(
        context,
        dg.MaterializeResult(asset_key="document_sources", metadata={
            "sources": len(frame), "linkages": len(registry.linkages), "rejected": n_rejected, "preview": preview(frame)}),
        dg.MaterializeResult(asset_key="source_linkages", metadata={"rows": n_linkages, "preview": preview(linkages)}),
    )


@dg.asset(group_name="documents", partitions_def=document_sources_partitions, deps=["document_sources"], kinds={"parquet"})
def page_images(context: dg.AssetExecutionContext, linkage_store: LinkageStore) -> dg.MaterializeResult:
    """One row per page image of a source (PDF and multi-frame TIFF pages rendered to PNG); refreshed per source."""
    store, source = linkage_store.store(), linkage_store.source(context.partition_key)
    t0 = time.perf_counter()
    fingerprint = source.fingerprint()
    pages, rejected = scan_pages(source, store.artifact_dir / "rendered" / source.name)
    n = store.write_partition("page_images", source.name, pages, schema.PAGE_IMAGES)
    n_rejected = _write_logged_rejections(context, store, "page_images", source.name, rejected)
    seconds = time.perf_counter() - t0
    return dg.MaterializeResult(
        metadata={"pages": n, "rejected": n_rejected, "seconds": seconds, "pages_per_s": n / max(seconds, 1e-9),
                  "fingerprint": fingerprint, "preview": preview(pages)}
    )


@dg.asset(group_name="evaluation", partitions_def=document_sources_partitions, deps=[page_images], kinds={"parquet"})
def region_labels(context: dg.AssetExecutionContext, linkage_store: LinkageStore) -> dg.MaterializeResult:
    """One row per labelled region in a source's labels.csv, or in its PASCAL VOC files when it has no labels.csv
    (ground truth for evaluation); refreshed per source."""
    store, source = linkage_store.store(), linkage_store.source(context.partition_key)
    labels, rejected = read_labels(source)
    frame = pd.DataFrame(columns=list(schema.REGION_LABELS)) if labels is None else labels.assign(source=source.name, label_index=range(len(labels)))
    n = store.write_partition("region_labels", source.name, frame, schema.REGION_LABELS)
    n_rejected = write_rejections(store, "region_labels", source.name, rejected)
    return dg.MaterializeResult(metadata={"labels": n, "has_labels": labels is not None, "rejected": n_rejected})


@dg.asset(
    group_name="layout",
    partitions_def=document_sources_partitions,
    deps=[page_images],
    kinds={"parquet"},
    check_specs=[
        dg.AssetCheckSpec("layout_regions_on_every_page", asset="layout_regions",
                          description="every inked page has at least one detected region"),
        dg.AssetCheckSpec("layout_regions_per_page_bounded", asset="layout_regions",
                          description="no page holds more regions than its size allows at its type size "
                          "(W*H / (2.2 * type size^2)); more means the detector read scan noise"),
    ],
)
def layout_regions(
    context: dg.AssetExecutionContext, config: IncrementalConfig, linkage_store: LinkageStore
) -> dg.MaterializeResult:
    """One row per detected name region (title, heading or entry) on a page; refreshed per source (new pages only)."""
    store, source = linkage_store.store(), linkage_store.source(context.partition_key)
    pages = store.read_partition("page_images", source.name, schema.PAGE_IMAGES)
    previous = None if config.recompute else store.read_partition("layout_regions", source.name, schema.LAYOUT_REGIONS)
    result = chain.detect_page_regions_incremental(pages, source, previous)
    regions = result.rows
    n = store.write_partition("layout_regions", source.name, regions, schema.LAYOUT_REGIONS)
    n_rejected = _write_logged_rejections(context, store, "layout_regions", source.name, result.rejected)
    return dg.MaterializeResult(
        check_results=[
            check_result("layout_regions_on_every_page", quality.pages_without_regions(pages, regions)),
            check_result("layout_regions_per_page_bounded", quality.regions_per_page(pages, regions)),
        ],
        metadata={
            "regions": n,
            "by_kind": dg.MetadataValue.json(regions["kind"].value_counts().to_dict()),
            "rejected": n_rejected,
            "pages_detected": result.done,
            "pages_reused": result.reused,
            "seconds": result.seconds["layout"],
            "preview": preview(regions),
        }
    )


@dg.asset(group_name="crops", partitions_def=document_sources_partitions, deps=[layout_regions], kinds={"parquet"})
def region_crops(
    context: dg.AssetExecutionContext, config: IncrementalConfig, linkage_store: LinkageStore
) -> dg.MaterializeResult:
    """One row per region crop: a tight PNG for OCR and its square padding for the encoders; refreshed per source."""
    store, source = linkage_store.store(), linkage_store.source(context.partition_key)
    pages = store.read_partition("page_images", source.name, schema.PAGE_IMAGES)
    regions = store.read_partition("layout_regions", source.name, schema.LAYOUT_REGIONS)
    previous = None if config.recompute else store.read_partition("region_crops", source.name, schema.REGION_CROPS)
    result = chain.extract_crops_incremental(pages, regions, source, store.artifact_dir / "crops", previous)
    n = store.write_partition("region_crops", source.name, result.rows, schema.REGION_CROPS)
    n_rejected = write_rejections(store, "region_crops", source.name, result.rejected)
    return dg.MaterializeResult(
        metadata={"crops": n, "crops_cut": result.done, "crops_reused": result.reused, "rejected": n_rejected,
                  "seconds": result.seconds["crops"]}
    )


@dg.asset(
    group_name="ocr",
    partitions_def=document_sources_partitions,
    deps=[region_crops],
    kinds={"parquet"},
    check_specs=[dg.AssetCheckSpec("ocr_texts_empty_share", asset="ocr_texts",
                                   description="at most 5% of crops per engine come back without text")],
)
def ocr_texts(
    context: dg.AssetExecutionContext, config: IncrementalConfig, linkage_store: LinkageStore, engines: EnginesResource
) -> dg.MaterializeResult:
    """One row per crop and OCR engine with the text read and its confidence; refreshed per source (new crops only)."""
    store, source = linkage_store.store(), linkage_store.source(context.partition_key)
    crops = store.read_partition("region_crops", source.name, schema.REGION_CROPS)
    previous = None if config.recompute else store.read_partition("ocr_texts", source.name, schema.OCR_TEXTS)
    result = chain.read_crops_incremental(crops, source, {name: engines.ocr_engine(name) for name in source.ocr}, previous)
    texts = result.rows
    n = store.write_partition("ocr_texts", source.name, texts, schema.OCR_TEXTS)
    per_engine = {e: {"seconds": round(s, 2)} for e, s in result.seconds.items()}
    return dg.MaterializeResult(
        check_results=[check_result("ocr_texts_empty_share", quality.empty_text_share(texts), warn_only=True)],
        metadata={"rows": n, "crops_read": result.done, "crops_reused": result.reused,
                  "engines": dg.MetadataValue.json(per_engine), "preview": preview(texts)},
    )
