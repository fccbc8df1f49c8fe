"""Assets called directly with a built context (the second rung of the test ladder)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from assets_defs.documents import page_images
from linkage_pipeline.documents.synthetic import generate_corpus
from resources import LinkageStore


def test_page_images_called_directly_writes_its_partition(tmp_path: Path) -> None:
    generate_corpus(tmp_path / "c", seed=2, n_firms=8, n_list_pages=2)
    store_resource = LinkageStore(data_dir=str(tmp_path / "c"))
    context = dg.build_asset_context(partition_key="supplier_lists")
    result = page_images(context=context, linkage_store=store_resource)
    assert result.metadata["pages"] == 2 and result.metadata["rejected"] == 0
    rows = store_resource.store().read_table("page_images")
    assert sorted(rows["file"]) == ["page_001.png", "page_002.png"]
    assert set(rows["source"]) == {"supplier_lists"}
    assert (rows["width"] > 0).all() and rows["page_id"].str.len().eq(16).all()


def test_unknown_partition_names_the_known_sources(tmp_path: Path) -> None:
    generate_corpus(tmp_path / "c", seed=2, n_firms=8, n_list_pages=1)
    context = dg.build_asset_context(partition_key="no_such_source")
    with pytest.raises(ValueError, match=r"'no_such_source' is not in .*known sources: firm_directory, supplier_lists"):
        page_images(context=context, linkage_store=LinkageStore(data_dir=str(tmp_path / "c")))


def test_linkage_model_called_directly_records_the_shipped_model(tmp_path: Path) -> None:
    from assets_defs.model import LinkageModelConfig, linkage_model
    from linkage_pipeline.encoders import file_sha256
    from linkage_pipeline.models import shipped_model_dir
    from resources import ComputeResource

    generate_corpus(tmp_path / "c", seed=2, n_firms=8, n_list_pages=1)
    store_resource = LinkageStore(data_dir=str(tmp_path / "c"))
    result = linkage_model(LinkageModelConfig(), linkage_store=store_resource, compute=ComputeResource(device="cpu"))
    row = store_resource.store().read_table("linkage_model").iloc[0]
    assert row["model_id"] == file_sha256(shipped_model_dir() / "model.safetensors") == result.metadata["model_id"]
    assert row["chosen_by"] == "shipped model" and row["pretrained_path"].endswith("pretrained")
    assert 0 <= row["pooling_weight"] <= 1
    with pytest.raises(ValueError, match="no trained model yet"):
        linkage_model(LinkageModelConfig(model="trained"), linkage_store=store_resource, compute=ComputeResource(device="cpu"))
