"""Cross-source linking assets: string links (the baseline) and the record links the network is built on."""


import math
import time

import dagster as dg
import pandas as pd

from assets_defs._common import check_result, preview
from assets_defs.model import crop_embeddings, current_model, linkage_model
from linkage_pipeline import schema
from linkage_pipeline.evaluation import quality
from linkage_pipeline.linking import by_embeddings, by_strings, selection
from linkage_pipeline.linking import index as linking_index
from linkage_pipeline.linking.strings import STRING_METHODS
from linkage_pipeline.multimodal import embed
from resources import ComputeResource, LinkageStore

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


class RecordLinkConfig(dg.Config):
    """Which method and text condition feed the record links.

    ``auto`` picks, among the model's methods (vision, language, multimodal) and the string methods, the
    method/condition with the best validation accuracy when labels exist; without labels the multimodal model
    on the query source's primary OCR engine, with the no-match threshold stored with the model.
    """

    method: str = "auto"
    condition: str = "auto"  # an OCR engine name; "auto": chosen with the method
    threshold: float = -1.0  # no-match threshold; < 0: tuned on the validation split when labels exist
    margin: float = 0.0  # also keep further targets within this score of the best (one firm listed twice)
    max_accuracy_drop: float = 0.02  # blocking check: validation top-1 may fall at most this much between runs


def _empty_linkages(context: dg.AssetExecutionContext, lines: list[str]) -> str:
    """The metadata line for linkages with an empty side (zero links each, not a failure), each also logged."""
    for line in lines:
        context.log.warning(f"zero links for linkage {line}")
    return "; ".join(lines) if lines else "none"


class StringLinksConfig(dg.Config):
    """Whether earlier top-k lists of the string baselines are reused."""

    relink_all: bool = False  # True: compare every query again; False: only new texts, old ones against new targets


@dg.asset(group_name="linking", deps=["stg_crop_texts", "document_sources"], kinds={"duckdb"}, pool="duckdb")
def string_links(
    context: dg.AssetExecutionContext, config: StringLinksConfig, linkage_store: LinkageStore, compute: ComputeResource
) -> dg.MaterializeResult:
    """One row per query crop, target crop and string method/text condition among the top 5; only new texts compared."""
    store, registry = linkage_store.store(), linkage_store.registry()
    reuse = not config.relink_all and store.table_exists("string_links") and store.table_exists("string_link_inputs")
    t0 = time.perf_counter()
    texts = store.read_table("stg_crop_texts")
    linkages = [(lk.query, lk.target) for lk in registry.linkages]
    empty = _empty_linkages(context, by_strings.empty_linkages(texts["source"], linkages, what="OCR texts"))
    links, inputs, stats = by_strings.relink_sources_by_strings(
        texts,
        linkages,
        methods=STRING_METHODS,
        workers=compute.workers(),
        previous=store.read_table("string_links") if reuse else None,
        previous_inputs=store.read_table("string_link_inputs") if reuse else None,
    )
    seconds = time.perf_counter() - t0
    # links first: a run stopped in between leaves the older inputs, so the newer texts are compared again
    n = store.replace_table("string_links", links, schema.STRING_LINKS)
    store.replace_table("string_link_inputs", inputs, schema.STRING_LINK_INPUTS)
    return dg.MaterializeResult(
        metadata={"rows": n, **stats, "empty_linkages": empty, "seconds": seconds, "preview": preview(links)}
    )


