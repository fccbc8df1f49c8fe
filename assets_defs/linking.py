"""Cross-source linking assets: string links (the baseline), FAISS indexes, embedding links and the record links
the network is built on. Each also declares the bookkeeping table it writes (inputs, targets, index list, runs)."""

import json
import time
from collections.abc import Iterator

import dagster as dg
import pandas as pd

from assets_defs._common import (
    check_result,
    preview,
    reviews_in_force,
    selected_results,
    table_step,
)
from assets_defs.model import crop_embeddings, current_model, linkage_model
from linkage_pipeline import schema
from linkage_pipeline.config import SourceRegistry
from linkage_pipeline.evaluation import quality
from linkage_pipeline.linking import by_embeddings, by_strings, hybrid, selection
from linkage_pipeline.linking import index as linking_index
from linkage_pipeline.linking.strings import STRING_METHODS
from linkage_pipeline.multimodal import embed
from linkage_pipeline.multimodal import registry as model_registry
from linkage_pipeline.review import verdicts
from linkage_pipeline.store import Store
from resources import ComputeResource, LinkageStore


class RecordLinkConfig(dg.Config):
    """Which method and OCR condition feed the record links.

    ``auto`` picks, among the model's methods (vision, language, multimodal) and the string methods, the
    method/OCR condition with the best validation accuracy when labels exist; without labels the multimodal model
    on the query source's primary OCR engine, with the no-match threshold stored with the model.
    """

    method: str = "auto"
    ocr: str = "auto"  # an OCR engine name; "auto": chosen with the method
    threshold: float | None = None  # no-match threshold; None: tuned on the validation split when labels exist
    margin: float = 0.0  # also keep further targets within this score of the best (one firm listed twice)
    max_accuracy_drop: float = 0.02  # blocking check: validation top-1 may fall at most this much between runs


def _empty_linkages(context: dg.AssetExecutionContext, lines: list[str]) -> str:
    """The metadata line for linkages with an empty side (zero links each, not a failure), each also logged."""
    for line in lines:
        context.log.warning(f"zero links for linkage {line}")
    return "; ".join(lines) if lines else "none"


def _previous(store: Store, relink_all: bool, *tables: str) -> list[pd.DataFrame | None]:
    """The earlier tables an incremental run reuses: all of them, or ``None`` for each when relinking everything
    or when one is missing."""
    reuse = not relink_all and all(store.table_exists(t) for t in tables)
    return [store.read_table(t) if reuse else None for t in tables]


_STRING_LINKS_TABLES = (
    dg.AssetSpec("string_links", deps=["stg_crop_texts", "document_sources"], kinds={"duckdb"},
                 description="One row per query crop, target crop and string method/OCR condition among the "
                             "top 5; only new texts compared."),
    dg.AssetSpec("string_link_inputs", deps=["stg_crop_texts", "document_sources"], kinds={"duckdb"},
                 description="One row per crop text the string links were computed from (its hash); "
                             "refreshed with string_links."),
)


class StringLinksConfig(dg.Config):
    """Whether earlier top-k lists of the string baselines are reused."""

    relink_all: bool = False  # True: compare every query again; False: only new texts, old ones against new targets


