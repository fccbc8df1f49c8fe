"""The multimodal model: training assets (CLIPPINGS recipe), the model the pipeline links with, crop embeddings."""

import time
from pathlib import Path

import dagster as dg
import pandas as pd

from assets_defs._common import check_result, preview, write_rejections
from assets_defs.documents import layout_regions, ocr_texts, region_crops
from assets_defs.partitions import document_sources_partitions
from linkage_pipeline import schema
from linkage_pipeline.evaluation import quality
from linkage_pipeline.linking import by_embeddings
from linkage_pipeline.multimodal import embed, registry
from linkage_pipeline.multimodal.training import data as training_data
from linkage_pipeline.multimodal.training import recipe as training_recipe
from resources import ComputeResource, EnginesResource, LinkageStore


class TrainingCropsConfig(dg.Config):
    """Synthetic renderings (train vocabulary, disjoint from evaluation firms) plus the users' labelled crops."""

    n_firms: int = 1200
    views_per_firm: int = 6
    seed: int = 1
    ocr: str = "tesseract"  # an OCR engine name, or "simulated" (fast, for trials)
    include_labels: bool = True  # add the crops of labelled firms in the train split of every source
    # Language-image pretraining only, without any firm label: printed names, each its own class, its views made
    # by Unicode variant tables, a legal-form lexicon, many typefaces, scan degradations and glyph-similar misreadings
    # (linkage_pipeline.multimodal.training.label_free). 0: the CLIP stage pretrains on the training crops instead.
    pretraining_names: int = 12000
    pretraining_views: int = 3


def _model_dir(linkage_store: LinkageStore) -> Path:
    return linkage_store.store().artifact_dir / "model"


def _trained_models(linkage_store: LinkageStore) -> pd.DataFrame | None:
    store = linkage_store.store()
    return store.read_table("trained_models") if store.table_exists("trained_models") else None


def all_embedding_inputs(store) -> pd.DataFrame:
    """:func:`multimodal.embedding_inputs` over every source (the views of all partitions)."""
    return embed.embedding_inputs(
        store.read_partitions("layout_regions", schema.LAYOUT_REGIONS),
        store.read_partitions("region_crops", schema.REGION_CROPS),
        store.read_partitions("ocr_texts", schema.OCR_TEXTS),
        store.read_partitions("labelled_regions", schema.LABELLED_REGIONS),
    )


@dg.asset(group_name="model", deps=["stg_crop_texts"], kinds={"parquet"})
def training_crops(
    context: dg.AssetExecutionContext,
    config: TrainingCropsConfig,
    linkage_store: LinkageStore,
    engines: EnginesResource,
) -> dg.MaterializeResult:
    """One row per training crop: a rendered generated firm or a labelled train-split crop; refreshed on demand."""
    store = linkage_store.store()
    t0 = time.perf_counter()
    labels = config.include_labels and store.table_exists("stg_crop_texts")
    _, summary, stats = training_data.assemble_training_crops(
        _model_dir(linkage_store),
        n_firms=config.n_firms,
        views_per_firm=config.views_per_firm,
        seed=config.seed,
        ocr=config.ocr,
        ocr_engine=engines.ocr_engine,
        pretraining_names=config.pretraining_names,
        pretraining_views=config.pretraining_views,
        regions=store.read_table("stg_regions") if labels else None,
        crop_texts=store.read_table("stg_crop_texts") if labels else None,
    )
    store.replace_table("training_crops", summary, schema.TRAINING_CROPS)
    path = dg.MetadataValue.path(str(stats.pop("path")))
    return dg.MaterializeResult(
        metadata={**stats, "path": path, "seconds": time.perf_counter() - t0, "preview": preview(summary)}
    )


class StageConfig(dg.Config):
    """Hyperparameters of one training stage (defaults: the recipe of the shipped model)."""

    epochs: int | None = None  # None: the recipe's
    lr: float | None = None
    batch_size: int | None = None
    max_steps: int | None = None  # None: the recipe's; 0: no limit (all epochs)
    seed: int = 0


