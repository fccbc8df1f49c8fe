"""The document-source sensor: new sources become partitions and run; a source whose pages change reruns alone."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg

from assets_defs.definitions import all_assets
from assets_defs.jobs import source_assets
from assets_defs.partitions import SOURCE_PARTITIONS_NAME
from assets_defs.sensors import document_source_sensor
from linkage_pipeline.synthetic.corpus import generate_corpus
from resources import ComputeResource, EnginesResource, LinkageStore


def _tick(instance: dg.DagsterInstance, data_dir: Path, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                      resources={"linkage_store": LinkageStore(data_dir=str(data_dir))})
    result = document_source_sensor(context)
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


def test_new_changed_and_removed_pages_trigger_exactly_their_source(tmp_path: Path) -> None:
    data_dir = tmp_path / "c"
    generate_corpus(data_dir, seed=4, n_firms=8, n_list_pages=2)
    instance = dg.DagsterInstance.ephemeral()

    first = _tick(instance, data_dir, None)
    assert sorted(r.partition_key for r in first.run_requests) == ["firm_directory", "supplier_lists"]
    assert {r.tags["linkage/reason"] for r in first.run_requests} == {"new source"}
    assert set(instance.get_dynamic_partitions(SOURCE_PARTITIONS_NAME)) == {"firm_directory", "supplier_lists"}

    idle = _tick(instance, data_dir, first.cursor)
    assert not idle.run_requests and "no new or changed" in str(idle.skip_reason)

    pages = data_dir / "supplier_lists" / "pages"
    shutil.copy(pages / "page_001.png", pages / "page_003.png")  # a new scan in an existing source
    added = _tick(instance, data_dir, idle.cursor)
    assert [(r.partition_key, r.tags["linkage/reason"]) for r in added.run_requests] == [
        ("supplier_lists", "pages or labels changed")
    ]
    (pages / "page_003.png").unlink()  # and removed again
    removed = _tick(instance, data_dir, added.cursor)
    assert [r.partition_key for r in removed.run_requests] == ["supplier_lists"]
    assert removed.run_requests[0].run_key != added.run_requests[0].run_key

    # a known source seen for the first time by the sensor is recorded, not rerun
    fresh = _tick(instance, data_dir, None)
    assert not fresh.run_requests


def test_rerunning_a_source_after_removing_a_page_leaves_no_rows_of_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "c"
    generate_corpus(data_dir, seed=4, n_firms=8, n_list_pages=2)
    resources = {"linkage_store": LinkageStore(data_dir=str(data_dir)), "compute": ComputeResource(device="cpu"),
                 "engines": EnginesResource()}
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, ["supplier_lists"])
    dg.materialize(all_assets, selection=["document_sources", "linkage_model"], instance=instance, resources=resources)
    for _ in range(2):
        assert dg.materialize(all_assets, selection=source_assets, partition_key="supplier_lists", instance=instance,
                              resources=resources).success
        store = resources["linkage_store"].store()
        pages = store.read_table("page_images")
        crops = store.read_table("region_crops")
        if len(pages) == 2:
            gone = pages[pages["file"] == "page_002.png"]["page_id"].item()
            assert gone in set(crops["page_id"])
            os.remove(data_dir / "supplier_lists" / "pages" / "page_002.png")
    assert list(pages["file"]) == ["page_001.png"]
    for table in ("layout_regions", "region_crops"):
        assert gone not in set(store.read_table(table)["page_id"]), table
    kept = set(store.read_table("region_crops")["crop_id"])
    for table in ("ocr_texts", "crop_embeddings"):
        assert set(store.read_table(table)["crop_id"]) <= kept, table
