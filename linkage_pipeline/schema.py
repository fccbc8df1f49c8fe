"""Column contracts of every table the pipeline writes, in one place.

A contract maps each column to its DuckDB type, in order. Per-source tables are stored as one Parquet file per
document source and exposed in DuckDB as a view of the same name; cross-source tables are DuckDB tables. Ids are
content hashes so that re-runs give the same ids. :data:`CONTRACTS` names the table each contract belongs to, and
the store checks every write of a named table against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

# ------------------------------------------------------------------------------------- vocabularies
#: Roles a labelled or detected region can take (DESIGN section 4). ``body`` is any other printed text (an
#: address, a capital, officers, a line of a book): detected and scored, but never cropped, read or linked.
REGION_KINDS = ("title", "heading", "entry", "body")
#: The kinds whose regions are cropped, read and linked: firm names and the titles and headings around them.
NAME_KINDS = ("title", "heading", "entry")
#: Roles in ``labels.csv``; ``supplier``/``customer`` entries on lists map to the detected kind ``entry``.
LABEL_ROLES = ("title", "heading", "supplier", "customer", "entry", "body")
TEXT_DIRECTIONS = ("horizontal", "vertical")
SOURCE_ROLES = ("query", "target")


# ------------------------------------------------------------------------------------------ helpers
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


def empty_frame(contract: Mapping[str, str]) -> pd.DataFrame:
    """No rows, the columns of ``contract`` (object dtype, so any Parquet type of the contract accepts them)."""
    return pd.DataFrame({c: pd.Series(dtype="object") for c in contract})


# ------------------------------------------------------------------------------------------ sources
#: One row per document source of sources.yaml.
DOCUMENT_SOURCES = {
    "name": "VARCHAR", "role": "VARCHAR", "direction": "VARCHAR", "language": "VARCHAR", "layout": "VARCHAR",
    "ocr": "VARCHAR[]", "primary_ocr": "VARCHAR", "path": "VARCHAR",
}
#: One row per linkage (query source -> target source) of sources.yaml.
SOURCE_LINKAGES = {"query": "VARCHAR", "target": "VARCHAR"}
#: One row per rejected input (file, page or source), with the reason in words.
REJECTED_INPUTS = {
    "source": "VARCHAR",
    "file": "VARCHAR",
    "stage": "VARCHAR",  # sources | page_images | layout_regions | region_crops | ocr_texts
    "reason": "VARCHAR",
}


# ---------------------------------------------------------------------------------------- documents
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
#: One row per labelled box of a source's labels.csv (ground truth; layout-only labels have no text or entity).
REGION_LABELS = {
    "source": "VARCHAR", "label_index": "INTEGER", "page": "VARCHAR", "x0": "INTEGER", "y0": "INTEGER",
    "x1": "INTEGER", "y1": "INTEGER", "text": "VARCHAR", "entity_id": "VARCHAR", "role": "VARCHAR",
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
    "kind": "VARCHAR",  # title | heading | entry | body
    "reading_order": "INTEGER",  # 0-based position on the page
    "score": "DOUBLE",
    "detector": "VARCHAR",
    "direction": "VARCHAR",
    "classifier": "VARCHAR",  # what decided the kind: default | source:<name> (cross-fitted) | size rules
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
#: One row per crop and OCR engine.
OCR_TEXTS = {
    "crop_id": "VARCHAR", "source": "VARCHAR", "ocr": "VARCHAR", "text": "VARCHAR", "confidence": "DOUBLE",
    "reader": "VARCHAR",
}
#: One row per detected region matched (IoU >= 0.5, one to one) to a labelled box.
LABELLED_REGIONS = {
    "region_id": "VARCHAR", "source": "VARCHAR", "page": "VARCHAR", "label_index": "INTEGER", "iou": "DOUBLE",
    "text": "VARCHAR", "entity_id": "VARCHAR", "role": "VARCHAR",
}


# -------------------------------------------------------------------------------------------- model
#: One row per training crop (the images live in model/training_crops.parquet).
TRAINING_CROPS = {"label": "BIGINT", "direction": "VARCHAR", "text": "VARCHAR", "true_text": "VARCHAR"}
#: One row per trained model (each training stage adds one).
TRAINED_MODELS = {
    "model_id": "VARCHAR",
    "stage": "VARCHAR",  # clip (language-image pretraining only) | supcon (supervised)
    "path": "VARCHAR",
    "parent_model_id": "VARCHAR",
    "data_sha256": "VARCHAR",
    "config": "VARCHAR",  # JSON
    "created_at": "VARCHAR",
}
#: One row: the model the pipeline embeds and links with.
LINKAGE_MODEL = {
    "model_id": "VARCHAR",
    "path": "VARCHAR",
    "pretrained_path": "VARCHAR",  # the same model before supervised training ("" when unknown)
    "chosen_by": "VARCHAR",
    "pooling_weight": "DOUBLE",
    "nomatch_threshold": "DOUBLE",  # default threshold for corpora without validation labels (NaN: none)
}
#: One row per crop and OCR condition: its image, text and pooled embeddings with one model.
CROP_EMBEDDINGS = {
    "crop_id": "VARCHAR",
    "source": "VARCHAR",
    "ocr": "VARCHAR",  # text condition: OCR engine name or ground_truth
    "text": "VARCHAR",
    "model_id": "VARCHAR",
    "image_embedding": "FLOAT[]",
    "text_embedding": "FLOAT[]",
}


# ------------------------------------------------------------------------------------------ linking
#: One row per query crop, target crop, string method and OCR condition among the top k.
STRING_LINKS = {
    "query_crop_id": "VARCHAR", "target_crop_id": "VARCHAR", "query_source": "VARCHAR", "target_source": "VARCHAR",
    "method": "VARCHAR", "ocr": "VARCHAR", "rank": "INTEGER", "score": "DOUBLE",
}
#: The crop texts earlier string links were computed from: one row per source, text condition and crop, with a hash
#: of the text (an OCR engine that now reads a crop differently makes it a new text).
STRING_LINK_INPUTS = {"source": "VARCHAR", "ocr": "VARCHAR", "crop_id": "VARCHAR", "text_hash": "VARCHAR"}
#: One row per crop text the embedding links were computed from (its hash): a text read again since (another
#: reader) changes the crop's vector, so the top-k lists it took part in are computed again.
EMBEDDING_LINK_INPUTS = STRING_LINK_INPUTS
#: One row per FAISS index file (target source, OCR condition, method).
FAISS_INDEXES = {
    "target_source": "VARCHAR", "ocr": "VARCHAR", "method": "VARCHAR", "model_id": "VARCHAR", "kind": "VARCHAR",
    "weight": "DOUBLE", "n": "BIGINT", "dim": "INTEGER", "path": "VARCHAR",
}
#: ``string_links`` columns plus how the model was trained and its id.
EMBEDDING_LINKS = {**STRING_LINKS, "training": "VARCHAR", "model_id": "VARCHAR"}
#: The targets each stored top-k list was computed against (one row per index and target crop).
LINKED_TARGETS = {"target_source": "VARCHAR", "ocr": "VARCHAR", "method": "VARCHAR", "model_id": "VARCHAR",
                  "weight": "DOUBLE", "crop_id": "VARCHAR"}
#: One row per accepted query -> target link, or a no-match row per unlinked query.
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
    "reviewed": "BOOLEAN",  # a reviewer's verdict in link_reviews decided this link, not the model
}
#: One row per record_links run: its choice and whether its accuracy check passed.
RECORD_LINK_RUNS = {
    "run_id": "VARCHAR", "model_id": "VARCHAR", "method": "VARCHAR", "ocr": "VARCHAR", "val_top1": "DOUBLE",
    "val_top1_with_nomatch": "DOUBLE", "passed": "BOOLEAN", "recorded_at": "VARCHAR",
}


#: One row per verdict of the link-review app, appended (never updated): the query crop, the target the reviewer
#: chose (null for ``none``: no candidate shown is the same firm), and what the link was when it was reviewed.
#: ``verdict`` is ``accept`` (the model's top candidate), ``pick`` (another candidate), ``none``, ``skip`` (not now)
#: or ``undo`` (takes back the review ``undoes``). Crop ids are content hashes, so verdicts survive re-runs.
LINK_REVIEWS = {
    "review_id": "VARCHAR",
    "query_crop_id": "VARCHAR",
    "query_source": "VARCHAR",
    "target_crop_id": "VARCHAR",
    "target_source": "VARCHAR",
    "verdict": "VARCHAR",
    "reviewer": "VARCHAR",
    "reviewed_at": "VARCHAR",  # UTC, ISO 8601
    "score": "DOUBLE",  # the chosen target's score at review time (NaN for none, skip and undo)
    "top_score": "DOUBLE",  # the model's top-1 score at review time
    "model_target_crop_id": "VARCHAR",  # what the link pointed to when it was reviewed (null: no match)
    "method": "VARCHAR",
    "ocr": "VARCHAR",
    "model_id": "VARCHAR",
    "undoes": "VARCHAR",  # the review_id an undo takes back ("" otherwise)
}


# --------------------------------------------------------------------------------------- evaluation
#: One row per labelled source: precision and recall of detected regions at IoU >= 0.5.
LAYOUT_EVALUATION = {
    "source": "VARCHAR", "precision": "DOUBLE", "recall": "DOUBLE", "f1": "DOUBLE", "mean_iou": "DOUBLE",
    "n_detected": "BIGINT", "n_labelled": "BIGINT", "n_matched": "BIGINT", "kind_accuracy": "DOUBLE",
    "detector": "VARCHAR", "classifier": "VARCHAR",
}
#: One row per labelled source and OCR engine: character error rate on matched regions.
OCR_EVALUATION = {"source": "VARCHAR", "ocr": "VARCHAR", "cer": "DOUBLE", "exact_match": "DOUBLE", "n": "BIGINT"}
#: One row per method, training, OCR condition and split: top-1 accuracy (CLIPPINGS Table 1 / S-2).
LINKAGE_EVALUATION = {
    "method": "VARCHAR", "training": "VARCHAR", "ocr": "VARCHAR", "split": "VARCHAR", "top1_accuracy": "DOUBLE",
    "top1_accuracy_with_nomatch": "DOUBLE", "nomatch_threshold": "DOUBLE", "n": "BIGINT",
    "n_with_nomatch": "BIGINT", "pooling_weight": "DOUBLE",
}


# ------------------------------------------------------------------------------------------ network
#: One row per firm of the supply-chain network: degrees and centralities.
FIRM_CENTRALITY = {
    "node_id": "VARCHAR", "label": "VARCHAR", "in_degree": "BIGINT", "out_degree": "BIGINT",
    "degree_centrality": "DOUBLE", "betweenness": "DOUBLE",
}
#: One row per firm and anchor firm: shortest-path distance in the network.
FIRM_ANCHOR_DISTANCES = {
    "anchor_id": "VARCHAR", "anchor_label": "VARCHAR", "node_id": "VARCHAR", "label": "VARCHAR",
    "undirected_distance": "BIGINT", "distance_to_anchor": "BIGINT", "distance_from_anchor": "BIGINT",
}


# ------------------------------------------------------------------- table sources (Fellegi-Sunter)
#: Columns every row of ``table_records`` has before the table's own columns (which are all VARCHAR).
RECORD_COLUMNS = {"source": "VARCHAR", "record_id": "VARCHAR", "row_number": "BIGINT"}
#: One row per table source of sources.yaml.
TABLE_SOURCES = {
    "name": "VARCHAR", "path": "VARCHAR", "format": "VARCHAR", "id_column": "VARCHAR", "columns": "VARCHAR[]",
}
#: One row per table linkage of sources.yaml.
TABLE_LINKAGES = {
    "name": "VARCHAR", "kind": "VARCHAR", "left_source": "VARCHAR", "right_source": "VARCHAR",
    "fields": "VARCHAR[]", "threshold": "DOUBLE", "one_to_one": "VARCHAR",
}
#: One row per table linkage and agreement pattern: its pair count.
TABLE_COMPARISON_PATTERNS = {
    "linkage": "VARCHAR", "pattern": "BIGINT", "levels": "VARCHAR", "labels": "VARCHAR", "pairs": "BIGINT",
    "match_probability": "DOUBLE", "match_weight": "DOUBLE",
}
#: One row per table linkage, field and level: the fitted m and u probabilities.
TABLE_MODEL_PARAMETERS = {
    "linkage": "VARCHAR", "field": "VARCHAR", "level": "INTEGER", "label": "VARCHAR", "m": "DOUBLE", "u": "DOUBLE",
    "match_weight": "DOUBLE", "lambda": "DOUBLE",
}
#: One row per linked pair of records.
TABLE_LINKS = {
    "linkage": "VARCHAR", "left_source": "VARCHAR", "left_id": "VARCHAR", "right_source": "VARCHAR",
    "right_id": "VARCHAR", "match_probability": "DOUBLE", "match_weight": "DOUBLE", "pattern": "BIGINT",
}
#: One row per record of a dedup linkage: its cluster.
TABLE_CLUSTERS = {
    "linkage": "VARCHAR", "source": "VARCHAR", "record_id": "VARCHAR", "cluster_id": "BIGINT",
    "cluster_size": "BIGINT",
}
#: One row per table linkage: sizes, fitted lambda, links, clusters and time; which estimate was used (``em``, or
#: ``robust`` when EM's answer was impossible), the matches lambda implies against the feasible maximum, the fields
#: compared jointly, and the links dropped by one-to-one resolution.
TABLE_LINKAGE_SUMMARY = {
    "linkage": "VARCHAR", "kind": "VARCHAR", "left_source": "VARCHAR", "right_source": "VARCHAR",
    "left_records": "BIGINT", "right_records": "BIGINT", "pairs": "BIGINT", "lambda": "DOUBLE",
    "converged": "BOOLEAN", "em_iterations": "INTEGER", "links": "BIGINT", "clusters": "BIGINT",
    "seconds": "DOUBLE", "estimate": "VARCHAR", "expected_matches": "DOUBLE", "feasible_matches": "BIGINT",
    "dependent_fields": "VARCHAR", "resolved_links": "BIGINT",
}


# ---------------------------------------------------------------------------------------------- registry
#: The contract of every table a Python step writes, by table name (the SQL models' tables are their SELECTs).
CONTRACTS: dict[str, Mapping[str, str]] = {
    "document_sources": DOCUMENT_SOURCES,
    "source_linkages": SOURCE_LINKAGES,
    "rejected_inputs": REJECTED_INPUTS,
    "page_images": PAGE_IMAGES,
    "region_labels": REGION_LABELS,
    "layout_regions": LAYOUT_REGIONS,
    "region_crops": REGION_CROPS,
    "ocr_texts": OCR_TEXTS,
    "labelled_regions": LABELLED_REGIONS,
    "training_crops": TRAINING_CROPS,
    "trained_models": TRAINED_MODELS,
    "linkage_model": LINKAGE_MODEL,
    "crop_embeddings": CROP_EMBEDDINGS,
    "self_supervised_embeddings": CROP_EMBEDDINGS,
    "string_links": STRING_LINKS,
    "string_link_inputs": STRING_LINK_INPUTS,
    "embedding_link_inputs": EMBEDDING_LINK_INPUTS,
    "faiss_indexes": FAISS_INDEXES,
    "embedding_links": EMBEDDING_LINKS,
    "embedding_link_targets": LINKED_TARGETS,
    "record_links": RECORD_LINKS,
    "record_link_runs": RECORD_LINK_RUNS,
    "link_reviews": LINK_REVIEWS,
    "layout_evaluation": LAYOUT_EVALUATION,
    "ocr_evaluation": OCR_EVALUATION,
    "linkage_evaluation": LINKAGE_EVALUATION,
    "firm_centrality": FIRM_CENTRALITY,
    "firm_anchor_distances": FIRM_ANCHOR_DISTANCES,
    "table_sources": TABLE_SOURCES,
    "table_linkages": TABLE_LINKAGES,
    "table_comparison_patterns": TABLE_COMPARISON_PATTERNS,
    "table_model_parameters": TABLE_MODEL_PARAMETERS,
    "table_links": TABLE_LINKS,
    "table_clusters": TABLE_CLUSTERS,
    "table_linkage_summary": TABLE_LINKAGE_SUMMARY,
}

#: Tables whose contract starts with these columns and goes on with columns of the user's own (one per field).
LEADING_CONTRACTS: dict[str, Mapping[str, str]] = {"table_records": RECORD_COLUMNS}
