"""Simple location-prior baselines that every results table carries, on the same split.

Each baseline is a *scorer*: ``scorer(lonlat (b, 2) degrees) -> (b, C)`` scores where a higher
score means a more likely class at that place (only the order matters for top-k and MRR).

* :class:`ClassFrequency`: the number of training observations of each class, everywhere.
* :class:`SphericalKDE`: per-species kernel density on the sphere with a von Mises-Fisher
  kernel on great-circle distance; the score is the log posterior
  ``log n_s + log p(x | s)`` (class frequency times density, up to a shared constant).
* :class:`KNNVote`: votes of the k nearest training observations (any class).

Hyper-parameters (bandwidth, k) are chosen on the validation split with
:func:`select_on_validation`, never on test. All work is blocked over queries and vectorised
with torch, on the device of the training points; see ``bench/bench_kde.py`` for speed.

The von Mises-Fisher kernel with bandwidth ``h`` km has concentration
``kappa = 1 / (h / R)^2`` (R the Earth radius), so near its centre it is a Gaussian of standard
deviation ``h`` km along the surface::

    K_h(x, mu) = kappa / (2 pi (1 - exp(-2 kappa))) * exp(kappa * (<x, mu> - 1))   (per steradian)

and it integrates to 1 over the unit sphere. The density of species s mixes its kernel density
with a small uniform background so that no class's density is exactly zero far from its points:
``p(x | s) = (1 - eps) * mean_i K_h(x, x_i) + eps / (4 pi)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from csp.covariates import LANDCOVER_CLASSES, LANDCOVER_RES_DEG, LandCover
from csp.geo import km_to_radians, unit_vectors
from csp.metrics import rank_summary, true_class_ranks

Scorer = Callable[[Tensor], Tensor]
"""``(b, 2)`` (lon, lat) degrees -> ``(b, C)`` class scores (higher = more likely)."""

DEFAULT_BLOCK = 256


def _as_tensor(values: np.ndarray | Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    if isinstance(values, Tensor):
        return values.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(values), device=device, dtype=dtype)


def _class_counts(labels: Tensor, num_classes: int) -> Tensor:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    return torch.bincount(labels, minlength=num_classes)


class ClassFrequency:
    """Score = number of training observations of the class, at every location.

    Args:
        labels: ``(T,)`` training labels.
        num_classes: C.
    """

    def __init__(
        self, labels: np.ndarray | Tensor, num_classes: int, device: str | torch.device = "cpu"
    ) -> None:
        self.device = torch.device(device)
        self.counts = _class_counts(_as_tensor(labels, self.device, torch.int64), num_classes).double()

    def __call__(self, lonlat: Tensor) -> Tensor:
        return self.counts.expand(lonlat.shape[0], -1)


def vmf_log_normaliser(kappa: float) -> float:
    """``log(kappa / (2 pi (1 - exp(-2 kappa))))``: log of the vMF kernel's peak density on S^2."""
    return math.log(kappa) - math.log(2 * math.pi) - math.log1p(-math.exp(-2 * kappa))


def bandwidth_to_kappa(bandwidth_km: float) -> float:
    """vMF concentration whose kernel has standard deviation ``bandwidth_km`` along the surface."""
    if not bandwidth_km > 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth_km} km")
    return 1.0 / km_to_radians(bandwidth_km) ** 2


