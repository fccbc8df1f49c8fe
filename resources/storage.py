"""The storage resource: the data directory (sources), the DuckDB file and the artifact folder."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from linkage_pipeline.documents.sources import SourceConfig, SourceRegistry, load_sources
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
        return load_sources(self.data_path)

    def source(self, name: str) -> SourceConfig:
        """The configuration of one source; raises with the known names if it is not in sources.yaml."""
        registry = self.registry()
        for src in registry.sources:
            if src.name == name:
                return src
        known = ", ".join(s.name for s in registry.sources) or "none"
        raise ValueError(f"source {name!r} is not in {self.data_path / 'sources.yaml'}; known sources: {known}")
