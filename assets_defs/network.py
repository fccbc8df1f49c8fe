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


@dg.asset(group_name="network", deps=["mart_supply_chain_edges"], kinds={"duckdb", "networkx"}, pool="duckdb")
def supply_chain_network(config: NetworkConfig, linkage_store: LinkageStore) -> dg.MaterializeResult:
    """One row per firm in the supply-chain network with its centrality and distance to anchors; refreshed on demand."""
    store = linkage_store.store()
    out_dir = store.artifact_dir / "network"
    edges = store.read_table("mart_supply_chain_edges")
    result = network_lib.build_network(edges, out_dir, anchors=config.anchors, max_plot_nodes=config.max_plot_nodes)
    store.replace_table("firm_centrality", result.centrality, schema.FIRM_CENTRALITY)
    store.replace_table("firm_anchor_distances", result.anchor_distances, schema.FIRM_ANCHOR_DISTANCES)
    png = base64.b64encode(result.plot_path.read_bytes()).decode()
    empty = {}
    if result.n_nodes == 0:
        empty = {"empty": "no supply-chain edges: mart_supply_chain_edges is empty (no list page has a linked title "
                          "and linked entries), so the network has no firms"}
    return dg.MaterializeResult(
        metadata={
            **empty,
            "nodes": result.n_nodes,
            "edges": result.n_edges,
            "graphml": dg.MetadataValue.path(str(result.graphml_path)),
            "plot": dg.MetadataValue.md(f"![supply-chain network](data:image/png;base64,{png})"),
            "top_firms": preview(result.centrality.sort_values("degree_centrality", ascending=False), n=15),
        }
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
