"""Fellegi-Sunter linkage of the table sources named in ``sources.yaml``: frames in, frames out."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from linkage_pipeline.config import (
    SOURCES_FILE,
    Rejection,
    TableLinkage,
    TableRegistry,
)
from linkage_pipeline.probabilistic import (
    FellegiSunter,
    FieldSpec,
    clusters_from_links,
)
from linkage_pipeline.probabilistic.comparisons import DEFAULT_MAX_EDITS
from linkage_pipeline.probabilistic.records import read_records
from linkage_pipeline.schema import CLUSTERS, LINKS, PARAMETERS, PATTERNS, SUMMARY
from linkage_pipeline.store import Store

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- linkage
@dataclass(frozen=True)
class TableLinkageResult:
    """What one table linkage produced; frames follow :data:`PATTERNS`, :data:`PARAMETERS`, :data:`LINKS`,
    :data:`CLUSTERS`, and ``summary`` is one row of :data:`SUMMARY`."""

    patterns: pd.DataFrame
    parameters: pd.DataFrame
    links: pd.DataFrame
    clusters: pd.DataFrame
    summary: dict[str, Any]


def _level_labels(spec: FieldSpec, default_thresholds: Sequence[float]) -> list[str]:
    if spec.comparison == "exact":
        return ["missing", "different", "equal"]
    if spec.comparison == "levenshtein":
        edits = spec.thresholds or DEFAULT_MAX_EDITS
        return ["missing", f"more than {edits[0]} edits", *(f"at most {int(d)} edits" for d in edits), "equal"]
    thr = spec.thresholds or default_thresholds
    return ["missing", f"jw < {thr[0]:g}", *(f"jw >= {t:g}" for t in thr)]


def link_table_records(
    linkage: TableLinkage,
    left: pd.DataFrame,
    right: pd.DataFrame | None = None,
    *,
    device: str = "cpu",
    workers: int = -1,
) -> TableLinkageResult:
    """Fits Fellegi-Sunter on all pairs of one table linkage and derives patterns, links and clusters.

    Args:
        linkage: the linkage (``right`` None: de-duplicate ``left``).
        left: the left table's records (``record_id`` and the left columns of ``linkage.fields``), n_l rows.
        right: the right table's records, n_r rows; ``None`` in dedup mode.
        device: ``cpu``, ``cuda``/``cuda:N`` (Jaro-Winkler on the GPU) or ``auto``.
        workers: CPU threads for rapidfuzz (-1: all cores).

    Returns:
        The result. ``clusters`` has one row per record (both tables when linking: connected components of the
        links across them), singletons included, ``cluster_id`` numbered 0, 1, ... in record order.

    Raises:
        ValueError: when the linkage and the tables do not fit together or there are no pairs to compare.
    """
    if (right is None) != (linkage.right is None):
        raise ValueError(f"linkage {linkage.name!r} is a {linkage.kind}; expected "
                         f"{'no right table' if linkage.right is None else 'a right table'}")
    t0 = time.perf_counter()
    model = FellegiSunter(list(linkage.fields), threshold=linkage.threshold, id_column="record_id", device=device,
                          workers=workers, blocking=None if linkage.blocking is None else [list(r) for r in linkage.blocking])
    model.fit(left, right)
    links = model.predict(one_to_one=linkage.one_to_one)
    left_rows, right_rows = links.attrs["left_row"], links.attrs["right_row"]

    names = [f.name for f in linkage.fields]
    labels = [_level_labels(f, model.thresholds) for f in linkage.fields]
    table = model.pattern_table()
    patterns = pd.DataFrame({
        "linkage": linkage.name,
        "pattern": table["pattern"].to_numpy(np.int64),
        "levels": ["; ".join(f"{n}={int(lv)}" for n, lv in zip(names, row)) for row in table[names].to_numpy()],
        "labels": ["; ".join(f"{n}: {lab[int(lv)]}" for n, lab, lv in zip(names, labels, row))
                   for row in table[names].to_numpy()],
        "pairs": table["count"].to_numpy(np.int64),
        "match_probability": table["match_probability"].to_numpy(np.float64),
        "match_weight": table["match_weight"].to_numpy(np.float64),
    })
    parameters = model.match_weights().assign(linkage=linkage.name, **{"lambda": float(model.lambda_)})

    n_l = len(left)
    right_frame = left if right is None else right
    out_links = pd.DataFrame({
        "linkage": linkage.name, "left_source": linkage.left, "left_id": links["left_id"].astype(str).to_numpy(),
        "right_source": linkage.right_source, "right_id": links["right_id"].astype(str).to_numpy(),
        "match_probability": links["match_probability"].to_numpy(np.float64),
        "match_weight": links["match_weight"].to_numpy(np.float64), "pattern": links["pattern"].to_numpy(np.int64),
    })
    if right is None:
        comp = clusters_from_links(n_l, left_rows, right_rows, ids=left["record_id"].to_numpy())
        sources = np.full(n_l, linkage.left, dtype=object)
    else:
        # records of both tables are the nodes; right rows follow the left ones
        ids = np.concatenate([left["record_id"].to_numpy(), right_frame["record_id"].to_numpy()])
        comp = clusters_from_links(n_l + len(right_frame), left_rows, np.asarray(right_rows) + n_l, ids=ids)
        sources = np.array([linkage.left] * n_l + [linkage.right] * len(right_frame), dtype=object)
    clusters = pd.DataFrame({
        "linkage": linkage.name, "source": sources, "record_id": comp["id"].astype(str).to_numpy(),
        "cluster_id": comp["cluster_id"].to_numpy(np.int64), "cluster_size": comp["cluster_size"].to_numpy(np.int64),
    })
    summary = {
        "linkage": linkage.name, "kind": linkage.kind, "left_source": linkage.left,
        "right_source": linkage.right_source, "left_records": n_l, "right_records": len(right_frame),
        "pairs": int(model.pattern_counts_.sum()), "lambda": float(model.lambda_), "converged": bool(model.converged_),
        "em_iterations": int(model.n_iter_), "links": len(out_links), "clusters": int(clusters["cluster_id"].nunique()),
        "seconds": time.perf_counter() - t0,
    }
    logger.info("table linkage %s: %d pairs, lambda %.3g, %d links, %d clusters", linkage.name, summary["pairs"],
                summary["lambda"], summary["links"], summary["clusters"])
    return TableLinkageResult(patterns=patterns, parameters=parameters[list(PARAMETERS)], links=out_links,
                              clusters=clusters, summary=summary)


@dataclass(frozen=True)
class TableLinkageOutputs:
    """Every table linkage's outputs concatenated (columns of the contracts), plus linkages that failed."""

    patterns: pd.DataFrame
    parameters: pd.DataFrame
    links: pd.DataFrame
    clusters: pd.DataFrame
    summary: pd.DataFrame
    rejected: tuple[Rejection, ...]


