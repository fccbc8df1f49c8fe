"""The Fellegi-Sunter model: fit on all pairs (or blocked candidates), predict links, resolve, cluster.

Typical use::

    from linkage_pipeline.probabilistic import FellegiSunter, FieldSpec, link, dedup

    fields = [FieldSpec("given_name"), FieldSpec("surname"), FieldSpec("postcode", "exact")]
    links = link(left_df, right_df, fields, threshold=0.5)            # all pairs, no blocking
    model = FellegiSunter(fields).fit(left_df, right_df)
    model.match_weights()                                               # m, u and log2(m/u) per field and level
    links = model.predict(one_to_one=True)
    clusters = dedup(df, fields)                                        # one row per record, singletons included

``threshold`` (default :data:`DEFAULT_MATCH_THRESHOLD` = 0.5) is a *posterior match probability*: a pair is
linked when the model says it is more likely a match than not, the Bayes decision for equal costs of false links
and missed links. It is not tuned per data set; raise it for precision, lower it for recall.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from linkage_pipeline.device import check_device_spec
from linkage_pipeline.probabilistic.comparisons import (
    DEFAULT_MAX_EDITS,
    DEFAULT_THRESHOLDS,
    MISSING_LEVEL,
    FieldSpec,
    LevelPairs,
    check_thresholds,
    exact_level_pairs,
    jaro_winkler_level_pairs,
    jaro_winkler_pair_similarity,
    level_of_similarity,
    levenshtein_level_pairs,
    levenshtein_levels_of_pairs,
    n_levels_of,
    prepare_values,
)
from linkage_pipeline.probabilistic.em import (
    EMResult,
    expectation_maximisation,
    field_dependence,
    group_levels,
    groups_from_dependence,
    initial_parameters,
    log_likelihood_terms,
    posterior,
    posterior_from_terms,
)
from linkage_pipeline.probabilistic.patterns import (
    AllPairsSpace,
    FieldLevels,
    decode_patterns,
    pattern_radix,
)

logger = logging.getLogger(__name__)

#: Default posterior match probability above which (inclusive) a pair is linked.
DEFAULT_MATCH_THRESHOLD = 0.5

#: Columns of :meth:`FellegiSunter.predict`.
LINK_COLUMNS = ("left_id", "right_id", "match_probability", "match_weight", "pattern")
#: Columns of :func:`clusters_from_links` and :func:`dedup`.
CLUSTER_COLUMNS = ("id", "cluster_id", "cluster_size")

# Warn when blocking rules produce more candidate pairs than this.
_MANY_CANDIDATES = 200_000_000


def _check_probability(value: float, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a probability in (0, 1), got {value!r}") from exc
    if not 0.0 < v < 1.0:
        raise ValueError(f"{name} must be a probability in (0, 1), got {value!r}")
    return v


def _check_device(device: str) -> str:
    # Validated by the one device vocabulary, but not resolved by it: "auto" here also needs Triton, and CUDA
    # asked for without it falls back to rapidfuzz on the CPU with a warning when the pairs are compared.
    device = check_device_spec(device)
    if device == "auto":
        from linkage_pipeline.probabilistic.gpu import cuda_available

        return "cuda" if cuda_available() else "cpu"
    return device


def _as_specs(fields: Sequence[FieldSpec | str]) -> list[FieldSpec]:
    if isinstance(fields, (str, FieldSpec)) or not isinstance(fields, Sequence):
        raise ValueError(f"fields must be a sequence of FieldSpec or column names, got {fields!r}")
    if not fields:
        raise ValueError("fields must name at least one column to compare, got an empty sequence")
    specs = []
    for f in fields:
        if isinstance(f, str):
            specs.append(FieldSpec(f))
        elif isinstance(f, FieldSpec):
            specs.append(f)
        else:
            raise ValueError(f"each field must be a FieldSpec or a column name, got {type(f).__name__}: {f!r}")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"field names must be distinct, got {names}")
    return specs


class FellegiSunter:
    """Fellegi-Sunter record linkage with Jaro-Winkler levels, EM on pattern counts, and all-pairs comparison.

    Args:
        fields: Fields to compare: :class:`FieldSpec` objects, or column names (Jaro-Winkler fields).
        thresholds: Default Jaro-Winkler thresholds (Fast-ER's 0.88 and 0.94): strictly increasing in (0, 1].
        threshold: Default posterior match probability for :meth:`predict` and :meth:`clusters`.
        u_estimate: ``"em"``: EM estimates u too, starting from the level frequencies over all pairs;
            ``"all_pairs"``: u stays fixed at those frequencies (all compared pairs are taken as non-matches).
        dependent_fields: ``"auto"`` (default) tests every pair of fields for dependence among non-matches (on
            all pairs, or on the random sample with blocking; see
            :func:`~linkage_pipeline.probabilistic.em.field_dependence`: street, number, suburb and postcode of
            people sharing an address; postcode and state) and compares each dependent group jointly, as one
            composite field with a level per combination; a sequence of groups of field names fixes the groups;
            ``None`` assumes independence (Fast-ER, fastLink).
        blocking: Optional blocking rules, each a sequence of column names that must be equal (and non-missing)
            on both sides; a pair is compared if any rule holds. ``None`` (default) compares all pairs. With
            blocking, u comes from a random sample of a million pairs, m from one EM session per rule on that
            rule's candidates (u fixed, the groups holding the rule's fields left out, m averaged over sessions),
            and lambda is the expected matches of all candidates (EM on them) over all pairs, as Splink does;
            pairs outside every block are never linked.
        id_column: Column holding record ids (the same name on both sides); ``None`` uses the DataFrame index.
        device: ``"cpu"`` (rapidfuzz), ``"cuda"``/``"cuda:N"`` (Triton kernel for Jaro-Winkler) or ``"auto"``.
        expected_match_share: Starting lambda for EM; ``None`` takes half the feasible matches (``min(n_a, n_b) /
            2`` among all pairs; ``n / 2`` for dedup).
        max_match_share: Upper bound on lambda; ``None`` takes the feasible maximum of matches over all pairs (see
            :func:`feasible_matches`: ``min(n_a, n_b)`` when linking, ``2 * n`` for dedup). A "match" class larger
            than that is a cluster of similar non-matches, not matches. When EM ends at the bound, or more pairs
            reach the threshold than can match, the fit warns and falls back to a robust estimate (u fixed at the
            all-pairs level frequencies, m from one EM session per informative field, lambda alone by EM within
            the bound, as Splink trains); ``diagnostics_`` records why.
        max_iter: Most EM iterations.
        tol: EM convergence tolerance on the largest parameter change per iteration.
        workers: Threads of rapidfuzz and of pattern counting (``-1``: all cores).
        block_pairs: Pairs listed per block of left rows in the all-pairs pass, about (bounds its memory, about 16
            bytes per pair).

    Attributes (after :meth:`fit`):
        lambda_: Prior match probability among compared pairs.
        groups_: Field names per compared group (singletons, or composites of dependent fields).
        m: Group name (field name, or names joined by ``+``) -> array (n_levels,) float64 of P(level | match);
            index 0 (missing) is NaN. A composite's level is the mixed-radix combination of its fields' levels
            (first field fastest).
        u: Same for P(level | non-match).
        pattern_counts_: Pairs per pattern code, shape (n_patterns,) int64.
        dependence_: One :class:`~linkage_pipeline.probabilistic.em.FieldDependence` per pair of fields.
        diagnostics_: What the fit used and found, as plain JSON-able values: ``estimate`` (``"em"``, or
            ``"robust"`` after a fall-back), ``fallback_reason``, ``lambda``, ``pairs``, ``compared_pairs``,
            ``expected_matches`` (lambda times all pairs) against ``feasible_matches``, ``links_at_threshold``,
            ``dependent_groups``, ``dependence`` (per field pair: lift, its lower bound among non-matches, bits,
            dependent), ``em_iterations``, ``em_converged`` and ``em_trace`` (lambda and log-likelihood per
            iteration). :meth:`summary` prints it.
        em_: The full :class:`~linkage_pipeline.probabilistic.em.EMResult`.
        timings_: Seconds spent per stage.
    """

    def __init__(
        self,
        fields: Sequence[FieldSpec | str],
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        *,
        threshold: float = DEFAULT_MATCH_THRESHOLD,
        u_estimate: Literal["em", "all_pairs"] = "em",
        dependent_fields: Literal["auto"] | Sequence[Sequence[str]] | None = "auto",
        blocking: Sequence[Sequence[str]] | None = None,
        id_column: str | None = None,
        device: str = "cpu",
        expected_match_share: float | None = None,
        max_match_share: float | None = None,
        max_iter: int = 1000,
        tol: float = 1e-7,
        workers: int = -1,
        block_pairs: int = 1 << 21,
    ) -> None:
        self.fields = _as_specs(fields)
        self.thresholds = check_thresholds(thresholds)
        self.threshold = _check_probability(threshold, "threshold")
        if u_estimate not in ("em", "all_pairs"):
            raise ValueError(f"u_estimate must be 'em' or 'all_pairs', got {u_estimate!r}")
        self.u_estimate = u_estimate
        self.dependent_fields = self._check_groups(dependent_fields)
        self.max_match_share = (
            None if max_match_share is None else _check_probability(max_match_share, "max_match_share")
        )
        if blocking is not None:
            if isinstance(blocking, str) or not all(
                not isinstance(r, str) and len(r) > 0 and all(isinstance(c, str) for c in r) for r in blocking
            ) or not blocking:
                raise ValueError(
                    f"blocking must be None or a non-empty sequence of rules, each a non-empty sequence of column "
                    f"names, e.g. [['surname'], ['postcode', 'given_name']]; got {blocking!r}"
                )
            blocking = [tuple(r) for r in blocking]
        self.blocking = blocking
        self.id_column = id_column
        self.device = _check_device(device)
        self.expected_match_share = (
            None if expected_match_share is None else _check_probability(expected_match_share, "expected_match_share")
        )
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers == 0 or workers < -1:
            raise ValueError(f"workers must be a positive int or -1 (all cores), got {workers!r}")
        self.workers = int(workers)
        self.block_pairs = int(block_pairs)
        self.n_levels = [n_levels_of(s, self.thresholds) for s in self.fields]
        self.radix = pattern_radix(self.n_levels)
        self.n_patterns = int(np.prod(self.n_levels, dtype=np.int64))
        self.timings_: dict[str, float] = {}
        self._fitted = False

    def _check_groups(self, groups: object) -> Literal["auto"] | list[list[int]] | None:
        if groups is None or groups == "auto":
            return groups  # type: ignore[return-value]
        names = [s.name for s in self.fields]
        if isinstance(groups, str) or not isinstance(groups, Sequence):
            raise ValueError(
                f"dependent_fields must be 'auto', None or a sequence of groups of field names, got {groups!r}"
            )
        seen: set[str] = set()
        out = []
        for group in groups:
            if isinstance(group, str) or not isinstance(group, Sequence) or len(group) == 0:
                raise ValueError(
                    f"each dependent_fields group must be a non-empty sequence of field names, got {group!r}"
                )
            for name in group:
                if name not in names:
                    raise ValueError(f"dependent_fields names {name!r}, which is not a field; fields are {names}")
                if name in seen:
                    raise ValueError(f"dependent_fields puts {name!r} in more than one group")
                seen.add(name)
            out.append(sorted(names.index(n) for n in group))
        out.extend([f] for f in range(len(names)) if names[f] not in seen)
        return sorted(out, key=lambda g: g[0])

    # ------------------------------------------------------------------ preparation
    def _field_thresholds(self, spec: FieldSpec) -> tuple[float, ...]:
        return spec.thresholds or self.thresholds

    def _check_table(self, df: pd.DataFrame, side: str) -> None:
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"{side} must be a pandas DataFrame, got {type(df).__name__}")
        wanted = [s.name if side == "left" else s.right for s in self.fields]
        if self.id_column is not None:
            wanted.append(self.id_column)
        for rule in self.blocking or []:
            wanted.extend(rule)
        missing = [c for c in dict.fromkeys(wanted) if c not in df.columns]
        if missing:
            raise ValueError(f"{side} table lacks columns {missing}; it has {list(df.columns)}")

    def _ids(self, df: pd.DataFrame) -> np.ndarray:
        return (df[self.id_column] if self.id_column is not None else df.index).to_numpy()

    def _prepare(self, a: pd.DataFrame, b: pd.DataFrame | None) -> dict:
        self._check_table(a, "left")
        if b is not None:
            self._check_table(b, "right")
        dedup = b is None
        prepared = []
        for spec in self.fields:
            codes_a, uniq_a = prepare_values(a[spec.name], f"left column {spec.name!r}")
            if dedup:
                codes_b, uniq_b = codes_a, uniq_a
            else:
                codes_b, uniq_b = prepare_values(b[spec.right], f"right column {spec.right!r}")
            prepared.append((spec, codes_a, uniq_a, codes_b, uniq_b))
        return {
            "dedup": dedup, "n_a": len(a), "n_b": len(a) if dedup else len(b), "fields": prepared,
            "ids_a": self._ids(a), "ids_b": self._ids(a if dedup else b), "a": a, "b": b,
        }

    def _level_pairs(self, spec: FieldSpec, uniq_a: list[str], uniq_b: list[str], symmetric: bool) -> LevelPairs:
        if spec.comparison == "exact":
            return exact_level_pairs(uniq_a, uniq_b)
        if spec.comparison == "levenshtein":
            return levenshtein_level_pairs(uniq_a, uniq_b, spec.thresholds or DEFAULT_MAX_EDITS, symmetric=symmetric,
                                           workers=self.workers)
        thr = self._field_thresholds(spec)
        if self.device != "cpu":
            from linkage_pipeline.probabilistic.gpu import (
                cuda_available,
                jaro_winkler_level_pairs_cuda,
            )

            if cuda_available():
                return jaro_winkler_level_pairs_cuda(
                    uniq_a, uniq_b, thr, symmetric=symmetric, device=self.device, workers=self.workers
                )
            logger.warning(
                "device %r requested but CUDA/Triton is unavailable: Jaro-Winkler runs on the CPU", self.device
            )
        return jaro_winkler_level_pairs(uniq_a, uniq_b, thr, symmetric=symmetric, workers=self.workers)

    def _build_space(self, data: dict) -> None:
        t0 = time.perf_counter()
        if self.blocking is None:
            levels = []
            for spec, codes_a, uniq_a, codes_b, uniq_b in data["fields"]:
                t = time.perf_counter()
                pairs = self._level_pairs(spec, uniq_a, uniq_b, symmetric=data["dedup"])
                logger.info(
                    "field %r: %d x %d unique values, %d agreeing value pairs (%.2f s)",
                    spec.name, len(uniq_a), len(uniq_b), len(pairs), time.perf_counter() - t,
                )
                levels.append(FieldLevels(spec.name, n_levels_of(spec, self.thresholds), codes_a, codes_b,
                                          len(uniq_a), len(uniq_b), pairs))
            data["space"] = AllPairsSpace(levels, data["n_a"], data["n_b"], dedup=data["dedup"],
                                          block_pairs=self.block_pairs, threads=self.workers)
            data["total_pairs"] = data["space"].total_pairs
        else:
            i, j = self._candidates(data)
            data["cand_i"], data["cand_j"] = i, j
            data["cand_code"] = self._codes_for_pairs(data, i, j)
            data["total_pairs"] = int(i.shape[0])
        self.timings_["compare"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ blocking
    def _random_pair_patterns(self, data: dict, n_sample: int = 1_000_000) -> tuple[np.ndarray, np.ndarray]:
        """Patterns of a uniform random sample of all pairs (Splink's u by random sampling): levels, counts."""
        rng = np.random.default_rng(0)
        n_a, n_b = data["n_a"], data["n_b"]
        i = rng.integers(0, n_a, size=n_sample)
        j = rng.integers(0, n_b, size=n_sample)
        if data["dedup"]:
            keep = i != j
            i, j = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
        codes = self._codes_for_pairs(data, i, j)
        counts = np.bincount(codes, minlength=self.n_patterns)
        observed = np.flatnonzero(counts)
        return decode_patterns(observed, self.n_levels), counts[observed]

    def _m_by_rule_sessions(self, data: dict, groups: list[list[int]], u_all: list[np.ndarray],
                            m_init: list[np.ndarray], share: float) -> list[np.ndarray] | None:
        """m per group, averaged over one EM session per blocking rule (Splink's training): each session runs on
        that rule's candidates with u fixed at its random-pair estimate, leaving out the groups that hold one of
        the rule's fields (all of its candidates agree there, which says nothing about m). A group left out by
        every rule keeps the m of the EM on all candidates; ``None`` when no session ran."""
        sums = [np.zeros(n) for n in self._group_sizes]
        seen = [0] * len(groups)
        for rule, pos in zip(self.blocking or [], data.get("rule_positions", [])):
            in_rule = {f for f, spec in enumerate(self.fields) if spec.name in rule or spec.right in rule}
            keep = [g for g, group in enumerate(groups) if not in_rule & set(group)]
            if not keep or pos.size == 0:
                continue
            counts = np.bincount(data["cand_code"][pos], minlength=self.n_patterns)
            observed = np.flatnonzero(counts)
            glevels, _ = group_levels(decode_patterns(observed, self.n_levels), self.n_levels, groups)
            session = expectation_maximisation(
                glevels[:, keep], counts[observed], [self._group_sizes[g] for g in keep],
                lambda_init=min(max(share, 0.05), 0.5), m_init=[m_init[g] for g in keep],
                u_init=[np.nan_to_num(u_all[g], nan=0.0) for g in keep], fix_u=True, max_lambda=1.0 - 1e-9,
                max_iter=self.max_iter, tol=self.tol,
            )
            for g, m in zip(keep, session.m):
                sums[g] += np.nan_to_num(m, nan=0.0)
                seen[g] += 1
        if not any(seen):
            return None
        return self._session_mean_m(sums, seen)

    def _session_mean_m(self, sums: list[np.ndarray], seen: list[int]) -> list[np.ndarray]:
        """m per group averaged over the EM sessions that estimated it (``sums`` of their m, ``seen`` sessions);
        a group no session estimated keeps the m of the fit so far."""
        out = []
        for g, total in enumerate(sums):
            if seen[g]:
                m = total / seen[g]
                m[MISSING_LEVEL] = np.nan
                out.append(m)
            else:
                out.append(self.em_.m[g])
        return out

    def _candidates(self, data: dict) -> tuple[np.ndarray, np.ndarray]:
        a, b = data["a"], data["b"]
        dedup = data["dedup"]
        n_a, n_b = data["n_a"], data["n_b"]
        keys: list[np.ndarray] = []
        for rule in self.blocking or []:
            # shared codes across both sides: factorise left and right values together
            ka = np.zeros(n_a, dtype=np.int64)
            kb = np.zeros(n_b, dtype=np.int64)
            valid_a = np.ones(n_a, dtype=bool)
            valid_b = np.ones(n_b, dtype=bool)
            for col in rule:
                va = a[col]
                vb = a[col] if dedup else b[col]
                codes, uniq = prepare_values(pd.concat([va, vb], ignore_index=True), f"blocking column {col!r}")
                ca, cb = codes[:n_a].astype(np.int64), codes[n_a:].astype(np.int64)
                valid_a &= ca >= 0
                valid_b &= cb >= 0
                ka = ka * (len(uniq) + 1) + ca + 1
                kb = kb * (len(uniq) + 1) + cb + 1
                both, inv = np.unique(np.concatenate([ka, kb]), return_inverse=True)
                ka, kb = inv[:n_a].astype(np.int64), inv[n_a:].astype(np.int64)
            ia = np.flatnonzero(valid_a)
            ib = np.flatnonzero(valid_b)
            keys.append(_join_on_keys(ia, ka[ia], ib, kb[ib], n_b, dedup))
        key = np.unique(np.concatenate(keys)) if keys else np.empty(0, np.int64)
        # each rule's candidates as positions in the union (one EM session per rule fits m)
        data["rule_positions"] = [np.searchsorted(key, np.unique(k)) for k in keys]
        if key.size > _MANY_CANDIDATES:
            logger.warning("blocking rules produce %d candidate pairs", key.size)
        logger.info("blocking: %d candidate pairs of %d", key.size, n_a * (n_a - 1) // 2 if dedup else n_a * n_b)
        return key // n_b, key % n_b

    def _codes_for_pairs(self, data: dict, i: np.ndarray, j: np.ndarray, within: str | None = None) -> np.ndarray:
        """Pattern codes of the pairs (left row ``i``, right row ``j``); ``within="left"`` (``"right"``) compares
        rows of the left (right) table with each other instead."""
        code = np.zeros(i.shape[0], dtype=np.int64)
        for f, (spec, codes_a, uniq_a, codes_b, uniq_b) in enumerate(data["fields"]):
            if within == "left":
                codes_b, uniq_b = codes_a, uniq_a
            elif within == "right":
                codes_a, uniq_a = codes_b, uniq_b
            x = codes_a[i].astype(np.int64)
            y = codes_b[j].astype(np.int64)
            level = np.full(i.shape[0], MISSING_LEVEL, dtype=np.int64)
            present = (x >= 0) & (y >= 0)
            if spec.comparison == "exact":
                y_of_x = pd.Index(uniq_b, dtype=object).get_indexer(uniq_a) if uniq_a else np.empty(0, np.int64)
                level[present] = 1 + (y_of_x[x[present]] == y[present])
            else:
                # each distinct value pair once (hashing: no sort)
                inv, combo = pd.factorize(x[present] * max(len(uniq_b), 1) + y[present])
                cx, cy = combo // max(len(uniq_b), 1), combo % max(len(uniq_b), 1)
                if spec.comparison == "levenshtein":
                    lv = levenshtein_levels_of_pairs(uniq_a, uniq_b, cx, cy, spec.thresholds or DEFAULT_MAX_EDITS,
                                                     workers=self.workers)
                else:
                    sim = jaro_winkler_pair_similarity([uniq_a[k] for k in cx], [uniq_b[k] for k in cy],
                                                       self.workers)
                    lv = level_of_similarity(sim, self._field_thresholds(spec))
                level[present] = lv[inv]
            code += level * self.radix[f]
        return code

    # ------------------------------------------------------------------ fitting
    def fit(self, a: pd.DataFrame, b: pd.DataFrame | None = None) -> FellegiSunter:
        """Compare the tables, count agreement patterns and fit lambda, m and u by EM.

        Args:
            a: Left table (n_a rows), holding every field's column (and ``id_column``, blocking columns).
            b: Right table (n_b rows); ``None`` de-duplicates ``a`` against itself (pairs ``i < j``).

        Returns:
            ``self``, fitted.

        Raises:
            ValueError: If a table lacks a column, or there are no pairs to compare.
        """
        data = self._prepare(a, b)
        if data["n_a"] == 0 or data["n_b"] == 0 or (data["dedup"] and data["n_a"] < 2):
            raise ValueError(f"nothing to compare: {data['n_a']} left rows, {data['n_b']} right rows")
        self._build_space(data)
        t0 = time.perf_counter()
        counts = (
            data["space"].pattern_counts() if self.blocking is None
            else np.bincount(data["cand_code"], minlength=self.n_patterns).astype(np.int64)
        )
        self.timings_["count"] = time.perf_counter() - t0
        if counts.sum() == 0:
            raise ValueError("no candidate pairs to fit on: the blocking rules matched no pair")
        self.pattern_counts_ = counts
        observed = np.flatnonzero(counts)
        levels = decode_patterns(observed, self.n_levels)
        obs_counts = counts[observed]
        total = float(counts.sum())
        dedup = data["dedup"]
        all_pairs = data["n_a"] * (data["n_a"] - 1) // 2 if dedup else data["n_a"] * data["n_b"]
        feasible = float(feasible_matches(data["n_a"], None if dedup else data["n_b"]))
        expected = data["n_a"] / 2 if dedup else min(data["n_a"], data["n_b"]) / 2
        bound = self.max_match_share or float(np.clip(feasible / all_pairs, 1e-12, 1.0 - 1e-9))
        share = self.expected_match_share or float(np.clip(expected / total, 1e-12, 0.5))
        # with blocking, EM runs on the candidates, where matches are common: lambda is rescaled afterwards
        max_share = bound if self.blocking is None else 1.0 - 1e-9
        share = min(share, max_share)
        t0 = time.perf_counter()
        if self.blocking is not None:
            sample_levels, sample_counts = self._random_pair_patterns(data)
            dep_levels, dep_counts = sample_levels, sample_counts
            in_sample = bound * float(sample_counts.sum())  # matches expected in the sample at the bound
            dep_matches = in_sample + 4.0 * math.sqrt(in_sample) + 1.0
        else:
            dep_levels, dep_counts, dep_matches = levels, obs_counts, bound * total
        self.dependence_ = field_dependence(dep_levels, dep_counts, self.n_levels, dep_matches)
        if self.dependent_fields == "auto":
            groups = groups_from_dependence(self.dependence_, self.n_levels)
        elif self.dependent_fields is None:
            groups = [[f] for f in range(len(self.fields))]
        else:
            groups = self.dependent_fields
        self._groups = groups
        self.groups_ = [tuple(self.fields[f].name for f in g) for g in groups]
        glevels, self._group_sizes = group_levels(levels, self.n_levels, groups)
        lam0, m0, u0 = initial_parameters(glevels, obs_counts, self._group_sizes, share)
        self.em_ = expectation_maximisation(
            glevels, obs_counts, self._group_sizes, lambda_init=lam0, m_init=m0, u_init=u0,
            fix_u=self.u_estimate == "all_pairs" and self.blocking is None, max_lambda=max_share,
            max_iter=self.max_iter, tol=self.tol,
        )
        first_em = self.em_
        if self.blocking is not None:
            # score with the all-pairs model: u from random pairs, lambda = expected matches / all pairs, m from
            # one EM session per blocking rule with u fixed, leaving out the groups that hold the rule's fields
            s_glevels, _ = group_levels(sample_levels, self.n_levels, groups)
            u_all = _smoothed_frequencies(s_glevels, sample_counts, self._group_sizes)
            lam_all = float(np.clip(self.em_.lambda_ * total / all_pairs, 1e-15, bound))
            m_all = self._m_by_rule_sessions(data, groups, u_all, m0, share)
            self.em_ = dataclasses.replace(self.em_, lambda_=lam_all, u=u_all, m=m_all or self.em_.m)
        self._fitted = True
        estimate, reason = "em", self._infeasible(glevels, obs_counts, bound, feasible, all_pairs)
        if reason is not None and self.blocking is None:
            logger.warning(
                "the EM fit is not feasible (%s): falling back to the robust estimate (u fixed at the all-pairs level "
                "frequencies, m from one EM session per informative field, lambda bounded by %d matches)",
                reason, int(feasible))
            self.em_ = self._robust_estimate(glevels, obs_counts, bound, feasible, m0)
            estimate = "robust"
            still = self._infeasible(glevels, obs_counts, bound, feasible, all_pairs)
            if still is not None:
                logger.warning("the robust estimate is not feasible either (%s): links will include many "
                               "non-matches; check dependent_fields and the compared fields", still)
        elif reason is not None:
            logger.warning("the blocked fit is not feasible (%s): links will include many non-matches; check the "
                           "blocking rules and dependent_fields", reason)
        self.timings_["em"] = time.perf_counter() - t0
        self.lambda_ = self.em_.lambda_
        names = ["+".join(g) for g in self.groups_]
        self.m = {name: self.em_.m[k] for k, name in enumerate(names)}
        self.u = {name: self.em_.u[k] for k, name in enumerate(names)}
        self.converged_ = self.em_.converged
        self.n_iter_ = self.em_.n_iter
        self._data = data
        accepted = int(self.pattern_counts_[self.accepted_patterns()].sum())
        self.diagnostics_ = {
            "estimate": estimate,
            "fallback_reason": reason if estimate == "robust" else None,
            "infeasible_reason": reason,
            "lambda": float(self.lambda_),
            "pairs": int(all_pairs),
            "compared_pairs": int(total),
            "expected_matches": float(self.lambda_ * all_pairs),
            "feasible_matches": int(feasible),
            "links_at_threshold": accepted,
            "dependent_groups": ["+".join(g) for g in self.groups_ if len(g) > 1],
            "dependence": [
                {"fields": f"{self.fields[t.fields[0]].name}+{self.fields[t.fields[1]].name}",
                 "lift": _finite(t.lift), "lift_lower": _finite(t.lift_lower), "bits": round(t.bits, 3),
                 "dependent": t.dependent}
                for t in self.dependence_
            ],
            "em_iterations": int(first_em.n_iter),
            "em_converged": bool(first_em.converged),
            "em_trace": [[float(lam), float(ll)] for lam, ll in first_em.trace],
        }
        return self

    def _infeasible(self, glevels: np.ndarray, counts: np.ndarray, bound: float, feasible: float,
                    all_pairs: int) -> str | None:
        """Why the current parameters are impossible (``None`` when they are not): lambda at its bound, or more
        pairs linked at the threshold than there can be matches."""
        if self.em_.lambda_ >= bound * (1 - 1e-6):
            return (f"lambda reached its bound {bound:.3g}: {self.em_.lambda_ * all_pairs:.0f} expected matches, "
                    f"at most {feasible:.0f} possible")
        if self.blocking is None:
            post = posterior(glevels, self.em_.lambda_, self.em_.m, self.em_.u)
            accepted = post >= self.threshold
            accepted &= glevels.max(axis=1) > MISSING_LEVEL
            links = float(counts[accepted].sum())
            if links > feasible:
                return f"{links:.0f} pairs reach the threshold {self.threshold:g}, at most {feasible:.0f} can match"
        return None

    def _robust_estimate(self, glevels: np.ndarray, counts: np.ndarray, bound: float, feasible: float,
                         m_init: list[np.ndarray]) -> EMResult:
        """Splink's estimate, on the exact all-pairs counts: u fixed at the level frequencies over all pairs; m
        from one EM session per informative group (the pairs at that group's top level, where the matches are
        not swamped: at most 100 non-matches per possible match), that group left out and u fixed, averaged over
        sessions; lambda alone by EM with m and u fixed, bounded by the feasible number of matches."""
        sizes = self._group_sizes
        u = _smoothed_frequencies(glevels, counts, sizes)
        total = float(counts.sum())
        sums = [np.zeros(n) for n in sizes]
        seen = [0] * len(sizes)
        for g, n in enumerate(sizes):
            top = n - 1
            at_top = glevels[:, g] == top
            if not at_top.any() or u[g][top] * total > 100.0 * feasible:
                continue
            keep = [h for h in range(len(sizes)) if h != g]
            if not keep:
                continue
            session = expectation_maximisation(
                glevels[at_top][:, keep], counts[at_top], [sizes[h] for h in keep], lambda_init=0.5,
                m_init=[m_init[h] for h in keep], u_init=[np.nan_to_num(u[h], nan=0.0) for h in keep], fix_u=True,
                max_iter=self.max_iter, tol=self.tol,
            )
            for h, m in zip(keep, session.m):
                sums[h] += np.nan_to_num(m, nan=0.0)
                seen[h] += 1
        m = self._session_mean_m(sums, seen)
        lm, lu = log_likelihood_terms(glevels, m, u)
        lam = min(self.em_.lambda_, bound)
        for it in range(1, self.max_iter + 1):
            post = posterior_from_terms(lm, lu, lam)
            new = float(np.clip(np.dot(counts, post) / total, 1e-15, bound))
            done = abs(math.log(new) - math.log(lam)) < self.tol
            lam = new
            if done:
                break
        ll = float(np.dot(counts, np.logaddexp(math.log(lam) + lm, math.log1p(-lam) + lu)))
        return EMResult(lambda_=lam, m=m, u=u, n_iter=it, converged=done, log_likelihood=ll)

    def summary(self) -> str:
        """A plain-text report of the fit: the estimate used, lambda with its implied expected matches against
        the feasible maximum, links at the threshold, dependent fields, the EM trace, and m, u per level."""
        self._require_fitted()
        d = self.diagnostics_
        lines = [
            f"Fellegi-Sunter on {d['compared_pairs']:,} compared pairs ({d['pairs']:,} possible)",
            f"estimate: {d['estimate']}" + (f" (EM fell back: {d['fallback_reason']})" if d["fallback_reason"] else ""),
            f"lambda: {d['lambda']:.4g} -> {d['expected_matches']:,.0f} expected matches; feasible maximum "
            f"{d['feasible_matches']:,}",
            f"links at threshold {self.threshold:g}: {d['links_at_threshold']:,}",
            "dependent fields (compared jointly): " + (", ".join(d["dependent_groups"]) or "none"),
        ]
        strong = sorted((t for t in d["dependence"] if t["bits"] > 0), key=lambda t: -t["bits"])
        for t in strong[:12]:
            lines.append(f"  {t['fields']}: lift {t['lift']:.3g} (lower bound among non-matches "
                         f"{t['lift_lower']:.3g}, {t['bits']:.2f} bits){'' if t['dependent'] else ', kept apart'}")
        trace = d["em_trace"]
        lines.append(f"EM: {d['em_iterations']} iterations, {'converged' if d['em_converged'] else 'NOT converged'}")
        for k in sorted({0, 1, 2, 5, 10, 20, 50, 100, 200, 500, len(trace) - 1}):
            if 0 <= k < len(trace):
                lines.append(f"  iteration {k + 1}: lambda {trace[k][0]:.4g}, log-likelihood {trace[k][1]:.8g}")
        lines.append("m and u per level:")
        lines.append(self.match_weights().to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        return "\n".join(lines)

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise ValueError("the model is not fitted: call fit(a, b) first")

    # ------------------------------------------------------------------ scoring
    def _group_log2_tables(self) -> list[np.ndarray]:
        tables = []
        for k in range(len(self._groups)):
            m, u = self.em_.m[k], self.em_.u[k]
            t = np.zeros(self._group_sizes[k])
            t[1:] = np.log2(m[1:]) - np.log2(u[1:])
            tables.append(t)
        return tables

    def pattern_weights(self) -> np.ndarray:
        """Match weight of every pattern code: shape (n_patterns,) float64.

        ``match_weight = log2(lambda / (1 - lambda)) + sum_f log2(m_f / u_f)`` over non-missing fields, so that
        ``match_probability = 1 / (1 + 2 ** -match_weight)``.
        """
        self._require_fitted()
        k = len(self.fields)
        # axis k-1-f of w is field f, so that the C-order ravel index is the pattern code (field 0 fastest)
        w = np.zeros([self.n_levels[f] for f in reversed(range(k))], dtype=np.float64)
        for group, table in zip(self._groups, self._group_log2_tables()):
            shape = [1] * k
            for f in group:
                shape[k - 1 - f] = self.n_levels[f]
            w += table.reshape(shape)
        prior = math.log2(self.lambda_) - math.log2(1.0 - self.lambda_)
        return w.reshape(-1) + prior

    def pattern_probabilities(self) -> np.ndarray:
        """Posterior match probability of every pattern code: shape (n_patterns,) float64."""
        return 1.0 / (1.0 + np.exp2(-self.pattern_weights()))

    def predict(
        self,
        a: pd.DataFrame | None = None,
        b: pd.DataFrame | None = None,
        *,
        threshold: float | None = None,
        one_to_one: bool | Literal["auto"] = "auto",
    ) -> pd.DataFrame:
        """Pairs whose match probability is at least ``threshold`` (never a pair missing every field on one side or
        the other: see :meth:`accepted_patterns`).

        Args:
            a: Left table to score with the fitted parameters; ``None`` scores the tables given to :meth:`fit`.
            b: Right table; ``None`` with ``a`` given de-duplicates ``a``.
            threshold: Posterior match probability in (0, 1); ``None`` takes the model's ``threshold``.
            one_to_one: How many links a record may keep when linking two tables (ignored for dedup):

                - ``"auto"`` (default): one per *entity*. Links are taken by descending probability; a link is
                  dropped when its left record already links a right record that the model does not take for the
                  same entity as this one (the two right records compared with each other by the fitted model,
                  below the threshold), and likewise from the right. A household member sharing the address of
                  the true match loses its link; a duplicate of the true match within the right table keeps it.
                - ``True``: at most one link per left and per right record (greedy by probability).
                - ``False``: every pair above the threshold.

        Returns:
            One row per link, columns ``left_id``, ``right_id`` (ids from ``id_column`` or the index),
            ``match_probability`` (float64), ``match_weight`` (float64, log2 odds), ``pattern`` (int64 code, see
            :meth:`pattern_table`), sorted by left then right row. In dedup mode each pair appears once, with
            ``left`` the earlier row, and never a row with itself. ``attrs["resolved"]`` counts the links dropped by
            ``one_to_one``.

        Raises:
            ValueError: If not fitted, on a bad threshold, a bad ``one_to_one``, or ``one_to_one=True`` in dedup.
        """
        self._require_fitted()
        thr = self.threshold if threshold is None else _check_probability(threshold, "threshold")
        if one_to_one not in (True, False, "auto"):
            raise ValueError(f"one_to_one must be 'auto', True or False, got {one_to_one!r}")
        data = self._data if a is None else self._prepare(a, b)
        if one_to_one is True and data["dedup"]:
            raise ValueError("one_to_one applies to linking two tables, not to dedup (use clusters)")
        if a is not None:
            self._build_space(data)
        t0 = time.perf_counter()
        i, j, code = self._accepted_pairs(data, thr)
        weights = self.pattern_weights()[code]
        prob = 1.0 / (1.0 + np.exp2(-weights))
        order = np.lexsort((j, i))
        i, j, code, weights, prob = i[order], j[order], code[order], weights[order], prob[order]
        n_before = i.shape[0]
        if one_to_one is True:
            keep = resolve_one_to_one(i, j, prob)
        elif one_to_one == "auto" and not data["dedup"]:
            keep = self._resolve_entities(data, i, j, prob, thr)
        else:
            keep = None
        if keep is not None:
            i, j, code, weights, prob = i[keep], j[keep], code[keep], weights[keep], prob[keep]
        self.timings_["predict"] = time.perf_counter() - t0
        out = pd.DataFrame({
            "left_id": data["ids_a"][i], "right_id": data["ids_b"][j],
            "match_probability": prob, "match_weight": weights, "pattern": code,
        })
        out.attrs["left_row"] = i
        out.attrs["right_row"] = j
        out.attrs["resolved"] = int(n_before - i.shape[0])
        return out

    def _resolve_entities(self, data: dict, i: np.ndarray, j: np.ndarray, prob: np.ndarray,
                          thr: float) -> np.ndarray:
        """One link per entity (see :meth:`predict`): boolean mask of the kept links."""
        keep = np.ones(i.shape[0], dtype=bool)
        if i.shape[0] < 2:
            return keep
        same: dict[str, dict[tuple[int, int], bool]] = {}
        accept = self.accepted_patterns(thr)
        for side, rows, partners in (("right", i, j), ("left", j, i)):
            # pairs of records on one side that share a partner on the other: are they one entity?
            order = np.argsort(rows, kind="stable")
            r, p = rows[order], partners[order]
            starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
            sizes = np.diff(np.r_[starts, r.shape[0]])
            xs, ys = [], []
            for st, n in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
                group = np.sort(p[st:st + n])
                x, y = np.triu_indices(n, 1)
                xs.append(group[x])
                ys.append(group[y])
            if not xs:
                same[side] = {}
                continue
            x, y = np.concatenate(xs), np.concatenate(ys)
            is_same = accept[self._codes_for_pairs(data, x, y, within=side)]
            same[side] = dict(zip(zip(x.tolist(), y.tolist()), is_same.tolist()))
        if not same["left"] and not same["right"]:
            return keep
        taken_l: dict[int, list[int]] = {}
        taken_r: dict[int, list[int]] = {}
        # only links sharing a record with another link can conflict
        shared = (np.bincount(i)[i] > 1) | (np.bincount(j)[j] > 1)
        order = np.lexsort((j, i, -prob))
        for k in order[shared[order]].tolist():
            li, rj = int(i[k]), int(j[k])
            ok = all(same["right"].get((min(rj, o), max(rj, o)), False) for o in taken_l.get(li, ())) and all(
                same["left"].get((min(li, o), max(li, o)), False) for o in taken_r.get(rj, ()))
            if ok:
                taken_l.setdefault(li, []).append(rj)
                taken_r.setdefault(rj, []).append(li)
            else:
                keep[k] = False
        return keep

    def accepted_patterns(self, threshold: float | None = None) -> np.ndarray:
        """Which pattern codes are linked at ``threshold``: bool (n_patterns,).

        A pattern is linked when its match probability reaches the threshold and at least one field is compared:
        the pattern of a pair missing every field on one side or the other (code 0) carries no evidence, its
        probability is the prior alone, and two records that say nothing are never the same record, however
        many matches the prior expects (a small table, or a low threshold).
        """
        self._require_fitted()
        thr = self.threshold if threshold is None else _check_probability(threshold, "threshold")
        accept = self.pattern_probabilities() >= thr
        accept[MISSING_LEVEL] = False  # code 0: every field at the missing level
        return accept

    def _accepted_pairs(self, data: dict, thr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        accept = self.accepted_patterns(thr)
        if self.blocking is not None:
            keep = accept[data["cand_code"]]
            return data["cand_i"][keep], data["cand_j"][keep], data["cand_code"][keep]
        parts = list(data["space"].iter_pairs_with_codes(accept))
        if not parts:
            return (np.empty(0, np.int64),) * 3
        return tuple(np.concatenate(p) for p in zip(*parts))  # type: ignore[return-value]

    def clusters(self, threshold: float | None = None) -> pd.DataFrame:
        """Clusters of a fitted dedup model: connected components of the links at ``threshold``.

        Returns:
            See :func:`clusters_from_links`: one row per record of the fitted table, singletons included.
        """
        self._require_fitted()
        if not self._data["dedup"]:
            raise ValueError("clusters need a dedup model: fit(a) with b=None")
        links = self.predict(threshold=threshold)
        return clusters_from_links(self._data["n_a"], links.attrs["left_row"], links.attrs["right_row"],
                                   ids=self._data["ids_a"])

    # ------------------------------------------------------------------ reporting
    def _level_labels(self, f: int) -> list[str]:
        spec = self.fields[f]
        if spec.comparison == "exact":
            return ["missing", "different", "equal"]
        if spec.comparison == "levenshtein":
            edits = spec.thresholds or DEFAULT_MAX_EDITS
            labels = ["missing", f"more than {edits[0]} edits"]
            for k, d in enumerate(edits):
                lo = edits[k + 1] + 1 if k + 1 < len(edits) else 1
                labels.append(f"{d} edit{'s' if d > 1 else ''}" if lo == d else f"{lo}-{d} edits")
            return labels + ["equal"]
        thr = self._field_thresholds(spec)
        labels = ["missing", f"jaro_winkler < {thr[0]:g}"]
        for k, t in enumerate(thr):
            labels.append(f"{t:g} <= jaro_winkler < {thr[k + 1]:g}" if k + 1 < len(thr) else f"jaro_winkler >= {t:g}")
        return labels

    def match_weights(self) -> pd.DataFrame:
        """Fitted parameters per compared group (a field, or a composite of dependent fields) and level.

        Returns:
            Columns ``field`` (group name, fields joined by ``+``), ``level`` (int), ``label`` (for a composite,
            its fields' labels joined by ``; ``), ``m``, ``u``, ``match_weight`` (``log2(m / u)``; 0 for the missing
            level, which has no m or u).
        """
        self._require_fitted()
        rows = []
        for k, (group, table) in enumerate(zip(self._groups, self._group_log2_tables())):
            name = "+".join(self.fields[f].name for f in group)
            for level in range(self._group_sizes[k]):
                if len(group) == 1:
                    label = self._level_labels(group[0])[level]
                else:
                    parts, rest = [], level
                    for f in group:
                        parts.append(f"{self.fields[f].name}: {self._level_labels(f)[rest % self.n_levels[f]]}")
                        rest //= self.n_levels[f]
                    label = "; ".join(parts)
                rows.append({
                    "field": name, "level": level, "label": label,
                    "m": float(self.em_.m[k][level]), "u": float(self.em_.u[k][level]),
                    "match_weight": float(table[level]),
                })
        return pd.DataFrame(rows)

    def pattern_table(self) -> pd.DataFrame:
        """Observed patterns: ``pattern`` code, one level column per field, ``count``, ``match_probability``,
        ``match_weight``; sorted by descending match weight."""
        self._require_fitted()
        observed = np.flatnonzero(self.pattern_counts_)
        levels = decode_patterns(observed, self.n_levels)
        w = self.pattern_weights()[observed]
        df = pd.DataFrame(levels, columns=[s.name for s in self.fields])
        df.insert(0, "pattern", observed)
        df["count"] = self.pattern_counts_[observed]
        df["match_probability"] = 1.0 / (1.0 + np.exp2(-w))
        df["match_weight"] = w
        return df.sort_values("match_weight", ascending=False, kind="stable").reset_index(drop=True)


def feasible_matches(n_left: int, n_right: int | None) -> int:
    """The most matching pairs two tables can hold: ``min(n_left, n_right)`` when linking (each record the same
    entity as at most one record of the other table; duplicates within a table are the exception, not the rule),
    and ``2 * n`` for dedup (an average cluster of five records, were every record duplicated)."""
    return 2 * n_left if n_right is None else min(n_left, n_right)


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _smoothed_frequencies(levels: np.ndarray, counts: np.ndarray, n_levels: Sequence[int]) -> list[np.ndarray]:
    """Level frequencies with half a pair added to every non-missing level (a level absent from a sample of a
    million pairs is rare, not impossible)."""
    out = []
    for f, n in enumerate(n_levels):
        freq = np.bincount(levels[:, f], weights=counts, minlength=n).astype(np.float64) + 0.5
        freq[MISSING_LEVEL] = np.nan
        freq[1:] /= freq[1:].sum()
        out.append(freq)
    return out


def _join_on_keys(ia: np.ndarray, ka: np.ndarray, ib: np.ndarray, kb: np.ndarray, n_b: int, dedup: bool) -> np.ndarray:
    """Pair keys ``i * n_b + j`` of all rows with equal keys: ``ia``/``ka`` left rows and keys, same for right."""
    oa = np.argsort(ka, kind="stable")
    ob = np.argsort(kb, kind="stable")
    ia, ka, ib, kb = ia[oa], ka[oa], ib[ob], kb[ob]
    ua, start_a, cnt_a = np.unique(ka, return_index=True, return_counts=True)
    ub, start_b, cnt_b = np.unique(kb, return_index=True, return_counts=True)
    common, pa, pb = np.intersect1d(ua, ub, assume_unique=True, return_indices=True)
    ca, cb = cnt_a[pa], cnt_b[pb]
    n_pairs = ca * cb
    total = int(n_pairs.sum())
    if total == 0:
        return np.empty(0, np.int64)
    grp = np.repeat(np.arange(common.shape[0]), n_pairs)
    pos = np.arange(total) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    i = ia[start_a[pa][grp] + pos // cb[grp]]
    j = ib[start_b[pb][grp] + pos % cb[grp]]
    if dedup:
        keep = i != j
        i, j = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
    return i * n_b + j


def resolve_one_to_one(left: np.ndarray, right: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """Greedy one-to-one resolution: take links by descending probability, skipping any whose record is taken.

    Ties are broken by left row, then right row, so the result is deterministic.

    Args:
        left: Left rows, shape (k,) integer.
        right: Right rows, shape (k,) integer.
        probability: Match probabilities, shape (k,) float.

    Returns:
        Boolean mask (k,) of the kept links; each left and each right row appears in at most one kept link.
    """
    left = np.asarray(left)
    right = np.asarray(right)
    probability = np.asarray(probability, dtype=np.float64)
    if not (left.shape == right.shape == probability.shape) or left.ndim != 1:
        raise ValueError(
            f"left, right and probability must be 1-d of equal length, got {left.shape}, {right.shape}, "
            f"{probability.shape}"
        )
    order = np.lexsort((right, left, -probability))
    keep = np.zeros(left.shape[0], dtype=bool)
    used_l: set[int] = set()
    used_r: set[int] = set()
    for k in order.tolist():
        li, rj = int(left[k]), int(right[k])
        if li in used_l or rj in used_r:
            continue
        used_l.add(li)
        used_r.add(rj)
        keep[k] = True
    return keep


def clusters_from_links(
    n: int, left: np.ndarray, right: np.ndarray, ids: np.ndarray | None = None
) -> pd.DataFrame:
    """Connected components of n records under the given links; every record gets a cluster, singletons included.

    Args:
        n: Number of records.
        left: Rows of one end of each link, shape (k,) integer in [0, n).
        right: Rows of the other end, shape (k,) integer in [0, n).
        ids: Record ids, shape (n,); ``None`` uses row numbers.

    Returns:
        One row per record in row order: ``id``, ``cluster_id`` (int64, numbered 0, 1, ... in order of each
        cluster's first row), ``cluster_size`` (int64).
    """
    left = np.asarray(left, dtype=np.int64)
    right = np.asarray(right, dtype=np.int64)
    if left.shape != right.shape or left.ndim != 1:
        raise ValueError(f"left and right must be 1-d of equal length, got {left.shape} and {right.shape}")
    if n < 0 or (left.size and (min(left.min(), right.min()) < 0 or max(left.max(), right.max()) >= n)):
        raise ValueError(f"link rows must lie in [0, {n})")
    ids = np.arange(n) if ids is None else np.asarray(ids)
    if ids.shape != (n,):
        raise ValueError(f"ids must have shape ({n},), got {ids.shape}")
    graph = sp.coo_matrix((np.ones(left.size, dtype=np.int8), (left, right)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    # renumber by first row so that ids do not depend on scipy's traversal order
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(first.shape[0], dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.shape[0])
    cluster = rank[inverse.reshape(-1)]
    size = np.bincount(cluster, minlength=first.shape[0])[cluster]
    return pd.DataFrame({"id": ids, "cluster_id": cluster.astype(np.int64), "cluster_size": size.astype(np.int64)})


def link(
    a: pd.DataFrame,
    b: pd.DataFrame,
    fields: Sequence[FieldSpec | str],
    *,
    threshold: float = DEFAULT_MATCH_THRESHOLD,
    one_to_one: bool = False,
    **kwargs: object,
) -> pd.DataFrame:
    """Link two tables with a Fellegi-Sunter model fitted on all their pairs.

    Args:
        a: Left table.
        b: Right table.
        fields: Fields to compare (see :class:`FellegiSunter`).
        threshold: Posterior match probability for a link.
        one_to_one: Keep at most one link per record on each side.
        **kwargs: Other :class:`FellegiSunter` arguments (``thresholds``, ``id_column``, ``blocking``, ``device``).

    Returns:
        The links, as :meth:`FellegiSunter.predict`.
    """
    model = FellegiSunter(fields, threshold=threshold, **kwargs)  # type: ignore[arg-type]
    return model.fit(a, b).predict(one_to_one=one_to_one)


def dedup(
    a: pd.DataFrame,
    fields: Sequence[FieldSpec | str],
    *,
    threshold: float = DEFAULT_MATCH_THRESHOLD,
    **kwargs: object,
) -> pd.DataFrame:
    """De-duplicate a table: fit on all pairs ``i < j``, link at ``threshold``, cluster by connected components.

    Args:
        a: The table.
        fields: Fields to compare (see :class:`FellegiSunter`).
        threshold: Posterior match probability for a link.
        **kwargs: Other :class:`FellegiSunter` arguments.

    Returns:
        One row per record of ``a`` in order (index of ``a`` kept): ``id``, ``cluster_id``, ``cluster_size``;
        a record linked to nothing is a cluster of its own.
    """
    model = FellegiSunter(fields, threshold=threshold, **kwargs)  # type: ignore[arg-type]
    clusters = model.fit(a).clusters()
    clusters.index = a.index
    return clusters


__all__ = [
    "CLUSTER_COLUMNS",
    "DEFAULT_MATCH_THRESHOLD",
    "LINK_COLUMNS",
    "EMResult",
    "FellegiSunter",
    "clusters_from_links",
    "dedup",
    "link",
    "resolve_one_to_one",
]
