"""Paired bootstrap intervals and sample SD."""

from __future__ import annotations

import numpy as np
import pytest

from csp.stats import paired_bootstrap, reciprocal_ranks, sample_sd, top_k_hits


def test_sample_sd_uses_n_minus_one():
    assert sample_sd([1.0, 2.0, 3.0, 4.0]) == pytest.approx(np.sqrt(5 / 3))
    assert np.isnan(sample_sd([1.0]))


def test_bootstrap_of_a_constant_difference_is_that_constant():
    a = np.arange(50.0)
    interval = paired_bootstrap(a + 2.0, a, n_boot=200)
    assert (interval.difference, interval.low, interval.high) == pytest.approx((2.0, 2.0, 2.0))
    assert interval.excludes_zero


def test_bootstrap_interval_covers_noise_and_is_reproducible():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 400), rng.normal(0, 1, 400)
    first = paired_bootstrap(a, b, n_boot=500, seed=1)
    assert first == paired_bootstrap(a, b, n_boot=500, seed=1)
    assert first.low < first.difference < first.high
    # Half-width close to 1.96 * SD(diff) / sqrt(N).
    assert (first.high - first.low) / 2 == pytest.approx(1.96 * np.std(a - b) / 20, rel=0.15)
    assert not first.excludes_zero


def test_seeds_are_paired_and_a_deterministic_side_broadcasts():
    base = np.tile(np.arange(30.0), (3, 1))
    interval = paired_bootstrap(base + np.array([[1.0], [2.0], [3.0]]), np.arange(30.0), n_boot=300)
    assert interval.difference == pytest.approx(2.0)
    assert 1.0 <= interval.low <= interval.high <= 3.0
    with pytest.raises(ValueError, match="same queries"):
        paired_bootstrap(np.zeros(3), np.zeros(4))


def test_per_query_metrics_match_their_means():
    ranks = np.array([1, 2, 4, 10])
    assert reciprocal_ranks(ranks).mean() == pytest.approx(100 * (1 + 0.5 + 0.25 + 0.1) / 4)
    assert top_k_hits(ranks, 2).tolist() == [100, 100, 0, 0]
