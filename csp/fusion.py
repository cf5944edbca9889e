"""Geo-aware fusion of image-classifier probabilities with a location prior.

The rule
--------
For one photo ``I`` taken at ``x`` (lon, lat in degrees), with

* ``p(y | I)``: the image classifier's probabilities over its ``K`` classes, calibrated with a
  temperature ``T``: ``p_T(y | I) ∝ p(y | I) ** (1 / T)`` (``T = 1`` keeps them as they are);
* ``p(s | x)``: the location prior, normalised over the ``C`` species of the prior (rows sum
  to 1), read at a fusion temperature ``T_p``: ``p_Tp(s | x) ∝ p(s | x) ** (1 / T_p)`` over the
  ``C`` species (``T_p = 1`` keeps the prior as calibrated; the calibration fits ``p(s | x)``
  by its likelihood over all species, and the fusion needs it sharp enough to separate sister
  species, so ``T_p`` is fitted on the fusion's own validation protocol);
* ``p(s)``: the species' overall frequency in the prior's training data (sums to 1);
* a link ``s(y)`` from some image classes ``y`` (the *linked group* ``G``) to species,

Bayes' rule with the image and the location independent given the class gives
``p(y | I, x) ∝ p(y | I) · p(x | y) · π(y) / π_I(y)``, where ``π_I`` is the class distribution
the image classifier was trained under and ``π`` that of the photos being classified, taken to
be the prior's own ``p(s)`` (photos like the observations the prior learnt from). With
``p(x | y) ∝ p(y | x) / p(y)`` the prior enters through one ratio, chosen by
``image_class_prior``:

* ``"balanced"`` (the default; ImageNet-1k, 732-1,300 training images per class): ``π_I`` is
  uniform, the frequencies cancel and ``r(y, x) = C · p_Tp(s(y) | x)``, the species' prior
  there against a uniform guess over the ``C`` species. A common species gains over a rare
  sister, as it should when the image model never learnt that it is common.
* ``"frequency"`` (an image model trained on the prior's own class mix): ``π_I = p`` and
  ``r(y, x) = p_Tp(s(y) | x) / p(s(y))``, how much more (or less) common the species is at
  ``x`` than on average.

The latter, the *range ratio*, read at its own temperature, is what :mod:`csp.captive` uses to
call a species far outside its range, whatever the image model
(:func:`csp.captive.range_ratio`). The fused scores are

    w(y, x)        = clip(r(y, x), r_min, r_max) ** a(I)                       (y in G)
    q(y | I, x)    = M · p_T(y | I) · w(y, x) / sum_{y' in G} p_T(y' | I) · w(y', x)   (y in G)
    q(y | I, x)    = p_T(y | I)                                                 (y not in G)

with ``M = sum_{y in G} p_T(y | I)`` the image mass of the linked group and the exponent

    a(I) = alpha                                         if max_y p_T(y | I) < c
    a(I) = min(alpha, log(rho_c) / log(r_max / r_min))   otherwise (a confident image)

for the confidence ``c`` = :data:`CONFIDENT` (0.8). ``alpha <= 1`` tempers the prior (a
fitted prior is over-confident about rare species far from their few records); the clip is
the floor and the ceiling of the ratio, so the prior alone never drives a class to
zero (``w >= r_min ** a > 0``); ``rho_c`` (``confident_range``) is the largest factor the prior
may put between two linked classes when the image is confident.

Unlinked classes
    The prior knows nothing about classes without a species, so their probabilities stay
    exactly as the image classifier gave them and the linked group keeps its total mass
    ``M``: Bayes' rule is applied *within* the group, under the assumption that the location
    says nothing about whether the photo shows a linked species at all
    (``p(G | I, x) = p(G | I)``). Re-ranking therefore only ever moves linked classes among
    themselves and relative to unlinked ones through their share of ``M``.

The confidence guarantee
    For a confident image the weights lie within a factor ``rho_c`` of each other, and
    :class:`FusionParams` refuses ``rho_c >= c / (1 - c)`` (``rho_c < 4``). Then a class with
    ``p_T >= c`` stays first: against a linked class ``b`` (``p_T(b) <= 1 - c``) ``q(a) / q(b)
    >= (c / (1 - c)) / rho_c > 1``; against an unlinked class ``b``, ``q(a) >= M c / (c + (M -
    c) rho_c) > 1 - M >= q(b)``. The prior alone can re-order the runners-up of a confident
    image and any class of an unsure one, and it can never replace a confident image class.
    (The exponent steps down at ``p = c``: an image at 0.79 gets the full prior, one at 0.80
    the guarded one; this is the rule, not a smoothing artefact.)

Captive or wild is decided elsewhere (:mod:`csp.captive`); this module only applies the rule.
:func:`fuse` takes NumPy arrays: image probabilities ``(N, K)``, prior ``(N, C)``, frequencies
``(C,)``. :func:`fuse_all_linked` is the same rule on torch tensors for the case where every
class is linked to the prior class of the same index (``K = C``, so ``M = 1``): the geo-aware
evaluation of :func:`csp.metrics.evaluate_prior`, on the tensors' device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

CONFIDENT = 0.8
"""Image probability from which a class can never be replaced by the prior alone."""

IMAGE_CLASS_PRIORS = ("balanced", "frequency")
"""Class distributions an image classifier can have been trained under (module docstring)."""


@dataclass(frozen=True)
class FusionParams:
    """Parameters of the fusion rule (see the module docstring).

    Attributes:
        alpha: tempering exponent of the ratio ``r``, in [0, 1] (0: ignore the prior).
        ratio_min: floor of the ratio ``r`` (module docstring), > 0.
        ratio_max: ceiling of the ratio ``r``, >= ratio_min.
        confident_range: ``rho_c``, the largest factor between two linked classes' weights
            when the image is confident; in [1, c / (1 - c)) = [1, 4).
        image_temperature: temperature T applied to the image probabilities, > 0.
        prior_temperature: temperature ``T_p`` applied to the normalised prior before the
            likelihood ratio, > 0 (< 1 sharpens it).
        image_class_prior: the class distribution the image classifier was trained under,
            one of :data:`IMAGE_CLASS_PRIORS`: ``"balanced"`` (ImageNet-1k, the shipped image
            model) or ``"frequency"`` (the prior's own class frequencies); it decides the ratio
            ``r`` of the module docstring. Not fitted: it is a fact about the image model.

    ``alpha``, ``ratio_min``, ``ratio_max`` and ``prior_temperature`` were fitted by
    ``python -m train experiment geoaware`` on the validation protocol of :mod:`train.geoaware`
    (simulated two-way confusions at real validation observations; the README section
    "Geo-aware classification" has the figures). ``confident_range`` is not fitted: no simulated
    two-way case depends on it (a confident image can be neither fixed nor broken), so it is
    set halfway below the limit of 4. ``image_temperature`` is not fitted either: no
    labelled photos are available offline, so the image model's own softmax is used (T = 1).
    """

    alpha: float = 1.0  # fitted on validation (grid 0.25 .. 1)
    ratio_min: float = 0.05  # fitted (grid 1e-3 .. 1)
    ratio_max: float = 1000.0  # fitted (grid 2 .. 1e4)
    confident_range: float = 2.0
    image_temperature: float = 1.0
    prior_temperature: float = 1.0  # fitted (grid 0.125 .. 1)
    image_class_prior: str = "balanced"

    def __post_init__(self) -> None:
        if self.image_class_prior not in IMAGE_CLASS_PRIORS:
            raise ValueError(
                f"FusionParams.image_class_prior must be one of {', '.join(IMAGE_CLASS_PRIORS)}, "
                f"got {self.image_class_prior!r}"
            )
        if not (math.isfinite(self.alpha) and 0.0 <= self.alpha <= 1.0):
            raise ValueError(f"FusionParams.alpha must be in [0, 1], got {self.alpha}")
        if not (math.isfinite(self.ratio_min) and self.ratio_min > 0):
            raise ValueError(f"FusionParams.ratio_min must be > 0, got {self.ratio_min}")
        if not (math.isfinite(self.ratio_max) and self.ratio_max >= self.ratio_min):
            raise ValueError(
                f"FusionParams.ratio_max must be >= ratio_min ({self.ratio_min}), got {self.ratio_max}"
            )
        for name in ("image_temperature", "prior_temperature"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"FusionParams.{name} must be > 0, got {value}")
        limit = CONFIDENT / (1.0 - CONFIDENT)
        range_ok = math.isfinite(self.confident_range) and 1.0 <= self.confident_range
        if not range_ok or self.confident_range >= limit * (1.0 - 1e-9):  # 0.8 / 0.2 rounds above 4
            raise ValueError(
                f"FusionParams.confident_range must be in [1, {limit:g}), got {self.confident_range}: "
                f"at {limit:g} or more the prior alone could replace an image class of p >= {CONFIDENT}"
            )

    @property
    def dynamic_range(self) -> float:
        """The largest factor the prior can put between two linked classes (unsure image)."""
        return (self.ratio_max / self.ratio_min) ** self.alpha

    @property
    def confident_alpha(self) -> float:
        """The exponent used when the image is confident (see the module docstring)."""
        span = math.log(self.ratio_max / self.ratio_min)
        return self.alpha if span == 0 else min(self.alpha, math.log(self.confident_range) / span)

    def exponent(self, top_prob: np.ndarray | float) -> np.ndarray:
        """``a(I)`` for the top image probability of each photo (same shape)."""
        return np.where(np.asarray(top_prob) >= CONFIDENT, self.confident_alpha, self.alpha)

    @property
    def ignores_prior(self) -> bool:
        return self.alpha == 0.0


IMAGE_ONLY = FusionParams(alpha=0.0)
"""Parameters that leave the image probabilities unchanged (the captive mode)."""


@dataclass(frozen=True)
class LinkArrays:
    """The image-class -> species link as two aligned ``(L,)`` int64 arrays."""

    image_index: np.ndarray
    species_index: np.ndarray

    @classmethod
    def from_mapping(cls, link: Mapping[int, int]) -> LinkArrays:
        """From ``{image class index: species index}`` (sorted by image class)."""
        items = sorted(link.items())
        return cls(
            np.array([i for i, _ in items], dtype=np.int64),
            np.array([s for _, s in items], dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.image_index)


@dataclass(frozen=True)
class Fused:
    """Result of :func:`fuse` for ``N`` photos, ``K`` image classes, ``L`` linked classes.

    Attributes:
        probs: ``(N, K)`` fused probabilities q(y | I, x) (rows sum to the calibrated mass, 1).
        image_probs: ``(N, K)`` calibrated image probabilities p_T(y | I).
        weight: ``(N, L)`` the tempered, clipped ratio ``r`` w(y, x) of each linked class,
            before renormalisation.
        factor: ``(N, L)`` q / p_T of each linked class (the factor the prior applied, after
            the group was renormalised; 1 where p_T is 0).
    """

    probs: np.ndarray
    image_probs: np.ndarray
    weight: np.ndarray
    factor: np.ndarray


def frequency_from_counts(counts: np.ndarray | list[int]) -> np.ndarray:
    """``p(s)`` from ``(C,)`` training counts, add-one smoothed so every class is > 0."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError("class counts must be a 1-D array of non-negative numbers")
    return (counts + 1.0) / (counts.sum() + len(counts))


def calibrate(probs: np.ndarray | Tensor, temperature: float) -> np.ndarray | Tensor:
    """``p ** (1 / T)`` renormalised per row (image probabilities over K classes, or the prior
    over C species); ``(N, K)`` or ``(K,)`` float64, shape kept (a torch tensor stays one, on its
    device)."""
    if isinstance(probs, Tensor):
        probs = probs.double()
        if temperature == 1.0:
            return probs / probs.sum(dim=-1, keepdim=True)
        logits = probs.clamp_min(1e-300).log() / temperature
        return torch.softmax(logits, dim=-1)
    probs = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0:
        return probs / probs.sum(axis=-1, keepdims=True)
    logits = np.log(np.clip(probs, 1e-300, None)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=-1, keepdims=True)


def checked_frequency(class_frequency: np.ndarray, classes: int) -> np.ndarray:
    """``(C,)`` float64 p(s), or a one-line error when it has the wrong shape or a value <= 0."""
    frequency = np.asarray(class_frequency, dtype=np.float64)
    if frequency.shape != (classes,):
        raise ValueError(f"class_frequency has shape {frequency.shape}, the prior has {classes} classes")
    if not (frequency > 0).all():
        raise ValueError("class_frequency must be > 0 for every class (add-one counts)")
    return frequency


def likelihood_ratio(prior: np.ndarray, class_frequency: np.ndarray) -> np.ndarray:
    """``p(s | x) / p(s)``: ``(N, C)`` normalised prior over ``(C,)`` frequencies -> ``(N, C)``."""
    prior = np.asarray(prior, dtype=np.float64)
    return prior / checked_frequency(class_frequency, prior.shape[-1])


def fusion_ratio(
    tempered: np.ndarray | Tensor, class_frequency: np.ndarray | Tensor, image_class_prior: str
) -> np.ndarray | Tensor:
    """The ratio ``r`` the weights are made of (module docstring), from the ``(N, C)`` prior read
    at the fusion temperature and the ``(C,)`` frequencies: ``p / p(s)`` (``"frequency"``) or
    ``C · p`` (``"balanced"``). NumPy in, NumPy out; torch in, torch out."""
    if image_class_prior == "frequency":
        return tempered / class_frequency
    return tempered * tempered.shape[-1]


def prior_weight(
    ratio: np.ndarray | Tensor, params: FusionParams, top_prob: np.ndarray | Tensor | float
) -> np.ndarray | Tensor:
    """``clip(ratio, r_min, r_max) ** a(I)``; ``top_prob`` broadcasts against ``ratio``
    (``(N, 1)`` against ``(N, L)``, or a number). A torch ``ratio`` gives a tensor on its device."""
    if isinstance(ratio, Tensor):
        top = torch.as_tensor(top_prob, device=ratio.device)
        exponent = torch.full(top.shape, params.alpha, dtype=ratio.dtype, device=ratio.device)
        exponent = exponent.masked_fill_(top >= CONFIDENT, params.confident_alpha)
        return ratio.clamp(params.ratio_min, params.ratio_max) ** exponent
    return np.clip(ratio, params.ratio_min, params.ratio_max) ** params.exponent(top_prob)


def fuse(
    image_probs: np.ndarray,
    prior: np.ndarray,
    class_frequency: np.ndarray,
    link: LinkArrays,
    params: FusionParams,
) -> Fused:
    """Apply the fusion rule of the module docstring.

    Args:
        image_probs: ``(N, K)`` (or ``(K,)``) image probabilities p(y | I), rows sum to 1.
        prior: ``(N, C)`` (or ``(C,)``) normalised location prior p(s | x), rows sum to 1.
        class_frequency: ``(C,)`` p(s), > 0.
        link: linked image classes and their species (``L`` pairs).
        params: the rule's parameters.

    Returns:
        :class:`Fused` with ``(N, ...)`` arrays (a leading axis of 1 for 1-D inputs).
    """
    probs = calibrate(np.atleast_2d(image_probs), params.image_temperature)
    prior = np.atleast_2d(np.asarray(prior, dtype=np.float64))
    if prior.shape[0] != probs.shape[0]:
        raise ValueError(f"{probs.shape[0]} image rows but {prior.shape[0]} prior rows")
    n = probs.shape[0]
    frequency = checked_frequency(class_frequency, prior.shape[-1])
    ratio = fusion_ratio(calibrate(prior, params.prior_temperature), frequency, params.image_class_prior)
    weight = prior_weight(ratio[:, link.species_index], params, probs.max(axis=1, keepdims=True))
    fused = probs.copy()
    factor = np.ones((n, len(link)))
    if len(link) and not params.ignores_prior:
        group = probs[:, link.image_index]
        mass = group.sum(axis=1, keepdims=True)
        weighted = group * weight
        total = weighted.sum(axis=1, keepdims=True)
        ok = (mass[:, 0] > 0) & (total[:, 0] > 0)
        new = np.where(ok[:, None], weighted / np.where(total > 0, total, 1.0) * mass, group)
        fused[:, link.image_index] = new
        factor = np.where(group > 0, new / np.where(group > 0, group, 1.0), 1.0)
    return Fused(fused, probs, weight, factor)


def fuse_all_linked(
    image_probs: Tensor, prior: Tensor, class_frequency: Tensor, params: FusionParams
) -> Tensor:
    """:func:`fuse` when image class ``y`` is linked to prior class ``y`` for every ``y``
    (``K = C``, the linked group is everything, ``M = 1``), on torch tensors.

    Args:
        image_probs: ``(N, C)`` image probabilities p(y | I).
        prior: ``(N, C)`` normalised location prior p(s | x).
        class_frequency: ``(C,)`` p(s), > 0.
        params: the rule's parameters.

    Returns:
        ``(N, C)`` float64 q(y | I, x), rows summing to 1, on the inputs' device.
    """
    probs = calibrate(image_probs, params.image_temperature)
    if params.ignores_prior:
        return probs
    if class_frequency.shape != prior.shape[-1:] or not bool((class_frequency > 0).all()):
        raise ValueError(f"class_frequency must be {prior.shape[-1]} positive numbers, one per class")
    frequency = class_frequency.to(prior.device, torch.float64)
    ratio = fusion_ratio(calibrate(prior, params.prior_temperature), frequency, params.image_class_prior)
    weighted = probs * prior_weight(ratio, params, probs.max(dim=1, keepdim=True).values)
    return weighted / weighted.sum(dim=1, keepdim=True)
