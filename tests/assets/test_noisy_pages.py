"""Noisy pages through the layout and crop assets: a page of noise is rejected with its reason, a speckled JPEG
page keeps its names, and the regions-per-page check fails when a page holds more regions than it can."""

from __future__ import annotations

import io
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from PIL import Image

from assets_defs.definitions import all_assets
from assets_defs.partitions import SOURCE_PARTITIONS_NAME
from linkage_pipeline import schema
from linkage_pipeline.synthetic.corpus import generate_corpus
from resources import ComputeResource, EnginesResource, LinkageStore


def _setup(tmp_path: Path) -> tuple[Path, dict[str, object], dg.DagsterInstance]:
    data = tmp_path / "corpus"
    generate_corpus(data, seed=5, n_firms=8, n_list_pages=2)
    resources = {"linkage_store": LinkageStore(data_dir=str(data)), "compute": ComputeResource(device="cpu"),
                 "engines": EnginesResource()}
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(SOURCE_PARTITIONS_NAME, ["supplier_lists"])
    assert dg.materialize(all_assets, selection=["document_sources"], instance=instance, resources=resources).success
    return data, resources, instance


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, tuple[bool, str]]:
    return {e.asset_check_key.name: (e.passed, e.description or "") for e in result.get_asset_check_evaluations()}


def test_a_noise_page_is_rejected_and_a_speckled_jpeg_page_keeps_its_names(tmp_path: Path) -> None:
    data, resources, instance = _setup(tmp_path)
    pages = data / "supplier_lists" / "pages"
    first = np.asarray(Image.open(pages / "page_001.png").convert("L")).copy()
    rng = np.random.default_rng(0)
    n = int(0.003 * first.size)
    first[rng.integers(0, first.shape[0], n), rng.integers(0, first.shape[1], n)] = rng.integers(0, 120, n)
    buf = io.BytesIO()
    Image.fromarray(first).save(buf, format="JPEG", quality=60)
    (pages / "page_001.png").unlink()
    (pages / "page_001.jpg").write_bytes(buf.getvalue())
    Image.fromarray(rng.integers(0, 256, (1240, 1240)).astype(np.uint8)).save(pages / "noise.png")

    result = dg.materialize(all_assets, selection=["page_images", "layout_regions", "region_crops"],
                            partition_key="supplier_lists", instance=instance, resources=resources)
    assert result.success
    store = resources["linkage_store"].store()
    rejected = store.read_table("rejected_inputs")
    layout_rejections = rejected[rejected["stage"] == "layout_regions"]
    assert list(layout_rejections["file"]) == ["noise.png"]
    assert "no blank paper" in layout_rejections["reason"].item()
    regions = store.read_table("layout_regions").merge(store.read_table("page_images")[["page_id", "file"]])
    labels = pd.read_csv(data / "supplier_lists" / "labels.csv")
    per_page = regions.groupby("file").size().to_dict()
    assert set(per_page) == {"page_001.jpg", "page_002.png"}
    assert per_page["page_001.jpg"] == (labels["page"] == "page_001.png").sum()  # thousands before the fix
    # Name regions are cut, body text regions are not.
    assert len(store.read_table("region_crops")) == int(regions["kind"].isin(schema.NAME_KINDS).sum())
    checks = _checks(result)
    assert checks["layout_regions_per_page_bounded"][0]
    # The rejected page has no regions: the existing check names it.
    assert not checks["layout_regions_on_every_page"][0]
    assert "noise.png" in checks["layout_regions_on_every_page"][1]


def test_the_bound_check_fails_on_regions_kept_from_an_older_run(tmp_path: Path) -> None:
    """Regions of unchanged pages are kept from the last run; an older detector's thousands of specks on a page
    would be kept too, and the check says so."""
    _, resources, instance = _setup(tmp_path)
    assert dg.materialize(all_assets, selection=["page_images"], partition_key="supplier_lists", instance=instance,
                          resources=resources).success
    store = resources["linkage_store"].store()
    page = store.read_partition("page_images", "supplier_lists", schema.PAGE_IMAGES).sort_values("file").iloc[0]
    # 14 names of 30 px type and 3,000 specks of 4 x 3 px, as the detector gave before the fix.
    names_and_specks = pd.DataFrame(
        {
            "region_id": [f"r{i}" for i in range(3014)], "source": "supplier_lists", "page_id": page["page_id"],
            "x0": 0, "y0": 0, "x1": [240] * 14 + [4] * 3000, "y1": [30] * 14 + [3] * 3000, "kind": "entry",
            "reading_order": range(3014), "score": 1.0, "detector": "morphology", "direction": "horizontal",
            "classifier": "size rules",
        }
    )
    store.write_partition("layout_regions", "supplier_lists", names_and_specks, schema.LAYOUT_REGIONS)
    result = dg.materialize(all_assets, selection=["layout_regions"], partition_key="supplier_lists",
                            instance=instance, resources=resources)
    assert result.success
    passed, description = _checks(result)["layout_regions_per_page_bounded"]
    assert not passed
    assert description.startswith("1 of 2 pages hold more regions than their size allows")
    height, width = int(page["height"]), int(page["width"])
    assert f"{page['file']} (3014 > {int(width * height / (2.2 * 30**2))})" in description
