"""The whole graph materialized in-process on a tiny generated corpus, against a DuckDB file in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from fixtures.events import materialization_metadata

from assets_defs.definitions import all_assets, defs
from assets_defs.jobs import distillation_assets, source_assets, training_assets
from assets_defs.partitions import SOURCE_PARTITIONS_NAME
from linkage_pipeline.multimodal.checkpoints import shipped_model_dir
from linkage_pipeline.synthetic.corpus import generate_corpus
from resources import ComputeResource, EnginesResource, LinkageStore

pytestmark = pytest.mark.slow  # materializes the whole chain end to end

TABLES = (
    "document_sources",
    "page_images",
    "region_labels",
    "layout_regions",
    "region_crops",
    "ocr_texts",
    "labelled_regions",
    "linkage_model",
    "crop_embeddings",
    "faiss_indexes",
    "embedding_links",
    "stg_regions",
    "stg_crop_texts",
    "string_links",
    "record_links",
    "int_list_entries",
    "mart_supply_chain_edges",
    "mart_link_provenance",
    "layout_evaluation",
    "ocr_evaluation",
    "linkage_evaluation",
    "firm_centrality",
    "rejected_inputs",
)


def _resources(data_dir: Path) -> dict[str, object]:
    return {
        "linkage_store": LinkageStore(data_dir=str(data_dir)),
        "compute": ComputeResource(device="cpu"),
        "engines": EnginesResource(),
    }


def _assert_checks_pass(result: dg.ExecuteInProcessResult) -> int:
    evaluations = result.get_asset_check_evaluations()
    failed = [(e.asset_check_key.name, e.description) for e in evaluations if not e.passed]
    assert not failed, failed
    return len(evaluations)


def materialize_everything(data_dir: Path, instance: dg.DagsterInstance) -> None:
    resources = _resources(data_dir)
    sources = [s.name for s in resources["linkage_store"].registry().sources]
    known = set(instance.get_dynamic_partitions(SOURCE_PARTITIONS_NAME))
    instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, [s for s in sources if s not in known])
    dg.materialize(all_assets, selection=["document_sources", "linkage_model"], instance=instance, resources=resources)
    for name in sources:
        result = dg.materialize(all_assets, selection=source_assets, partition_key=name, instance=instance, resources=resources)
        assert result.success
        # layout_regions_on_every_page, layout_regions_per_page_bounded, ocr_texts_empty_share, crop_embeddings_unit_norm
        assert _assert_checks_pass(result) == 4
    rest = (
        dg.AssetSelection.all() - source_assets - training_assets - dg.AssetSelection.assets("document_sources", "linkage_model")
    )
    result = dg.materialize(all_assets, selection=rest, instance=instance, resources=resources)
    assert result.success
    assert _assert_checks_pass(result) == 2  # record_links_score_spread, record_links_accuracy_not_dropped


def snapshot(store) -> dict[str, pd.DataFrame]:
    out = {}
    for table in TABLES:
        # run_id records which run wrote a row (provenance): the one column that must differ between runs
        frame = store.read_table(table).drop(columns=["run_id"], errors="ignore")
        frame = frame.astype(str)  # list columns and NaN compare as text
        out[table] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return out


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp("corpus")
    generate_corpus(data_dir, seed=3, n_firms=24, n_list_pages=4)
    instance = dg.DagsterInstance.ephemeral()
    materialize_everything(data_dir, instance)
    store = _resources(data_dir)["linkage_store"].store()
    return data_dir, instance, store, snapshot(store)


def test_definitions_load() -> None:
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"page_images", "layout_regions", "region_crops", "ocr_texts", "string_links", "record_links",
            "mart_supply_chain_edges", "supply_chain_network", "linkage_evaluation"} <= keys
    # the bookkeeping tables the linking assets write are declared assets too (lineage shows them)
    assert {"string_link_inputs", "faiss_indexes", "embedding_link_targets", "record_link_runs"} <= keys


def test_evaluation_tables_have_real_values(pipeline) -> None:
    _, _, store, tables = pipeline
    layout = store.read_table("layout_evaluation").set_index("source")
    assert set(layout.index) == {"firm_directory", "supplier_lists"}
    assert (layout["precision"] >= 0.9).all() and (layout["recall"] >= 0.9).all(), layout
    ocr = store.read_table("ocr_evaluation")
    assert set(zip(ocr["source"], ocr["ocr"])) == {
        (s, e) for s in ("firm_directory", "supplier_lists") for e in ("tesseract", "rapidocr")
    }
    assert ((ocr["cer"] >= 0) & (ocr["cer"] < 0.6)).all(), ocr
    # rapidocr is the cleaner engine on horizontal crops
    lists = ocr.set_index(["source", "ocr"]).loc["supplier_lists"]
    assert lists.loc["rapidocr", "cer"] < lists.loc["tesseract", "cer"]
    link = store.read_table("linkage_evaluation")
    assert set(zip(link["training"], link["method"])) == {
        ("none", "levenshtein"), ("none", "jaro_winkler"), ("none", "ngram"),
        *((t, m) for t in ("self_supervised", "supervised") for m in ("vision", "language", "multimodal")),
        ("supervised", "hybrid"), ("self_supervised", "hybrid"),
    }
    assert set(link["ocr"]) == {"tesseract", "rapidocr", "ground_truth"}
    assert link["top1_accuracy"].between(0, 1).all()
    # the shipped model links this unseen corpus (other firms, other seed) far better than chance
    best = link[(link["split"] == "all") & (link["training"] == "supervised") & (link["method"] == "multimodal")]
    assert (best["top1_accuracy"] >= 0.5).all(), best


def test_hybrid_links_record_their_string_weight_and_can_be_left_out(pipeline) -> None:
    """The hybrid rows rank the multimodal and n-gram candidates by one score; its string weight per OCR condition
    is in the metadata (24 firms leave under 20 validation queries: the vision tower's votes decide, and with
    ``unlabelled_string_weight: none`` the weight is 0, so the rows are the model's own links)."""
    data_dir, instance, store, _ = pipeline
    resources = _resources(data_dir)
    before = store.read_table("embedding_links")
    off = {"ops": {"embedding_links": {"config": {"hybrid": False}}}}
    dg.materialize(all_assets, selection=["embedding_links"], instance=instance, resources=resources, run_config=off)
    assert set(store.read_table("embedding_links")["method"]) == {"vision", "language", "multimodal"}
    result = dg.materialize(all_assets, selection=["embedding_links"], instance=instance, resources=resources)
    meta = materialization_metadata(result, "embedding_links")
    weights = str(meta["hybrid_string_weights"])
    assert all(c in weights for c in ("tesseract", "rapidocr", "ground_truth")) and "n_votes" in weights
    agreement = meta["hybrid_candidates"]
    assert set(agreement) == {"tesseract", "rapidocr", "ground_truth"}
    for condition in agreement.values():  # every candidate weight scored by the image tower's votes
        assert condition["val_top1"] == {} and len(condition["image_agreement"]) == 11
        assert all(0.0 <= v <= 1.0 for v in condition["image_agreement"].values())
    pd.testing.assert_frame_equal(store.read_table("embedding_links"), before)  # the same rows again
    none = {"ops": {"embedding_links": {"config": {"unlabelled_string_weight": "none"}}}}
    dg.materialize(all_assets, selection=["embedding_links"], instance=instance, resources=resources, run_config=none)
    after = store.read_table("embedding_links")
    hybrid = after[after["method"] == "hybrid"].sort_values(["ocr", "query_crop_id", "rank"]).reset_index(drop=True)
    model = after[after["method"] == "multimodal"].sort_values(["ocr", "query_crop_id", "rank"]).reset_index(drop=True)
    assert len(hybrid) == len(model) > 0
    assert hybrid["target_crop_id"].tolist() == model["target_crop_id"].tolist()  # string weight 0: the model's
    np.testing.assert_allclose(hybrid["score"], model["score"], atol=1e-5)


def test_linkage_accuracy_recomputed_from_the_link_tables(pipeline) -> None:
    """The 'all' split accuracy equals a direct count over string_links and the label matches."""
    _, _, store, _ = pipeline
    regions = store.read_table("stg_regions")
    links = store.read_table("string_links")
    evals = store.read_table("linkage_evaluation")
    targets = regions[(regions["source_role"] == "target") & regions["true_entity_id"].fillna("").ne("")]
    target_entity = dict(zip(targets["crop_id"], targets["true_entity_id"]))
    queries = regions[(regions["source_role"] == "query") & regions["kind"].isin(["title", "entry"])]
    queries = queries[queries["true_entity_id"].fillna("").ne("") & queries["true_entity_id"].isin(set(target_entity.values()))]
    truth = dict(zip(queries["crop_id"], queries["true_entity_id"]))
    for method in ("levenshtein", "jaro_winkler", "ngram"):
        top1 = links[(links["method"] == method) & (links["ocr"] == "rapidocr") & (links["rank"] == 1)]
        top1 = top1[top1["query_crop_id"].isin(truth)]
        correct = np.mean([target_entity.get(t) == truth[q] for q, t in zip(top1["query_crop_id"], top1["target_crop_id"])])
        row = evals[(evals["method"] == method) & (evals["ocr"] == "rapidocr") & (evals["split"] == "all")].iloc[0]
        assert row["n"] == len(truth)
        assert row["top1_accuracy"] == pytest.approx(correct)


def test_links_edges_and_network(pipeline) -> None:
    _, _, store, tables = pipeline
    links = store.read_table("record_links")
    n_queries = store.query(
        "select count(distinct crop_id) as n from stg_regions where source_role = 'query' and kind in ('title', 'entry')"
    )["n"].item()
    assert links["query_crop_id"].nunique() == n_queries  # every query accounted for, linked or not
    assert links["matched"].any()
    edges = store.read_table("mart_supply_chain_edges")
    assert len(edges) > 0 and set(edges["section"]) <= {"supplier", "customer"}
    # sections read from headings agree with the labelled roles
    entries = store.read_table("int_list_entries")
    known = entries[entries["true_role"].isin(["supplier", "customer"])]
    assert (known["section"] == known["true_role"]).mean() >= 0.9
    sheet = store.artifact_dir / "provenance" / "link_contact_sheet.png"
    assert sheet.is_file() and sheet.stat().st_size > 10_000
    prov = store.read_table("mart_link_provenance")
    assert len(prov) == len(links) and prov["query_page"].notna().all() and prov["run_id"].str.len().gt(0).all()
    centrality = store.read_table("firm_centrality")
    nodes = set(edges["supplier_id"]) | set(edges["customer_id"])
    assert set(centrality["node_id"]) == nodes


def test_rematerializing_gives_identical_tables(pipeline) -> None:
    data_dir, instance, store, before = pipeline
    materialize_everything(data_dir, instance)
    after = snapshot(store)
    for table in TABLES:
        pd.testing.assert_frame_equal(before[table], after[table], obj=table)


def test_rerunning_crop_embeddings_embeds_nothing_new(pipeline) -> None:
    """Incremental: a second run of a source's embeddings with the same model and texts reuses every row."""
    data_dir, instance, store, _ = pipeline
    before = store.read_table("crop_embeddings")
    result = dg.materialize(all_assets, selection=["crop_embeddings"], partition_key="supplier_lists",
                            instance=instance, resources=_resources(data_dir))
    meta = result.asset_materializations_for_node("crop_embeddings")[0].metadata
    n = int((before["source"] == "supplier_lists").sum())
    assert meta["rows"].value == n and meta["reused_rows"].value == n
    assert meta["embedded_images"].value == 0 and meta["embedded_texts"].value == 0


def test_an_accuracy_drop_blocks_the_network(pipeline) -> None:
    """A run whose validation accuracy falls below the last accepted run's fails a blocking check: no new edges."""
    data_dir, instance, store, _ = pipeline
    resources = _resources(data_dir)
    history = store.read_table("record_link_runs")
    assert history["passed"].all() and history["val_top1_with_nomatch"].between(0, 1).all()
    better = history.tail(1).assign(run_id="earlier-better-run",
                                    val_top1_with_nomatch=history["val_top1_with_nomatch"].iloc[-1] + 0.5)
    store.replace_table("record_link_runs", pd.concat([history, better], ignore_index=True))
    try:
        result = dg.materialize(all_assets, selection=["record_links", "int_list_entries", "mart_supply_chain_edges"],
                                instance=instance, resources=resources, raise_on_error=False)
        checks = {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}
        assert not checks["record_links_accuracy_not_dropped"].passed
        assert "drop +0.500" in checks["record_links_accuracy_not_dropped"].description
        assert checks["record_links_score_spread"].passed
        done = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert "record_links" in done and "mart_supply_chain_edges" not in done  # blocked downstream
        assert not store.read_table("record_link_runs")["passed"].iloc[-1]
    finally:
        store.replace_table("record_link_runs", history)  # the later tests start from accepted runs only


def test_without_labels_the_pooling_weight_is_chosen_by_mutual_neighbours(pipeline) -> None:
    """A corpus without labels (its labels hidden here) gets a weight per OCR condition from the sources themselves,
    or with ``unlabelled_weight: card`` the model card's."""
    data_dir, instance, store, _ = pipeline
    resources = _resources(data_dir)
    regions, indexes = store.read_table("stg_regions"), store.read_table("faiss_indexes")
    store.replace_table("stg_regions", regions.assign(true_entity_id=None))
    try:
        result = dg.materialize(all_assets, selection=["faiss_index"], instance=instance, resources=resources)
        meta = materialization_metadata(result, "faiss_index")
        assert "validation" not in str(meta["pooling_weights"])
        weight = float(store.read_table("linkage_model")["pooling_weight"].item())
        for condition, candidates in meta["pooling_weight_candidates"].items():
            rates, test = candidates["mutual_rate"], candidates["mutual_sign_test"]
            assert len(rates) >= 11 and all(0.0 <= r <= 1.0 for r in rates.values()) and max(rates.values()) > 0.0
            used = store.read_table("faiss_indexes").query(f"method == 'multimodal' and ocr == '{condition}'")
            # the index was built at the weight of top rate where it won the sign test against the card's, else
            # at the card's
            if test["p_value"] < 0.05:
                assert rates[f"{used['weight'].iloc[0]:.2f}"] == max(rates.values()), condition
                assert test["gained"] > test["lost"]
            else:
                assert np.allclose(used["weight"], weight), condition
        card = {"ops": {"faiss_index": {"config": {"unlabelled_weight": "card"}}}}
        result = dg.materialize(all_assets, selection=["faiss_index"], instance=instance, resources=resources,
                                run_config=card)
        chosen = str(materialization_metadata(result, "faiss_index")["pooling_weights"])
        assert "default" in chosen and "mutual_neighbours" not in chosen
        multimodal = store.read_table("faiss_indexes").query("method == 'multimodal'")
        assert np.allclose(multimodal["weight"], weight)
        bad = {"ops": {"faiss_index": {"config": {"unlabelled_weight": "guess"}}}}
        with pytest.raises(Exception, match="unlabelled_weight must be one of"):
            dg.materialize(all_assets, selection=["faiss_index"], instance=instance, resources=resources,
                           run_config=bad)
    finally:
        store.replace_table("stg_regions", regions)
        dg.materialize(all_assets, selection=["faiss_index"], instance=instance, resources=resources)
    pd.testing.assert_frame_equal(store.read_table("faiss_indexes"), indexes)


def test_retraining_flows_a_new_model_id_through_embeddings_index_and_links(pipeline) -> None:
    """Materializing the training assets (tiny settings) gives a new model that replaces the shipped one everywhere."""
    data_dir, instance, store, _ = pipeline
    resources = _resources(data_dir)
    shipped = store.read_table("linkage_model")["model_id"].item()
    tiny = {"ops": {
        "training_crops": {"config": {"n_firms": 12, "views_per_firm": 4, "ocr": "simulated", "include_labels": True,
                                      "pretraining_names": 8}},
        "pretrained_model": {"config": {"epochs": 1}},
        "supervised_model": {"config": {"epochs": 1}},
    }}
    recipe = training_assets - distillation_assets  # what training_job runs
    result = dg.materialize(all_assets, selection=recipe, instance=instance, resources=resources, run_config=tiny)
    assert result.success
    crops = store.read_table("training_crops")
    assert len(crops) > 48  # 12 firms x 4 views plus the labelled train-split crops of the corpus
    trained = store.read_table("trained_models")
    assert list(trained.sort_values("created_at")["stage"]) == ["clip", "supcon"]
    new_id = trained[trained["stage"] == "supcon"]["model_id"].item()
    assert new_id != shipped
    folder = Path(trained[trained["stage"] == "supcon"]["path"].item())
    assert (folder / "pretrained" / "model.safetensors").is_file()
    # pooling weight and threshold were chosen on the validation firms of this corpus and stored with the model
    card = json.loads((folder / "model_card.json").read_text())
    linking = card["linking"]
    assert 0.0 <= linking["pooling_weight"] <= 1.0 and linking["n_val"] > 0 and linking["ocr"] == "rapidocr"
    # a one-epoch model on 12 firms links the validation firms worse than the shipped one: it is recorded but not
    # adopted, so auto keeps the shipped model; model: trained uses it
    adoption = card["adoption"]
    assert adoption["baseline"] == str(shipped_model_dir()) and not adoption["adopted"]
    assert adoption["val_top1_mean"] < adoption["baseline_val_top1_mean"] and adoption["n_val"] > 0, adoption
    supervised_meta = materialization_metadata(result, "supervised_model")
    assert supervised_meta["adopted"] is False
    dg.materialize(all_assets, selection=["linkage_model"], instance=instance, resources=resources)
    assert store.read_table("linkage_model")["model_id"].item() == shipped

    # the same sequence as the CLI: model, per-source embeddings, then everything downstream
    use_trained = {"ops": {"linkage_model": {"config": {"model": "trained"}}}}
    dg.materialize(all_assets, selection=["linkage_model"], instance=instance, resources=resources,
                   run_config=use_trained)
    assert store.read_table("linkage_model")["model_id"].item() == new_id
    # before the sources are re-embedded, building the index refuses the stale embeddings
    with pytest.raises(Exception, match="re-materialize crop_embeddings"):
        dg.materialize(all_assets, selection=["faiss_index"], instance=instance, resources=resources)
    for name in ("firm_directory", "supplier_lists"):
        dg.materialize(all_assets, selection=["crop_embeddings"], partition_key=name, instance=instance, resources=resources)
    downstream = dg.AssetSelection.assets("faiss_index", "embedding_links", "record_links", "linkage_evaluation")
    assert dg.materialize(all_assets, selection=downstream, instance=instance, resources=resources).success
    assert set(store.read_table("crop_embeddings")["model_id"]) == {new_id}
    assert set(store.read_table("faiss_indexes")["model_id"]) == {new_id}
    assert set(store.read_table("embedding_links")["model_id"]) == {new_id}
    links = store.read_table("record_links")
    assert set(links.loc[links["method"].isin(["vision", "language", "multimodal"]), "model_id"]) <= {new_id}
    evals = store.read_table("linkage_evaluation")
    assert {"self_supervised", "supervised"} <= set(evals["training"])

    # distillation_job: the shipped and the trained model distilled into one, which the pipeline then links with
    distil = {"ops": {"distilled_model": {"config": {"max_steps": 2}}}}
    result = dg.materialize(all_assets, selection=distillation_assets, instance=instance, resources=resources,
                            run_config=distil)
    assert result.success
    trained = store.read_table("trained_models").sort_values("created_at")
    assert list(trained["stage"]) == ["clip", "supcon", "distil"]
    card = json.loads((Path(trained["path"].iloc[-1]) / "model_card.json").read_text())
    assert [t["model_id"] for t in card["training"]["distil"]["teachers"]] == [shipped, new_id]
    assert card["parent_model_id"] == shipped and card["linking"]["pooling_weight"] == pytest.approx(
        json.loads((shipped_model_dir() / "model_card.json").read_text())["linking"]["pooling_weight"])
    assert card["linking"]["n_val"] > 0  # the threshold was chosen on this corpus's validation firms
    # compared with the model auto used before it (the shipped one: the trained one was not adopted), both at their
    # best weight on the validation firms; auto links with it only if it won
    adoption = card["adoption"]
    assert adoption["baseline"] == str(shipped_model_dir())
    assert adoption["adopted"] == (adoption["val_top1_mean"] > adoption["baseline_val_top1_mean"])
    dg.materialize(all_assets, selection=["linkage_model"], instance=instance, resources=resources)
    assert store.read_table("linkage_model")["model_id"].item() == (card["model_id"] if adoption["adopted"]
                                                                     else shipped)
    dg.materialize(all_assets, selection=["linkage_model"], instance=instance, resources=resources,
                   run_config=use_trained)
    assert store.read_table("linkage_model")["model_id"].item() == card["model_id"]
