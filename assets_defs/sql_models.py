"""One asset per SQL model in dbt_like_sql/, with its `-- depends_on:` header as the asset's deps."""


import hashlib
from pathlib import Path

import dagster as dg

from linkage_pipeline.store import SqlModel, load_sql_models
from resources import LinkageStore

SQL_DIR = Path(__file__).resolve().parent.parent / "dbt_like_sql"


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
        n = store.run_sql_model(model)
        return dg.MaterializeResult(metadata={"rows": n})

    return _run


sql_model_assets = [_sql_asset(m) for m in load_sql_models(SQL_DIR)]
