"""The multimodal model: training assets (CLIPPINGS recipe), the model the pipeline links with, crop embeddings."""

import hashlib
import json
import shutil
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
from linkage_pipeline.multimodal.training import trainer
from resources import ComputeResource, EnginesResource, LinkageStore


class TrainingCropsConfig(dg.Config):
    """Synthetic renderings (train vocabulary, disjoint from evaluation firms) plus the users' labelled crops."""

    n_firms: int = 1200
    views_per_firm: int = 6
    seed: int = 1
    ocr: str = "tesseract"  # an OCR engine name, or "simulated" (fast, for trials)
    include_labels: bool = True  # add the crops of labelled firms in the train split of every source
    # Language-image pretraining only: further firms rendered the same way but read by simulated OCR (cheap), so
    # the CLIP stage sees many more names than the supervised stage needs.
    pretraining_firms: int = 12000


def _cached_set(context, store, key_parts: list, build, *, copy_to=None):
    """Path of a synthetic training set kept per configuration under ``model/synthetic-<key>.parquet``
    (rendering and OCR take minutes), built only when missing; optionally copied to ``copy_to``."""
    key = hashlib.sha256(json.dumps([*key_parts, training_data.DATA_VERSION]).encode()).hexdigest()[:12]
    path = store.artifact_dir / "model" / f"synthetic-{key}.parquet"
    if path.is_file():
        context.log.info(f"reusing synthetic training crops {path.name}")
    else:
        training_data.save_training_set(build(), path)
    if copy_to is not None:
        shutil.copyfile(path, copy_to)
    return path


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
    synthetic_path = _cached_set(
        context,
        store,
        [config.n_firms, config.views_per_firm, config.seed, config.ocr],
        lambda: training_data.build_training_set(
            config.n_firms,
            config.views_per_firm,
            seed=config.seed,
            ocr=None if config.ocr == "simulated" else engines.ocr_engine(config.ocr),
        ),
    )
    parts = [training_data.load_training_set(synthetic_path)]
    extra_path = store.artifact_dir / "model" / "pretraining_extra.parquet"
    if config.pretraining_firms > 0:
        _cached_set(
            context,
            store,
            [config.pretraining_firms, config.views_per_firm, config.seed + 1000],
            lambda: training_data.build_pretraining_set(
                config.pretraining_firms, config.views_per_firm, seed=config.seed + 1000
            ),
            copy_to=extra_path,
        )
    elif extra_path.exists():
        extra_path.unlink()
    n_labelled = 0
    if config.include_labels and store.table_exists("stg_crop_texts"):
        labelled = training_data.labelled_training_rows(store.read_table("stg_regions"), store.read_table("stg_crop_texts"))
        if len(labelled):
            parts.append(labelled)
            n_labelled = len(labelled)
    data = training_data.concat_training_sets(parts) if len(parts) > 1 else parts[0]
    path = training_data.save_training_set(data, store.artifact_dir / "model" / "training_crops.parquet")
    summary = pd.DataFrame(
        {"label": data.labels, "direction": data.directions, "text": data.texts, "true_text": data.true_texts}
    )
    store.replace_table("training_crops", summary)
    return dg.MaterializeResult(
        metadata={
            "rows": len(data),
            "classes": len(data.firms),
            "labelled_rows": n_labelled,
            "pretraining_only_rows": config.pretraining_firms * config.views_per_firm,
            "path": dg.MetadataValue.path(str(path)),
            "seconds": time.perf_counter() - t0,
            "preview": preview(summary),
        }
    )


class StageConfig(dg.Config):
    """Hyperparameters of one training stage (defaults: the recipe of the shipped model)."""

    epochs: int = -1  # -1: the recipe's
    lr: float = -1.0
    batch_size: int = -1
    max_steps: int = -1  # -1: the recipe's; 0: no limit (all epochs)
    seed: int = 0


def _stage_config(base: trainer.TrainConfig, config: StageConfig) -> trainer.TrainConfig:
    from dataclasses import replace

    changes = {
        k: v for k, v in {"epochs": config.epochs, "lr": config.lr, "batch_size": config.batch_size}.items() if v > 0
    }
    if config.max_steps >= 0:
        changes["max_steps"] = config.max_steps or None
    return replace(base, seed=config.seed, **changes)


