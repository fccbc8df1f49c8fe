"""Partitions: one dynamic partition per document source."""

from __future__ import annotations

import dagster as dg

#: Name of the dynamic partitions set; sensors and the CLI add sources to it.
SOURCE_PARTITIONS_NAME = "document_source"
document_sources_partitions = dg.DynamicPartitionsDefinition(name=SOURCE_PARTITIONS_NAME)
