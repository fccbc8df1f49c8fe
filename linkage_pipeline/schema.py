"""Column contracts of the tables that cross stages.

Every per-source table is stored as one Parquet file per document source and exposed in DuckDB as a view of
the same name; cross-source tables are DuckDB tables. Ids are content hashes so that re-runs give the same ids.
"""

from __future__ import annotations

#: Roles a labelled or detected region can take (DESIGN section 4).
REGION_KINDS = ("title", "heading", "entry")
#: Roles in ``labels.csv``; ``supplier``/``customer`` entries on lists map to the detected kind ``entry``.
LABEL_ROLES = ("title", "heading", "supplier", "customer", "entry")
TEXT_DIRECTIONS = ("horizontal", "vertical")
SOURCE_ROLES = ("query", "target")

#: One row per page image (a PDF contributes one row per page).
PAGE_IMAGES = {
    "page_id": "VARCHAR",  # sha256(file bytes)[:16] + ("-p<n>" for PDF pages)
    "source": "VARCHAR",
    "file": "VARCHAR",  # path relative to the source's pages/ folder, as written in labels.csv `page`
    "page_number": "INTEGER",  # 0 for single images, 0-based page index inside a PDF
    "image_path": "VARCHAR",  # absolute path of the image to read (the original, or the rendered PDF page)
    "width": "INTEGER",
    "height": "INTEGER",
    "sha256": "VARCHAR",  # of the original file
}

#: One row per rejected input (file, page or source), with the reason in words.
REJECTED_INPUTS = {
    "source": "VARCHAR",
    "file": "VARCHAR",
    "stage": "VARCHAR",  # sources | page_images | layout_regions | region_crops | ocr_texts
    "reason": "VARCHAR",
}

#: One row per detected text region on a page, in reading order.
LAYOUT_REGIONS = {
    "region_id": "VARCHAR",  # sha256(page_id, box, kind)[:16]
    "source": "VARCHAR",
    "page_id": "VARCHAR",
    "x0": "INTEGER",
    "y0": "INTEGER",
    "x1": "INTEGER",
    "y1": "INTEGER",
    "kind": "VARCHAR",  # title | heading | entry
    "reading_order": "INTEGER",  # 0-based position on the page
    "score": "DOUBLE",
    "detector": "VARCHAR",
    "direction": "VARCHAR",
}

#: One row per cropped region: a tight crop (for OCR) and its CLIPPINGS square padding (for the encoders).
REGION_CROPS = {
    "crop_id": "VARCHAR",  # sha256 of the tight crop's PNG bytes[:16]
    "region_id": "VARCHAR",
    "source": "VARCHAR",
    "page_id": "VARCHAR",
    "crop_path": "VARCHAR",
    "square_path": "VARCHAR",
    "width": "INTEGER",
    "height": "INTEGER",
    "direction": "VARCHAR",
}

#: One row per labelled box of a source's labels.csv (ground truth; layout-only labels have no text or entity).
REGION_LABELS = {
    "source": "VARCHAR",
    "label_index": "INTEGER",
    "page": "VARCHAR",
    "x0": "INTEGER",
    "y0": "INTEGER",
    "x1": "INTEGER",
    "y1": "INTEGER",
    "text": "VARCHAR",
    "entity_id": "VARCHAR",
    "role": "VARCHAR",
}

#: One row per crop and OCR engine.
OCR_TEXTS = {
    "crop_id": "VARCHAR",
    "source": "VARCHAR",
    "engine": "VARCHAR",
    "text": "VARCHAR",
    "confidence": "DOUBLE",
}
