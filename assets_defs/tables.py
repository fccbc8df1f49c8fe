"""Table sources (CSV/Parquet): records per table source, then Fellegi-Sunter patterns, model, links and clusters."""


import dagster as dg
import pandas as pd

from assets_defs._common import (
    changed_partitions_result,
    latest_materialization,
    preview,
    runs_in_progress,
    write_rejections,
)
from assets_defs.jobs import table_job, table_linkage_job
from linkage_pipeline import schema
from linkage_pipeline.config import TableRegistry
from linkage_pipeline.probabilistic import charts as probabilistic_charts
from linkage_pipeline.probabilistic import records as probabilistic_records
from linkage_pipeline.probabilistic import tables
from linkage_pipeline.store import Store
from resources import ComputeResource, LinkageStore

#: Name of the dynamic partitions set of table sources (beside the document sources' set).
TABLE_PARTITIONS_NAME = "table_source"
table_sources_partitions = dg.DynamicPartitionsDefinition(name=TABLE_PARTITIONS_NAME)


@dg.multi_asset(
    specs=[
        dg.AssetSpec("table_sources", group_name="tables", kinds={"duckdb"},
                     description="One row per table source declared in sources.yaml; refreshed when sources.yaml "
                                 "changes."),
        dg.AssetSpec("table_linkages", group_name="tables", kinds={"duckdb"},
                     description="One row per table linkage declared in sources.yaml; refreshed with table_sources."),
    ],
    pool="duckdb",
)
def table_sources(linkage_store: LinkageStore):
    """Writes the table sources and table linkages of sources.yaml (and its rejected entries)."""
    store, registry = linkage_store.store(), linkage_store.table_registry()
    frame = pd.DataFrame([s.to_record() for s in registry.sources], columns=list(schema.TABLE_SOURCES))
    store.replace_table("table_sources", frame, schema.TABLE_SOURCES)
    linkages = pd.DataFrame([link.to_record() for link in registry.linkages], columns=list(schema.TABLE_LINKAGES))
    store.replace_table("table_linkages", linkages, schema.TABLE_LINKAGES)
    n_rejected = write_rejections(store, "table_sources", "sources_yaml", registry.rejected)
    yield dg.MaterializeResult(asset_key="table_sources", metadata={
        "tables": len(frame), "rejected": n_rejected, "preview": preview(frame)})
    yield dg.MaterializeResult(asset_key="table_linkages", metadata={
        "linkages": len(linkages), "preview": preview(linkages)})


@dg.asset(group_name="tables", partitions_def=table_sources_partitions, deps=["table_sources"], kinds={"parquet"})
def table_records(context: dg.AssetExecutionContext, linkage_store: LinkageStore) -> dg.MaterializeResult:
    """One row per record of a table source, every value as normalised text (rejected rows recorded); refreshed per table source."""
    store = linkage_store.store()
    source = linkage_store.table_registry().get(context.partition_key)
    records, rejected = probabilistic_records.read_table_source(source)
    n = store.write_partition("table_records", source.name, records, probabilistic_records.records_schema(source))
    n_rejected = write_rejections(store, "table_records", source.name, rejected)
    for r in rejected[:20]:
        context.log.warning(f"rejected {r.file}: {r.reason}")
    return dg.MaterializeResult(
        metadata={"records": n, "rejected": n_rejected, "columns": dg.MetadataValue.json(list(source.columns)),
                  "file": source.file, "preview": preview(records)}
    )


def _read_table_records(store: Store, registry: TableRegistry) -> dict[str, pd.DataFrame]:
    """The table_records partition of each table source a linkage reads, as written; sources never read are left out."""
    paths = {name: store.partition_path("table_records", name) for name in tables.linked_sources(registry)}
    return {name: pd.read_parquet(path) for name, path in paths.items() if path.exists()}


