"""The Definitions declare every table the Python steps write, so the lineage graph in the UI is complete."""

from __future__ import annotations

from assets_defs.definitions import defs
from linkage_pipeline import schema


def test_every_table_with_a_contract_is_an_asset() -> None:
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    tables = set(schema.CONTRACTS) | set(schema.LEADING_CONTRACTS)
    assert len(tables) == 36
    assert sorted(tables - keys) == []


def test_shared_tables_are_downstream_of_every_writer() -> None:
    graph = defs.resolve_asset_graph()
    parents = {k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
               for k in graph.get_all_asset_keys()}
    assert parents["trained_models"] == {"pretrained_model", "supervised_model", "distilled_model", "reviewed_model"}
    assert parents["record_links"] >= {"link_reviews"} and "reviewed_model" in parents["linkage_model"]
    assert {"document_sources", "page_images", "layout_regions", "region_crops", "crop_embeddings",
            "table_records"} <= parents["rejected_inputs"]
    assert {"firm_centrality", "firm_anchor_distances"} <= {
        k for k, p in parents.items() if "mart_supply_chain_edges" in p}
