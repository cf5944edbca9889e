"""Temperature fit, NLL and ECE against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from csp.calibration import calibrated_probabilities, expected_calibration_error, fit_temperature, nll


def test_nll_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    expected = -(math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(1 / (1 + math.e))) / 2
    assert nll(logits, labels) == pytest.approx(expected)
    assert nll(logits, labels, temperature=2.0) == pytest.approx(
        -(math.log(math.e / (math.e + 1)) + math.log(1 / (1 + math.exp(0.5)))) / 2
    )


def test_fit_temperature_recovers_the_generating_temperature():
    # Labels drawn from softmax(z / 3): the NLL-optimal temperature for logits z is near 3.
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(20000, 5, generator=generator) * 4
    labels = torch.multinomial(torch.softmax(z / 3, 1), 1, generator=generator).squeeze(1)
    t = fit_temperature(z, labels)
    assert t == pytest.approx(3.0, rel=0.05)
    assert nll(z, labels, t) <= min(nll(z, labels, t * 1.05), nll(z, labels, t / 1.05))


def test_two_class_closed_form_temperature():
    # One observation per class with logits (a, 0) / (0, a): the NLL falls as T -> 0 when both
    # are right, so the fit hits the lower bound; with one right and one wrong of equal margin,
    # the optimum is T -> infinity (upper bound).
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert fit_temperature(logits, torch.tensor([0, 1])) == pytest.approx(1e-3, rel=1e-3)
    assert fit_temperature(logits, torch.tensor([0, 0])) == pytest.approx(1e3, rel=1e-3)


def test_ece_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.55, 0.45]])
    labels = torch.tensor([0, 1, 1, 0])
    # 15 bins. conf 0.9 -> bin 13 (right), 0.8 -> bin 11 (wrong), 0.6 -> bin 8 (right),
    # 0.55 -> bin 8 (right): |1-0.9| + |0-0.8| + |2-1.15| over 4.
    assert expected_calibration_error(probs, labels) == pytest.approx((0.1 + 0.8 + 0.85) / 4 * 100)
    assert calibrated_probabilities(torch.tensor([[0.0, math.log(3)]]), 1.0)[0].tolist() == pytest.approx(
        [0.25, 0.75]
    )
