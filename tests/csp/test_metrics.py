"""Ranking metrics against hand-computed values."""

import pytest
import torch

from csp.metrics import evaluate_prior, rank_summary, true_class_ranks
from csp.models import LocationEncoder, LocationEncoderConfig


def test_ranks_and_summary_by_hand():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 0])
    ranks = true_class_ranks(scores, labels)
    assert ranks.tolist() == [1, 3, 3]
    summary = rank_summary(ranks, ks=(1, 3))
    assert summary["top1"] == pytest.approx(100 / 3)
    assert summary["top3"] == pytest.approx(100.0)
    assert summary["mrr"] == pytest.approx(100 * (1 + 1 / 3 + 1 / 3) / 3)


def test_evaluate_prior_blocks_and_geo_aware_fallback():
    torch.manual_seed(0)
    config = LocationEncoderConfig(encoding="wrap", hidden_dim=8, embed_dim=8, num_classes=5)
    encoder = LocationEncoder(config)
    lonlat = torch.rand(37, 2) * torch.tensor([360.0, 180.0]) - torch.tensor([180.0, 90.0])
    labels = torch.randint(0, 5, (37,))
    probs = torch.softmax(torch.randn(37, 5), dim=1)
    small = evaluate_prior(encoder, lonlat, labels, probs, block_size=4)
    large = evaluate_prior(encoder, lonlat, labels, probs, block_size=1000)
    assert small == large
    prior = encoder.eval()(lonlat).detach()
    expected = rank_summary(true_class_ranks(prior, labels))
    assert small["location"] == pytest.approx(expected)
    no_location = torch.zeros(37, dtype=torch.bool)
    fallback = evaluate_prior(encoder, lonlat, labels, probs, has_location=no_location)
    assert fallback["geo_aware"] == fallback["image"]


def test_ties_count_against_the_true_class():
    collapsed = torch.zeros(5, 100)
    assert true_class_ranks(collapsed, torch.arange(5)).tolist() == [100] * 5


@pytest.mark.parametrize(("true_logit", "rank"), [(-130.0, 1000), (-110.0, 4)])
def test_geo_aware_ranks_do_not_underflow_to_ties(true_logit, rank):
    # Prior logits far below -104 make sigmoid(l) * p exactly 0 in float32.
    config = LocationEncoderConfig(encoding="xyz", hidden_dim=4, embed_dim=1, num_classes=1000, dropout=0.0)
    encoder = LocationEncoder(config)
    logits = torch.full((1000,), -120.0)
    logits[:3] = 5.0
    logits[500] = true_logit  # smallest prior of all, or above the 996 others at -120
    encoder.embed = lambda lonlat: torch.ones(lonlat.shape[0], 1)
    encoder.class_emb.weight.data = logits[:, None]
    probs = torch.full((1, 1000), 1e-3)
    result = evaluate_prior(encoder, torch.zeros(1, 2), torch.tensor([500]), probs)
    assert result["geo_aware"]["mrr"] == pytest.approx(100 / rank)