@table_step(*_STRING_LINKS_TABLES, group="linking")
def string_links(
    context: dg.AssetExecutionContext, config: StringLinksConfig, linkage_store: LinkageStore, compute: ComputeResource
) -> Iterator[dg.MaterializeResult]:
    """String-baseline links, and the texts they were computed from (what the next run compares against)."""
    store, registry = linkage_store.store(), linkage_store.registry()
    previous, previous_inputs = _previous(store, config.relink_all, "string_links", "string_link_inputs")
    t0 = time.perf_counter()
    texts = store.read_table("stg_crop_texts")
    linkages = [(lk.query, lk.target) for lk in registry.linkages]
    empty = _empty_linkages(context, by_strings.empty_linkages(texts["source"], linkages, what="OCR texts"))
    links, inputs, stats = by_strings.relink_sources_by_strings(
        texts, linkages, methods=STRING_METHODS, workers=compute.workers(), previous=previous,
        previous_inputs=previous_inputs,
    )
    seconds = time.perf_counter() - t0
    # links first: a run stopped in between leaves the older inputs, so the newer texts are compared again
    n = store.replace_table("string_links", links, schema.STRING_LINKS)
    n_inputs = store.replace_table("string_link_inputs", inputs, schema.STRING_LINK_INPUTS)
    yield from selected_results(
        context, dg.MaterializeResult(asset_key="string_links", metadata={
            "rows": n, **stats, "empty_linkages": empty, "seconds": seconds, "preview": preview(links)}),
        dg.MaterializeResult(asset_key="string_link_inputs", metadata={"rows": n_inputs}),
    )


REVIEW_HINT = ("Review the uncertain links in a browser: `linkage-pipeline review --data-dir {data_dir}`, then open "
               "[http://127.0.0.1:8765](http://127.0.0.1:8765). Verdicts decide their links at the next run.")
_NO_RECORD_LINKS = "no record links: no candidate links (every linkage has an empty query or target side)"


_RECORD_LINKS_TABLES = (
    dg.AssetSpec("record_links", deps=["string_links", "embedding_links", "stg_regions", "link_reviews"],
                 kinds={"duckdb"},
                 description="One row per accepted query -> target link (or a no-match row per unlinked "
                             "query), a reviewer's verdict in place of the model's choice; refreshed on demand."),
    dg.AssetSpec("record_link_runs", deps=["string_links", "embedding_links", "stg_regions"], kinds={"duckdb"},
                 description="One row per record_links run: the method, OCR condition and validation accuracy "
                             "chosen, and whether the accuracy check passed."),
)
_RECORD_LINKS_CHECKS = [
    dg.AssetCheckSpec("record_links_score_spread", asset="record_links", blocking=True,
                      description="top-1 scores have not collapsed to one value"),
    dg.AssetCheckSpec("record_links_accuracy_not_dropped", asset="record_links", blocking=True,
                      description="validation accuracy did not fall against the last accepted run"),
]


@table_step(*_RECORD_LINKS_TABLES, group="linking", check_specs=_RECORD_LINKS_CHECKS)
def record_links(
    context: dg.AssetExecutionContext, config: RecordLinkConfig, linkage_store: LinkageStore
) -> Iterator[dg.MaterializeResult]:
    """Record links chosen among the string and embedding links, and the run appended to the accuracy history."""
    store = linkage_store.store()
    emb = store.read_table("embedding_links") if store.table_exists("embedding_links") else None
    model = current_model(linkage_store) if emb is not None else None
    sources = store.read_table("document_sources") if emb is not None else None
    history = store.read_table("record_link_runs") if store.table_exists("record_link_runs") else None
    reviews = reviews_in_force(store)
    fine_tuned = model is not None and model_registry.fine_tuned_on_reviews(str(model["path"]))
    links, runs, choice, drop = selection.record_links(
        store.read_table("string_links"), emb, model, sources, store.read_table("stg_regions"), history,
        run_id=context.run_id, recorded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), method=config.method,
        ocr=config.ocr, threshold=config.threshold, margin=config.margin, max_accuracy_drop=config.max_accuracy_drop,
        reviews=reviews, tuning_reviews=verdicts.reviews_for_tuning(reviews, fine_tuned=fine_tuned),
    )
    n = store.replace_table("record_links", links, schema.RECORD_LINKS)
    n_runs = store.replace_table("record_link_runs", runs, schema.RECORD_LINK_RUNS)
    empty = {"empty": _NO_RECORD_LINKS} if n == 0 else {}
    if empty:
        context.log.warning(_NO_RECORD_LINKS)
    checks = [check_result("record_links_score_spread", quality.score_spread(links)),
              check_result("record_links_accuracy_not_dropped", drop)]
    matched = int(links["matched"].fillna(False).astype(bool).sum())
    yield from selected_results(
        context, dg.MaterializeResult(asset_key="record_links", check_results=checks, metadata={
            **empty, "rows": n, "matched": matched, **choice, "preview": preview(links),
            "review_page": dg.MetadataValue.md(REVIEW_HINT.format(data_dir=linkage_store.data_path))}),
        dg.MaterializeResult(asset_key="record_link_runs", metadata={"rows": n_runs, "passed": drop.passed}),
    )