@dg.asset(
    group_name="linking",
    deps=[string_links, "embedding_links", "stg_regions"],
    kinds={"duckdb"},
    pool="duckdb",
    check_specs=[
        dg.AssetCheckSpec("record_links_score_spread", asset="record_links", blocking=True,
                          description="top-1 scores have not collapsed to one value"),
        dg.AssetCheckSpec("record_links_accuracy_not_dropped", asset="record_links", blocking=True,
                          description="validation accuracy did not fall against the last accepted run"),
    ],
)
def record_links(
    context: dg.AssetExecutionContext, config: RecordLinkConfig, linkage_store: LinkageStore
) -> dg.MaterializeResult:
    """One row per accepted query -> target link (or a no-match row per unlinked query); refreshed on demand."""
    store = linkage_store.store()
    candidates = [store.read_table("string_links")]
    default_method, default_condition, default_threshold, model_id = "jaro_winkler", None, 0.0, ""
    if store.table_exists("embedding_links"):
        model = current_model(linkage_store)
        emb = store.read_table("embedding_links")
        emb = emb[(emb["training"] == "supervised") & (emb["model_id"] == model["model_id"])]
        if not emb.empty:
            candidates.append(emb[list(schema.STRING_LINKS)])
            model_id = str(model["model_id"])
            default_method = "multimodal"
            sources = store.read_table("document_sources")
            queries = sources[sources["role"] == "query"]["primary_ocr"].tolist()
            default_condition = queries[0] if queries else None
            card_threshold = float(model["nomatch_threshold"])
            default_threshold = card_threshold if not math.isnan(card_threshold) else 0.0
    links, choice = selection.select_record_links(
        pd.concat(candidates, ignore_index=True),
        store.read_table("stg_regions"),
        method=config.method,
        condition=config.condition,
        threshold=None if config.threshold < 0 else config.threshold,
        margin=config.margin,
        default_method=default_method,
        default_condition=default_condition,
        default_threshold=default_threshold,
        model_id=model_id,
    )
    links["run_id"] = context.run_id
    n = store.replace_table("record_links", links, schema.RECORD_LINKS)
    empty = {}
    if n == 0:
        empty = {"empty": "no record links: no candidate links (every linkage has an empty query or target side)"}
        context.log.warning(empty["empty"])
    history = store.read_table("record_link_runs") if store.table_exists("record_link_runs") else None
    accepted = history[history["passed"]] if history is not None else None
    previous = float(accepted["val_top1"].iloc[-1]) if accepted is not None and len(accepted) else None
    drop = quality.accuracy_drop(float(choice["val_top1"]), previous, tolerance=config.max_accuracy_drop)
    run_row = pd.DataFrame([{
        "run_id": context.run_id, "model_id": model_id, "method": choice["method"], "ocr": choice["ocr"],
        "val_top1": float(choice["val_top1"]), "val_top1_with_nomatch": float(choice["val_top1_with_nomatch"]),
        "passed": drop.passed, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }])
    store.replace_table(
        "record_link_runs", pd.concat([history, run_row], ignore_index=True) if history is not None else run_row,
        RECORD_LINK_RUNS,
    )
    return dg.MaterializeResult(
        check_results=[
            check_result("record_links_score_spread", quality.score_spread(links)),
            check_result("record_links_accuracy_not_dropped", drop),
        ],
        metadata={**empty, "rows": n, "matched": int(links["matched"].fillna(False).astype(bool).sum()), **choice,
                  "preview": preview(links)},
    )


class FaissIndexConfig(dg.Config):
    """How target embeddings are indexed."""

    kind: str = "flat"  # flat (exact) | ivf | hnsw (approximate, for millions of targets)
    device: str = "auto"  # auto: the GPU when the compute resource is on CUDA and faiss-gpu is installed
    methods: list[str] = list(embed.EMBEDDING_METHODS)
    pooling_weight: float = -1.0  # image weight of the multimodal embedding; < 0: the model's (default 0.5)
    nprobe: int = 16
    rebuild: bool = False  # True: rebuild every index; False: add only new targets to the saved indexes


def _source_embeddings(
    context: dg.AssetExecutionContext, linkage_store: LinkageStore, model_id: str, sources: list[str]
) -> tuple[pd.DataFrame, dict[str, str]]:
    """crop_embeddings rows of ``sources`` made with ``model_id``, and why each source left out was left out.

    A source whose partition is missing (crop_embeddings never materialized, or failed) or was embedded with
    another model is left out, with a warning: its linkages are skipped, the others still run. A source with an
    empty partition (no usable page) is not left out: it has no rows, so its linkages yield zero links.
    """
    store = linkage_store.store()
    frames, skipped = [], {}
    for name in sources:
        if not store.partition_path("crop_embeddings", name).exists():
            skipped[name] = "no crop_embeddings partition; materialize crop_embeddings for it"
        else:
            part = store.read_partition("crop_embeddings", name, schema.CROP_EMBEDDINGS)
            stale = set(part["model_id"]) - {model_id}
            if stale:
                skipped[name] = (f"crop_embeddings made with model(s) {[m[:12] for m in stale]}, not the linkage model "
                                 f"{model_id[:12]}; re-materialize crop_embeddings for it")
            else:
                frames.append(part)
                continue
        context.log.warning(f"source {name!r} left out of linking: {skipped[name]}")
    frames = [f for f in frames if not f.empty]
    out = pd.concat(frames, ignore_index=True) if frames else schema.empty_frame(schema.CROP_EMBEDDINGS)
    return out, skipped


def _pooling_weight(configured: float, model: pd.Series) -> float:
    return float(model["pooling_weight"]) if configured < 0 else configured


