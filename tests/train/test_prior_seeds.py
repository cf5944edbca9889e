"""The seeds study's aggregation (train/prior_seeds.py) on hand-checked ranks."""

import numpy as np
import pytest

from train.prior_seeds import _row, format_prior_seeds


def test_row_mean_sd_and_paired_interval_over_seeds():
    ranks = np.array([[1, 2, 1, 4], [1, 1, 2, 10]])  # 2 seeds x 4 queries
    reference = np.array([[2, 2, 2, 2]])  # a deterministic baseline, broadcast over the seeds
    row = _row("prior", ranks, reference, seed=0)
    # reciprocal ranks x 100: seed 0 (100 + 50 + 100 + 25) / 4 = 68.75, seed 1 (100 + 100 + 50 + 10) / 4 = 65
    assert row["mrr"] == pytest.approx((68.75 + 65) / 2)
    assert row["mrr_sd"] == pytest.approx(np.std([68.75, 65], ddof=1))
    assert row["top5"] == pytest.approx(87.5) and row["top5_sd"] == pytest.approx(np.std([100, 75], ddof=1))
    difference, low, high = row["delta_mrr"]
    assert difference == pytest.approx((68.75 + 65) / 2 - 50) and low <= difference <= high
    assert row["delta_top5"][0] == pytest.approx(87.5 - 100)


def test_reference_row_and_one_seed_have_no_interval_or_sd():
    row = _row("KDE (100 km)", np.array([[1, 3]]), None, seed=0)
    assert row["mrr_sd"] is None and "delta_mrr" not in row
    table = format_prior_seeds({"queries": 2, "strongest": "KDE", "rows": [row]})
    assert "| KDE (100 km) | 100.00 | 66.67 | (reference) | (reference) |" in table
