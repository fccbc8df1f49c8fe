"""The supply-chain network built from linked records: graph, centralities, distances to anchor firms, plots.

Edges point the way goods flow, from supplier to customer: an edge ``A -> B`` means "A supplies B". Node ids
are entity ids (str); the optional ``label`` attribute is the firm's name for tables and plots.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

from linkage_pipeline.paths import atomic_write_bytes
from linkage_pipeline.schema import require_columns

logger = logging.getLogger(__name__)

#: Fonts tried, in order, for node labels (Japanese firm names); the first one installed wins.
CJK_FONT_CANDIDATES = (
    "Noto Sans CJK JP",
    "IPAGothic",
    "IPAexGothic",
    "IPAPGothic",
    "BIZ UDGothic",
    "Noto Serif CJK JP",
    "TakaoGothic",
    "VL Gothic",
    "Ume Gothic",
    "Hiragino Sans",
    "Yu Gothic",
    "MS Gothic",
)
#: Above this many nodes betweenness is estimated from a fixed-seed sample of source nodes.
EXACT_BETWEENNESS_MAX_NODES = 1000
BETWEENNESS_SAMPLE = 256


def _missing(value: object) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _missing_mask(values: pd.Series) -> np.ndarray:
    """bool (n,): which values are missing. A bool array, never ``Series.map``'s result: an empty map is of
    dtype object, and indexing a frame with an empty object Series selects columns (none) instead of rows."""
    return np.fromiter((_missing(v) for v in values), dtype=bool, count=len(values))


def _python_scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def build_supply_chain_graph(
    edges: pd.DataFrame, nodes: pd.DataFrame | None = None, *, drop_self_loops: bool = True
) -> nx.DiGraph:
    """Directed supplier -> customer graph from linked supply-chain records.

    Several rows for the same (supplier, customer) pair (the relation reported on several pages, or by both
    firms) become one edge with ``n_records`` = the number of rows; each extra column is aggregated over those
    rows: numeric columns by their maximum, others as the sorted distinct non-missing values joined by ``";"``.
    Rows with a missing supplier or customer (a record that was not linked) are dropped, and so are self-loops
    by default (a firm as its own supplier is almost always a linkage error); both are logged.

    Args:
        edges: Columns ``supplier_id``, ``customer_id`` (entity ids) plus optional attributes such as ``page``
            or ``score``.
        nodes: Optional columns ``node_id`` (unique), ``label`` plus optional attributes. Nodes listed here
            without edges are kept as isolated nodes; edge endpoints missing here get their id as label.
        drop_self_loops: Drop rows whose supplier equals its customer.

    Returns:
        ``nx.DiGraph`` with str node ids, node attribute ``label`` (str) and edge attribute ``n_records`` (int).

    Raises:
        ValueError: On missing columns or duplicated ``node_id``.
    """
    require_columns(edges, ("supplier_id", "customer_id"), "edges")
    G = nx.DiGraph()

    if nodes is not None:
        require_columns(nodes, ("node_id", "label"), "nodes")
        node_rows = nodes[~_missing_mask(nodes["node_id"])]
        ids = node_rows["node_id"].astype(str)
        if ids.duplicated().any():
            dupes = ids[ids.duplicated()].head(5).tolist()
            raise ValueError(f"nodes.node_id must be unique, found duplicates {dupes}")
        extra = [c for c in node_rows.columns if c not in ("node_id", "label")]
        for node_id, (_, row) in zip(ids, node_rows.iterrows(), strict=True):
            attrs = {c: _python_scalar(row[c]) for c in extra if not _missing(row[c])}
            attrs["label"] = node_id if _missing(row["label"]) else str(row["label"])
            G.add_node(node_id, **attrs)

    keep = ~(_missing_mask(edges["supplier_id"]) | _missing_mask(edges["customer_id"]))
    if (~keep).any():
        logger.info("supply-chain graph: dropped %d edge rows with an unlinked endpoint", int((~keep).sum()))
    e = edges[keep].copy()
    e["supplier_id"] = e["supplier_id"].astype(str)
    e["customer_id"] = e["customer_id"].astype(str)
    if drop_self_loops:
        loops = e["supplier_id"] == e["customer_id"]
        if loops.any():
            logger.warning(
                "supply-chain graph: dropped %d self-loop rows (firm linked as its own partner)", int(loops.sum())
            )
            e = e[~loops]

    extra = [c for c in e.columns if c not in ("supplier_id", "customer_id")]
    for (sup, cus), group in e.groupby(["supplier_id", "customer_id"], sort=True):
        attrs: dict[str, Any] = {"n_records": len(group)}
        for c in extra:
            col = group[c]
            vals = col.dropna()
            if len(vals) == 0:
                continue
            if pd.api.types.is_bool_dtype(col):
                attrs[c] = bool(vals.any())
            elif pd.api.types.is_numeric_dtype(col):
                attrs[c] = _python_scalar(vals.max())
            else:
                attrs[c] = ";".join(sorted({str(v) for v in vals}))
        for n in (sup, cus):
            if n not in G:
                G.add_node(n, label=n)
        G.add_edge(sup, cus, **attrs)
    logger.debug("supply-chain graph: %d nodes, %d edges", G.number_of_nodes(), G.number_of_edges())
    return G


def _label(G: nx.DiGraph, node: str) -> str:
    label = G.nodes[node].get("label")
    return str(node) if _missing(label) else str(label)


def centrality_table(G: nx.DiGraph) -> pd.DataFrame:
    """Degree and betweenness centrality of every firm.

    Args:
        G: Graph from :func:`build_supply_chain_graph`.

    Returns:
        One row per node, sorted by ``degree`` descending then ``node_id``: ``node_id`` (str), ``label`` (str),
        ``in_degree`` (int64, number of suppliers), ``out_degree`` (int64, number of customers),
        ``degree_centrality`` (float64, (in + out) / (n - 1), networkx's definition for directed graphs),
        ``betweenness`` (float64, normalised, directed; exact up to :data:`EXACT_BETWEENNESS_MAX_NODES` nodes,
        otherwise estimated from :data:`BETWEENNESS_SAMPLE` source nodes with seed 0).

    Raises:
        ValueError: If ``G`` is not a directed graph.
    """
    if not isinstance(G, nx.DiGraph):
        raise ValueError(f"G must be a networkx DiGraph, got {type(G).__name__}")
    if G.number_of_nodes() == 0:
        dtypes = {
            "node_id": object,
            "label": object,
            "in_degree": "int64",
            "out_degree": "int64",
            "degree_centrality": "float64",
            "betweenness": "float64",
        }
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in dtypes.items()})
    degree = nx.degree_centrality(G)
    n = G.number_of_nodes()
    if n <= EXACT_BETWEENNESS_MAX_NODES:
        betweenness = nx.betweenness_centrality(G, normalized=True)
    else:
        betweenness = nx.betweenness_centrality(G, k=BETWEENNESS_SAMPLE, normalized=True, seed=0)
    nodes = list(G.nodes)
    df = pd.DataFrame(
        {
            "node_id": [str(v) for v in nodes],
            "label": [_label(G, v) for v in nodes],
            "in_degree": np.array([G.in_degree(v) for v in nodes], dtype=np.int64),
            "out_degree": np.array([G.out_degree(v) for v in nodes], dtype=np.int64),
            "degree_centrality": np.array([degree[v] for v in nodes], dtype=np.float64),
            "betweenness": np.array([betweenness[v] for v in nodes], dtype=np.float64),
        }
    )
    total = df["in_degree"] + df["out_degree"]
    order = np.lexsort((df["node_id"].to_numpy(), -total.to_numpy()))
    return df.iloc[order].reset_index(drop=True)


def _resolve_anchor(G: nx.DiGraph, anchor: str) -> str:
    if anchor in G:
        return anchor
    hits = sorted(str(v) for v, lab in G.nodes(data="label") if lab == anchor)
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise ValueError(f"anchor {anchor!r} is the label of several nodes {hits[:5]}; pass a node id instead")
    raise ValueError(f"anchor {anchor!r} is neither a node id nor a node label of the graph")


def anchor_distances(G: nx.DiGraph, anchors: Sequence[str]) -> pd.DataFrame:
    """Shortest-path distances (in edges) from every firm to each anchor firm.

    Args:
        G: Graph from :func:`build_supply_chain_graph`.
        anchors: Anchor firms by node id or by label (an exact, unique label).

    Returns:
        Long table, one row per (anchor, node), anchors in the given order and nodes sorted by id:
        ``anchor_id``, ``anchor_label``, ``node_id``, ``label``, and nullable Int64 distances (``<NA>`` when
        unreachable): ``undirected_distance`` ignoring direction, ``distance_to_anchor`` along supplier ->
        customer edges from the node to the anchor (the node's supplier tier: 1 = direct supplier) and
        ``distance_from_anchor`` from the anchor to the node (1 = direct customer). The anchor's own row is 0.

    Raises:
        ValueError: If an anchor is not found or its label is ambiguous, or ``anchors`` is a bare string.
    """
    if not isinstance(G, nx.DiGraph):
        raise ValueError(f"G must be a networkx DiGraph, got {type(G).__name__}")
    if isinstance(anchors, str):
        raise ValueError(f"anchors must be a sequence of node ids or labels, got a single str {anchors!r}")
    resolved = [_resolve_anchor(G, str(a)) for a in anchors]
    nodes = sorted(G.nodes, key=str)
    undirected = G.to_undirected(as_view=True)
    reverse = G.reverse(copy=False)
    rows = []
    for a in resolved:
        und = nx.single_source_shortest_path_length(undirected, a)
        to_a = nx.single_source_shortest_path_length(reverse, a)  # paths node -> anchor in G
        from_a = nx.single_source_shortest_path_length(G, a)
        for v in nodes:
            rows.append((a, _label(G, a), str(v), _label(G, v), und.get(v), to_a.get(v), from_a.get(v)))
    df = pd.DataFrame(
        rows,
        columns=["anchor_id", "anchor_label", "node_id", "label", "undirected_distance", "distance_to_anchor",
                 "distance_from_anchor"],
    )
    for c in ("undirected_distance", "distance_to_anchor", "distance_from_anchor"):
        df[c] = df[c].astype("Int64")
    return df


@lru_cache(maxsize=1)
def find_cjk_font() -> str | None:
    """The first installed font of :data:`CJK_FONT_CANDIDATES` known to matplotlib's font manager, or None."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    for name in CJK_FONT_CANDIDATES:
        if name in installed:
            return name
    return None


def _plot_subgraph(G: nx.DiGraph, max_nodes: int) -> nx.DiGraph:
    """The ``max_nodes`` highest-degree nodes (ties by id), re-inserted in sorted order for a stable layout."""
    ranked = sorted(G.nodes, key=lambda v: (-G.degree(v), str(v)))[:max_nodes]
    keep = sorted(ranked, key=str)
    H = nx.DiGraph()
    H.add_nodes_from((v, G.nodes[v]) for v in keep)
    kept = set(keep)
    H.add_edges_from(sorted((u, v) for u, v in G.edges if u in kept and v in kept))
    return H


def plot_network(
    G: nx.DiGraph,
    path: str | os.PathLike[str],
    *,
    max_nodes: int = 150,
    title: str | None = None,
    highlight: Sequence[str] = (),
    seed: int = 0,
    dpi: int = 120,
) -> Path:
    """Draw the network to a PNG file.

    Uses matplotlib's Agg canvas directly (no pyplot state, safe in worker processes) and a spring layout with
    a fixed seed on a sorted copy of the graph, so the same graph gives the same picture. Node size grows with
    degree. Labels use the first Japanese-capable font from :data:`CJK_FONT_CANDIDATES`; without one a warning
    is logged and labels are drawn in the default font (Japanese glyphs then show as boxes).

    Args:
        G: Graph from :func:`build_supply_chain_graph`.
        path: Output ``.png`` path; parent folders are created.
        max_nodes: Draw only the ``max_nodes`` nodes of highest degree (ties by id).
        title: Optional figure title.
        highlight: Node ids (e.g. anchor firms) drawn in a contrasting colour.
        seed: Seed of the spring layout.
        dpi: Resolution.

    Returns:
        The path written.

    Raises:
        ValueError: If ``G`` is not a DiGraph or ``max_nodes`` < 1.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(G, nx.DiGraph):
        raise ValueError(f"G must be a networkx DiGraph, got {type(G).__name__}")
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, int) or max_nodes < 1:
        raise ValueError(f"max_nodes must be a positive int, got {max_nodes!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    font = find_cjk_font()
    if font is None:
        logger.warning(
            "no Japanese-capable font found (tried %s); labels may render as boxes", ", ".join(CJK_FONT_CANDIDATES)
        )
    family = font or "sans-serif"

    H = _plot_subgraph(G, max_nodes)
    if H.number_of_nodes() < G.number_of_nodes():
        logger.info("plot_network: drawing %d of %d nodes (highest degree)", H.number_of_nodes(), G.number_of_nodes())
    fig = Figure(figsize=(12, 10), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontfamily=family)
    if H.number_of_nodes() == 0:
        ax.text(0.5, 0.5, "empty network", ha="center", va="center", fontfamily=family)
    else:
        pos = nx.spring_layout(H, seed=seed, k=1.5 / math.sqrt(H.number_of_nodes()))
        degrees = np.array([H.degree(v) for v in H.nodes], dtype=np.float64)
        sizes = 80 + 40 * degrees
        marked = {str(h) for h in highlight}
        colors = ["#d62728" if str(v) in marked else "#1f77b4" for v in H.nodes]
        nx.draw_networkx_edges(H, pos, ax=ax, arrows=True, arrowsize=8, width=0.6, alpha=0.5, node_size=sizes)
        nx.draw_networkx_nodes(H, pos, ax=ax, node_size=sizes, node_color=colors, alpha=0.85)
        labels = {v: _label(H, v)[:16] for v in H.nodes}
        # labels sit just above their node so the marker does not hide the first characters
        label_pos = {v: (x, y + 0.03) for v, (x, y) in pos.items()}
        nx.draw_networkx_labels(H, label_pos, labels=labels, ax=ax, font_size=7, font_family=family)
    # write-then-rename so a crash never leaves a half-written PNG; no Software metadata keeps bytes stable
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            # without a CJK font every missing glyph warns once; the single log line above says it all
            warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
            fig.tight_layout()
            fig.savefig(tmp, format="png", metadata={"Software": None})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _graphml_value(value: Any) -> Any:
    """A GraphML-safe scalar (bool/int/float/str), or None to drop the attribute."""
    value = _python_scalar(value)
    if _missing(value):
        return None
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple, set, dict)):
        if isinstance(value, set):
            value = sorted(value, key=str)
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _unify(items: list[dict[str, Any]]) -> None:
    """Give every attribute one GraphML type across all nodes (or all edges), in place."""
    kinds: dict[str, set[type]] = {}
    for attrs in items:
        for k, v in attrs.items():
            kinds.setdefault(k, set()).add(type(v))
    for k, types in kinds.items():
        if types <= {bool} or types <= {str}:
            continue
        if types <= {int, bool}:
            cast: Any = int
        elif types <= {int, float, bool}:
            cast = float
        else:
            cast = str
        for attrs in items:
            if k in attrs:
                attrs[k] = cast(attrs[k])


def write_graphml(G: nx.DiGraph, path: str | os.PathLike[str]) -> Path:
    """Write the graph as GraphML (readable by Gephi, Cytoscape, networkx) with safe attribute types.

    Attributes are converted to bool/int/float/str: numpy scalars to Python, lists/dicts to JSON strings,
    missing values (None/NaN) dropped, and an attribute with mixed types across nodes (or edges) promoted to
    one type (int -> float -> str). The file is written to a temporary name and renamed.

    Args:
        G: Graph from :func:`build_supply_chain_graph`.
        path: Output ``.graphml`` path; parent folders are created.

    Returns:
        The path written.

    Raises:
        ValueError: If ``G`` is not a networkx graph.
    """
    if not isinstance(G, nx.Graph):
        raise ValueError(f"G must be a networkx graph, got {type(G).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def clean(attrs: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in attrs.items():
            safe = _graphml_value(v)
            if safe is not None:
                out[str(k)] = safe
        return out

    nodes = [(str(v), clean(d)) for v, d in G.nodes(data=True)]
    edges = [(str(u), str(v), clean(d)) for u, v, d in G.edges(data=True)]
    _unify([d for _, d in nodes])
    _unify([d for _, _, d in edges])
    H = G.__class__()
    H.graph.update(clean(G.graph))
    H.add_nodes_from(nodes)
    H.add_edges_from(edges)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        nx.write_graphml(H, tmp, encoding="utf-8", prettyprint=True, named_key_ids=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class NetworkResult:
    """What :func:`build_network` produced: tables for DuckDB and files for people."""

    centrality: pd.DataFrame
    anchor_distances: pd.DataFrame
    graphml_path: Path
    plot_path: Path
    n_nodes: int
    n_edges: int


def build_network(
    edges: pd.DataFrame, out_dir: Path, *, anchors: Sequence[str] = (), max_plot_nodes: int = 150
) -> NetworkResult:
    """Builds the supply-chain graph from ``mart_supply_chain_edges`` rows and writes its GraphML and plot.

    Anchors default to the three firms with the highest degree when none are named. No edges (no list entry was
    linked) is a result: an empty graph, empty tables with their columns, a GraphML file without nodes and a plot
    that says "empty network"; named anchors are then not looked up.

    Raises:
        ValueError: If ``edges`` lacks a column, or a named anchor is not a firm of a non-empty network.
    """
    require_columns(edges, ("supplier_id", "supplier_label", "customer_id", "customer_label"), "edges")
    nodes = pd.concat(
        [
            edges[["supplier_id", "supplier_label"]].set_axis(["node_id", "label"], axis=1),
            edges[["customer_id", "customer_label"]].set_axis(["node_id", "label"], axis=1),
        ],
        ignore_index=True,
    ).drop_duplicates("node_id")
    graph = build_supply_chain_graph(edges, nodes)
    centrality = centrality_table(graph)
    if graph.number_of_nodes() == 0:
        if anchors:
            logger.info("supply-chain network is empty: anchors %s not looked up", list(anchors))
        anchors = []
    elif not anchors:
        anchors = centrality.sort_values(["degree_centrality", "node_id"], ascending=[False, True])["node_id"].head(3).tolist()
    distances = anchor_distances(graph, list(anchors))
    out_dir.mkdir(parents=True, exist_ok=True)
    graphml_path, plot_path = out_dir / "supply_chain.graphml", out_dir / "supply_chain.png"
    write_graphml(graph, graphml_path)
    # drawing (spring layout, CJK font) is the slow part; the same edges give the same picture
    key = hashlib.sha256(graphml_path.read_bytes() + str(max_plot_nodes).encode()).hexdigest()
    key_path = out_dir / "supply_chain.png.key"
    if not (plot_path.is_file() and key_path.is_file() and key_path.read_text() == key):
        plot_network(graph, plot_path, max_nodes=max_plot_nodes)
        atomic_write_bytes(key_path, key.encode())
    return NetworkResult(centrality, distances, graphml_path, plot_path, graph.number_of_nodes(), graph.number_of_edges())
