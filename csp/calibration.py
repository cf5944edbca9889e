"""Turning class scores into probabilities a user can read: temperature scaling and its checks.

``p(y | x) = softmax(logits / T)`` over the C classes, with one temperature ``T > 0`` fitted on
the validation split by minimising the negative log-likelihood (Guo et al. 2017). The NLL is a
convex function of ``1 / T``, so a golden-section search over ``log T`` finds its minimum.
Reported on test: NLL (nats per observation) and the expected calibration error (ECE) of the
top-1 confidence in equal-width bins.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DEFAULT_BLOCK = 1024
ECE_BINS = 15
_LOG_T_RANGE = (math.log(1e-3), math.log(1e3))


def nll(logits: Tensor, labels: Tensor, temperature: float = 1.0, block_size: int = DEFAULT_BLOCK) -> float:
    """Mean ``-log softmax(logits / T)[label]`` in nats; ``logits (N, C)``, ``labels (N,)``."""
    if logits.shape[0] == 0:
        raise ValueError("no observations")
    total = 0.0
    for start in range(0, logits.shape[0], block_size):
        block = logits[start : start + block_size].double() / temperature
        log_p = block.gather(1, labels[start : start + block_size, None]) - torch.logsumexp(
            block, 1, keepdim=True
        )
        total -= float(log_p.sum())
    return total / logits.shape[0]


def fit_temperature(logits: Tensor, labels: Tensor, iterations: int = 60) -> float:
    """The ``T`` in ``[1e-3, 1e3]`` minimising :func:`nll` on ``(logits (N, C), labels (N,))``.

    Golden-section search on ``log T`` (the NLL is unimodal there), to a relative precision of
    about ``1e-6`` after the default 60 iterations.
    """
    ratio = (math.sqrt(5) - 1) / 2
    low, high = _LOG_T_RANGE
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(logits, labels, math.exp(a)), nll(logits, labels, math.exp(b))
    for _ in range(iterations):
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(logits, labels, math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(logits, labels, math.exp(b))
    return math.exp((low + high) / 2)


def expected_calibration_error(probs: Tensor, labels: Tensor, bins: int = ECE_BINS) -> float:
    """ECE in percent: ``sum_b (n_b / N) |accuracy_b - confidence_b|`` over equal-width bins of
    the top-1 probability; ``probs (N, C)`` rows summing to 1, ``labels (N,)``."""
    if probs.shape[0] == 0:
        raise ValueError("no observations")
    confidence, predicted = probs.double().max(dim=1)
    correct = (predicted == labels).double()
    # Bin b holds confidences in (b / bins, (b + 1) / bins]; a confidence of 0 joins bin 0.
    index = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index.cpu(), confidence.cpu())
    acc_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index.cpu(), correct.cpu())
    return float((acc_sum - conf_sum).abs().sum() / probs.shape[0] * 100)


def calibrated_probabilities(logits: Tensor, temperature: float) -> Tensor:
    """``softmax(logits / T)`` over the last axis: ``(..., C)`` rows summing to 1."""
    return torch.softmax(logits / temperature, dim=-1)
