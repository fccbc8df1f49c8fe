"""Bad files and an escaping source name are recorded in rejected_inputs; the rest of the source is processed."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml
from PIL import Image

from assets_defs.definitions import all_assets
from assets_defs.partitions import SOURCE_PARTITIONS_NAME
from linkage_pipeline.schema import PAGE_IMAGES
from linkage_pipeline.synthetic.corpus import generate_corpus
from resources import ComputeResource, EnginesResource, LinkageStore


def materialize_pages_and_layout(resources: dict) -> None:
    """Materializes document_sources, then page_images and layout_regions of the supplier_lists partition."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, ["supplier_lists"])
    assert dg.materialize(all_assets, selection=["document_sources"], instance=instance, resources=resources).success
    result = dg.materialize(all_assets, selection=["page_images", "layout_regions"], partition_key="supplier_lists",
                            instance=instance, resources=resources)
    assert result.success


def test_bad_inputs_are_rejected_with_reasons_and_good_pages_survive(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    data = tmp_path / "corpus"
    generate_corpus(data, seed=5, n_firms=12, n_list_pages=2)
    pages = data / "supplier_lists" / "pages"
    good = sorted(p.name for p in pages.iterdir())
    first = (pages / good[0]).read_bytes()
    (pages / "zero.png").write_bytes(b"")
    (pages / "truncated.png").write_bytes(first[: len(first) // 3])
    (pages / "notes.png").write_text("this is not an image")
    (pages / "readme.txt").write_text("not a page")
    Image.fromarray(np.full((800, 600), 250, np.uint8)).save(pages / "blank.png")
    cfg = yaml.safe_load((data / "sources.yaml").read_text())
    cfg["sources"]["../evil"] = {"role": "query", "direction": "horizontal"}
    (data / "sources.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))

    resources = {"linkage_store": LinkageStore(data_dir=str(data)), "compute": ComputeResource(device="cpu"),
                 "engines": EnginesResource()}
    materialize_pages_and_layout(resources)

    store = resources["linkage_store"].store()
    rejected = store.read_table("rejected_inputs")
    reasons = dict(zip(rejected["file"], rejected["reason"]))
    assert set(reasons) == {"zero.png", "truncated.png", "notes.png", "readme.txt", "blank.png", "sources.yaml"}
    assert "empty" in reasons["zero.png"].lower()
    assert "truncated" in reasons["truncated.png"].lower()
    assert "not an image" in reasons["notes.png"].lower() or "not a png" in reasons["notes.png"].lower()
    assert "unsupported file type" in reasons["readme.txt"]
    assert "blank page" in reasons["blank.png"]
    assert "../evil" in rejected.loc[rejected["file"] == "sources.yaml", "source"].item()
    assert sorted(store.read_table("document_sources")["name"]) == ["firm_directory", "supplier_lists"]
    page_rows = store.read_table("page_images")
    assert sorted(page_rows["file"]) == good
    assert len(store.read_table("layout_regions")) > 0
    assert set(store.read_table("layout_regions")["page_id"]) == set(page_rows["page_id"])
    # Three assets loaded sources.yaml; its one rejection is logged once, not once per asset.
    evil = [r for r in caplog.records if r.levelno >= logging.WARNING and "'../evil'" in r.getMessage()]
    assert len(evil) == 1, [r.getMessage() for r in evil]
    # A page rejection is logged by the asset (to its run), not a second time by the library underneath.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "zero.png" in r.getMessage()]


def test_pages_and_layout_in_folders_with_glob_characters(tmp_path: Path) -> None:
    """Brackets, '*', '?' and spaces in the data and artifact folders are plain characters, not globs.

    (The DuckDB file itself cannot live under a '?': ``Store`` refuses that with a clear error, tested in
    tests/unit/test_store.py.)
    """
    data = tmp_path / "scans [1956]" / "corpus *?"
    generate_corpus(data, seed=5, n_firms=12, n_list_pages=1)
    artifacts = tmp_path / "art [x]" / "**" / "run ?"
    resources = {
        "linkage_store": LinkageStore(data_dir=str(data), artifact_dir=str(artifacts),
                                      database=str(tmp_path / "db [1] *" / "linkage.duckdb")),
        "compute": ComputeResource(device="cpu"), "engines": EnginesResource(),
    }
    materialize_pages_and_layout(resources)
    store = resources["linkage_store"].store()
    pages = store.read_table("page_images")
    assert len(pages) == len(list((data / "supplier_lists" / "pages").iterdir())) > 0
    partition = store.read_partition("page_images", "supplier_lists", PAGE_IMAGES)
    assert sorted(partition["page_id"]) == sorted(pages["page_id"])
    regions = store.read_table("layout_regions")
    assert len(regions) > 0 and set(regions["page_id"]) == set(pages["page_id"])
