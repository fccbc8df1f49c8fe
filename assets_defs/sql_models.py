"""One asset per SQL model in dbt_like_sql/, with its `-- depends_on:` header as the asset's deps."""


import hashlib
from pathlib import Path

import dagster as dg

from linkage_pipeline import schema
from linkage_pipeline.store import SqlModel, Store, load_sql_models
from resources import LinkageStore

SQL_DIR = Path(__file__).resolve().parent.parent / "dbt_like_sql"
#: The per-source tables the SQL models read (DuckDB views over one Parquet file per source), with their columns.
PER_SOURCE_TABLES = {
    "page_images": schema.PAGE_IMAGES,
    "layout_regions": schema.LAYOUT_REGIONS,
    "region_crops": schema.REGION_CROPS,
    "ocr_texts": schema.OCR_TEXTS,
    "labelled_regions": schema.LABELLED_REGIONS,
}


def ensure_per_source_views(store: Store, model: SqlModel) -> list[str]:
    """Creates the views of the per-source tables ``model`` reads that no source has written yet (a data
    directory of tables only, or a source not run yet), so the model reads them as empty; returns their names."""
    missing = [dep for dep in model.depends_on if dep in PER_SOURCE_TABLES and not store.table_exists(dep)]
    for dep in missing:
        # the view write_partition creates: over the table's partition files and its schema file, so the first
        # partition written later shows through it
        store.ensure_view(dep, PER_SOURCE_TABLES[dep])
    return missing


def _sql_asset(model: SqlModel) -> dg.AssetsDefinition:
    description = next(
        (line.lstrip("- ").strip() for line in model.sql.splitlines() if line.startswith("--")), f"SQL model {model.name}"
    )

    @dg.asset(
        name=model.name,
        deps=list(model.depends_on),
        group_name=f"sql_{model.layer}",
        kinds={"duckdb", "sql"},
        pool="duckdb",
        description=description,
        code_version=hashlib.sha256(model.sql.encode()).hexdigest()[:12],
        metadata={"sql": dg.MetadataValue.md(f"```sql\n{model.sql}\n```"), "path": str(model.path.relative_to(SQL_DIR.parent))},
    )
    def _run(linkage_store: LinkageStore) -> dg.MaterializeResult:
        store = linkage_store.store()
        empty = ensure_per_source_views(store, model)
        n = store.run_sql_model(model)
        return dg.MaterializeResult(metadata={"rows": n, "empty_inputs": dg.MetadataValue.json(empty)})

    return _run


sql_model_assets = [_sql_asset(m) for m in load_sql_models(SQL_DIR)]
