"""Fellegi-Sunter linkage of the table sources named in ``sources.yaml``: frames in, frames out."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from linkage_pipeline import schema
from linkage_pipeline.config import (
    SOURCES_FILE,
    Rejection,
    TableLinkage,
    TableRegistry,
)
from linkage_pipeline.documents.crops import content_id
from linkage_pipeline.probabilistic import FellegiSunter, FieldSpec, clusters_from_links
from linkage_pipeline.probabilistic.comparisons import DEFAULT_MAX_EDITS
from linkage_pipeline.probabilistic.records import select_records

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- linkage
@dataclass(frozen=True)
class TableLinkageResult:
    """What one table linkage produced; frames follow ``schema.TABLE_COMPARISON_PATTERNS``,
    ``TABLE_MODEL_PARAMETERS``, ``TABLE_LINKS``, ``TABLE_CLUSTERS``, and ``summary`` is one row of
    ``TABLE_LINKAGE_SUMMARY``."""

    patterns: pd.DataFrame
    parameters: pd.DataFrame
    links: pd.DataFrame
    clusters: pd.DataFrame
    summary: dict[str, Any]
    diagnostics: dict[str, Any]


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
        "seconds": time.perf_counter() - t0, "estimate": model.diagnostics_["estimate"],
        "expected_matches": float(model.diagnostics_["expected_matches"]),
        "feasible_matches": int(model.diagnostics_["feasible_matches"]),
        "dependent_fields": "; ".join(model.diagnostics_["dependent_groups"]),
        "resolved_links": int(links.attrs["resolved"]),
    }
    logger.info("table linkage %s: %d pairs, lambda %.3g, %d links, %d clusters", linkage.name, summary["pairs"],
                summary["lambda"], summary["links"], summary["clusters"])
    return TableLinkageResult(patterns=patterns, parameters=parameters[list(schema.TABLE_MODEL_PARAMETERS)],
                              links=out_links, clusters=clusters, summary=summary,
                              diagnostics=model.diagnostics_)


@dataclass(frozen=True)
class TableLinkageOutputs:
    """Every table linkage's outputs concatenated (columns of the contracts), plus linkages that failed."""

    patterns: pd.DataFrame
    parameters: pd.DataFrame
    links: pd.DataFrame
    clusters: pd.DataFrame
    summary: pd.DataFrame
    rejected: tuple[Rejection, ...]
    diagnostics: dict[str, dict[str, Any]]


def _concat(frames: list[pd.DataFrame], schema: Mapping[str, str]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in schema})
    return pd.concat(frames, ignore_index=True)[list(schema)]


def linked_sources(registry: TableRegistry) -> list[str]:
    """Names of the table sources some linkage of ``registry`` reads, in registry order (what to read records of)."""
    used = {name for linkage in registry.linkages for name in (linkage.left, linkage.right_source)}
    return [name for name in registry.names if name in used]


