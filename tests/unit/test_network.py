"""Tests of the supply-chain network (linkage_pipeline.network) on small graphs with known answers."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from linkage_pipeline import network, schema
from linkage_pipeline.network import (
    anchor_distances,
    build_network,
    build_supply_chain_graph,
    centrality_table,
    plot_network,
    write_graphml,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _known_graph() -> nx.DiGraph:
    # a supplies b and c, b supplies c, c supplies d
    edges = pd.DataFrame({"supplier_id": ["a", "b", "a", "c"], "customer_id": ["b", "c", "c", "d"]})
    nodes = pd.DataFrame({"node_id": ["a", "b", "c", "d"], "label": ["三井物産", "東京會社", "大阪販賣", "菓子商店"]})
    return build_supply_chain_graph(edges, nodes)


def test_build_aggregates_duplicate_edges_and_drops_unlinked():
    edges = pd.DataFrame(
        {
            "supplier_id": ["a", "a", "b", None, "c"],
            "customer_id": ["b", "b", "c", "a", "c"],
            "page": ["p2.png", "p1.png", "p1.png", "p3.png", "p1.png"],
            "score": [0.7, 0.9, np.nan, 0.5, 0.8],
        }
    )
    G = build_supply_chain_graph(edges)
    assert sorted(G.edges) == [("a", "b"), ("b", "c")]  # None endpoint and self-loop c->c dropped
    assert G.edges["a", "b"] == {"n_records": 2, "page": "p1.png;p2.png", "score": 0.9}
    assert G.edges["b", "c"] == {"n_records": 1, "page": "p1.png"}  # all-missing score left out
    assert G.nodes["a"]["label"] == "a"  # no nodes table: label = id
    kept = build_supply_chain_graph(edges, drop_self_loops=False)
    assert kept.has_edge("c", "c")


def test_build_with_nodes_table():
    nodes = pd.DataFrame({"node_id": ["a", "b", "z"], "label": ["三井物産", None, "孤立"], "year": [1950, 1951, 1952]})
    G = build_supply_chain_graph(pd.DataFrame({"supplier_id": ["a"], "customer_id": ["c"]}), nodes)
    assert sorted(G.nodes) == ["a", "b", "c", "z"]  # isolated firms kept
    assert G.nodes["a"] == {"label": "三井物産", "year": 1950}
    assert G.nodes["b"]["label"] == "b" and G.nodes["c"]["label"] == "c"


@pytest.mark.parametrize(
    ("edges", "nodes", "message"),
    [
        (pd.DataFrame({"supplier_id": ["a"]}), None, r"edges is missing columns \['customer_id'\]"),
        (
            pd.DataFrame({"supplier_id": ["a"], "customer_id": ["b"]}),
            pd.DataFrame({"node_id": ["a"]}),
            "nodes is missing",
        ),
        (
            pd.DataFrame({"supplier_id": ["a"], "customer_id": ["b"]}),
            pd.DataFrame({"node_id": ["a", "a"], "label": ["x", "y"]}),
            "must be unique",
        ),
        ([("a", "b")], None, "must be a pandas DataFrame"),
    ],
)
def test_build_errors(edges, nodes, message):
    with pytest.raises(ValueError, match=message):
        build_supply_chain_graph(edges, nodes)


def test_centrality_on_known_graph():
    t = centrality_table(_known_graph())
    assert t["node_id"].tolist() == ["c", "a", "b", "d"]  # degree desc, then id
    assert t["label"].tolist() == ["大阪販賣", "三井物産", "東京會社", "菓子商店"]
    assert t["in_degree"].tolist() == [2, 0, 1, 1]
    assert t["out_degree"].tolist() == [1, 2, 1, 0]
    np.testing.assert_allclose(t["degree_centrality"], [3 / 3, 2 / 3, 2 / 3, 1 / 3])
    # only c lies on shortest paths (a->d and b->d); normalised by (n-1)(n-2) = 6
    np.testing.assert_allclose(t["betweenness"], [2 / 6, 0, 0, 0])
    assert t["in_degree"].dtype == np.int64


def test_centrality_empty_graph():
    t = centrality_table(nx.DiGraph())
    assert len(t) == 0 and list(t.columns)[:5] == ["node_id", "label", "in_degree", "out_degree", "degree_centrality"]


def test_anchor_distances():
    G = _known_graph()
    G.add_node("z", label="孤立")
    d = anchor_distances(G, ["大阪販賣", "a"])  # by label and by id
    assert d["anchor_id"].unique().tolist() == ["c", "a"]
    c = d[d["anchor_id"] == "c"].set_index("node_id")
    assert c["anchor_label"].unique().tolist() == ["大阪販賣"]
    assert c.index.tolist() == ["a", "b", "c", "d", "z"]
    assert c.loc[["a", "b", "c", "d"], "undirected_distance"].tolist() == [1, 1, 0, 1]
    assert c.loc[["a", "b", "c"], "distance_to_anchor"].tolist() == [1, 1, 0]  # a and b supply c directly
    assert c.loc[["d", "z"], "distance_to_anchor"].isna().all()
    assert pd.isna(c.loc["z", "undirected_distance"])  # isolated firm: unreachable
    assert c.loc["d", "distance_from_anchor"] == 1
    assert c.loc[["a", "b", "z"], "distance_from_anchor"].isna().all()
    a = d[d["anchor_id"] == "a"].set_index("node_id")
    assert a.loc[["a", "b", "c", "d"], "distance_from_anchor"].tolist() == [0, 1, 1, 2]
    assert str(d["undirected_distance"].dtype) == "Int64"


@pytest.mark.parametrize(
    ("anchors", "message"),
    [
        (["nobody"], "neither a node id nor a node label"),
        (["同名"], "label of several nodes"),
        ("a", "single str"),
    ],
)
def test_anchor_errors(anchors, message):
    G = _known_graph()
    G.add_node("x", label="同名")
    G.add_node("y", label="同名")
    with pytest.raises(ValueError, match=message):
        anchor_distances(G, anchors)


def test_plot_network_writes_deterministic_png(tmp_path):
    G = _known_graph()
    p1 = plot_network(G, tmp_path / "a" / "net.png", title="サプライチェーン", highlight=["c"])
    p2 = plot_network(G, tmp_path / "b" / "net.png", title="サプライチェーン", highlight=["c"])
    b1, b2 = p1.read_bytes(), p2.read_bytes()
    assert b1[:8] == PNG_MAGIC and len(b1) > 1000
    assert b1 == b2
    assert not list((tmp_path / "a").glob("*.tmp"))


def test_plot_network_subsets_and_empty(tmp_path):
    G = nx.gnp_random_graph(60, 0.05, seed=1, directed=True)
    G = nx.relabel_nodes(G, {v: f"n{v}" for v in G})
    assert plot_network(G, tmp_path / "big.png", max_nodes=10).read_bytes()[:8] == PNG_MAGIC
    assert plot_network(nx.DiGraph(), tmp_path / "empty.png").read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="max_nodes must be a positive int"):
        plot_network(G, tmp_path / "x.png", max_nodes=0)


def test_plot_network_without_cjk_font_warns(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(network, "find_cjk_font", lambda: None)
    with caplog.at_level(logging.WARNING, logger="linkage_pipeline.network"):
        path = plot_network(_known_graph(), tmp_path / "net.png")
    assert path.exists()
    assert "no Japanese-capable font" in caplog.text


def test_find_cjk_font_returns_the_first_installed_candidate(monkeypatch):
    from matplotlib import font_manager

    first, second = network.CJK_FONT_CANDIDATES[0], network.CJK_FONT_CANDIDATES[1]
    fonts = [SimpleNamespace(name="DejaVu Sans"), SimpleNamespace(name=second), SimpleNamespace(name=first)]

    def found(installed):
        monkeypatch.setattr(font_manager.fontManager, "ttflist", installed)
        network.find_cjk_font.cache_clear()  # the answer is cached per process
        return network.find_cjk_font()

    try:
        assert found(fonts) == first  # candidate order wins over the font manager's order
        assert found(fonts[:2]) == second
        assert found(fonts[:1]) is None
    finally:
        monkeypatch.undo()
        network.find_cjk_font.cache_clear()  # later tests see the fonts really installed


def test_graphml_round_trip(tmp_path):
    G = _known_graph()
    G.nodes["a"]["year"] = np.int64(1950)
    G.nodes["b"]["year"] = 1951.5  # mixed int/float -> float for every node
    G.nodes["c"]["aliases"] = ["大阪販売", "大阪販賣"]  # list -> JSON string
    G.nodes["d"]["note"] = None  # missing -> dropped
    G.edges["a", "b"]["score"] = np.float32(0.5)
    G.edges["a", "b"]["confirmed"] = np.bool_(True)
    G.graph["name"] = "supply chain"
    path = write_graphml(G, tmp_path / "out" / "net.graphml")
    H = nx.read_graphml(path)
    assert isinstance(H, nx.DiGraph)
    assert sorted(H.edges) == sorted(G.edges)
    assert {v: H.nodes[v]["label"] for v in H} == {v: G.nodes[v]["label"] for v in G}
    assert H.nodes["a"]["year"] == 1950.0 and isinstance(H.nodes["a"]["year"], float)
    assert H.nodes["b"]["year"] == 1951.5
    assert H.nodes["c"]["aliases"] == '["大阪販売", "大阪販賣"]'
    assert "note" not in H.nodes["d"]
    assert H.edges["a", "b"]["score"] == pytest.approx(0.5)
    assert H.edges["a", "b"]["confirmed"] is True
    assert H.graph["name"] == "supply chain"
    assert not list(path.parent.glob("*.tmp"))


def test_graphml_of_built_graph_round_trips(tmp_path):
    edges = pd.DataFrame(
        {"supplier_id": ["a", "a"], "customer_id": ["b", "b"], "score": [0.5, 0.75], "page": ["p1", "p2"]}
    )
    G = build_supply_chain_graph(edges)
    H = nx.read_graphml(write_graphml(G, tmp_path / "g.graphml"))
    assert H.edges["a", "b"] == {"n_records": 2, "score": 0.75, "page": "p1;p2"}


def test_graphml_rejects_non_graph(tmp_path):
    with pytest.raises(ValueError, match="networkx graph"):
        write_graphml({"a": "b"}, tmp_path / "x.graphml")  # type: ignore[arg-type]


#: ``mart_supply_chain_edges`` with no rows, as DuckDB returns it when no list page had an accepted title.
NO_EDGES = pd.DataFrame(
    {c: pd.Series(dtype="object") for c in ("supplier_id", "customer_id", "supplier_label", "customer_label", "page")}
)


def test_no_edges_give_an_empty_graph():
    nodes = NO_EDGES[["supplier_id", "supplier_label"]].set_axis(["node_id", "label"], axis=1)
    G = build_supply_chain_graph(NO_EDGES, nodes)
    assert G.number_of_nodes() == 0 and G.number_of_edges() == 0
    assert build_supply_chain_graph(NO_EDGES).number_of_nodes() == 0
    assert anchor_distances(G, []).columns.tolist() == [
        "anchor_id", "anchor_label", "node_id", "label", "undirected_distance", "distance_to_anchor",
        "distance_from_anchor",
    ]


@pytest.mark.parametrize("anchors", [(), ("三井物産",)])
def test_build_network_of_no_edges_is_an_empty_result(tmp_path, anchors):
    from linkage_pipeline import network as network_lib
    from linkage_pipeline import schema

    result = network_lib.build_network(NO_EDGES, tmp_path / "net", anchors=anchors)
    assert (result.n_nodes, result.n_edges) == (0, 0)
    assert result.centrality.empty and list(result.centrality.columns) == list(schema.FIRM_CENTRALITY)
    assert result.anchor_distances.empty and list(result.anchor_distances.columns) == list(schema.FIRM_ANCHOR_DISTANCES)
    assert nx.read_graphml(result.graphml_path).number_of_nodes() == 0
    assert result.plot_path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match=r"edges is missing columns \['customer_label'\]"):
        network_lib.build_network(NO_EDGES.drop(columns="customer_label"), tmp_path / "net")


def _mart_edges() -> pd.DataFrame:
    # mart_supply_chain_edges rows of _known_graph: a supplies b and c, b supplies c, c supplies d
    labels = {"a": "三井物産", "b": "東京會社", "c": "大阪販賣", "d": "菓子商店"}
    pairs = [("a", "b"), ("b", "c"), ("a", "c"), ("c", "d")]
    return pd.DataFrame(
        {
            "supplier_id": [s for s, _ in pairs],
            "customer_id": [c for _, c in pairs],
            "supplier_label": [labels[s] for s, _ in pairs],
            "customer_label": [labels[c] for _, c in pairs],
            "page": ["p1.png", "p1.png", "p2.png", "p2.png"],
        }
    )


def test_build_network_tables_files_and_default_anchors(tmp_path):
    result = build_network(_mart_edges(), tmp_path / "net")
    assert (result.n_nodes, result.n_edges) == (4, 4)
    c = result.centrality.set_index("node_id")
    assert c["label"].to_dict() == {"c": "大阪販賣", "a": "三井物産", "b": "東京會社", "d": "菓子商店"}
    assert c["in_degree"].to_dict() == {"c": 2, "a": 0, "b": 1, "d": 1}
    assert c["out_degree"].to_dict() == {"c": 1, "a": 2, "b": 1, "d": 0}
    assert c["degree_centrality"].to_dict() == pytest.approx({"c": 1.0, "a": 2 / 3, "b": 2 / 3, "d": 1 / 3})
    # a -> d and b -> d both pass through c; (n - 1)(n - 2) = 6 ordered pairs normalise it
    assert c["betweenness"].to_dict() == pytest.approx({"c": 2 / 6, "a": 0.0, "b": 0.0, "d": 0.0})
    # no anchors named: the three highest-degree firms, ties by id
    d = result.anchor_distances
    assert d["anchor_id"].drop_duplicates().tolist() == ["c", "a", "b"]
    from_a = d[d["anchor_id"] == "a"].set_index("node_id")
    assert from_a["distance_from_anchor"].tolist() == [0, 1, 1, 2]
    assert from_a["distance_to_anchor"].isna().tolist() == [False, True, True, True]
    assert result.graphml_path == tmp_path / "net" / "supply_chain.graphml"
    assert sorted(nx.read_graphml(result.graphml_path).edges) == [("a", "b"), ("a", "c"), ("b", "c"), ("c", "d")]
    assert result.plot_path.read_bytes()[:8] == PNG_MAGIC


def test_build_network_named_anchor_by_label_and_plot_reuse(tmp_path, monkeypatch):
    first = build_network(_mart_edges(), tmp_path, anchors=["菓子商店"])
    d = first.anchor_distances.set_index("node_id")
    assert set(d["anchor_id"]) == {"d"}
    assert d["distance_to_anchor"].to_dict() == {"a": 2, "b": 2, "c": 1, "d": 0}  # supplier tiers of d
    # the same edges draw the same picture: the plot is not drawn again
    drawn = []
    monkeypatch.setattr(network, "plot_network", lambda *a, **k: drawn.append(a))
    build_network(_mart_edges(), tmp_path, anchors=["d"])
    assert drawn == []
    build_network(_mart_edges(), tmp_path, anchors=["d"], max_plot_nodes=2)
    assert len(drawn) == 1


def test_build_network_of_no_edges_and_bad_input(tmp_path):
    empty = _mart_edges().iloc[:0]
    result = build_network(empty, tmp_path, anchors=["三井物産"])  # anchors of an empty network are not looked up
    assert (result.n_nodes, result.n_edges) == (0, 0)
    assert result.centrality.empty and list(result.centrality.columns) == list(schema.FIRM_CENTRALITY)
    assert result.anchor_distances.empty and list(result.anchor_distances.columns) == list(schema.FIRM_ANCHOR_DISTANCES)
    assert result.graphml_path.is_file() and result.plot_path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="neither a node id nor a node label"):
        build_network(_mart_edges(), tmp_path, anchors=["住友"])
    with pytest.raises(ValueError, match="customer_label"):
        build_network(_mart_edges().drop(columns=["customer_label"]), tmp_path)