class SphericalKDE:
    """Per-species von Mises-Fisher kernel density (see the module docstring).

    Args:
        lonlat: ``(T, 2)`` training locations, degrees.
        labels: ``(T,)`` training labels in ``[0, C)``.
        num_classes: C.
        bandwidth_km: kernel standard deviation along the surface, km.
        background: weight ``eps`` of the uniform density mixed into every class.
        device: where the computation runs (float64).
    """

    def __init__(
        self,
        lonlat: np.ndarray | Tensor,
        labels: np.ndarray | Tensor,
        num_classes: int,
        bandwidth_km: float,
        background: float = 1e-3,
        device: str | torch.device = "cpu",
    ) -> None:
        if not 0 < background < 1:
            raise ValueError(f"background weight must be in (0, 1), got {background}")
        self.device = torch.device(device)
        self.num_classes = num_classes
        self.bandwidth_km = float(bandwidth_km)
        self.background = float(background)
        self.kappa = bandwidth_to_kappa(bandwidth_km)
        self.xyz = unit_vectors(_as_tensor(lonlat, self.device, torch.float64))
        self.labels = _as_tensor(labels, self.device, torch.int64)
        self.counts = _class_counts(self.labels, num_classes).double()

    def log_density(self, lonlat: Tensor) -> Tensor:
        """``log p(x | s)`` per steradian: ``(b, 2)`` degrees -> ``(b, C)`` float64.

        A class without training points has the background density only.
        """
        query = unit_vectors(_as_tensor(lonlat, self.device, torch.float64))
        exponent = torch.mm(query * self.kappa, self.xyz.T)  # (b, T): kappa <x, x_i>
        # One shift per query (its nearest point) instead of one per class: a class whose sum
        # underflows after the shift lies > 80 nats below the nearest point's kernel, far below
        # the uniform background it is mixed with, so the result is unchanged.
        shift = exponent.amax(dim=1, keepdim=True)
        kernels = exponent.sub_(shift).float().exp_()  # in (0, 1]; float32 sums keep ~7 digits
        total = torch.zeros(query.shape[0], self.num_classes, dtype=torch.float32, device=self.device)
        total.index_add_(1, self.labels, kernels)
        log_mean = (shift - self.kappa) + torch.log(total.double()) - torch.log(self.counts.clamp_min(1.0))
        log_kde = log_mean + vmf_log_normaliser(self.kappa) + math.log1p(-self.background)
        log_uniform = math.log(self.background / (4 * math.pi))
        return torch.logaddexp(log_kde, torch.full_like(log_kde, log_uniform))

    def __call__(self, lonlat: Tensor) -> Tensor:
        """Log posterior up to a constant, ``log n_s + log p(x | s)``: ``(b, C)`` float64."""
        return torch.log(self.counts.clamp_min(1e-12)) + self.log_density(lonlat)


class KNNVote:
    """Votes of the ``k`` training observations nearest on the sphere (any class).

    Score = number of votes + ``n_s / (2 max_s n_s)``: classes with equal votes are ordered
    by training frequency (the tie-break never outweighs one vote).

    Args:
        lonlat: ``(T, 2)`` training locations, degrees.
        labels: ``(T,)`` training labels.
        num_classes: C.
        k: neighbours (capped at T).
    """

    def __init__(
        self,
        lonlat: np.ndarray | Tensor,
        labels: np.ndarray | Tensor,
        num_classes: int,
        k: int,
        device: str | torch.device = "cpu",
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.device = torch.device(device)
        self.num_classes = num_classes
        self.xyz = unit_vectors(_as_tensor(lonlat, self.device, torch.float64))
        self.labels = _as_tensor(labels, self.device, torch.int64)
        self.k = min(int(k), len(self.labels))
        counts = _class_counts(self.labels, num_classes).double()
        self.tie_break = counts / (2.0 * counts.max().clamp_min(1.0))

    def __call__(self, lonlat: Tensor) -> Tensor:
        query = unit_vectors(_as_tensor(lonlat, self.device, torch.float64))
        nearest = (query @ self.xyz.T).topk(self.k, dim=1).indices  # (b, k), largest dot = nearest
        votes = torch.zeros(query.shape[0], self.num_classes, dtype=torch.float64, device=self.device)
        votes.scatter_add_(1, self.labels[nearest], torch.ones_like(nearest, dtype=torch.float64))
        return votes + self.tie_break


def scorer_ranks(
    scorer: Scorer, lonlat: np.ndarray | Tensor, labels: np.ndarray | Tensor, block_size: int = DEFAULT_BLOCK
) -> Tensor:
    """Rank of the true class (1 = best, ties count against) for each query: ``(N,)`` int64.

    ``lonlat (N, 2)`` degrees and ``labels (N,)`` are scored in blocks of ``block_size``.
    """
    lonlat_t = torch.as_tensor(np.asarray(lonlat) if not isinstance(lonlat, Tensor) else lonlat)
    labels_t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels).long()
    if len(lonlat_t) == 0:
        raise ValueError("no queries to rank")
    ranks = []
    for start in range(0, len(lonlat_t), block_size):
        scores = scorer(lonlat_t[start : start + block_size])
        ranks.append(true_class_ranks(scores, labels_t[start : start + block_size].to(scores.device)).cpu())
    return torch.cat(ranks)


@dataclass(frozen=True)
class Selection:
    """A hyper-parameter chosen on validation: the value, its validation MRR, and every
    candidate's validation MRR (``{value: mrr}``)."""

    value: float
    val_mrr: float
    tried: dict[float, float]