def _train_stage(
    context: dg.AssetExecutionContext,
    stage: str,
    config: StageConfig,
    linkage_store: LinkageStore,
    compute: ComputeResource,
) -> dg.MaterializeResult:
    store = linkage_store.store()
    data_path = store.artifact_dir / "model" / "training_crops.parquet"
    if not data_path.is_file():
        raise ValueError(f"{data_path} is missing; materialize training_crops first")
    data = training_data.load_training_set(data_path)
    data_sha = hashlib.sha256(data_path.read_bytes()).hexdigest()
    extra_path = store.artifact_dir / "model" / "pretraining_extra.parquet"
    if stage == "clip" and extra_path.is_file():
        data = training_data.concat_training_sets([data, training_data.load_training_set(extra_path)])
        data_sha += hashlib.sha256(extra_path.read_bytes()).hexdigest()
    recipe = training_recipe.Recipe()
    stage_cfg = _stage_config(recipe.clip if stage == "clip" else recipe.supcon, config)
    from dataclasses import asdict, replace

    recipe = replace(recipe, **{stage: stage_cfg})
    trained = store.read_table("trained_models") if store.table_exists("trained_models") else None
    start_from = None
    parent = ""
    if stage == "supcon":
        clips = (
            trained[(trained["stage"] == "clip")].sort_values("created_at") if trained is not None else pd.DataFrame()
        )
        if clips.empty:
            raise ValueError("no pretrained model yet; materialize pretrained_model first")
        start_from, parent = str(clips["path"].iloc[-1]), str(clips["model_id"].iloc[-1])
    # One run folder per (data, stage config, parent): re-materializing resumes it; a change starts afresh.
    key = hashlib.sha256(json.dumps([data_sha, asdict(stage_cfg), parent], sort_keys=True).encode()).hexdigest()[:12]
    work_dir = store.artifact_dir / "model" / "runs" / f"{stage}-{key}"
    context.log.info(f"training stage {stage} on {len(data)} crops in {work_dir} (device {compute.torch_device()})")

    def progress(info: dict) -> None:
        if info["step"] % stage_cfg.log_every == 0:
            context.log.info(
                f"{stage} step {info['step']} epoch {info['epoch']} loss {info['loss']:.4f} lr {info['lr']:.2e}"
            )

    out = training_recipe.train_recipe(
        data,
        recipe,
        work_dir,
        device=str(compute.torch_device()),
        stages=(stage,),
        start_from=start_from,
        on_step=progress,
    )
    folder = out[stage]
    if stage == "supcon":
        registry.attach_pretrained(folder, Path(start_from))
    card = json.loads((folder / "model_card.json").read_text(encoding="utf-8"))
    if stage == "supcon":
        linking = _tune_on_validation(context, linkage_store, compute, folder)
        if linking:
            card["linking"] = linking
            (folder / "model_card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False), encoding="utf-8")
    row = pd.DataFrame(
        [
            {
                "model_id": card["model_id"],
                "stage": stage,
                "path": str(folder),
                "parent_model_id": parent,
                "data_sha256": data_sha,
                "config": json.dumps(asdict(stage_cfg)),
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z",
            }
        ]
    )
    rows = pd.concat([trained[trained["model_id"] != card["model_id"]], row]) if trained is not None else row
    store.replace_table("trained_models", rows, schema.TRAINED_MODELS)
    return dg.MaterializeResult(
        metadata={
            "model_id": card["model_id"],
            "path": dg.MetadataValue.path(str(folder)),
            "training": dg.MetadataValue.json(card.get("training", {})),
            "n_parameters": card.get("n_parameters"),
        }
    )


def _tune_on_validation(
    context: dg.AssetExecutionContext, linkage_store: LinkageStore, compute: ComputeResource, folder
) -> dict:
    """Pooling weight and no-match threshold chosen on the corpus's validation firms ({} without labels)."""
    store, registry = linkage_store.store(), linkage_store.registry()
    if not registry.linkages or not store.table_exists("stg_regions"):
        return {}
    regions = store.read_table("stg_regions")
    if regions["true_entity_id"].fillna("").eq("").all():
        return {}
    sources = {s.name: s for s in registry.sources}
    query = sources[registry.linkages[0].query]
    condition = query.primary_ocr
    inputs = all_embedding_inputs(store)
    try:
        tuned = by_embeddings.tune_linking(
            compute.encoder(folder),
            inputs,
            regions,
            [(lk.query, lk.target) for lk in registry.linkages],
            condition=condition,
            also=list(query.ocr),
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


class LinkageModelConfig(dg.Config):
    """Which model the pipeline embeds and links with."""

    model: str = "auto"  # auto | shipped | trained | directory
    directory: str = ""  # for model="directory": our format, a Hugging Face CLIP or the rinna layout


@dg.asset(group_name="model", deps=[supervised_model], kinds={"duckdb"}, pool="duckdb")
def linkage_model(
    config: LinkageModelConfig, linkage_store: LinkageStore, compute: ComputeResource
) -> dg.MaterializeResult:
    """One row: the model that embeds and links (the latest trained, else the shipped one); refreshed on demand."""
    store = linkage_store.store()
    trained = store.read_table("trained_models") if store.table_exists("trained_models") else None
    choice = registry.choose_model(config.model, config.directory, trained)
    encoder = compute.encoder(choice.path)
    weight, threshold = registry.card_defaults(choice.path)
    row = pd.DataFrame(
        [
            {
                "model_id": encoder.model_id,
                "path": str(choice.path),
                "pretrained_path": str(choice.pretrained_path or ""),
                "chosen_by": choice.chosen_by,
                "pooling_weight": weight,
                "nomatch_threshold": threshold,
            }
        ]
    )
    store.replace_table("linkage_model", row, schema.LINKAGE_MODEL)
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
    store, source = linkage_store.store(), linkage_store.source(context.partition_key)
    model = current_model(linkage_store)
    encoder = compute.encoder(model["path"])
    regions = store.read_partition("layout_regions", source.name, schema.LAYOUT_REGIONS)
    crops = store.read_partition("region_crops", source.name, schema.REGION_CROPS)
    texts = store.read_partition("ocr_texts", source.name, schema.OCR_TEXTS)
    inputs = embed.embedding_inputs(
        regions, crops, texts, store.read_partition("labelled_regions", source.name, schema.LABELLED_REGIONS)
    )
    existing = (
        store.read_partition("crop_embeddings", source.name, schema.CROP_EMBEDDINGS)
        if store.partition_path("crop_embeddings", source.name).exists()
        else None
    )
    # Every forward pass runs on exactly batch_size crops or texts (the embeddings do not depend on what else is
    # embedded, see linkage_pipeline.encoders); on the CPU 64 is as fast per crop as 256 and pads a small run less.
    rejected: list = []
    frame, stats = embed.embed_crops(
        encoder, inputs, existing=existing, batch_size=compute.batch_size, progress=context.log.info, rejected=rejected
    )
    n = store.write_partition("crop_embeddings", source.name, frame, schema.CROP_EMBEDDINGS)
    n_rejected = write_rejections(store, "crop_embeddings", source.name, rejected)
    computed = stats["images"] + stats["texts"]
    empty = {}
    if n == 0:
        pages = store.read_partition("page_images", source.name, schema.PAGE_IMAGES)
        empty = {"empty": f"no linkable crops in source {source.name!r} ({len(pages)} usable pages, {len(regions)} "
                          f"regions, {len(crops)} crops, {len(texts)} OCR texts; rejected files are in "
                          "rejected_inputs): its linkages yield no links"}
        context.log.warning(empty["empty"])
    return dg.MaterializeResult(
        check_results=[check_result("crop_embeddings_unit_norm", quality.embedding_norms(frame))],
        metadata={
            **empty,
            "rows": n,
            "rejected": n_rejected,
            "model_id": encoder.model_id,
            "reused_rows": int(stats["reused"]),
            "embedded_images": int(stats["images"]),
            "embedded_texts": int(stats["texts"]),
            "seconds": stats["seconds"],
            "crops_per_s": stats["images"] / max(stats["seconds"], 1e-9) if computed else 0.0,
            "device": str(encoder.device),
        },
    )