class FaissIndexConfig(dg.Config):
    """How target embeddings are indexed."""

    kind: str = "flat"  # flat (exact) | ivf | hnsw (approximate, for millions of targets)
    device: str = "auto"  # auto: the GPU when the compute resource is on CUDA and faiss-gpu is installed
    methods: list[str] = list(embed.EMBEDDING_METHODS)
    pooling_weight: float | None = None  # image weight of the multimodal embedding; None: chosen per OCR condition
    # without labels (or reviews) for a condition: "mutual" chooses the weight whose links agree most with the reverse
    # links between query and target sources; "card" keeps the model card's weight
    unlabelled_weight: str = "mutual"
    nprobe: int = 16
    rebuild: bool = False  # True: rebuild every index; False: add only new targets to the saved indexes


def _tuning_regions(store: Store, model: pd.Series) -> pd.DataFrame | None:
    """The labels the pooling and string weights are chosen on: ``stg_regions``, with the reviews in force as the
    labels of a corpus without labelled validation firms (the check half for a model fine-tuned on reviews);
    ``None`` before ``stg_regions`` exists."""
    if not store.table_exists("stg_regions"):
        return None
    reviews = verdicts.reviews_for_tuning(reviews_in_force(store),
                                          fine_tuned=model_registry.fine_tuned_on_reviews(str(model["path"])))
    return verdicts.tuning_labels(store.read_table("stg_regions"), reviews)[0]


def _pooling_weights(
    context: dg.AssetExecutionContext, store: Store, config: FaissIndexConfig, model: pd.Series,
    target_embeddings: pd.DataFrame, linkages: list[tuple[str, str]],
) -> tuple[float | dict[str, float], pd.DataFrame]:
    """The image weight per text condition: the config's when set, else chosen on labelled validation firms, or
    on reviewed links where there are none, or without labels by mutual nearest neighbours between the sources
    (:func:`by_embeddings.choose_pooling_weights`; ``unlabelled_weight: card`` keeps the model card's weight)."""
    rules = by_embeddings.UNLABELLED_WEIGHT_CONFIG
    if config.unlabelled_weight not in rules:
        raise ValueError(f"faiss_index config unlabelled_weight must be one of {sorted(rules)}, got "
                         f"{config.unlabelled_weight!r}")
    default = float(model["pooling_weight"])
    if config.pooling_weight is not None:
        conditions = sorted(set(target_embeddings["ocr"])) if not target_embeddings.empty else []
        table = by_embeddings.pooling_table([by_embeddings.pooling_row(c, config.pooling_weight, "config")
                                             for c in conditions])
        return float(config.pooling_weight), table
    regions = _tuning_regions(store, model)
    queries, _ = _source_embeddings(context, store, str(model["model_id"]), sorted({q for q, _ in linkages}))
    both = pd.concat([queries, target_embeddings], ignore_index=True) if len(queries) else target_embeddings
    weights, table = by_embeddings.choose_pooling_weights(both, regions, linkages, default=default,
                                                          unlabelled=rules[config.unlabelled_weight])
    for row in table.itertuples():
        context.log.info(f"pooling weight {row.weight:.1f} for {row.ocr} ({row.chosen_by}, n_val={row.n_val})")
    return weights, table


