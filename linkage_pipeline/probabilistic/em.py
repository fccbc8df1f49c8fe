"""Expectation-maximisation for the Fellegi-Sunter model, run on agreement-pattern counts.

The model: a pair is a match with prior probability ``lambda``; given its class, fields are independent, and field
``f`` is at level ``l`` with probability ``m_f[l]`` for matches and ``u_f[l]`` for non-matches. The missing level
0 has no parameter (a factor 1 in both classes), so a missing value neither rewards nor punishes a pair.

EM works on the distinct patterns and their counts (a few hundred to a few thousand rows, whatever the number of
pairs), so each iteration costs microseconds. What matters is where it starts. Naive starts (uniform m, or u
learnt freely from a large lambda) can converge to a "match" class that is really "same town" or "same common
name"; we start where the answer is known to be: ``u`` at the level frequencies over all pairs (almost all pairs
are non-matches, so that is u up to O(lambda)), ``m`` concentrated on the top agreement level, and ``lambda`` at
the expected share of matching pairs (``min(n_a, n_b) / (n_a * n_b)`` when linking two tables).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from linkage_pipeline.probabilistic.comparisons import MISSING_LEVEL

logger = logging.getLogger(__name__)

# Floor on every m and u probability: a level never seen in one class would otherwise veto (or force) a match with
# an infinite weight.
_MIN_PROB = 1e-9
# Bounds on lambda: strictly inside (0, 1) so that log-odds stay finite.
_MIN_LAMBDA = 1e-15
_MAX_LAMBDA = 1.0 - 1e-9


@dataclass(frozen=True)
class EMResult:
    """Fitted Fellegi-Sunter parameters.

    Attributes:
        lambda_: Prior probability that a pair matches.
        m: Per field, shape (n_levels_f,) float64: P(level | match); index 0 (missing) is NaN.
        u: Per field, shape (n_levels_f,) float64: P(level | non-match); index 0 (missing) is NaN.
        n_iter: Iterations run.
        converged: Whether the largest parameter change fell below the tolerance before ``max_iter``.
        log_likelihood: Log-likelihood of the pattern counts under the fitted mixture (natural log).
    """

    lambda_: float
    m: list[np.ndarray]
    u: list[np.ndarray]
    n_iter: int
    converged: bool
    log_likelihood: float


def _check_inputs(levels: np.ndarray, counts: np.ndarray, n_levels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    levels = np.asarray(levels)
    counts = np.asarray(counts, dtype=np.float64)
    if levels.ndim != 2 or levels.shape[1] != len(n_levels):
        raise ValueError(f"levels must have shape (n_patterns, {len(n_levels)}), got {levels.shape}")
    if counts.shape != (levels.shape[0],):
        raise ValueError(f"counts must have shape ({levels.shape[0]},), got {counts.shape}")
    if levels.shape[0] == 0 or counts.sum() <= 0:
        raise ValueError("EM needs at least one compared pair, got no pattern counts")
    if np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise ValueError("counts must be finite and non-negative")
    nl = np.asarray(n_levels)
    if np.any(levels < 0) or np.any(levels >= nl[None, :]):
        raise ValueError(f"levels out of range: expected 0 <= level < n_levels = {list(n_levels)}")
    return levels.astype(np.int64), counts


def _normalise(p: np.ndarray) -> np.ndarray:
    """Clip non-missing levels at the floor and make them sum to 1; the missing slot becomes NaN."""
    out = np.asarray(p, dtype=np.float64).copy()
    out[MISSING_LEVEL] = 0.0
    out[1:] = np.maximum(out[1:], _MIN_PROB)
    out[1:] /= out[1:].sum()
    out[MISSING_LEVEL] = np.nan
    return out


def _log_table(p: np.ndarray) -> np.ndarray:
    out = np.log(np.where(np.isnan(p), 1.0, p))
    out[MISSING_LEVEL] = 0.0
    return out


def level_frequencies(levels: np.ndarray, counts: np.ndarray, n_levels: Sequence[int]) -> list[np.ndarray]:
    """Per field, the frequency of each non-missing level among pairs where the field is not missing.

    Args:
        levels: Patterns, shape (n_patterns, K) integer.
        counts: Pairs per pattern, shape (n_patterns,).
        n_levels: Level counts per field.

    Returns:
        Per field, shape (n_levels_f,) float64 with index 0 NaN; fields missing everywhere get uniform levels.
    """
    levels, counts = _check_inputs(levels, counts, n_levels)
    out = []
    for f, n in enumerate(n_levels):
        freq = np.bincount(levels[:, f], weights=counts, minlength=n)
        freq[MISSING_LEVEL] = 0.0
        if freq.sum() == 0:
            freq[1:] = 1.0
        out.append(_normalise(freq))
    return out


def initial_parameters(
    levels: np.ndarray, counts: np.ndarray, n_levels: Sequence[int], expected_match_share: float,
    top_m: float = 0.9,
) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
    """Starting point of EM: lambda at the expected share of matches, u at all-pair frequencies, m on top levels.

    Args:
        levels: Patterns, shape (n_patterns, K) integer.
        counts: Pairs per pattern, shape (n_patterns,).
        n_levels: Level counts per field.
        expected_match_share: Prior guess of lambda, in (0, 1).
        top_m: m of each field's top agreement level; the rest is shared equally by the lower levels.

    Returns:
        ``(lambda0, m0, u0)``.
    """
    if not 0.0 < expected_match_share < 1.0:
        raise ValueError(f"expected_match_share must lie in (0, 1), got {expected_match_share}")
    if not 0.0 < top_m < 1.0:
        raise ValueError(f"top_m must lie in (0, 1), got {top_m}")
    u0 = level_frequencies(levels, counts, n_levels)
    m0 = []
    for n in n_levels:
        m = np.zeros(n)
        m[1:] = (1.0 - top_m) / max(n - 2, 1)
        m[-1] = top_m
        m0.append(_normalise(m))
    return float(expected_match_share), m0, u0


def log_likelihood_terms(
    levels: np.ndarray, m: Sequence[np.ndarray], u: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Log P(pattern | match) and log P(pattern | non-match) per pattern: two arrays (n_patterns,) float64."""
    lm = np.zeros(levels.shape[0])
    lu = np.zeros(levels.shape[0])
    for f in range(levels.shape[1]):
        lm += _log_table(m[f])[levels[:, f]]
        lu += _log_table(u[f])[levels[:, f]]
    return lm, lu


