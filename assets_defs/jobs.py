"""Jobs: the per-source chain (partitioned) and the cross-source linkage (unpartitioned)."""

from __future__ import annotations

import dagster as dg

from assets_defs.partitions import document_sources_partitions

#: Everything computed per document source: pages, labels, layout, crops, OCR, label matching.
source_assets = dg.AssetSelection.assets(
    "page_images", "region_labels", "layout_regions", "region_crops", "ocr_texts", "labelled_regions", "crop_embeddings"
)
#: The CLIPPINGS training recipe: expensive, run on demand (never part of linking a corpus).
training_assets = dg.AssetSelection.assets("training_crops", "pretrained_model", "supervised_model")
source_job = dg.define_asset_job(
    "source_job",
    selection=source_assets,
    partitions_def=document_sources_partitions,
    description="Runs one document source from its page files to OCR texts, label matches and crop embeddings.",
)
training_job = dg.define_asset_job(
    "training_job",
    selection=training_assets,
    description="Renders training crops, then CLIP pretraining and supervised contrastive training of the encoder.",
)
linkage_job = dg.define_asset_job(
    "linkage_job",
    selection=dg.AssetSelection.all() - source_assets - training_assets,
    description="Links all sources, evaluates, builds SQL models and the supply-chain network.",
)
