"""Document sources: the registry (``sources.yaml``), page loading and ground-truth labels.

Only the light public API is re-exported here; the synthetic corpus lives in its own modules
(``documents.firms``, ``documents.synthetic``) and is imported from there.
"""

from __future__ import annotations

from linkage_pipeline.documents.pages import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_PDF_DPI,
    SUPPORTED_SUFFIXES,
    empty_pages_frame,
    ink_fraction,
    load_page_image,
    read_labels,
    scan_pages,
)
from linkage_pipeline.documents.sources import (
    Linkage,
    Rejection,
    SourceConfig,
    SourceRegistry,
    check_source_name,
    load_sources,
    rejections_frame,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_PDF_DPI",
    "SUPPORTED_SUFFIXES",
    "Linkage",
    "Rejection",
    "SourceConfig",
    "SourceRegistry",
    "check_source_name",
    "empty_pages_frame",
    "ink_fraction",
    "load_page_image",
    "load_sources",
    "read_labels",
    "rejections_frame",
    "scan_pages",
]