def _source_embeddings(
    context: dg.AssetExecutionContext, store: Store, model_id: str, sources: list[str]
) -> tuple[pd.DataFrame, dict[str, str]]:
    """crop_embeddings rows of ``sources`` made with ``model_id`` (:func:`by_embeddings.usable_embeddings`), and
    why each source left out was left out (also logged as a warning)."""
    parts = {name: store.read_partition("crop_embeddings", name, schema.CROP_EMBEDDINGS)
             if store.partition_path("crop_embeddings", name).exists() else None for name in sources}
    out, skipped = by_embeddings.usable_embeddings(parts, model_id)
    for name, why in skipped.items():
        context.log.warning(f"source {name!r} left out of linking: {why}")
    return out, skipped


def _linkable(
    context: dg.AssetExecutionContext, store: Store, registry: SourceRegistry, model_id: str
) -> tuple[pd.DataFrame, pd.DataFrame, list[tuple[str, str]], list[str], str]:
    """Query and target crop_embeddings of the linkage model, the linkages that can run, one line per linkage
    skipped (a source unusable) and the metadata line of those with an empty side."""
    pairs = [(lk.query, lk.target) for lk in registry.linkages]
    queries, skipped = _source_embeddings(context, store, model_id, sorted({q for q, _ in pairs}))
    targets, skipped_targets = _source_embeddings(context, store, model_id, sorted({t for _, t in pairs}))
    linkages, lines = by_strings.runnable_linkages(pairs, {**skipped, **skipped_targets})
    empty = _empty_linkages(context, by_strings.empty_linkages([*queries["source"], *targets["source"]], linkages,
                                                               what="crop embeddings"))
    return queries, targets, linkages, lines, empty


_FAISS_INDEX_TABLES = (
    dg.AssetSpec("faiss_index",
                 deps=[crop_embeddings, linkage_model, "document_sources", "stg_regions", "link_reviews"],
                 kinds={"faiss", "duckdb"},
                 description="The FAISS index files over the target sources' embeddings (per OCR condition "
                             "and method); refreshed on demand."),
    dg.AssetSpec("faiss_indexes", deps=[crop_embeddings, linkage_model, "document_sources"], kinds={"duckdb"},
                 description="One row per FAISS index file: target source, OCR condition, method, model, kind, "
                             "pooling weight, size and path; refreshed with faiss_index."),
)


@table_step(*_FAISS_INDEX_TABLES, group="linking")
def faiss_index(
    context: dg.AssetExecutionContext, config: FaissIndexConfig, linkage_store: LinkageStore, compute: ComputeResource
) -> Iterator[dg.MaterializeResult]:
    """The target indexes brought up to date (only new targets added), and the table listing them."""
    model, t0 = current_model(linkage_store), time.perf_counter()
    store, registry = linkage_store.store(), linkage_store.registry()
    device = linking_index.faiss_device(config.device, compute.torch_device().type)
    emb, skipped = _source_embeddings(context, store, str(model["model_id"]),
                                      sorted({lk.target for lk in registry.linkages}))
    runnable, _ = by_strings.runnable_linkages([(lk.query, lk.target) for lk in registry.linkages], skipped)
    targets = sorted({t for _, t in runnable})
    weights, chosen = _pooling_weights(context, store, config, model, emb, runnable)
    rows, stats = by_embeddings.update_target_indexes(
        emb, targets, store.artifact_dir / "indexes" / str(model["model_id"])[:16], methods=config.methods,
        weight=weights, spec=linking_index.IndexSpec(kind=config.kind, device=device, nprobe=config.nprobe),
        rebuild=config.rebuild,
    )
    n = store.replace_table("faiss_indexes", rows, schema.FAISS_INDEXES)
    for name in (empty := sorted(set(targets) - set(emb["source"]))):
        context.log.warning(f"target source {name!r} has no crop embeddings: no index, its linkages yield no links")
    yield from selected_results(
        context, dg.MaterializeResult(asset_key="faiss_index", metadata={
            "indexes": len(rows), **stats, "empty_targets": ", ".join(empty) or "none",
            "skipped_sources": "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "none", "device": device,
            "kind": config.kind, "model_id": str(model["model_id"]), "seconds": time.perf_counter() - t0,
            "pooling_weights": preview(chosen.drop(columns=["val_top1_by_weight", "val_mrr_by_weight",
                                                            "val_margin_by_weight", "mutual_by_weight"])),
            "pooling_weight_candidates": dg.MetadataValue.json({
                str(row.ocr): {**{name: {f"{w:.2f}": round(float(v), 6) for w, v in getattr(row, col).items()}
                                  for name, col in (("val_top1", "val_top1_by_weight"),
                                                    ("val_mrr", "val_mrr_by_weight"),
                                                    ("val_margin", "val_margin_by_weight"),
                                                    ("mutual_rate", "mutual_by_weight"))},
                               "mutual_sign_test": {"gained": int(row.mutual_gained), "lost": int(row.mutual_lost),
                                                    "p_value": None if pd.isna(row.mutual_p)
                                                    else round(float(row.mutual_p), 9)}}
                for row in chosen.itertuples()}),
            "preview": preview(rows)}),
        dg.MaterializeResult(asset_key="faiss_indexes", metadata={"rows": n}),
    )