def _concat(frames: list[pd.DataFrame], schema: Mapping[str, str]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in schema})
    return pd.concat(frames, ignore_index=True)[list(schema)]


def run_table_linkages(
    store: Store, registry: TableRegistry, *, device: str = "cpu", workers: int = -1
) -> TableLinkageOutputs:
    """Runs every linkage of ``registry`` on the ``table_records`` partitions in ``store``.

    A linkage that cannot run (its records not materialized, fewer than two records, ...) is recorded as a
    rejection (stage ``table_linkages``, source = the linkage name) and the others still run. Outputs are in
    the order of the linkages in ``sources.yaml``.
    """
    results: list[TableLinkageResult] = []
    rejected: list[Rejection] = []
    for linkage in registry.linkages:
        try:
            left_src = registry.get(linkage.left)
            left = read_records(store, left_src, [f.name for f in linkage.fields] + [c for r in linkage.blocking or () for c in r])
            right = None
            if linkage.right is not None:
                right_src = registry.get(linkage.right)
                right = read_records(store, right_src, [f.right for f in linkage.fields] + [c for r in linkage.blocking or () for c in r])
            results.append(link_table_records(linkage, left, right, device=device, workers=workers))
        except (ValueError, KeyError) as exc:
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            rejection = Rejection(source=linkage.name, file=SOURCES_FILE, stage="table_linkages", reason=str(reason))
            logger.warning("%s", rejection)
            rejected.append(rejection)
    return TableLinkageOutputs(
        patterns=_concat([r.patterns for r in results], PATTERNS),
        parameters=_concat([r.parameters for r in results], PARAMETERS),
        links=_concat([r.links for r in results], LINKS),
        clusters=_concat([r.clusters for r in results], CLUSTERS),
        summary=pd.DataFrame([r.summary for r in results], columns=list(SUMMARY)),
        rejected=tuple(rejected),
    )