def select_on_validation(
    make: Callable[[float], Scorer],
    candidates: Sequence[float],
    val_lonlat: np.ndarray | Tensor,
    val_labels: np.ndarray | Tensor,
    block_size: int = DEFAULT_BLOCK,
) -> Selection:
    """The candidate whose scorer ``make(value)`` has the best validation MRR (first on ties)."""
    if not candidates:
        raise ValueError("no candidates to select from")
    tried = {
        float(value): rank_summary(scorer_ranks(make(value), val_lonlat, val_labels, block_size))["mrr"]
        for value in candidates
    }
    best = max(tried, key=lambda v: (tried[v], -list(tried).index(v)))
    return Selection(best, tried[best], tried)


KDE_BANDWIDTHS_KM = (10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0)
KNN_KS = (1, 3, 10, 30, 50, 100, 300)


class HabitatRatio:
    """How much more likely each species is in the land cover around ``x`` than species overall.

    With ``q(x)`` the MODIS land-cover class shares in the ``scale_deg`` block around ``x``
    (:class:`csp.covariates.LandCover`; ``scale_deg = 0.05`` is the one-hot class of the cell),
    ``g`` their mean over all training points and ``p_s`` the smoothed mean over species s's
    points, ``p_s = (sum_{i in s} q(x_i) + alpha g) / (n_s + alpha)``, the score is::

        log sum_c q(x)_c p_s[c] / g[c]      (0 for a species whose habitat mix is average)

    a naive-Bayes habitat term that :class:`csp.prior.LocationPrior` adds to the KDE.

    Args:
        lonlat, labels, num_classes: the training observations, as for :class:`SphericalKDE`.
        scale_deg: 0.05 (the cell's class) or a share scale of :class:`csp.covariates.LandCover`.
        smoothing: ``alpha``, pseudo-observations of the average habitat mix per species.
    """

    def __init__(
        self,
        lonlat: np.ndarray | Tensor,
        labels: np.ndarray | Tensor,
        num_classes: int,
        scale_deg: float = 2.0,
        smoothing: float = 2.0,
        device: str | torch.device = "cpu",
    ) -> None:
        if smoothing <= 0:
            raise ValueError(f"smoothing must be positive, got {smoothing}")
        self.device = torch.device(device)
        self.scale_deg = float(scale_deg)
        self.onehot = abs(self.scale_deg - LANDCOVER_RES_DEG) < 1e-9
        self.landcover = LandCover(() if self.onehot else (self.scale_deg,)).to(self.device)
        labels_t = _as_tensor(labels, self.device, torch.int64)
        q = self.features(_as_tensor(lonlat, self.device, torch.float64))
        overall = q.mean(0) + 1e-4
        self.overall = overall / overall.sum()
        counts = _class_counts(labels_t, num_classes).double()
        sums = torch.zeros(num_classes, q.shape[1], dtype=torch.float64, device=self.device).index_add_(
            0, labels_t, q
        )
        per_species = (sums + smoothing * self.overall) / (counts[:, None] + smoothing)
        self.weights = (per_species / self.overall).T.contiguous()  # (K, C)

    def features(self, lonlat: Tensor) -> Tensor:
        """``(b, 2)`` degrees -> ``(b, 17)`` land-cover shares (or one-hot), float64."""
        features = self.landcover(lonlat.to(self.device, torch.float64))
        return features[:, :LANDCOVER_CLASSES] if self.onehot else features[:, LANDCOVER_CLASSES:]

    def __call__(self, lonlat: Tensor) -> Tensor:
        return torch.log(self.features(lonlat) @ self.weights)


def standard_baselines(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    device: str | torch.device = "cpu",
) -> dict[str, tuple[Scorer, str]]:
    """The baselines every table carries, their settings chosen on ``val``.

    Args:
        train: ``(lonlat (T, 2) degrees, labels (T,))`` training observations.
        val: ``(lonlat (V, 2), labels (V,))`` validation observations.
        num_classes: C.

    Returns:
        ``{name: (scorer, chosen setting as text)}`` for class frequency, the spherical KDE
        (bandwidth from :data:`KDE_BANDWIDTHS_KM`) and kNN voting (k from :data:`KNN_KS`).
    """
    lonlat, labels = train
    kde = select_on_validation(
        lambda h: SphericalKDE(lonlat, labels, num_classes, h, device=device), KDE_BANDWIDTHS_KM, *val
    )
    knn = select_on_validation(
        lambda k: KNNVote(lonlat, labels, num_classes, int(k), device=device), KNN_KS, *val
    )
    return {
        "class frequency": (ClassFrequency(labels, num_classes, device=device), "training counts"),
        "KDE": (
            SphericalKDE(lonlat, labels, num_classes, kde.value, device=device),
            f"bandwidth {kde.value:g} km",
        ),
        "kNN": (KNNVote(lonlat, labels, num_classes, int(knn.value), device=device), f"k = {int(knn.value)}"),
    }