def _with_hybrid_links(
    context: dg.AssetExecutionContext, store: Store, model: pd.Series, links: pd.DataFrame, queries: pd.DataFrame,
    targets: pd.DataFrame, linkages: list[tuple[str, str]], weight: float | dict[str, float], k: int,
    unlabelled: str,
) -> tuple[pd.DataFrame, dict[str, object]]:
    """``links`` plus the ``hybrid`` rows, their string weight chosen per OCR condition on the labelled validation
    firms (or the reviews where there are none, as the pooling weight), else by the image tower's votes, and the
    metadata saying which."""
    embeddings = pd.concat([queries, targets], ignore_index=True)
    links, _, table = hybrid.with_hybrid_links(links, store.read_table("string_links"), embeddings, linkages, weight,
                                               _tuning_regions(store, model), model_id=str(model["model_id"]), k=k,
                                               unlabelled=unlabelled)
    for row in table.itertuples():
        voted = row.n_val < hybrid.MIN_VALIDATION_QUERIES and row.n_votes > 0
        what = f"of {row.n_votes} queries by the vision tower's votes" if voted else "validation queries"
        context.log.info(f"hybrid string weight {row.weight:.1f} for {row.ocr} ({row.chosen_by}, n_val={row.n_val}, "
                         f"+{row.gained}/-{row.lost} {what} against the model alone, p={row.p_value:.2g})")
    meta = {"hybrid_string_weights": preview(table.drop(columns=["val_top1_by_weight", "agreement_by_weight"])),
            "hybrid_candidates": dg.MetadataValue.json({
                str(row.ocr): {
                    "val_top1": {f"{w:.2f}": round(float(v), 6) for w, v in row.val_top1_by_weight.items()},
                    "image_agreement": {f"{w:.2f}": round(float(v), 6) for w, v in row.agreement_by_weight.items()},
                } for row in table.itertuples()})}
    return links, meta


class EmbeddingLinksConfig(dg.Config):
    """How many neighbours are kept, whether earlier top-k lists are reused, and whether the ``hybrid`` links (the
    multimodal and character n-gram candidates ranked by one score, :mod:`linkage_pipeline.linking.hybrid`) are
    added."""

    k: int = 5
    relink_all: bool = False  # True: search every query again; False: only new queries, old ones against new targets
    hybrid: bool = True
    # the hybrid string weight of a condition without enough labels: "votes" (the vision tower votes) or "none" (0)
    unlabelled_string_weight: str = "votes"


