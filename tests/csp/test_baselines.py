"""Baselines against hand computations on tiny data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from csp.baselines import (
    ClassFrequency,
    KNNVote,
    SphericalKDE,
    bandwidth_to_kappa,
    scorer_ranks,
    select_on_validation,
)
from csp.geo import EARTH_RADIUS_KM

TRAIN = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0]])
LABELS = np.array([0, 0, 1])


def _angle(a, b) -> float:
    """Great-circle angle in radians by the spherical law of cosines, written out by hand."""
    (lon1, lat1), (lon2, lat2) = np.radians(a), np.radians(b)
    c = math.sin(lat1) * math.sin(lat2) + math.cos(lat1) * math.cos(lat2) * math.cos(lon2 - lon1)
    return math.acos(min(1.0, c))


def test_kde_log_density_matches_hand_computation():
    bandwidth, eps = 150.0, 1e-3
    kde = SphericalKDE(TRAIN, LABELS, 3, bandwidth, background=eps)
    kappa = (EARTH_RADIUS_KM / bandwidth) ** 2
    assert bandwidth_to_kappa(bandwidth) == pytest.approx(kappa)
    peak = kappa / (2 * math.pi * (1 - math.exp(-2 * kappa)))
    query = [1.0, 0.5]
    expected = []
    for cls in range(3):
        members = [p for p, y in zip(TRAIN, LABELS, strict=True) if y == cls]
        mean = sum(peak * math.exp(kappa * (math.cos(_angle(query, p)) - 1)) for p in members) / max(
            len(members), 1
        )
        expected.append(math.log((1 - eps) * mean + eps / (4 * math.pi)))
    got = kde.log_density(torch.tensor([query]))[0]
    assert got.tolist() == pytest.approx(expected, rel=1e-5)
    # A class without points has the uniform background only; the score adds log n_s.
    assert float(got[2]) == pytest.approx(math.log(eps / (4 * math.pi)))
    score = kde(torch.tensor([query]))[0]
    assert float(score[0]) == pytest.approx(math.log(2) + expected[0], rel=1e-5)


def test_kde_density_integrates_to_one_over_the_sphere():
    kde = SphericalKDE(np.array([[30.0, 45.0]]), np.array([0]), 1, 800.0)
    step = 0.5
    lat = np.arange(-90 + step / 2, 90, step)
    lon = np.arange(-180 + step / 2, 180, step)
    grid = np.stack(np.meshgrid(lon, lat), -1).reshape(-1, 2)
    density = torch.exp(kde.log_density(torch.from_numpy(grid))[:, 0]).numpy()
    area = np.radians(step) ** 2 * np.cos(np.radians(grid[:, 1]))
    assert float((density * area).sum()) == pytest.approx(1.0, abs=2e-3)


def test_knn_votes_by_hand():
    # Query at lon 0.4, lat 0: nearest are (0,0) [class 0], (0,1) [class 0] then (10,0) [class 1].
    knn = KNNVote(TRAIN, LABELS, 3, k=2)
    scores = knn(torch.tensor([[0.4, 0.0]]))[0]
    # Votes: 2, 0, 0; tie-break n_s / (2 max n) = 2/4, 1/4, 0.
    assert scores.tolist() == pytest.approx([2.5, 0.25, 0.0])
    scores = KNNVote(TRAIN, LABELS, 3, k=10)(torch.tensor([[9.0, 0.0]]))[0]  # k capped at 3
    assert scores.tolist() == pytest.approx([2.5, 1.25, 0.0])


def test_class_frequency_and_ranks_count_ties_against():
    freq = ClassFrequency(LABELS, 3)
    assert freq(torch.zeros(2, 2)).tolist() == [[2, 1, 0], [2, 1, 0]]
    ranks = scorer_ranks(freq, np.zeros((3, 2)), np.array([0, 1, 2]), block_size=2)
    assert ranks.tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="labels"):
        ClassFrequency(np.array([0, 5]), 3)


def test_select_on_validation_picks_the_best_bandwidth():
    # Validation points sit next to their class's training points: a narrow kernel wins.
    val = np.array([[0.05, 0.0], [10.05, 0.0]])
    selection = select_on_validation(
        lambda h: SphericalKDE(TRAIN, LABELS, 3, h), [5.0, 5000.0], val, np.array([0, 1])
    )
    assert selection.value == 5.0 and selection.val_mrr == 100.0
    assert set(selection.tried) == {5.0, 5000.0}
