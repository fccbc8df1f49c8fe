"""A source without a usable page gives empty tables and a rejection; every other linkage still runs."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml
from fixtures.events import materialization_metadata
from PIL import Image

from assets_defs.definitions import all_assets
from assets_defs.jobs import source_assets, training_assets
from assets_defs.partitions import SOURCE_PARTITIONS_NAME
from linkage_pipeline import schema
from linkage_pipeline.synthetic.corpus import generate_corpus
from resources import ComputeResource, EnginesResource, LinkageStore

GOOD = ("firm_directory", "supplier_lists")
#: A query source and a target source whose pages are a zero-byte file and a black page.
BAD = {"allbad": ("query", "horizontal"), "badtarget": ("target", "vertical")}
LINKAGE = dg.AssetSelection.all() - source_assets - training_assets - dg.AssetSelection.assets(
    "document_sources", "linkage_model"
)

pytestmark = pytest.mark.slow  # materializes the whole chain end to end


@pytest.fixture(scope="module")
def linked(tmp_path_factory: pytest.TempPathFactory):
    """A good pair of sources linked, then two unusable sources added to sources.yaml with a linkage each, and
    everything run again on the existing database."""
    data = tmp_path_factory.mktemp("unusable") / "corpus"
    generate_corpus(data, seed=5, n_firms=12, n_list_pages=2)
    resources = {"linkage_store": LinkageStore(data_dir=str(data)), "compute": ComputeResource(device="cpu"),
                 "engines": EnginesResource()}
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, list(GOOD))
    setup = ["document_sources", "linkage_model"]
    assert dg.materialize(all_assets, selection=setup, instance=instance, resources=resources).success
    for name in GOOD:
        assert dg.materialize(all_assets, selection=source_assets, partition_key=name, instance=instance,
                              resources=resources).success
    runs = {"first_linkage": dg.materialize(all_assets, selection=LINKAGE, instance=instance, resources=resources)}

    for name in BAD:
        pages = data / name / "pages"
        pages.mkdir(parents=True)
        (pages / "zero.png").write_bytes(b"")
        Image.fromarray(np.zeros((800, 600), np.uint8)).save(pages / "black.png")
    cfg = yaml.safe_load((data / "sources.yaml").read_text())
    for name, (role, direction) in BAD.items():
        cfg["sources"][name] = {"role": role, "direction": direction, "ocr": ["tesseract", "rapidocr"]}
    cfg["linkages"] += [{"query": "allbad", "target": "firm_directory"}, {"query": "supplier_lists", "target": "badtarget"}]
    (data / "sources.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, list(BAD))
    runs["sources"] = dg.materialize(all_assets, selection=["document_sources"], instance=instance, resources=resources)
    for name in BAD:
        runs[name] = dg.materialize(all_assets, selection=source_assets, partition_key=name, instance=instance,
                                    resources=resources, raise_on_error=False)
    runs["linkage"] = dg.materialize(all_assets, selection=LINKAGE, instance=instance, resources=resources,
                                     raise_on_error=False)
    return resources["linkage_store"].store(), runs, resources


def test_every_run_succeeds(linked) -> None:
    _, runs, _ = linked
    failed = {name: [e.message for e in r.all_events if e.is_failure] for name, r in runs.items() if not r.success}
    assert not failed, failed


def test_the_unusable_sources_have_empty_tables_and_say_why(linked) -> None:
    store, runs, _ = linked
    rejected = store.read_table("rejected_inputs")
    for name in BAD:
        mine = rejected[rejected["source"] == name]
        assert {"zero.png", "black.png"} <= set(mine["file"]), mine
        embeddings = store.read_partition("crop_embeddings", name, schema.CROP_EMBEDDINGS)
        assert store.partition_path("crop_embeddings", name).exists() and embeddings.empty
        assert list(embeddings.columns) == list(schema.CROP_EMBEDDINGS)
        meta = materialization_metadata(runs[name], "crop_embeddings")
        assert meta["rows"] == 0 and "no linkable crops" in meta["empty"]
        checks = {c.asset_check_key.name: c.passed for c in runs[name].get_asset_check_evaluations()}
        assert checks["crop_embeddings_unit_norm"]  # unit norms of no rows: nothing wrong
    for table in ("crop_embeddings", "string_links", "embedding_links", "record_links"):
        rows = store.read_table(table)
        sources = set(rows["source"]) if "source" in rows else set(rows["query_source"]) | set(rows["target_source"])
        assert not sources & set(BAD), table


def test_the_good_linkage_is_linked(linked) -> None:
    store, _, _ = linked
    for table in ("string_links", "embedding_links", "record_links"):
        rows = store.read_table(table)
        assert len(rows) > 0, table
        assert set(zip(rows["query_source"], rows["target_source"])) == {("supplier_lists", "firm_directory")}, table
    record = store.read_table("record_links")
    assert record["matched"].sum() > 0
    assert len(store.read_table("linkage_evaluation")) > 0
    assert len(store.read_table("firm_centrality")) > 0


def test_empty_linkages_are_named_in_the_metadata(linked) -> None:
    _, runs, _ = linked
    for asset in ("string_links", "embedding_links"):
        empty = materialization_metadata(runs["linkage"], asset)["empty_linkages"]
        assert "allbad -> firm_directory" in empty and "supplier_lists -> badtarget" in empty, (asset, empty)
        assert "supplier_lists -> firm_directory" not in empty
    index = materialization_metadata(runs["linkage"], "faiss_index")
    assert "badtarget" in index["empty_targets"]


def test_record_links_are_refreshed_on_an_existing_database(linked) -> None:
    store, runs, _ = linked
    assert runs["first_linkage"].success and runs["linkage"].success
    record = store.read_table("record_links")
    assert set(record["run_id"]) == {runs["linkage"].run_id} != {runs["first_linkage"].run_id}
    history = store.read_table("record_link_runs")
    assert history["run_id"].tolist() == [runs["first_linkage"].run_id, runs["linkage"].run_id]


def test_a_corpus_without_a_usable_page_materializes_to_empty_tables(tmp_path: Path) -> None:
    """Zero pages, regions, crops, OCR texts, embeddings, links and edges: every asset succeeds, every table has
    its columns and no rows, and the metadata says why."""
    data = tmp_path / "corpus"
    for name, (role, direction) in BAD.items():
        pages = data / name / "pages"
        pages.mkdir(parents=True)
        (pages / "zero.png").write_bytes(b"")
        Image.fromarray(np.zeros((800, 600), np.uint8)).save(pages / "black.png")
    sources = {name: {"role": role, "direction": direction, "ocr": ["tesseract"]}
               for name, (role, direction) in BAD.items()}
    linkages = [{"query": "allbad", "target": "badtarget"}]
    (data / "sources.yaml").write_text(yaml.safe_dump({"sources": sources, "linkages": linkages}))
    resources = {"linkage_store": LinkageStore(data_dir=str(data)), "compute": ComputeResource(device="cpu"),
                 "engines": EnginesResource()}
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, list(BAD))
    assert dg.materialize(all_assets, selection=["document_sources", "linkage_model"], instance=instance,
                          resources=resources).success
    for name in BAD:
        run = dg.materialize(all_assets, selection=source_assets, partition_key=name, instance=instance,
                             resources=resources)
        assert run.success and "no linkable crops" in materialization_metadata(run, "crop_embeddings")["empty"]
    run = dg.materialize(all_assets, selection=LINKAGE, instance=instance, resources=resources)
    assert run.success
    store = resources["linkage_store"].store()
    for table in ("layout_regions", "region_crops", "ocr_texts", "crop_embeddings", "faiss_indexes", "string_links",
                  "embedding_links", "record_links", "mart_supply_chain_edges", "firm_centrality", "linkage_evaluation"):
        rows = store.read_table(table)
        assert rows.empty and len(rows.columns) > 0, table
    assert "allbad -> badtarget: no OCR texts" in materialization_metadata(run, "string_links")["empty_linkages"]
    assert "allbad -> badtarget: no crop embeddings" in materialization_metadata(run, "embedding_links")["empty_linkages"]
    assert materialization_metadata(run, "faiss_index")["empty_targets"] == "badtarget"
    for asset in ("record_links", "supply_chain_network", "linkage_evaluation", "link_contact_sheet"):
        assert materialization_metadata(run, asset)["empty"], asset
    assert {c.asset_check_key.name: c.passed for c in run.get_asset_check_evaluations()} == {
        "record_links_score_spread": True, "record_links_accuracy_not_dropped": True}
