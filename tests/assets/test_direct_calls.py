"""Assets called directly with a built context (the second rung of the test ladder)."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets_defs.documents import page_images
from linkage_pipeline.synthetic.corpus import generate_corpus
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
    from linkage_pipeline.multimodal.checkpoints import shipped_model_dir
    from linkage_pipeline.multimodal.encoder import file_sha256
    from linkage_pipeline.multimodal.preprocessing import model_identity, preprocessing_from_json
    from resources import ComputeResource

    generate_corpus(tmp_path / "c", seed=2, n_firms=8, n_list_pages=1)
    store_resource = LinkageStore(data_dir=str(tmp_path / "c"))
    result = linkage_model(LinkageModelConfig(), linkage_store=store_resource, compute=ComputeResource(device="cpu"))
    row = store_resource.store().read_table("linkage_model").iloc[0]
    prep = preprocessing_from_json(json.loads((shipped_model_dir() / "preprocessing.json").read_text(encoding="utf-8")))
    expected = model_identity(file_sha256(shipped_model_dir() / "model.safetensors"), prep)
    assert row["model_id"] == expected == result.metadata["model_id"]
    assert row["chosen_by"] == "shipped model" and row["pretrained_path"].endswith("pretrained")
    assert 0 <= row["pooling_weight"] <= 1
    with pytest.raises(ValueError, match="no trained model yet"):
        linkage_model(LinkageModelConfig(model="trained"), linkage_store=store_resource, compute=ComputeResource(device="cpu"))


def test_crop_embeddings_of_a_source_without_crops_is_an_empty_partition(tmp_path: Path) -> None:
    from assets_defs.model import LinkageModelConfig, crop_embeddings, linkage_model
    from linkage_pipeline import schema
    from resources import ComputeResource

    generate_corpus(tmp_path / "c", seed=2, n_firms=8, n_list_pages=1)
    store_resource, compute = LinkageStore(data_dir=str(tmp_path / "c")), ComputeResource(device="cpu")
    linkage_model(LinkageModelConfig(), linkage_store=store_resource, compute=compute)
    # no page of the source was read: no pages, regions, crops or OCR texts
    result = crop_embeddings(context=dg.build_asset_context(partition_key="supplier_lists"),
                             linkage_store=store_resource, compute=compute)
    assert result.metadata["rows"] == 0 and result.metadata["embedded_images"] == 0
    assert "no linkable crops in source 'supplier_lists' (0 usable pages, 0 regions" in result.metadata["empty"]
    [check] = result.check_results
    assert check.passed
    store = store_resource.store()
    assert store.partition_path("crop_embeddings", "supplier_lists").exists()
    rows = store.read_table("crop_embeddings")
    assert rows.empty and list(rows.columns) == list(schema.CROP_EMBEDDINGS)


def test_string_links_of_no_texts_are_an_empty_table(tmp_path: Path) -> None:
    from assets_defs.linking import StringLinksConfig, string_links
    from linkage_pipeline import schema
    from resources import ComputeResource

    generate_corpus(tmp_path / "c", seed=2, n_firms=8, n_list_pages=1)
    store_resource = LinkageStore(data_dir=str(tmp_path / "c"))
    store = store_resource.store()
    store.replace_table("stg_crop_texts", pd.DataFrame(columns=["crop_id", "source", "ocr", "text"]),
                        {"crop_id": "VARCHAR", "source": "VARCHAR", "ocr": "VARCHAR", "text": "VARCHAR"})
    result, inputs = string_links(context=dg.build_asset_context(), config=StringLinksConfig(),
                                  linkage_store=store_resource, compute=ComputeResource(device="cpu"))
    assert result.asset_key == dg.AssetKey("string_links") and result.metadata["rows"] == 0
    assert inputs.asset_key == dg.AssetKey("string_link_inputs") and inputs.metadata["rows"] == 0
    assert result.metadata["empty_linkages"] == (
        "supplier_lists -> firm_directory: no OCR texts in query source 'supplier_lists' or target source "
        "'firm_directory'"
    )
    links = store.read_table("string_links")
    assert links.empty and list(links.columns) == list(schema.STRING_LINKS)


def test_supply_chain_network_of_no_edges_is_an_empty_result(tmp_path: Path) -> None:
    from assets_defs.network import NetworkConfig, supply_chain_network
    from linkage_pipeline import schema

    generate_corpus(tmp_path / "c", seed=2, n_firms=8, n_list_pages=1)
    store_resource = LinkageStore(data_dir=str(tmp_path / "c"))
    store = store_resource.store()
    columns = ["supplier_id", "customer_id", "supplier_label", "customer_label", "page"]
    store.replace_table("mart_supply_chain_edges", pd.DataFrame(columns=columns), dict.fromkeys(columns, "VARCHAR"))
    result, centrality, distances = supply_chain_network(NetworkConfig(anchors=["三井物産"]), linkage_store=store_resource)
    assert result.asset_key == dg.AssetKey("supply_chain_network")
    assert result.metadata["nodes"] == 0 and result.metadata["edges"] == 0
    assert result.metadata["empty"].startswith("no supply-chain edges")
    assert centrality.asset_key == dg.AssetKey("firm_centrality") and centrality.metadata["rows"] == 0
    assert distances.asset_key == dg.AssetKey("firm_anchor_distances") and distances.metadata["rows"] == 0
    for table, contract in (("firm_centrality", schema.FIRM_CENTRALITY),
                            ("firm_anchor_distances", schema.FIRM_ANCHOR_DISTANCES)):
        types = store.query(f"describe {table}").set_index("column_name")["column_type"].to_dict()
        assert types == contract and store.read_table(table).empty, table