@dg.multi_asset(
    specs=[
        dg.AssetSpec("table_comparison_patterns", group_name="tables", kinds={"duckdb"},
                     deps=["table_records", "table_linkages"],
                     description="One row per table linkage and observed agreement pattern with its pair count."),
        dg.AssetSpec("table_model_parameters", group_name="tables", kinds={"duckdb"},
                     deps=["table_comparison_patterns"],
                     description="One row per table linkage, field and level: m, u, match weight and lambda (EM)."),
        dg.AssetSpec("table_links", group_name="tables", kinds={"duckdb"}, deps=["table_model_parameters"],
                     description="One row per linked record pair (probability >= threshold) with its match weight."),
        dg.AssetSpec("table_clusters", group_name="tables", kinds={"duckdb"}, deps=["table_links"],
                     description="One row per record and table linkage with its cluster (singletons included)."),
        dg.AssetSpec("table_linkage_summary", group_name="tables", kinds={"duckdb"}, deps=["table_clusters"],
                     description="One row per table linkage that ran: records, pairs, lambda, EM iterations, links, "
                                 "clusters and seconds."),
    ],
    pool="duckdb",
)
def fellegi_sunter_table_linkage(linkage_store: LinkageStore, compute: ComputeResource):
    """Fits Fellegi-Sunter once per table linkage; the five tables come from that one all-pairs pass and EM."""
    store, registry = linkage_store.store(), linkage_store.table_registry()
    out = tables.run_table_linkages(_read_table_records(store, registry), registry,
                                    device=str(compute.torch_device()), workers=compute.workers())
    write_rejections(store, "table_linkages", "all", out.rejected)
    store.replace_table("table_comparison_patterns", out.patterns, schema.TABLE_COMPARISON_PATTERNS)
    store.replace_table("table_model_parameters", out.parameters, schema.TABLE_MODEL_PARAMETERS)
    store.replace_table("table_linkage_summary", out.summary, schema.TABLE_LINKAGE_SUMMARY)
    store.replace_table("table_links", out.links, schema.TABLE_LINKS)
    store.replace_table("table_clusters", out.clusters, schema.TABLE_CLUSTERS)
    chart_md = probabilistic_charts.match_weight_charts_markdown(out.parameters, store.artifact_dir / "table_linkage")
    per_linkage = out.summary.set_index("linkage")
    yield dg.MaterializeResult(asset_key="table_comparison_patterns", metadata={
        "patterns": len(out.patterns), "pairs": dg.MetadataValue.json(per_linkage["pairs"].to_dict()),
        "rejected_linkages": len(out.rejected), "preview": preview(out.patterns)})
    yield dg.MaterializeResult(asset_key="table_model_parameters", metadata={
        "rows": len(out.parameters), "lambda": dg.MetadataValue.json(per_linkage["lambda"].to_dict()),
        "match_weights": dg.MetadataValue.md(chart_md), "summary": preview(out.summary),
        "fit_diagnostics": dg.MetadataValue.json(out.diagnostics)})
    yield dg.MaterializeResult(asset_key="table_links", metadata={
        "links": len(out.links), "by_linkage": dg.MetadataValue.json(per_linkage["links"].to_dict()),
        "preview": preview(out.links)})
    yield dg.MaterializeResult(asset_key="table_clusters", metadata={
        "records": len(out.clusters), "clusters": dg.MetadataValue.json(per_linkage["clusters"].to_dict()),
        "singletons": int((out.clusters["cluster_size"] == 1).sum()), "preview": preview(out.clusters)})
    yield dg.MaterializeResult(asset_key="table_linkage_summary", metadata={
        "linkages": len(out.summary), "preview": preview(out.summary)})


@dg.sensor(job=table_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def table_source_sensor(context: dg.SensorEvaluationContext, linkage_store: LinkageStore) -> dg.SensorResult:
    """Adds each new table source in sources.yaml as a partition and reads it; rereads a table whose file or entry changed."""
    fingerprints = {s.name: s.fingerprint() for s in linkage_store.table_registry().sources}
    return changed_partitions_result(
        context, fingerprints, TABLE_PARTITIONS_NAME, new_reason="new table source",
        changed_reason="table file or entry changed", nothing="no new or changed table sources",
    )


@dg.sensor(job=table_linkage_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def table_linkage_sensor(context: dg.SensorEvaluationContext, linkage_store: LinkageStore) -> dg.SensorResult:
    """Relinks the tables when their records changed (some table_records partition materialized after the last
    table_links) or a table_linkages entry in sources.yaml changed; waits while table runs are in progress."""
    records = latest_materialization(context.instance, "table_records")
    links = latest_materialization(context.instance, "table_links")
    decision = tables.relink_decision(
        linkage_store.table_registry().linkages, context.cursor,
        records_id=None if records is None else records.storage_id,
        links_id=None if links is None else links.storage_id,
        runs_in_progress=runs_in_progress(context.instance, ("table_job", "table_linkage_job")),
    )
    if decision.run_key is None:
        return dg.SensorResult(skip_reason=decision.reason, cursor=decision.cursor)
    request = dg.RunRequest(run_key=decision.run_key, tags={"linkage/reason": decision.reason})
    return dg.SensorResult(run_requests=[request], cursor=decision.cursor)
