"""Jobs: the per-source chain (partitioned) and the cross-source linkage (unpartitioned)."""

from __future__ import annotations

import dagster as dg

from assets_defs.partitions import document_sources_partitions

#: Everything computed per document source: pages, labels, layout, crops, OCR, label matching.
source_assets = dg.AssetSelection.assets(
    "page_images", "region_labels", "layout_regions", "region_crops", "ocr_texts", "labelled_regions", "crop_embeddings"
)
#: Distillation of several supervised models into one: run on demand after training_job (e.g. with other seeds).
distillation_assets = dg.AssetSelection.assets("distilled_model")
#: The CLIPPINGS training recipe and the distillation: expensive, run on demand (never part of linking a corpus).
training_assets = (
    dg.AssetSelection.assets("training_crops", "pretrained_model", "supervised_model", "reviewed_model")
    | distillation_assets
)
source_job = dg.define_asset_job(
    "source_job",
    selection=source_assets,
    partitions_def=document_sources_partitions,
    description="Runs one document source from its page files to OCR texts, label matches and crop embeddings.",
)
training_job = dg.define_asset_job(
    "training_job",
    selection=training_assets - distillation_assets,
    description="Renders training crops, then CLIP pretraining and supervised contrastive training of the encoder; "
    "reviewed_model fine-tunes the linkage model on link reviews.",
)
distillation_job = dg.define_asset_job(
    "distillation_job",
    selection=distillation_assets,
    description="Distils the shipped model and every supervised model of training_job (or the models named in "
    "its config) into one model of the shipped size.",
)
#: Table sources (CSV/Parquet, assets_defs/tables.py): records per table source (partitioned) ...
table_source_assets = dg.AssetSelection.assets("table_records")
#: ... and everything of the "tables" group: the sources table, patterns, model, links and clusters.
table_assets = dg.AssetSelection.groups("tables")
table_job = dg.define_asset_job(
    "table_job",
    selection=table_source_assets,
    description="Reads one table source (CSV/Parquet) into normalised records, recording rejected rows.",
)
table_linkage_job = dg.define_asset_job(
    "table_linkage_job",
    selection=table_assets - table_source_assets,
    description="Fits Fellegi-Sunter for every table linkage: comparison patterns, m/u/lambda, links and clusters.",
)
linkage_job = dg.define_asset_job(
    "linkage_job",
    selection=dg.AssetSelection.all() - source_assets - training_assets - table_assets,
    description="Links all sources, evaluates, builds SQL models and the supply-chain network.",
)
