"""The link review: the verdicts table the review page writes, and the fine-tune of the linkage model on them."""

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import dagster as dg

from assets_defs._common import reviews_in_force
from assets_defs.model import (
    _model_dir,
    _trained_models,
    all_embedding_inputs,
    current_model,
    supervised_model,
)
from linkage_pipeline import schema
from linkage_pipeline.multimodal import registry
from linkage_pipeline.multimodal.training import recipe as training_recipe
from linkage_pipeline.review import training as review_training
from linkage_pipeline.review import verdicts
from resources import ComputeResource, LinkageStore

# Written by the review page (`linkage-pipeline review`), one row per key press, never by a run: declared here so
# that the assets that read it show it in their lineage.
link_reviews = dg.AssetsDefinition(
    specs=[
        dg.AssetSpec(
            "link_reviews",
            group_name="review",
            kinds={"duckdb"},
            description="One row per verdict given on the review page (accept, pick, none, skip, undo), appended "
            "as it is given; written by `linkage-pipeline review`.",
        )
    ]
)


class ReviewedModelConfig(dg.Config):
    """The SupCon continuation on reviewed links (linkage_pipeline.review.training.FineTuneConfig)."""

    min_pairs: int = 20  # fewer accept/pick verdicts: no fine-tune (the asset is skipped, saying why)
    lr: float = 2e-4
    max_steps: int = 150
    seed: int = 0


@dg.asset(group_name="model", deps=[link_reviews, supervised_model], kinds={"pytorch", "safetensors"}, pool="gpu",
          output_required=False)
def reviewed_model(
    context: dg.AssetExecutionContext, config: ReviewedModelConfig, linkage_store: LinkageStore,
    compute: ComputeResource,
) -> Iterator[dg.MaterializeResult]:
    """The linkage model fine-tuned on reviewed links and the candidates reviewers rejected, adopted only when it
    links the held-back half of the reviews better; refreshed on demand."""
    store = linkage_store.store()
    reviews = reviews_in_force(store)
    settings = review_training.FineTuneConfig(min_pairs=config.min_pairs, lr=config.lr, max_steps=config.max_steps,
                                              seed=config.seed)
    # the fit half only: the other half stays labels for the weight and threshold of the fine-tuned model
    all_reviews, reviews = reviews, verdicts.reviews_for_fitting(reviews)
    pairs = int(reviews["verdict"].isin(["accept", "pick"]).sum())
    if pairs < settings.min_pairs:
        context.log.warning(f"no fine-tune: {pairs} reviewed pairs (accept or pick) in the fit half of the reviews, "
                            f"at least {settings.min_pairs} needed; review more links with `linkage-pipeline review`")
        return
    model = current_model(linkage_store)  # read at run time: the model the reviewed links were made with
    links = store.read_table("record_links")
    method, ocr, model_id = str(links["method"].iloc[0]), str(links["ocr"].iloc[0]), str(model["model_id"])
    # the candidates the page showed: the model's top-k of the links' condition (multimodal for string links)
    shown = method if method in ("vision", "language", "multimodal") else "multimodal"
    candidates = store.query("select * from embedding_links where model_id = ? and training = 'supervised' "
                             "and method = ? and ocr = ?", [model_id, shown, ocr])
    data, counts = review_training.review_training_set(reviews, candidates, store.read_table("stg_regions"),
                                                       store.read_table("stg_crop_texts"))
    key = hashlib.sha256(json.dumps([sorted(reviews["review_id"]), asdict(settings), model_id]).encode()).hexdigest()
    work_dir = _model_dir(linkage_store) / "runs" / f"reviewed-{key[:12]}"
    context.log.info(f"fine-tuning {model_id[:12]} on {counts} in {work_dir}")
    t0 = time.perf_counter()
    folder = review_training.fine_tune_on_reviews(str(model["path"]), data, work_dir, config=settings,
                                                  device=str(compute.torch_device()),
                                                  card={"reviews": counts, "reviewed_from_model": model_id})
    check = review_training.check_fine_tune(
        compute.encoder(str(model["path"])), compute.encoder(str(folder)), folder, all_embedding_inputs(store),
        store.read_table("stg_regions"), [(lk.query, lk.target) for lk in linkage_store.registry().linkages],
        all_reviews, default_weight=registry.card_defaults(Path(str(model["path"])))[0])
    context.log.info(f"fine-tune check: {check['why']} ({check['n']} held-back reviewed queries)")
    card = registry.read_card(folder)
    row = training_recipe.trained_model_row(card, "reviewed", folder, model_id, key, settings)
    rows = registry.record_trained_model(_trained_models(linkage_store), row)
    store.replace_table("trained_models", rows, schema.TRAINED_MODELS)
    context.log_event(dg.AssetMaterialization("trained_models", metadata={"rows": len(rows),
                                                                          "model_id": card["model_id"]}))
    adopted = "adopted: linkage_model (model=auto) picks it" if check["adopted"] else (
        "not adopted: linkage_model keeps the model it started from")
    yield dg.MaterializeResult(metadata={
        "model_id": card["model_id"], "parent_model_id": model_id, **counts, "seconds": time.perf_counter() - t0,
        "path": dg.MetadataValue.path(str(folder)), "check": dg.MetadataValue.json(check), "outcome": adopted,
        "next": "materialize linkage_model, then the source and linkage jobs"})

