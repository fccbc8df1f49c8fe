"""The storage resource: the data directory (sources), the DuckDB file and the artifact folder."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from linkage_pipeline.config import (
    SourceConfig,
    SourceRegistry,
    TableRegistry,
    load_sources,
    load_table_sources,
)
from linkage_pipeline.store import Store


class LinkageStore(dg.ConfigurableResource):
    """Where the corpus is read from and where every table is written.

    ``data_dir`` holds ``sources.yaml`` and one folder per document source. ``database`` (the DuckDB file) and
    ``artifact_dir`` (Parquet partitions, crops, plots) default to ``<data_dir>/_pipeline/``.
    """

    data_dir: str
    database: str = ""
    artifact_dir: str = ""

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def artifact_path(self) -> Path:
        return Path(self.artifact_dir).expanduser().resolve() if self.artifact_dir else self.data_path / "_pipeline"

    @property
    def database_path(self) -> Path:
        return Path(self.database).expanduser().resolve() if self.database else self.artifact_path / "linkage.duckdb"

    def store(self) -> Store:
        return Store(self.database_path, self.artifact_path)

    def registry(self) -> SourceRegistry:
        """The document sources of sources.yaml, read afresh.

        Every asset, sensor tick and schedule calls this, so a rejection already logged by an earlier read of the
        unchanged file in this process is not logged again (it is recorded in ``rejected_inputs`` by
        ``document_sources``).
        """
        return load_sources(self.data_path, log_repeats=False)

    def table_registry(self) -> TableRegistry:
        """The table sources and table linkages of sources.yaml, read afresh (rejections logged as by
        :meth:`registry`)."""
        return load_table_sources(self.data_path, log_repeats=False)

    def source(self, name: str) -> SourceConfig:
        """The configuration of one source; raises with the known names if it is not in sources.yaml."""
        registry = self.registry()
        for src in registry.sources:
            if src.name == name:
                return src
        known = ", ".join(s.name for s in registry.sources) or "none"
        raise ValueError(f"source {name!r} is not in {self.data_path / 'sources.yaml'}; known sources: {known}")