_EMBEDDING_LINKS_TABLES = (
    dg.AssetSpec("embedding_links", deps=["faiss_index", "string_links", "stg_regions", "link_reviews"],
                 kinds={"faiss", "duckdb"},
                 description="One row per query crop, target crop and model method/OCR condition among the "
                             "top k; only affected queries relinked. The hybrid rows (multimodal and n-gram "
                             "candidates under one score) are ranked again at every run."),
    dg.AssetSpec("embedding_link_targets", deps=["faiss_index"], kinds={"duckdb"},
                 description="One row per target crop each index's top-k lists were computed against; "
                             "refreshed with embedding_links."),
    dg.AssetSpec("embedding_link_inputs", deps=["faiss_index"], kinds={"duckdb"},
                 description="One row per crop text (its hash) the top-k lists were computed from: a text read "
                             "again changes its crop's lists at the next run; refreshed with embedding_links."),
)


@table_step(*_EMBEDDING_LINKS_TABLES, group="linking")
def embedding_links(
    context: dg.AssetExecutionContext, config: EmbeddingLinksConfig, linkage_store: LinkageStore,
    compute: ComputeResource,
) -> Iterator[dg.MaterializeResult]:
    """Nearest-neighbour links of the linkage model, and the targets they were computed against."""
    if config.unlabelled_string_weight not in hybrid.UNLABELLED_STRING_RULES:
        raise ValueError(f"embedding_links config unlabelled_string_weight must be one of "
                         f"{list(hybrid.UNLABELLED_STRING_RULES)}, got {config.unlabelled_string_weight!r}")
    model = current_model(linkage_store)
    store, registry = linkage_store.store(), linkage_store.registry()
    model_id, index_rows = str(model["model_id"]), store.read_table("faiss_indexes")
    indexes = by_embeddings.load_target_indexes(
        index_rows, model_id, device=linking_index.faiss_device("auto", compute.torch_device().type))
    weight = by_embeddings.index_weights(index_rows, model_id) if len(index_rows) else float(model["pooling_weight"])
    queries, targets, linkages, skipped_lines, empty = _linkable(context, store, registry, model_id)
    previous, previous_targets, previous_inputs = _previous(store, config.relink_all, "embedding_links",
                                                            "embedding_link_targets", "embedding_link_inputs")
    t0 = time.perf_counter()
    links, linked_targets, stats = by_embeddings.relink(
        queries, targets, linkages, indexes, previous=previous, previous_targets=previous_targets,
        previous_inputs=previous_inputs, methods=sorted(set(index_rows["method"])), weight=weight, k=config.k,
        training="supervised",
    )
    inputs = by_embeddings.link_inputs(pd.concat([queries, targets], ignore_index=True))
    hybrid_meta: dict[str, object] = {}
    if config.hybrid and "multimodal" in set(index_rows["method"]) and store.table_exists("string_links"):
        links, hybrid_meta = _with_hybrid_links(context, store, model, links, queries, targets, linkages, weight,
                                                config.k, config.unlabelled_string_weight)
    # links first: a run stopped in between leaves the older target list, so those targets are searched again
    n = store.replace_table("embedding_links", links, schema.EMBEDDING_LINKS)
    n_targets = store.replace_table("embedding_link_targets", linked_targets, schema.LINKED_TARGETS)
    n_inputs = store.replace_table("embedding_link_inputs", inputs, schema.EMBEDDING_LINK_INPUTS)
    yield from selected_results(
        context, dg.MaterializeResult(asset_key="embedding_links", metadata={
            "rows": n, **stats, "empty_linkages": empty, "skipped_linkages": "; ".join(skipped_lines) or "none",
            "model_id": model_id, "pooling_weight": json.dumps(weight), "seconds": time.perf_counter() - t0,
            **hybrid_meta, "preview": preview(links)}),
        dg.MaterializeResult(asset_key="embedding_link_targets", metadata={"rows": n_targets}),
        dg.MaterializeResult(asset_key="embedding_link_inputs", metadata={"rows": n_inputs}),
    )