def _adopt(
    context: dg.AssetExecutionContext,
    linkage_store: LinkageStore,
    compute: ComputeResource,
    trained: pd.DataFrame | None,
    folder: Path,
    card: dict,
    *,
    retune: bool = False,
) -> dict:
    """Compare the new supervised model with the one ``linkage_model`` (``auto``) would use without it, on this
    corpus's validation firms, each at its best pooling weight there, and record in its card whether it replaces
    it (:func:`registry.adoption`). ``retune``: the card's settings were tuned at a fixed weight (a distilled
    model keeps its start model's), so the new model is scored again over every weight."""
    baseline = registry.choose_model("auto", "", trained)
    mine = _tune_on_validation(context, linkage_store, compute, folder) if retune else card.get("linking", {})
    theirs = _tune_on_validation(context, linkage_store, compute, baseline.path) if "val_top1_mean" in mine else {}
    record = registry.adoption(mine, theirs, baseline.path)
    context.log.info(f"model {card['model_id'][:12]}: {record['why']}")
    registry.update_card(folder, adoption=record)
    return record


def _train_stage(
    context: dg.AssetExecutionContext,
    stage: str,
    config: StageConfig,
    linkage_store: LinkageStore,
    compute: ComputeResource,
) -> dg.MaterializeResult:
    trained = _trained_models(linkage_store)
    folder, card, row = training_recipe.train_stage(
        _model_dir(linkage_store),
        stage,
        trained,
        overrides=config.model_dump(),
        device=str(compute.torch_device()),
        tune=lambda saved: _tune_on_validation(context, linkage_store, compute, saved),
        log=context.log.info,
    )
    adoption = _adopt(context, linkage_store, compute, trained, folder, card) if stage == "supcon" else None
    rows = registry.record_trained_model(trained, row)
    linkage_store.store().replace_table("trained_models", rows, schema.TRAINED_MODELS)
    written = dg.AssetMaterialization("trained_models", metadata={"rows": len(rows), "model_id": card["model_id"]})
    context.log_event(written)
    return dg.MaterializeResult(
        metadata={
            "model_id": card["model_id"],
            "path": dg.MetadataValue.path(str(folder)),
            "training": dg.MetadataValue.json(card.get("training", {})),
            "n_parameters": card.get("n_parameters"),
            **({} if adoption is None else {"adoption": dg.MetadataValue.json(adoption),
                                            "adopted": bool(adoption["adopted"])}),
        }
    )


def _tune_on_validation(
    context: dg.AssetExecutionContext,
    linkage_store: LinkageStore,
    compute: ComputeResource,
    folder: Path,
    weight: float | None = None,
) -> dict:
    """Pooling weight (unless ``weight`` fixes it) and no-match threshold chosen on the corpus's validation firms
    ({} without labels)."""
    store, registry = linkage_store.store(), linkage_store.registry()
    if not registry.linkages or not store.table_exists("stg_regions"):
        return {}
    regions = store.read_table("stg_regions")
    if regions["true_entity_id"].fillna("").eq("").all():
        return {}
    query = {s.name: s for s in registry.sources}[registry.linkages[0].query]
    inputs = all_embedding_inputs(store)
    try:
        tuned = by_embeddings.tune_linking(
            compute.encoder(folder),
            inputs,
            regions,
            [(lk.query, lk.target) for lk in registry.linkages],
            ocr=query.primary_ocr,
            also=list(query.ocr),
            **({} if weight is None else {"weights": (weight,)}),
        )
    except ValueError as exc:
        context.log.warning(f"pooling weight and threshold not tuned: {exc}")
        return {}
    context.log.info(f"tuned on the validation split: {tuned}")
    return {**tuned, "tuned_on": f"validation split of {linkage_store.data_path.name}"}


@dg.asset(group_name="model", deps=[training_crops], kinds={"pytorch", "safetensors"}, pool="gpu")
def pretrained_model(
    context: dg.AssetExecutionContext, config: StageConfig, linkage_store: LinkageStore, compute: ComputeResource
) -> dg.MaterializeResult:
    """The encoder after language-image (CLIP) pretraining on the training crops; resumable; refreshed on demand."""
    return _train_stage(context, "clip", config, linkage_store, compute)


