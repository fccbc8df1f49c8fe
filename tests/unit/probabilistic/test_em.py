"""Known-answer tests of EM on pattern counts (linkage_pipeline.probabilistic.em)."""

from __future__ import annotations

import numpy as np
import pytest

from linkage_pipeline.probabilistic import em as fs_em
from linkage_pipeline.probabilistic import patterns as fs_patterns


# ---------------------------------------------------------------------------------------------------- EM
def _simulate_counts(rng, n_pairs, lam, m, u, p_missing):
    """Pattern counts of n_pairs pairs drawn from a Fellegi-Sunter model (missingness independent of class)."""
    n_m = rng.binomial(n_pairs, lam)
    levels = []
    for cls_n, probs in ((n_m, m), (n_pairs - n_m, u)):
        cols = []
        for f, p in enumerate(probs):
            lv = rng.choice(np.arange(1, len(p) + 1), size=cls_n, p=p)
            lv[rng.random(cls_n) < p_missing[f]] = 0
            cols.append(lv)
        levels.append(np.stack(cols, axis=1))
    n_levels = [len(p) + 1 for p in m]
    codes = fs_patterns.encode_patterns(np.concatenate(levels), n_levels)
    counts = np.bincount(codes)
    observed = np.flatnonzero(counts)
    return fs_patterns.decode_patterns(observed, n_levels), counts[observed], n_levels


# m and u over the non-missing levels (disagree, ..., top agreement); missing rate per field
EM_CASES = [
    pytest.param(
        0.01,
        [[0.1, 0.1, 0.8], [0.05, 0.15, 0.8], [0.2, 0.8], [0.1, 0.9]],
        [[0.95, 0.03, 0.02], [0.97, 0.02, 0.01], [0.9, 0.1], [0.99, 0.01]],
        [0.05, 0.0, 0.1, 0.02],
        id="lambda=1e-2",
    ),
    pytest.param(
        0.002,
        [[0.15, 0.05, 0.8], [0.1, 0.1, 0.8], [0.3, 0.7], [0.05, 0.95], [0.1, 0.9]],
        [[0.98, 0.015, 0.005], [0.99, 0.008, 0.002], [0.75, 0.25], [0.999, 0.001], [0.95, 0.05]],
        [0.1, 0.05, 0.0, 0.05, 0.2],
        id="lambda=2e-3",
    ),
]


@pytest.mark.parametrize(("lam", "m", "u", "p_missing"), EM_CASES)
def test_em_recovers_known_parameters(lam, m, u, p_missing):
    """Tolerances: lambda within 5 % relative; m within 0.02 and u within 0.003 absolute (sampling error on
    ~10^4 matches and ~10^6 non-matches is several times smaller)."""
    rng = np.random.default_rng(42)
    levels, counts, n_levels = _simulate_counts(rng, 2_000_000, lam, m, u, p_missing)
    lam0, m0, u0 = fs_em.initial_parameters(levels, counts, n_levels, expected_match_share=1e-3)
    fit = fs_em.expectation_maximisation(levels, counts, n_levels, lambda_init=lam0, m_init=m0, u_init=u0)
    assert fit.converged
    assert fit.lambda_ == pytest.approx(lam, rel=0.05)
    for f in range(len(m)):
        assert np.isnan(fit.m[f][0]) and np.isnan(fit.u[f][0])  # missing level: no parameter
        np.testing.assert_allclose(fit.m[f][1:], m[f], atol=0.02)
        np.testing.assert_allclose(fit.u[f][1:], u[f], atol=0.003)


