"""Ranking metrics against hand-computed values."""

import numpy as np
import pytest
import torch

from csp import metrics
from csp.fusion import IMAGE_ONLY, FusionParams, LinkArrays, fuse
from csp.metrics import evaluate_prior, rank_summary, true_class_ranks
from csp.models import LocationEncoder, LocationEncoderConfig
from csp.prior import LocationPrior


def test_ranks_and_summary_by_hand():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 0])
    ranks = true_class_ranks(scores, labels)
    assert ranks.tolist() == [1, 3, 3]
    summary = rank_summary(ranks, ks=(1, 3))
    assert summary["top1"] == pytest.approx(100 / 3)
    assert summary["top3"] == pytest.approx(100.0)
    assert summary["mrr"] == pytest.approx(100 * (1 + 1 / 3 + 1 / 3) / 3)


def _random_problem(seed: int, points: int, classes: int):
    """A small random encoder, ``points`` locations (degrees), labels and image probabilities."""
    torch.manual_seed(seed)
    config = LocationEncoderConfig(encoding="wrap", hidden_dim=8, embed_dim=8, num_classes=classes)
    lonlat = torch.rand(points, 2) * torch.tensor([360.0, 180.0]) - torch.tensor([180.0, 90.0])
    labels = torch.randint(0, classes, (points,))
    return LocationEncoder(config), lonlat, labels, torch.softmax(torch.randn(points, classes), dim=1)


def test_evaluate_prior_blocks_and_geo_aware_fallback():
    encoder, lonlat, labels, probs = _random_problem(0, 37, 5)
    small = evaluate_prior(encoder, lonlat, labels, probs, block_size=4)
    large = evaluate_prior(encoder, lonlat, labels, probs, block_size=1000)
    assert small == large
    prior = encoder.eval()(lonlat).detach()
    expected = rank_summary(true_class_ranks(prior, labels))
    assert small["location"] == pytest.approx(expected)
    no_location = torch.zeros(37, dtype=torch.bool)
    fallback = evaluate_prior(encoder, lonlat, labels, probs, has_location=no_location)
    assert fallback["geo_aware"] == fallback["image"]


def test_sub_blocks_of_blocks_give_the_same_metrics(monkeypatch):
    encoder, lonlat, labels, probs = _random_problem(1, 23, 6)
    whole = evaluate_prior(encoder, lonlat, labels, probs, block_size=1000)
    monkeypatch.setattr(metrics, "SCORES_IN_CACHE", 12)  # sub-blocks of 2 points in blocks of 5
    assert evaluate_prior(encoder, lonlat, labels, probs, block_size=5) == whole


def test_float_counting_matches_boolean_counting_on_strided_scores():
    scores = torch.randn(300, 40).round(decimals=1).T  # ties, and a transposed view
    labels = torch.randint(0, 300, (40,))
    expected = (scores >= scores.gather(1, labels[:, None])).sum(dim=1)
    assert torch.equal(true_class_ranks(scores, labels), expected)


def test_ties_count_against_the_true_class():
    collapsed = torch.zeros(5, 100)
    assert true_class_ranks(collapsed, torch.arange(5)).tolist() == [100] * 5


def test_geo_aware_evaluation_ranks_by_the_fusion_rule():
    # evaluate --image-probs scores with csp.fusion (the predictor's rule), not its own product.
    torch.manual_seed(1)
    config = LocationEncoderConfig(encoding="wrap", hidden_dim=8, embed_dim=8, num_classes=6)
    encoder = LocationEncoder(config).eval()
    lonlat = torch.rand(50, 2) * torch.tensor([360.0, 180.0]) - torch.tensor([180.0, 90.0])
    labels = torch.randint(0, 6, (50,))
    probs = torch.softmax(3 * torch.randn(50, 6), dim=1)
    frequency = np.random.default_rng(0).dirichlet(np.ones(6))
    params = FusionParams(alpha=0.5, ratio_min=0.1, ratio_max=10.0)
    result = evaluate_prior(encoder, lonlat, labels, probs, class_frequency=frequency, fusion=params)
    prior = LocationPrior(encoder).probabilities(lonlat).numpy()
    link = LinkArrays.from_mapping({i: i for i in range(6)})
    fused = fuse(probs.double().numpy(), prior, frequency, link, params).probs
    expected = rank_summary(true_class_ranks(torch.from_numpy(fused), labels))
    assert result["geo_aware"] == pytest.approx(expected)
    untouched = evaluate_prior(encoder, lonlat, labels, probs, fusion=IMAGE_ONLY)
    assert untouched["geo_aware"] == pytest.approx(untouched["image"])