@dg.asset(group_name="linking", deps=[crop_embeddings, linkage_model, "document_sources"], kinds={"faiss", "duckdb"}, pool="duckdb")
def faiss_index(
    context: dg.AssetExecutionContext, config: FaissIndexConfig, linkage_store: LinkageStore, compute: ComputeResource
) -> dg.MaterializeResult:
    """One row per FAISS index file over a target source's embeddings (per text condition and method); refreshed on demand."""
    store, registry = linkage_store.store(), linkage_store.registry()
    model = current_model(linkage_store)
    device = config.device
    if device == "auto":
        device = "cuda" if compute.torch_device().type == "cuda" and linking_index.faiss_gpu_available() else "cpu"
    spec = linking_index.IndexSpec(kind=config.kind, device=device, nprobe=config.nprobe)
    t0 = time.perf_counter()
    emb, skipped = _source_embeddings(context, linkage_store, str(model["model_id"]),
                                      sorted({lk.target for lk in registry.linkages}))
    runnable, _ = by_strings.runnable_linkages([(lk.query, lk.target) for lk in registry.linkages], skipped)
    targets = sorted({t for _, t in runnable})
    out_dir = store.artifact_dir / "indexes" / str(model["model_id"])[:16]
    rows, stats = by_embeddings.update_target_indexes(
        emb, targets, out_dir, methods=config.methods, weight=_pooling_weight(config.pooling_weight, model), spec=spec,
        rebuild=config.rebuild,
    )
    store.replace_table("faiss_indexes", rows, schema.FAISS_INDEXES)
    empty = sorted(set(targets) - set(emb["source"]))
    for name in empty:
        context.log.warning(f"target source {name!r} has no crop embeddings: no index, its linkages yield no links")
    return dg.MaterializeResult(
        metadata={"indexes": len(rows), **stats, "empty_targets": ", ".join(empty) or "none",
                  "skipped_sources": "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "none",
                  "device": device, "kind": config.kind, "model_id": str(model["model_id"]),
                  "seconds": time.perf_counter() - t0, "preview": preview(rows)}
    )


class EmbeddingLinksConfig(dg.Config):
    """How many neighbours are kept, and whether earlier top-k lists are reused."""

    k: int = 5
    relink_all: bool = False  # True: search every query again; False: only new queries, old ones against new targets


@dg.asset(group_name="linking", deps=[faiss_index], kinds={"faiss", "duckdb"}, pool="duckdb")
def embedding_links(
    context: dg.AssetExecutionContext, config: EmbeddingLinksConfig, linkage_store: LinkageStore,
    compute: ComputeResource,
) -> dg.MaterializeResult:
    """One row per query crop, target crop and model method/text condition among the top k; only affected queries relinked."""
    store, registry = linkage_store.store(), linkage_store.registry()
    model = current_model(linkage_store)
    model_id = str(model["model_id"])
    index_rows = store.read_table("faiss_indexes")
    # no rows is a result (every target source is empty); rows of another model are a stale index
    if set(index_rows["model_id"]) - {model_id}:
        raise ValueError(f"faiss_indexes were not built with the linkage model {model_id[:12]}; re-materialize faiss_index")
    device = "cuda" if compute.torch_device().type == "cuda" and linking_index.faiss_gpu_available() else "cpu"
    indexes = {}
    for r in index_rows.itertuples(index=False):
        index, meta = linking_index.load_index(r.path, model_id=model_id, device=device)
        indexes[(r.target_source, r.ocr, r.method)] = (index, meta.ids)
    weight = float(index_rows["weight"].iloc[0]) if len(index_rows) else _pooling_weight(-1.0, model)
    queries, skipped = _source_embeddings(context, linkage_store, model_id, sorted({lk.query for lk in registry.linkages}))
    targets, skipped_targets = _source_embeddings(context, linkage_store, model_id,
                                                  sorted({lk.target for lk in registry.linkages}))
    linkages, skipped_lines = by_strings.runnable_linkages(
        [(lk.query, lk.target) for lk in registry.linkages], {**skipped, **skipped_targets}
    )
    empty = _empty_linkages(context, by_strings.empty_linkages([*queries["source"], *targets["source"]], linkages,
                                                           what="crop embeddings"))
    reuse = not config.relink_all and store.table_exists("embedding_links") and store.table_exists("embedding_link_targets")
    t0 = time.perf_counter()
    links, linked_targets, stats = by_embeddings.relink(
        queries, targets, linkages, indexes,
        previous=store.read_table("embedding_links") if reuse else None,
        previous_targets=store.read_table("embedding_link_targets") if reuse else None,
        methods=sorted(set(index_rows["method"])), weight=weight, k=config.k, training="supervised",
    )
    # links first: a run stopped in between leaves the older target list, so those targets are searched again
    n = store.replace_table("embedding_links", links, schema.EMBEDDING_LINKS)
    store.replace_table("embedding_link_targets", linked_targets, schema.LINKED_TARGETS)
    return dg.MaterializeResult(
        metadata={"rows": n, **stats, "empty_linkages": empty, "skipped_linkages": "; ".join(skipped_lines) or "none",
                  "model_id": model_id, "pooling_weight": weight, "seconds": time.perf_counter() - t0,
                  "preview": preview(links)}
    )