def test_em_with_u_fixed_at_all_pair_frequencies_recovers_m():
    """u fixed at the all-pair level frequencies (matches included) is biased by lambda * m / u, here under 2 %;
    with ~1,000 matches: lambda within 15 %, m within 0.05."""
    lam, m, u, p_missing = 2e-4, [[0.1, 0.1, 0.8], [0.2, 0.8], [0.1, 0.9], [0.15, 0.85]], [
        [0.95, 0.03, 0.02], [0.9, 0.1], [0.98, 0.02], [0.97, 0.03]], [0.0, 0.1, 0.0, 0.05]
    levels, counts, n_levels = _simulate_counts(np.random.default_rng(5), 5_000_000, lam, m, u, p_missing)
    lam0, m0, u0 = fs_em.initial_parameters(levels, counts, n_levels, expected_match_share=1e-3)
    fit = fs_em.expectation_maximisation(levels, counts, n_levels, lambda_init=lam0, m_init=m0, u_init=u0,
                                         fix_u=True)
    assert fit.converged
    assert fit.lambda_ == pytest.approx(lam, rel=0.15)
    for f in range(len(m)):
        np.testing.assert_allclose(fit.u[f][1:], u0[f][1:])  # held fixed
        np.testing.assert_allclose(fit.m[f][1:], m[f], atol=0.05)


def test_em_reports_non_convergence():
    levels, counts, n_levels = _simulate_counts(np.random.default_rng(1), 100_000, 0.01, [[0.1, 0.9]] * 3,
                                                [[0.9, 0.1]] * 3, [0.0] * 3)
    lam0, m0, u0 = fs_em.initial_parameters(levels, counts, n_levels, expected_match_share=0.01)
    fit = fs_em.expectation_maximisation(levels, counts, n_levels, lambda_init=lam0, m_init=m0, u_init=u0,
                                         max_iter=1)
    assert not fit.converged and fit.n_iter == 1


def test_dependent_fields_are_detected_and_independent_ones_are_not():
    rng = np.random.default_rng(9)
    levels, counts, n_levels = _simulate_counts(
        rng, 1_000_000, 0.002, [[0.1, 0.9]] * 4, [[0.9, 0.1], [0.9, 0.1], [0.99, 0.01], [0.99, 0.01]], [0.0] * 4)
    assert fs_em.detect_dependent_groups(levels, counts, n_levels, max_matches=2500) == [[0], [1], [2], [3]]
    # make field 3 a copy of field 2 (say postcode of suburb): dependent among non-matches too
    dep = levels.copy()
    dep[:, 3] = dep[:, 2]
    codes = fs_patterns.encode_patterns(dep, n_levels)
    merged = np.bincount(codes, weights=counts)
    observed = np.flatnonzero(merged)
    dep_levels = fs_patterns.decode_patterns(observed, n_levels)
    groups = fs_em.detect_dependent_groups(dep_levels, merged[observed], n_levels, max_matches=2500)
    assert groups == [[0], [1], [2, 3]]


def test_field_dependence_counts_every_possible_match_against_the_dependence():
    # 1,000 matches agree on both fields; 1,000,000 non-matches agree independently (10 % and 1 %)
    rng = np.random.default_rng(3)
    levels, counts, n_levels = _simulate_counts(
        rng, 1_001_000, 1000 / 1_001_000, [[0.05, 0.95]] * 2, [[0.9, 0.1], [0.99, 0.01]], [0.0] * 2)
    (t,) = fs_em.field_dependence(levels, counts, n_levels, max_matches=1000)
    # over all pairs the matches make the two look dependent (lift ~ 1.9) ...
    assert t.lift > 1.5
    # ... but not once every possible match is counted against it
    assert not t.dependent and t.bits == 0.0
    # with fewer possible matches than there are (a wrong bound) the test would see dependence that is not there
    (wrong,) = fs_em.field_dependence(levels, counts, n_levels, max_matches=0)
    assert wrong.lift_lower > t.lift_lower


def test_shared_addresses_make_one_group_of_every_address_field():
    # 200,000 non-matching pairs; 5 % of them live at the same address: agree on street, number, town together
    rng = np.random.default_rng(4)
    n = 200_000
    same = rng.random(n) < 0.05
    lv = np.ones((n, 4), dtype=np.int64)
    for f, p in enumerate((0.01, 0.002, 0.01, 0.02)):  # name, street, number, town agree by chance
        lv[:, f] += rng.random(n) < p
    lv[same, 1:] = 2
    codes = fs_patterns.encode_patterns(lv, [3] * 4)
    c = np.bincount(codes)
    obs = np.flatnonzero(c)
    groups = fs_em.detect_dependent_groups(fs_patterns.decode_patterns(obs, [3] * 4), c[obs], [3] * 4,
                                           max_matches=100)
    assert groups == [[0], [1, 2, 3]]
