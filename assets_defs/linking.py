"""Cross-source linking assets: string links (the baseline) and the record links the network is built on."""


import time

import dagster as dg

from assets_defs._common import check_result, preview
from linkage_pipeline import quality, stages
from linkage_pipeline.strings import STRING_METHODS
from resources import ComputeResource, LinkageStore


class RecordLinkConfig(dg.Config):
    """Which string method and text condition feed the record links (until the multimodal model exists)."""

    method: str = "auto"  # "auto": the method/condition with the best validation accuracy when labels exist
    condition: str = "auto"  # an OCR engine name; "auto": the query source's primary OCR engine
    threshold: float = -1.0  # no-match threshold; < 0: tuned on the validation split when labels exist
    margin: float = 0.0  # also keep further targets within this score of the best (one firm listed twice)


@dg.asset(group_name="linking", deps=["stg_crop_texts", "document_sources"], kinds={"duckdb"}, pool="duckdb")
def string_links(linkage_store: LinkageStore, compute: ComputeResource) -> dg.MaterializeResult:
    """One row per query crop, target crop and string method/text condition among the top 5; refreshed on demand."""
    store, registry = linkage_store.store(), linkage_store.registry()
    t0 = time.perf_counter()
    links = stages.link_sources_by_strings(
        store.read_table("stg_crop_texts"),
        [(lk.query, lk.target) for lk in registry.linkages],
        methods=STRING_METHODS,
        workers=compute.workers(),
    )
    seconds = time.perf_counter() - t0
    n = store.replace_table("string_links", links, stages.STRING_LINKS)
    return dg.MaterializeResult(metadata={"rows": n, "seconds": seconds, "preview": preview(links)})


@dg.asset(
    group_name="linking",
    deps=[string_links, "stg_regions"],
    kinds={"duckdb"},
    pool="duckdb",
    check_specs=[dg.AssetCheckSpec("record_links_score_spread", asset="record_links", blocking=True,
                                   description="top-1 scores have not collapsed to one value")],
)
def record_links(config: RecordLinkConfig, linkage_store: LinkageStore) -> dg.MaterializeResult:
    """One row per accepted query -> target link (or a no-match row per unlinked query); refreshed on demand."""
    store = linkage_store.store()
    links, choice = stages.select_record_links(
        store.read_table("string_links"),
        store.read_table("stg_regions"),
        method=config.method,
        condition=config.condition,
        threshold=None if config.threshold < 0 else config.threshold,
        margin=config.margin,
    )
    n = store.replace_table("record_links", links, stages.RECORD_LINKS)
    return dg.MaterializeResult(
        check_results=[check_result("record_links_score_spread", quality.score_spread(links))],
        metadata={"rows": n, "matched": int(links["matched"].sum()), **choice, "preview": preview(links)},
    )
