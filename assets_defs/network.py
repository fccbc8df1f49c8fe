"""The supply-chain network built from the linked list entries."""


import base64

import dagster as dg

from assets_defs._common import preview
from linkage_pipeline import network as network_lib
from linkage_pipeline import schema
from linkage_pipeline.evaluation import provenance
from resources import LinkageStore


class NetworkConfig(dg.Config):
    """Anchor firms (node ids or labels) to which shortest-path distances are reported."""

    anchors: list[str] = []
    max_plot_nodes: int = 80


@dg.multi_asset(
    specs=[
        dg.AssetSpec(name, deps=["mart_supply_chain_edges"], kinds=kinds, description=description)
        for name, kinds, description in (
            ("supply_chain_network", {"networkx"},
             "The supply-chain graph of linked firms (GraphML and a plot); refreshed on demand."),
            ("firm_centrality", {"duckdb"},
             "One row per firm in the supply-chain network with its centrality; refreshed with supply_chain_network."),
            ("firm_anchor_distances", {"duckdb"},
             "One row per firm and anchor firm: shortest-path distances; refreshed with supply_chain_network."),
        )
    ],
    group_name="network",
    pool="duckdb",
)
def supply_chain_network(
    config: NetworkConfig, linkage_store: LinkageStore
) -> tuple[dg.MaterializeResult, dg.MaterializeResult, dg.MaterializeResult]:
    """The graph, its centrality table and its anchor distances, from one build of the network."""
    store = linkage_store.store()
    edges = store.read_table("mart_supply_chain_edges")
    result = network_lib.build_network(edges, store.artifact_dir / "network", anchors=config.anchors,
                                       max_plot_nodes=config.max_plot_nodes)
    n_firms = store.replace_table("firm_centrality", result.centrality, schema.FIRM_CENTRALITY)
    n_distances = store.replace_table("firm_anchor_distances", result.anchor_distances, schema.FIRM_ANCHOR_DISTANCES)
    png = base64.b64encode(result.plot_path.read_bytes()).decode()
    empty = {}
    if result.n_nodes == 0:
        empty = {"empty": "no supply-chain edges: mart_supply_chain_edges is empty (no list page has a linked title "
                          "and linked entries), so the network has no firms"}
    return (
        dg.MaterializeResult(asset_key="supply_chain_network", metadata={
            **empty, "nodes": result.n_nodes, "edges": result.n_edges,
            "graphml": dg.MetadataValue.path(str(result.graphml_path)),
            "plot": dg.MetadataValue.md(f"![supply-chain network](data:image/png;base64,{png})"),
        }),
        dg.MaterializeResult(asset_key="firm_centrality", metadata={
            **empty, "rows": n_firms,
            "top_firms": preview(result.centrality.sort_values("degree_centrality", ascending=False), n=15),
        }),
        dg.MaterializeResult(asset_key="firm_anchor_distances", metadata={**empty, "rows": n_distances}),
    )


@dg.asset(group_name="linking", deps=["mart_link_provenance"], kinds={"png"})
def link_contact_sheet(linkage_store: LinkageStore) -> dg.MaterializeResult:
    """One PNG of sampled record links (both crops, texts, score, method) for reviewers; refreshed with the links."""
    store = linkage_store.store()
    sample = provenance.sample_links(store.read_table("mart_link_provenance"), n=12)
    path = provenance.contact_sheet(sample, store.artifact_dir / "provenance" / "link_contact_sheet.png")
    png = base64.b64encode(path.read_bytes()).decode()
    cols = ["query_text", "target_text", "score", "matched", "method", "ocr", "query_page", "target_page", "model_id"]
    empty = {"empty": "no record links to show: mart_link_provenance is empty"} if sample.empty else {}
    return dg.MaterializeResult(
        metadata={
            **empty,
            "links_shown": len(sample),
            "path": dg.MetadataValue.path(str(path)),
            "sheet": dg.MetadataValue.md(f"![record links](data:image/png;base64,{png})"),
            "sample": preview(sample[cols], n=12),
        }
    )
