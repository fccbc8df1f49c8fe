"""Fellegi-Sunter record linkage as in Fast-ER, done on all pairs: Jaro-Winkler levels on unique values, EM on
agreement-pattern counts, links, one-to-one resolution and dedup clusters.

Modules: :mod:`.comparisons` (field specs, levels between unique values, CPU), :mod:`.gpu` (Triton kernel, used
when the injected device is CUDA), :mod:`.patterns` (pattern codes, chunked all-pairs counts), :mod:`.em` (EM),
:mod:`.model` (the :class:`FellegiSunter` estimator and the :func:`link`/:func:`dedup` functions).
"""

from __future__ import annotations

from linkage_pipeline.probabilistic.comparisons import DEFAULT_THRESHOLDS, FieldSpec
from linkage_pipeline.probabilistic.em import EMResult
from linkage_pipeline.probabilistic.model import (
    CLUSTER_COLUMNS,
    DEFAULT_MATCH_THRESHOLD,
    LINK_COLUMNS,
    FellegiSunter,
    clusters_from_links,
    dedup,
    link,
    resolve_one_to_one,
)

__all__ = [
    "CLUSTER_COLUMNS",
    "DEFAULT_MATCH_THRESHOLD",
    "DEFAULT_THRESHOLDS",
    "LINK_COLUMNS",
    "EMResult",
    "FellegiSunter",
    "FieldSpec",
    "clusters_from_links",
    "dedup",
    "link",
    "resolve_one_to_one",
]