@dg.asset(group_name="model", deps=[pretrained_model], kinds={"pytorch", "safetensors"}, pool="gpu")
def supervised_model(
    context: dg.AssetExecutionContext, config: StageConfig, linkage_store: LinkageStore, compute: ComputeResource
) -> dg.MaterializeResult:
    """The encoder after supervised contrastive training with hard negatives; resumable; refreshed on demand."""
    return _train_stage(context, "supcon", config, linkage_store, compute)


class DistilConfig(dg.Config):
    """Which supervised models are distilled into one, and the stage's settings (defaults: the recipe's)."""

    # "shipped", "trained" (every supervised model the training assets saved) or model folders
    teachers: list[str] = ["shipped", "trained"]
    start_from: str = "shipped"  # "shipped", or a model folder
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    max_steps: int | None = None  # None: the recipe's; 0: no limit (all epochs)
    seed: int = 0
    distil_weight: float | None = None  # None: the recipe's (10); 0: SupCon alone, no teacher's loss


@dg.asset(group_name="model", deps=[supervised_model], kinds={"pytorch", "safetensors"}, pool="gpu")
def distilled_model(
    context: dg.AssetExecutionContext, config: DistilConfig, linkage_store: LinkageStore, compute: ComputeResource
) -> dg.MaterializeResult:
    """One model of the shipped size trained to link like an ensemble of supervised models (e.g. the recipe run
    with several seeds): SupCon plus similarity distillation on the training crops; refreshed on demand."""
    trained = _trained_models(linkage_store)
    teachers = training_recipe.resolve_models(config.teachers, trained)
    start = training_recipe.resolve_models([config.start_from], trained)[0]
    overrides = config.model_dump(exclude={"teachers", "start_from"})
    folder, card, row = training_recipe.distil_stage(
        _model_dir(linkage_store),
        teachers,
        start,
        overrides=overrides,
        device=str(compute.torch_device()),
        tune=lambda saved, weight: _tune_on_validation(context, linkage_store, compute, saved, weight),
        log=context.log.info,
    )
    adoption = _adopt(context, linkage_store, compute, trained, folder, card, retune=True)
    rows = registry.record_trained_model(trained, row)
    linkage_store.store().replace_table("trained_models", rows, schema.TRAINED_MODELS)
    context.log_event(dg.AssetMaterialization("trained_models", metadata={"rows": len(rows),
                                                                          "model_id": card["model_id"]}))
    return dg.MaterializeResult(
        metadata={
            "model_id": card["model_id"],
            "path": dg.MetadataValue.path(str(folder)),
            "teachers": dg.MetadataValue.json(card["training"]["distil"]["teachers"]),
            "training": dg.MetadataValue.json(card["training"]["distil"]),
            "linking": dg.MetadataValue.json(card.get("linking", {})),
            "adoption": dg.MetadataValue.json(adoption),
            "adopted": bool(adoption["adopted"]),
        }
    )


# The training assets append to this table (one row per trained model), so none can own it: it is declared here,
# downstream of all of them, and each records a materialization of it when it writes (lineage in the UI).
trained_models = dg.AssetsDefinition(
    specs=[
        dg.AssetSpec(
            "trained_models",
            deps=[pretrained_model, supervised_model, distilled_model, "reviewed_model"],
            group_name="model",
            kinds={"duckdb"},
            description="One row per model saved by pretrained_model, supervised_model, distilled_model or "
            "reviewed_model; written by them.",
        )
    ]
)


class LinkageModelConfig(dg.Config):
    """Which model the pipeline embeds and links with."""

    model: str = "auto"  # auto | shipped | trained | directory
    directory: str = ""  # for model="directory": our format, a Hugging Face CLIP or the rinna layout


@dg.asset(group_name="model", deps=[supervised_model, distilled_model, "reviewed_model", trained_models],
          kinds={"duckdb"},
          pool="duckdb")