def run_table_linkages(
    records: Mapping[str, pd.DataFrame], registry: TableRegistry, *, device: str = "cpu", workers: int = -1
) -> TableLinkageOutputs:
    """Runs every linkage of ``registry`` on the records of its table sources.

    A linkage that cannot run (its records never read, fewer than two records, ...) is recorded as a rejection
    (stage ``table_linkages``, source = the linkage name) and the others still run. Outputs are in the order of
    the linkages in ``sources.yaml``.

    Args:
        records: table source name -> its ``table_records`` rows (see
            :func:`~linkage_pipeline.probabilistic.records.select_records`); sources never read are left out.
        registry: the table sources and linkages.
        device: ``cpu``, ``cuda``/``cuda:N`` or ``auto`` (see :func:`link_table_records`).
        workers: CPU threads for rapidfuzz (-1: all cores).

    Returns:
        The outputs: frames with the columns of ``schema.TABLE_COMPARISON_PATTERNS``, ``TABLE_MODEL_PARAMETERS``,
        ``TABLE_LINKS``, ``TABLE_CLUSTERS`` and ``TABLE_LINKAGE_SUMMARY`` (one row per linkage that ran), and the
        rejections.
    """
    results: list[TableLinkageResult] = []
    rejected: list[Rejection] = []
    for linkage in registry.linkages:
        blocking = [c for r in linkage.blocking or () for c in r]
        try:
            left_columns = [f.name for f in linkage.fields] + blocking
            left = select_records(records, registry.get(linkage.left), left_columns)
            right = None
            if linkage.right is not None:
                right_columns = [f.right for f in linkage.fields] + blocking
                right = select_records(records, registry.get(linkage.right), right_columns)
            results.append(link_table_records(linkage, left, right, device=device, workers=workers))
        except (ValueError, KeyError) as exc:
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            rejection = Rejection(source=linkage.name, file=SOURCES_FILE, stage="table_linkages", reason=str(reason))
            logger.warning("%s", rejection)
            rejected.append(rejection)
    return TableLinkageOutputs(
        patterns=_concat([r.patterns for r in results], schema.TABLE_COMPARISON_PATTERNS),
        parameters=_concat([r.parameters for r in results], schema.TABLE_MODEL_PARAMETERS),
        links=_concat([r.links for r in results], schema.TABLE_LINKS),
        clusters=_concat([r.clusters for r in results], schema.TABLE_CLUSTERS),
        summary=pd.DataFrame([r.summary for r in results], columns=list(schema.TABLE_LINKAGE_SUMMARY)),
        rejected=tuple(rejected),
        diagnostics={r.summary["linkage"]: r.diagnostics for r in results},
    )


# ---------------------------------------------------------------------------------------------- relinking
@dataclass(frozen=True)
class RelinkDecision:
    """Whether to relink the table sources now (what ``table_linkage_sensor`` answers).

    Attributes:
        run_key: the run's key when a run is due (the records' storage id and the linkages' fingerprint, so the
            same state never runs twice), else ``None``.
        reason: why the run is due (``"; "``-joined) or why not.
        cursor: the cursor to store (the linkages' fingerprint), or ``None`` to keep the current one (so what
            changed is still seen at the next evaluation).
    """

    run_key: str | None
    reason: str
    cursor: str | None


def linkages_fingerprint(linkages: Sequence[TableLinkage]) -> str:
    """A content hash of the table linkages as written to ``table_linkages``: it changes when an entry changes."""
    return content_id(json.dumps([link.to_record() for link in linkages], sort_keys=True, default=str).encode())


def relink_decision(
    linkages: Sequence[TableLinkage],
    cursor: str | None,
    *,
    records_id: int | None,
    links_id: int | None,
    runs_in_progress: int,
) -> RelinkDecision:
    """Decides whether the table linkages must run again.

    They must when some ``table_records`` partition was materialized after the last ``table_links`` (or there
    are no links yet), or the linkages' fingerprint differs from ``cursor``; not while table runs are in progress.

    Args:
        linkages: the table linkages of ``sources.yaml``.
        cursor: the fingerprint stored at the last decision (``None`` at the first).
        records_id: storage id of the latest ``table_records`` materialization, ``None`` when never read.
        links_id: storage id of the latest ``table_links`` materialization, ``None`` when never linked.
        runs_in_progress: table runs queued or running now.
    """
    fingerprint = linkages_fingerprint(linkages)
    if not linkages:
        return RelinkDecision(None, "no table_linkages in sources.yaml", fingerprint)
    if runs_in_progress:
        return RelinkDecision(None, f"{runs_in_progress} table run(s) in progress; linking when they are done", None)
    reasons = []
    if records_id is not None and (links_id is None or records_id > links_id):
        reasons.append("table records changed")
    if cursor is not None and cursor != fingerprint:
        reasons.append("table_linkages changed")
    if not reasons:
        why = "no table records read yet" if records_id is None else "table links are up to date"
        return RelinkDecision(None, why, fingerprint)
    return RelinkDecision(f"{records_id or 0}-{fingerprint}", "; ".join(reasons), fingerprint)
