"""A real scanned source labelled in PASCAL VOC (NDL-DocL) through the document assets: its XML files are not
pages, its boxes are the source's labels, body text regions are detected and scored but never cropped."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import dagster as dg
import pytest

from assets_defs.definitions import all_assets
from assets_defs.partitions import SOURCE_PARTITIONS_NAME
from linkage_pipeline import schema
from resources import ComputeResource, EnginesResource, LinkageStore

NDL_DOCL = Path(__file__).resolve().parents[1] / "data" / "real-pages" / "ndl-docl"
FILES = ("1029114_5.jpg", "1029114_5.xml", "1029114_6.jpg", "1029114_6.xml")
# The detector is named here only: switching the source to another detector needs no other change.
SOURCES_YAML = """\
sources:
  ndl_docl: {role: query, direction: horizontal, language: jpn, layout: ppocr, ocr: [tesseract]}
"""



def test_a_voc_labelled_source_is_scored_and_only_names_are_cut(tmp_path: Path) -> None:
    data = tmp_path / "data"
    pages = data / "ndl_docl" / "pages"
    pages.mkdir(parents=True)
    for name in FILES:  # NDL-DocL ships NAME.jpg and NAME.xml side by side
        shutil.copyfile(NDL_DOCL / name, pages / name)
    (data / "sources.yaml").write_text(SOURCES_YAML, encoding="utf-8")
    resources = {"linkage_store": LinkageStore(data_dir=str(data)), "compute": ComputeResource(device="cpu"),
                 "engines": EnginesResource()}
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, ["ndl_docl"])
    assert dg.materialize(all_assets, selection=["document_sources"], instance=instance, resources=resources).success
    chain = ["page_images", "region_labels", "layout_regions", "region_crops", "labelled_regions"]
    assert dg.materialize(all_assets, selection=chain, partition_key="ndl_docl", instance=instance,
                          resources=resources).success
    assert dg.materialize(all_assets, selection=["layout_evaluation"], instance=instance, resources=resources).success

    store = resources["linkage_store"].store()
    assert store.read_table("page_images")["file"].tolist() == ["1029114_5.jpg", "1029114_6.jpg"]
    assert not store.table_exists("rejected_inputs") or store.read_table("rejected_inputs").empty
    labels = store.read_table("region_labels")
    assert labels.groupby("role").size().to_dict() == {"body": 88, "heading": 7}
    regions = store.read_table("layout_regions")
    crops = store.read_table("region_crops")
    assert len(crops) == int(regions["kind"].isin(schema.NAME_KINDS).sum())
    assert set(crops["region_id"]) <= set(regions.loc[regions["kind"] != "body", "region_id"])
    matched = store.read_table("labelled_regions")
    row = store.read_table("layout_evaluation").set_index("source").loc["ndl_docl"]
    assert (row["n_labelled"], row["n_detected"], row["n_matched"]) == (95, len(regions), len(matched))
    assert len(matched) > 0
    assert math.isclose(row["recall"], len(matched) / 95, rel_tol=1e-9)