def linkage_model(
    config: LinkageModelConfig, linkage_store: LinkageStore, compute: ComputeResource
) -> dg.MaterializeResult:
    """One row: the model that embeds and links (the latest trained, else the shipped one); refreshed on demand."""
    choice = registry.choose_model(config.model, config.directory, _trained_models(linkage_store))
    encoder = compute.encoder(choice.path)
    linkage_store.store().replace_table(
        "linkage_model", registry.linkage_model_row(choice, encoder.model_id), schema.LINKAGE_MODEL
    )
    return dg.MaterializeResult(
        metadata={
            "model_id": encoder.model_id,
            "chosen_by": choice.chosen_by,
            "path": dg.MetadataValue.path(str(choice.path)),
            "n_parameters": encoder.n_parameters(),
            "dim": encoder.dim,
            "card": dg.MetadataValue.json({k: v for k, v in encoder.card.items() if k != "training"}),
        }
    )


def current_model(linkage_store: LinkageStore) -> pd.Series:
    """The ``linkage_model`` row; raises when the asset was never materialized."""
    store = linkage_store.store()
    if not store.table_exists("linkage_model"):
        raise ValueError("no linkage model chosen yet; materialize the linkage_model asset first")
    return store.read_table("linkage_model").iloc[0]


#: The per-source tables crop_embeddings reads, with their contracts.
_EMBEDDING_SOURCES = {
    "layout_regions": schema.LAYOUT_REGIONS,
    "region_crops": schema.REGION_CROPS,
    "ocr_texts": schema.OCR_TEXTS,
    "labelled_regions": schema.LABELLED_REGIONS,
}


@dg.asset(
    group_name="embeddings",
    partitions_def=document_sources_partitions,
    deps=[region_crops, ocr_texts, layout_regions, "labelled_regions", linkage_model],
    kinds={"parquet", "pytorch"},
    pool="gpu",
    check_specs=[
        dg.AssetCheckSpec(
            "crop_embeddings_unit_norm",
            asset="crop_embeddings",
            blocking=True,
            description="every embedding is finite and of unit length",
        )
    ],
)
def crop_embeddings(
    context: dg.AssetExecutionContext, linkage_store: LinkageStore, compute: ComputeResource
) -> dg.MaterializeResult:
    """One row per crop and text condition: image and text embeddings of the linkage model; incremental per source."""
    store, name = linkage_store.store(), linkage_store.source(context.partition_key).name
    encoder = compute.encoder(current_model(linkage_store)["path"])
    inputs = {table: store.read_partition(table, name, contract) for table, contract in _EMBEDDING_SOURCES.items()}
    existed = store.partition_path("crop_embeddings", name).exists()
    existing = store.read_partition("crop_embeddings", name, schema.CROP_EMBEDDINGS) if existed else None
    # Forward passes of exactly batch_size rows: an embedding never depends on what else is embedded with it.
    rejected: list = []
    frame, stats = embed.embed_crops(
        encoder, embed.embedding_inputs(*inputs.values()), existing=existing, batch_size=compute.batch_size,
        progress=context.log.info, rejected=rejected,
    )
    n = store.write_partition("crop_embeddings", name, frame, schema.CROP_EMBEDDINGS)
    n_rejected = write_rejections(store, "crop_embeddings", name, rejected)
    empty = {}
    if n == 0:
        pages = store.read_partition("page_images", name, schema.PAGE_IMAGES)
        counts = [len(pages), *(len(inputs[t]) for t in ("layout_regions", "region_crops", "ocr_texts"))]
        empty = {"empty": embed.empty_source_message(name, *counts)}
        context.log.warning(empty["empty"])
    return dg.MaterializeResult(
        check_results=[check_result("crop_embeddings_unit_norm", quality.embedding_norms(frame))],
        metadata={**empty, "rows": n, "rejected": n_rejected, "model_id": encoder.model_id,
                  **embed.embedding_run_stats(stats), "device": str(encoder.device)},
    )