def posterior(levels: np.ndarray, lambda_: float, m: Sequence[np.ndarray], u: Sequence[np.ndarray]) -> np.ndarray:
    """Match probability of each pattern: shape (n_patterns,) float64."""
    lm, lu = log_likelihood_terms(np.asarray(levels, dtype=np.int64), m, u)
    logit = math.log(lambda_) - math.log1p(-lambda_) + lm - lu
    return _sigmoid(logit)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def expectation_maximisation(
    levels: np.ndarray,
    counts: np.ndarray,
    n_levels: Sequence[int],
    *,
    lambda_init: float,
    m_init: Sequence[np.ndarray],
    u_init: Sequence[np.ndarray],
    fix_u: bool = False,
    max_lambda: float = _MAX_LAMBDA,
    max_iter: int = 1000,
    tol: float = 1e-7,
) -> EMResult:
    """Fit lambda, m and u by EM on pattern counts.

    Args:
        levels: Distinct patterns, shape (n_patterns, K) integer, level 0 = missing.
        counts: Pairs per pattern, shape (n_patterns,), non-negative.
        n_levels: Level counts per field, length K.
        lambda_init: Starting lambda in (0, 1).
        m_init: Starting m per field, shape (n_levels_f,) each.
        u_init: Starting u per field, shape (n_levels_f,) each.
        fix_u: Keep u at ``u_init`` (estimate only lambda and m).
        max_iter: Largest number of iterations.
        tol: Convergence when every m and u entry moves by less than ``tol`` and ``log(lambda)`` by less than
            ``tol`` in one iteration.

    Returns:
        The fitted parameters; ``converged`` is False (and a warning logged) if ``max_iter`` was reached first.

    Raises:
        ValueError: On inconsistent shapes, levels out of range, no counts, or bad starting values.
    """
    levels, counts = _check_inputs(levels, counts, n_levels)
    k = len(n_levels)
    if not 0.0 < lambda_init < 1.0:
        raise ValueError(f"lambda_init must lie in (0, 1), got {lambda_init}")
    if len(m_init) != k or len(u_init) != k:
        raise ValueError(f"m_init and u_init need one array per field ({k}), got {len(m_init)} and {len(u_init)}")
    for f in range(k):
        for name, p in (("m_init", m_init[f]), ("u_init", u_init[f])):
            if np.shape(p) != (n_levels[f],):
                raise ValueError(f"{name}[{f}] must have shape ({n_levels[f]},), got {np.shape(p)}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    lam = float(lambda_init)
    m = [_normalise(p) for p in m_init]
    u = [_normalise(p) for p in u_init]
    total = counts.sum()
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        post = posterior(levels, lam, m, u)
        w_m = counts * post
        w_u = counts - w_m
        lam_new = float(np.clip(w_m.sum() / total, _MIN_LAMBDA, max_lambda))
        change = abs(math.log(lam_new) - math.log(lam))
        m_new, u_new = [], []
        for f in range(k):
            mf = _normalise(np.bincount(levels[:, f], weights=w_m, minlength=n_levels[f]))
            change = max(change, float(np.nanmax(np.abs(mf - m[f]))))
            m_new.append(mf)
            if fix_u:
                u_new.append(u[f])
            else:
                uf = _normalise(np.bincount(levels[:, f], weights=w_u, minlength=n_levels[f]))
                change = max(change, float(np.nanmax(np.abs(uf - u[f]))))
                u_new.append(uf)
        lam, m, u = lam_new, m_new, u_new
        if change < tol:
            converged = True
            break
    lm, lu = log_likelihood_terms(levels, m, u)
    ll = float(np.dot(counts, np.logaddexp(math.log(lam) + lm, math.log1p(-lam) + lu)))
    if converged:
        logger.info("EM converged in %d iterations: lambda=%.3g, log-likelihood=%.6g", it, lam, ll)
    else:
        logger.warning("EM did not converge in %d iterations (tolerance %g): lambda=%.3g", max_iter, tol, lam)
    return EMResult(lambda_=lam, m=m, u=u, n_iter=it, converged=converged, log_likelihood=ll)


def detect_dependent_groups(
    levels: np.ndarray,
    counts: np.ndarray,
    n_levels: Sequence[int],
    min_pairs: float,
    *,
    min_strength: float = 0.3,
    max_group_levels: int = 4096,
) -> list[list[int]]:
    """Groups of fields whose agreements depend on each other among non-matching pairs.

    Conditional independence given the class is the model's assumption; fields such as suburb, postcode and
    state break it among non-matches (same suburb nearly always means same postcode), and EM then explains the
    co-agreement of a million same-town pairs with its "match" class instead of the ten thousand true matches:
    the likelihood of that wrong answer is higher, so no start point avoids it. Such fields are compared jointly
    instead (one composite field whose levels are the combinations of theirs, with its own m and u).

    Dependence of ``f`` and ``g`` is measured on pairs that agree on few other fields (at most
    ``max(1, (K - 2) // 3)``), which are almost all non-matches: the strength is
    ``max((P(g | f) - P(g)) / (1 - P(g)), (P(f | g) - P(f)) / (1 - P(f)))`` over agreement (level >= 2). A pair
    of fields is dependent when the strength is at least ``min_strength`` and at least ``min_pairs`` pairs co-agree
    there: more than matches alone can produce (pass the largest plausible number of matches).

    Args:
        levels: Patterns, shape (n_patterns, K) integer.
        counts: Pairs per pattern, shape (n_patterns,).
        n_levels: Level counts per field.
        min_pairs: Fewest co-agreeing pairs that count as dependence.
        min_strength: Smallest dependence strength in [0, 1].
        max_group_levels: A merge that would give a composite field more levels than this is skipped.

    Returns:
        Groups of field indices, each sorted, ordered by first field; every field is in exactly one group.
    """
    levels, counts = _check_inputs(levels, counts, n_levels)
    k = len(n_levels)
    agree = levels >= 2
    present = levels >= 1
    n_agree = agree.sum(axis=1)
    max_other = max(1, (k - 2) // 3)
    parent = list(range(k))

    def find(f: int) -> int:
        while parent[f] != f:
            parent[f] = parent[parent[f]]
            f = parent[f]
        return f

    edges = []
    for f in range(k):
        for g in range(f + 1, k):
            ref = (n_agree - agree[:, f] - agree[:, g] <= max_other) & present[:, f] & present[:, g]
            w = counts * ref
            n_all = w.sum()
            n_f = (w * agree[:, f]).sum()
            n_g = (w * agree[:, g]).sum()
            n_fg = (w * (agree[:, f] & agree[:, g])).sum()
            if n_fg < min_pairs or n_all <= 0:
                continue
            p_f, p_g = n_f / n_all, n_g / n_all
            strength = max(
                (n_fg / n_f - p_g) / (1.0 - p_g) if p_g < 1 else 0.0,
                (n_fg / n_g - p_f) / (1.0 - p_f) if p_f < 1 else 0.0,
            )
            if strength >= min_strength:
                edges.append((strength, f, g, n_fg))
    for strength, f, g, n_fg in sorted(edges, reverse=True):
        rf, rg = find(f), find(g)
        if rf == rg:
            continue
        members = [h for h in range(k) if find(h) in (rf, rg)]
        size = int(np.prod([n_levels[h] for h in members]))
        if size > max_group_levels:
            logger.warning("fields %d and %d depend on each other (strength %.2f) but a composite of %d levels is "
                           "too large: kept apart", f, g, strength, size)
            continue
        logger.info("fields %d and %d depend on each other among non-matches (strength %.2f, %d co-agreeing pairs): "
                    "compared jointly", f, g, strength, n_fg)
        parent[rg] = rf
    groups: dict[int, list[int]] = {}
    for f in range(k):
        groups.setdefault(find(f), []).append(f)
    return sorted(groups.values(), key=lambda g: g[0])


def group_levels(
    levels: np.ndarray, n_levels: Sequence[int], groups: Sequence[Sequence[int]]
) -> tuple[np.ndarray, list[int]]:
    """Levels of composite fields: each group's levels combined in mixed radix (first field fastest).

    A composite is at level 0 (missing: no weight) only when all its fields are missing; partially missing
    combinations are levels of their own.

    Args:
        levels: Patterns, shape (n_patterns, K) integer.
        n_levels: Level counts of the K fields.
        groups: Field indices per group (each sorted).

    Returns:
        ``(group_levels, group_n_levels)``: shape (n_patterns, G) int64 and the G level counts.
    """
    levels = np.asarray(levels, dtype=np.int64)
    out = np.zeros((levels.shape[0], len(groups)), dtype=np.int64)
    sizes = []
    for gi, group in enumerate(groups):
        radix = 1
        for f in group:
            out[:, gi] += levels[:, f] * radix
            radix *= int(n_levels[f])
        sizes.append(radix)
    return out, sizes
