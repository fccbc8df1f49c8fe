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
        trace: One ``(lambda, log_likelihood)`` per iteration, of the parameters that iteration started from.
    """

    lambda_: float
    m: list[np.ndarray]
    u: list[np.ndarray]
    n_iter: int
    converged: bool
    log_likelihood: float
    trace: tuple[tuple[float, float], ...] = ()


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


def posterior_from_terms(lm: np.ndarray, lu: np.ndarray, lambda_: float) -> np.ndarray:
    """Match probability per pattern from :func:`log_likelihood_terms` and lambda."""
    return _sigmoid(math.log(lambda_) - math.log1p(-lambda_) + lm - lu)


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
    trace = []
    for it in range(1, max_iter + 1):
        lm, lu = log_likelihood_terms(levels, m, u)
        a, b = math.log(lam) + lm, math.log1p(-lam) + lu
        trace.append((lam, float(np.dot(counts, np.logaddexp(a, b)))))
        post = _sigmoid(a - b)
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
    return EMResult(lambda_=lam, m=m, u=u, n_iter=it, converged=converged, log_likelihood=ll,
                    trace=tuple(trace))


@dataclass(frozen=True)
class FieldDependence:
    """How strongly two fields' agreements go together among non-matching pairs.

    Attributes:
        fields: The two field indices ``(f, g)``, ``f < g``.
        pairs: Pairs where both fields are present.
        agree_f: Of those, pairs agreeing on ``f``; ``agree_g`` likewise.
        agree_both: Pairs agreeing on both.
        lift: ``agree_both * pairs / (agree_f * agree_g)``: how many times more often the two agree together than
            if they were independent (1 = independent), over all pairs.
        lift_lower: A lower confidence bound of the lift among non-matches (see :func:`field_dependence`).
        bits: ``log2(lift_lower)`` (0 when not positive): how many bits the independence assumption would add to
            the match weight of a non-matching pair that agrees on both.
        dependent: Whether the pair counts as dependent (``bits >= min_bits``).
    """

    fields: tuple[int, int]
    pairs: float
    agree_f: float
    agree_g: float
    agree_both: float
    lift: float
    lift_lower: float
    bits: float
    dependent: bool


def _strong_disagreement_rates(levels: np.ndarray, counts: np.ndarray, z: float) -> np.ndarray:
    """Per field ``h``, an upper bound of how often a match is at ``h``'s lowest compared level (level 1: strong
    disagreement), from the near-certain matches: pairs that agree (level >= 2) on every other field present, with
    at least three of them present (``1.0`` where there are too few such pairs to tell)."""
    k = levels.shape[1]
    agree = levels >= 2
    present = levels >= 1
    out = np.ones(k)
    for h in range(k):
        others = [f for f in range(k) if f != h]
        sure = np.all(agree[:, others] | ~present[:, others], axis=1) & (present[:, others].sum(axis=1) >= 3)
        sure &= present[:, h]
        n = float(counts[sure].sum())
        if n < 30:
            continue
        x = float(counts[sure & (levels[:, h] == 1)].sum())
        out[h] = min(1.0, (x + z * math.sqrt(x) + 1.0) / n)
    return out


def _lift_bound(n_all: float, n_f: float, n_g: float, n_fg: float, matches: float, z: float) -> tuple[float, float]:
    expected = n_f * n_g / n_all
    return n_fg / expected, (n_fg - z * math.sqrt(n_fg) - matches) / expected


def field_dependence(
    levels: np.ndarray,
    counts: np.ndarray,
    n_levels: Sequence[int],
    max_matches: float,
    *,
    z: float = 4.0,
    min_bits: float = 1.0,
) -> list[FieldDependence]:
    """Measure, for every pair of fields, how much their agreements depend on each other among non-matches.

    The test. Over the given pairs (all pairs, or a uniform random sample of them), let ``n`` be the pairs where
    both fields are present, ``n_f``, ``n_g`` the pairs agreeing (level >= 2) on each and ``n_fg`` on both. Under
    independence ``n_fg`` is about ``n_f * n_g / n``. Matches co-agree on nearly everything, so they must not be
    taken for dependence. Two lower bounds of the non-match lift ``n_fg * n / (n_f * n_g)`` are computed, and the
    larger is kept:

    - over all pairs, counting every possible match against the dependence: ``(n_fg - z * sqrt(n_fg) -
      max_matches) * n / (n_f * n_g)``;
    - over the pairs that strongly disagree (level 1) on a third field ``h``, the most identifying one (the field
      that agrees least often among all pairs, such as an id or a birth date: people sharing an address still
      differ there): there the matches are at most ``max_matches`` times an upper bound of their
      strong-disagreement rate on ``h``, read off the near-certain matches (pairs agreeing on every other field
      present). That bound is too low if matches that disagree on ``h`` also disagree elsewhere (a typo-free
      field rarely does), which is why ``h`` is the most identifying field, not any field.

    Both subtract ``z`` Poisson standard deviations (``z = 4``: a one-sided error rate of 3e-5 per bound, under
    1e-3 for the 72 bounds of nine fields, Bonferroni). The base-2 logarithm of the kept bound is the error, in
    bits, that assuming independence adds to the match weight of a non-match agreeing on both fields. A pair is
    dependent when that error is at least ``min_bits`` (1 bit: the non-match odds off by a factor of two).

    Args:
        levels: Patterns, shape (n_patterns, K) integer.
        counts: Pairs per pattern, shape (n_patterns,).
        n_levels: Level counts per field.
        max_matches: The largest number of matching pairs among the counted pairs (feasible maximum, scaled to
            a sample when the counts are of one).
        z: Standard deviations of the Poisson bounds.
        min_bits: Smallest weight error that counts as dependence.

    Returns:
        One :class:`FieldDependence` per field pair ``f < g``, in order.
    """
    levels, counts = _check_inputs(levels, counts, n_levels)
    k = len(n_levels)
    agree = levels >= 2
    present = levels >= 1
    rates = _strong_disagreement_rates(levels, counts, z)
    # how often each field agrees among all pairs (where present): the rarest is the most identifying
    chance = np.array([
        float(counts[agree[:, h]].sum()) / max(float(counts[present[:, h]].sum()), 1.0) for h in range(k)
    ])
    out = []
    for f in range(k):
        for g in range(f + 1, k):
            both = present[:, f] & present[:, g]
            w = counts * both
            n_all = float(w.sum())
            n_f = float((w * agree[:, f]).sum())
            n_g = float((w * agree[:, g]).sum())
            n_fg = float((w * (agree[:, f] & agree[:, g])).sum())
            if n_f <= 0 or n_g <= 0:
                out.append(FieldDependence((f, g), n_all, n_f, n_g, n_fg, float("nan"), 0.0, 0.0, False))
                continue
            lift, lower = _lift_bound(n_all, n_f, n_g, n_fg, max_matches, z)
            others = [h for h in range(k) if h not in (f, g)]
            if others:
                h = min(others, key=lambda h: (chance[h], h))
                if rates[h] < 1.0:
                    wr = counts * (both & (levels[:, h] == 1))
                    r_all, r_f = float(wr.sum()), float((wr * agree[:, f]).sum())
                    r_g, r_fg = float((wr * agree[:, g]).sum()), float((wr * (agree[:, f] & agree[:, g])).sum())
                    if r_f > 0 and r_g > 0:
                        lower = max(lower, _lift_bound(r_all, r_f, r_g, r_fg, max_matches * rates[h], z)[1])
            bits = math.log2(lower) if lower > 1.0 else 0.0
            out.append(FieldDependence((f, g), n_all, n_f, n_g, n_fg, lift, lower, bits, bits >= min_bits))
    return out


def detect_dependent_groups(
    levels: np.ndarray,
    counts: np.ndarray,
    n_levels: Sequence[int],
    max_matches: float,
    *,
    z: float = 4.0,
    min_bits: float = 1.0,
    max_group_levels: int = 4096,
) -> list[list[int]]:
    """Groups of fields whose agreements depend on each other among non-matching pairs.

    Conditional independence given the class is the model's assumption; fields such as street, suburb, postcode
    and state break it among non-matches (neighbours and families share addresses; same suburb nearly always
    means same postcode), and EM then explains the co-agreement of a million same-address pairs with its "match"
    class instead of the ten thousand true matches: the likelihood of that wrong answer is higher, so no start
    point avoids it. Such fields are compared jointly instead (one composite field whose levels are the
    combinations of theirs, with its own m and u).

    Every pair of fields is tested by :func:`field_dependence`; dependent pairs are merged, strongest first, into
    groups (connected components), unless a group would have more than ``max_group_levels`` levels.

    Args:
        levels: Patterns, shape (n_patterns, K) integer.
        counts: Pairs per pattern, shape (n_patterns,).
        n_levels: Level counts per field.
        max_matches: The largest number of matching pairs among the counted pairs.
        z: See :func:`field_dependence`.
        min_bits: See :func:`field_dependence`.
        max_group_levels: A merge that would give a composite field more levels than this is skipped.

    Returns:
        Groups of field indices, each sorted, ordered by first field; every field is in exactly one group.
    """
    tests = field_dependence(levels, counts, n_levels, max_matches, z=z, min_bits=min_bits)
    return groups_from_dependence(tests, n_levels, max_group_levels=max_group_levels)


def groups_from_dependence(
    tests: Sequence[FieldDependence], n_levels: Sequence[int], *, max_group_levels: int = 4096
) -> list[list[int]]:
    """Merge the dependent pairs of ``tests`` into groups, strongest first (see :func:`detect_dependent_groups`)."""
    k = len(n_levels)
    parent = list(range(k))

    def find(f: int) -> int:
        while parent[f] != f:
            parent[f] = parent[parent[f]]
            f = parent[f]
        return f

    for t in sorted((t for t in tests if t.dependent), key=lambda t: (-t.bits, t.fields)):
        f, g = t.fields
        rf, rg = find(f), find(g)
        if rf == rg:
            continue
        members = [h for h in range(k) if find(h) in (rf, rg)]
        size = int(np.prod([n_levels[h] for h in members]))
        if size > max_group_levels:
            logger.warning("fields %d and %d depend on each other (%.1f bits) but a composite of %d levels is "
                           "too large: kept apart", f, g, t.bits, size)
            continue
        logger.info("fields %d and %d depend on each other among non-matches (lift >= %.1f, %.0f co-agreeing "
                    "pairs): compared jointly", f, g, t.lift_lower, t.agree_both)
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
