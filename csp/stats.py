"""Statistics for "A beats B" claims: paired bootstrap intervals and sample standard deviations.

A comparison is *paired*: both methods are scored on the same queries (and, over seeds, on the
same seeds), and the interval is on the difference of their means. With several seeds the
bootstrap resamples seeds and queries independently in every replicate, so the interval covers
both the variation between training runs and the sampling of the test queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def sample_sd(values: np.ndarray | list[float]) -> float:
    """Sample standard deviation (``ddof=1``) of a 1-D sequence; NaN for fewer than 2 values."""
    array = np.asarray(values, dtype=np.float64).ravel()
    return float(array.std(ddof=1)) if array.size >= 2 else float("nan")


@dataclass(frozen=True)
class Interval:
    """A difference ``mean(a) - mean(b)`` with its bootstrap 95 % (or ``level``) interval."""

    difference: float
    low: float
    high: float
    level: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.difference:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def _as_seeds_by_queries(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        return array[None, :]
    if array.ndim != 2:
        raise ValueError(f"expected (N,) or (S, N) per-query values, got shape {array.shape}")
    return array


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``mean(a) - mean(b)``.

    Args:
        a, b: per-query values (e.g. reciprocal ranks x 100) of the two methods, shape ``(N,)``
            for one run each, or ``(S, N)`` for S seeds x N queries (seed s of ``a`` is
            paired with seed s of ``b``; a deterministic method may be given as ``(N,)`` or
            ``(1, N)`` and is broadcast over the seeds).
        n_boot: bootstrap replicates.
        level: coverage of the interval.
        seed: seeds the resampling (the interval is reproducible).

    Returns:
        the observed difference (mean over seeds and queries) and the interval.
    """
    a2, b2 = _as_seeds_by_queries(a), _as_seeds_by_queries(b)
    if a2.shape[1] != b2.shape[1]:
        raise ValueError(f"a and b must score the same queries, got {a2.shape[1]} and {b2.shape[1]}")
    seeds = max(a2.shape[0], b2.shape[0])
    if a2.shape[0] not in (1, seeds) or b2.shape[0] not in (1, seeds):
        raise ValueError(f"a and b have {a2.shape[0]} and {b2.shape[0]} seeds; give equal counts or one")
    diff = np.broadcast_to(a2, (seeds, a2.shape[1])) - np.broadcast_to(b2, (seeds, b2.shape[1]))
    n = diff.shape[1]
    if n == 0:
        raise ValueError("no queries to compare")
    rng = np.random.default_rng(seed)
    replicates = np.empty(n_boot)
    for r in range(n_boot):
        rows = rng.integers(0, seeds, size=seeds) if seeds > 1 else np.zeros(1, dtype=np.int64)
        cols = rng.integers(0, n, size=n)
        replicates[r] = diff[rows][:, cols].mean()
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    return Interval(float(diff.mean()), float(low), float(high), level)


def reciprocal_ranks(ranks: np.ndarray) -> np.ndarray:
    """Per-query reciprocal rank in percent (its mean is the MRR of :mod:`csp.metrics`)."""
    return 100.0 / np.asarray(ranks, dtype=np.float64)


def top_k_hits(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-query top-k hit in percent, 100 or 0 (its mean is the top-k accuracy)."""
    return 100.0 * (np.asarray(ranks) <= k)
