"""Column contracts of the tables that cross stages.

Every per-source table is stored as one Parquet file per document source and exposed in DuckDB as a view of
the same name; cross-source tables are DuckDB tables. Ids are content hashes so that re-runs give the same ids.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:  # training imports torch; this module must stay light
    pass

logger = logging.getLogger(__name__)

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
    "ocr": "VARCHAR",
    "text": "VARCHAR",
    "confidence": "DOUBLE",
}


def require_columns(df: pd.DataFrame, columns: Iterable[str], name: str) -> None:
    """Raises ValueError unless ``df`` is a DataFrame holding every column in ``columns``.

    Args:
        df: the table to check.
        columns: the columns it must have.
        name: how the argument is named in the message.
    """
    columns = list(columns)
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} is missing columns {missing}; expected at least {columns}, got {list(df.columns)}")

TRAINED_MODELS = {
    "model_id": "VARCHAR",
    "stage": "VARCHAR",  # clip (language-image pretraining only) | supcon (supervised)
    "path": "VARCHAR",
    "parent_model_id": "VARCHAR",
    "data_sha256": "VARCHAR",
    "config": "VARCHAR",  # JSON
    "created_at": "VARCHAR",
}

LINKAGE_MODEL = {
    "model_id": "VARCHAR",
    "path": "VARCHAR",
    "pretrained_path": "VARCHAR",  # the same model before supervised training ("" when unknown)
    "chosen_by": "VARCHAR",
    "pooling_weight": "DOUBLE",
    "nomatch_threshold": "DOUBLE",  # default threshold for corpora without validation labels (NaN: none)
}


def empty_frame(contract: Mapping[str, str]) -> pd.DataFrame:
    """No rows, the columns of ``contract`` (object dtype, so any Parquet type of the contract accepts them)."""
    return pd.DataFrame({c: pd.Series(dtype="object") for c in contract})


LABELLED_REGIONS = {
    "region_id": "VARCHAR",
    "source": "VARCHAR",
    "page": "VARCHAR",
    "label_index": "INTEGER",
    "iou": "DOUBLE",
    "text": "VARCHAR",
    "entity_id": "VARCHAR",
    "role": "VARCHAR",
}


STRING_LINKS = {
    "query_crop_id": "VARCHAR",
    "target_crop_id": "VARCHAR",
    "query_source": "VARCHAR",
    "target_source": "VARCHAR",
    "method": "VARCHAR",
    "ocr": "VARCHAR",
    "rank": "INTEGER",
    "score": "DOUBLE",
}


#: The crop texts earlier string links were computed from: one row per source, text condition and crop, with a hash
#: of the text (an OCR engine that now reads a crop differently makes it a new text).
STRING_LINK_INPUTS = {"source": "VARCHAR", "ocr": "VARCHAR", "crop_id": "VARCHAR", "text_hash": "VARCHAR"}


# ------------------------------------------------------------------------------------------- evaluation
#: Column contracts of the evaluation tables (an empty table keeps its columns and types).
LAYOUT_EVALUATION = {
    "source": "VARCHAR",
    "precision": "DOUBLE",
    "recall": "DOUBLE",
    "f1": "DOUBLE",
    "mean_iou": "DOUBLE",
    "n_detected": "BIGINT",
    "n_labelled": "BIGINT",
    "n_matched": "BIGINT",
    "kind_accuracy": "DOUBLE",
}
OCR_EVALUATION = {"source": "VARCHAR", "ocr": "VARCHAR", "cer": "DOUBLE", "exact_match": "DOUBLE", "n": "BIGINT"}
LINKAGE_EVALUATION = {
    "method": "VARCHAR",
    "training": "VARCHAR",
    "ocr": "VARCHAR",
    "split": "VARCHAR",
    "top1_accuracy": "DOUBLE",
    "top1_accuracy_with_nomatch": "DOUBLE",
    "nomatch_threshold": "DOUBLE",
    "n": "BIGINT",
    "n_with_nomatch": "BIGINT",
}


RECORD_LINKS = {
    "query_crop_id": "VARCHAR",
    "target_crop_id": "VARCHAR",
    "query_source": "VARCHAR",
    "target_source": "VARCHAR",
    "rank": "INTEGER",
    "score": "DOUBLE",
    "matched": "BOOLEAN",
    "method": "VARCHAR",
    "ocr": "VARCHAR",
    "threshold": "DOUBLE",
    "model_id": "VARCHAR",  # the embedding model for vision/language/multimodal links, "" for string methods
    "run_id": "VARCHAR",  # the Dagster run that wrote the link ("" outside Dagster)
}


# ---------------------------------------------------------------------------------------------- network
#: Column contracts of the network tables (see :func:`network.centrality_table` and :func:`network.anchor_distances`).
FIRM_CENTRALITY = {
    "node_id": "VARCHAR",
    "label": "VARCHAR",
    "in_degree": "BIGINT",
    "out_degree": "BIGINT",
    "degree_centrality": "DOUBLE",
    "betweenness": "DOUBLE",
}
FIRM_ANCHOR_DISTANCES = {
    "anchor_id": "VARCHAR",
    "anchor_label": "VARCHAR",
    "node_id": "VARCHAR",
    "label": "VARCHAR",
    "undirected_distance": "BIGINT",
    "distance_to_anchor": "BIGINT",
    "distance_from_anchor": "BIGINT",
}

CROP_EMBEDDINGS = {
    "crop_id": "VARCHAR",
    "source": "VARCHAR",
    "ocr": "VARCHAR",  # text condition: OCR engine name or ground_truth
    "text": "VARCHAR",
    "model_id": "VARCHAR",
    "image_embedding": "FLOAT[]",
    "text_embedding": "FLOAT[]",
}

FAISS_INDEXES = {
    "target_source": "VARCHAR",
    "ocr": "VARCHAR",
    "method": "VARCHAR",
    "model_id": "VARCHAR",
    "kind": "VARCHAR",
    "weight": "DOUBLE",
    "n": "BIGINT",
    "dim": "INTEGER",
    "path": "VARCHAR",
}

#: ``string_links`` columns plus how the model was trained and its id.
EMBEDDING_LINKS = {**STRING_LINKS, "training": "VARCHAR", "model_id": "VARCHAR"}


#: The targets each stored top-k list was computed against (one row per index and target crop).
LINKED_TARGETS = {"target_source": "VARCHAR", "ocr": "VARCHAR", "method": "VARCHAR", "model_id": "VARCHAR",
                  "weight": "DOUBLE", "crop_id": "VARCHAR"}
#: Columns every row of ``table_records`` has before the table's own columns (which are all VARCHAR).
RECORD_COLUMNS = {"source": "VARCHAR", "record_id": "VARCHAR", "row_number": "BIGINT"}

# Column contracts of the DuckDB tables written by the table assets.
TABLE_SOURCES = {
    "name": "VARCHAR", "path": "VARCHAR", "format": "VARCHAR", "id_column": "VARCHAR", "columns": "VARCHAR[]",
}
TABLE_LINKAGES = {
    "name": "VARCHAR", "kind": "VARCHAR", "left_source": "VARCHAR", "right_source": "VARCHAR",
    "fields": "VARCHAR[]", "threshold": "DOUBLE", "one_to_one": "BOOLEAN",
}
TABLE_COMPARISON_PATTERNS = {
    "linkage": "VARCHAR", "pattern": "BIGINT", "levels": "VARCHAR", "labels": "VARCHAR", "pairs": "BIGINT",
    "match_probability": "DOUBLE", "match_weight": "DOUBLE",
}
TABLE_MODEL_PARAMETERS = {
    "linkage": "VARCHAR", "field": "VARCHAR", "level": "INTEGER", "label": "VARCHAR", "m": "DOUBLE", "u": "DOUBLE",
    "match_weight": "DOUBLE", "lambda": "DOUBLE",
}
TABLE_LINKS = {
    "linkage": "VARCHAR", "left_source": "VARCHAR", "left_id": "VARCHAR", "right_source": "VARCHAR",
    "right_id": "VARCHAR", "match_probability": "DOUBLE", "match_weight": "DOUBLE", "pattern": "BIGINT",
}
TABLE_CLUSTERS = {
    "linkage": "VARCHAR", "source": "VARCHAR", "record_id": "VARCHAR", "cluster_id": "BIGINT",
    "cluster_size": "BIGINT",
}
TABLE_LINKAGE_SUMMARY = {
    "linkage": "VARCHAR", "kind": "VARCHAR", "left_source": "VARCHAR", "right_source": "VARCHAR",
    "left_records": "BIGINT", "right_records": "BIGINT", "pairs": "BIGINT", "lambda": "DOUBLE",
    "converged": "BOOLEAN", "em_iterations": "INTEGER", "links": "BIGINT", "clusters": "BIGINT", "seconds": "DOUBLE",
}

# Column contracts of the DuckDB tables of sources.yaml's document sources and linkages (asset document_sources).
DOCUMENT_SOURCES = {
    "name": "VARCHAR", "role": "VARCHAR", "direction": "VARCHAR", "language": "VARCHAR", "layout": "VARCHAR",
    "ocr": "VARCHAR[]", "primary_ocr": "VARCHAR", "path": "VARCHAR",
}
SOURCE_LINKAGES = {"query": "VARCHAR", "target": "VARCHAR"}

# Column contract of record_link_runs: one row per record_links run, its choice and whether its accuracy check passed.
RECORD_LINK_RUNS = {
    "run_id": "VARCHAR",
    "model_id": "VARCHAR",
    "method": "VARCHAR",
    "ocr": "VARCHAR",
    "val_top1": "DOUBLE",
    "val_top1_with_nomatch": "DOUBLE",
    "passed": "BOOLEAN",
    "recorded_at": "VARCHAR",
}

# Column contract of training_crops: one row per training crop (the images live in model/training_crops.parquet).
TRAINING_CROPS = {"label": "BIGINT", "direction": "VARCHAR", "text": "VARCHAR", "true_text": "VARCHAR"}
