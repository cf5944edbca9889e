"""CSP objectives (self-supervised) and the supervised presence-only loss.

Self-supervised pre-training reads a :class:`PretrainBatch`, which has locations and frozen image
features and, by construction, no label field: the objective cannot see labels.

Notation (B = batch size, E = embedding size, F = image-feature size, K = random negative
locations per sample):

* ``loc = e(x)`` ``(B, E)``, ``img = W f(I)`` ``(B, E)``, ``s_ij = <loc_i, img_j> / tau``.
* **B** (in-batch, MC): ``L_B = CE(s, diag)``: for each location the matching image among the
  batch's images; ``symmetric`` averages it with the image -> location direction
  (``symmetric_reduction="sum"`` adds the two, as the reference code's ``contsoftmaxsym``).
* **L** (random locations): ``L_L = -log softmax([s_ii, <e(x'_i1), img_i>/tau, ...])_0``: for each
  image, its own location against K locations drawn uniformly on the sphere. With
  ``num_nearby_locations = k`` the last k of them are hard negatives near x_i instead
  (:func:`nearby_locations`, at most ``nearby_km`` away).
* **D** (SimCSE): two dropout views ``loc^1, loc^2`` of the same locations;
  ``L_D = CE(<loc^1_i, loc^2_j> / tau_D, diag)``.
* **NCE**: the binary logistic version of each term: ``-log sig(s_ii) - mean_j!=i log sig(-s_ij)``
  for B and D, ``-log sig(s_ii) - mean_k log sig(-s_ik')`` for L, averaged over the batch.
* **MSE**: ``|| dec(e(x)) - f(I) ||^2`` averaged over batch and features.

``total = w_B L_B + w_L L_L + w_D L_D`` (MC), with each weight 0 switching a term off.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from csp.geo import km_to_radians, unit_vectors
from csp.models import OBJECTIVES, LocationImageEncoder

Gather = Callable[[Tensor], Tensor]
"""Concatenates a tensor over all processes along dim 0, keeping gradients (identity alone)."""


def _identity(x: Tensor) -> Tensor:
    return x


@dataclass(frozen=True)
class PretrainBatch:
    """One pre-training batch: locations ``(B, 2)`` degrees and frozen image features ``(B, F)``.

    There is deliberately no label field.
    """

    lonlat: Tensor
    image_features: Tensor


@dataclass
class CSPLossConfig:
    """Weights and temperatures of the CSP objective.

    ``objective``: ``mc`` (InfoNCE), ``nce`` (binary logistic) or ``mse``.
    ``num_random_locations``: K negatives per sample for the L term (0: off).
    ``temperature`` (B term), ``random_location_temperature`` (L term; None: same as B) and
    ``simcse_temperature`` (D term) divide the logits of their term.
    ``normalize``: L2-normalise the embeddings before the dot products (cosine similarity, as
    the CSP reference code does). Off by default: raw dot products with temperature 1.
    ``symmetric_reduction``: how ``symmetric`` combines the two directions of the B term,
    ``mean`` (ours) or ``sum`` (the reference code's ``contsoftmaxsym``).
    ``num_nearby_locations``: of the K random locations, how many (the last ones) are moved
    next to the sample's own location (:func:`nearby_locations`, within ``nearby_km`` km):
    hard negatives that teach the map to tell places a few hundred km apart (issue 16). 0: off.
    """

    objective: str = "mc"
    in_batch_weight: float = 1.0
    random_location_weight: float = 1.0
    num_random_locations: int = 1
    simcse_weight: float = 1.0
    temperature: float = 1.0
    random_location_temperature: float | None = None
    simcse_temperature: float = 1.0
    symmetric: bool = False
    symmetric_reduction: str = "mean"
    normalize: bool = False
    num_nearby_locations: int = 0
    nearby_km: float = 500.0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; choose one of {OBJECTIVES}")
        temperatures = (self.temperature, self.simcse_temperature, self.random_location_temperature)
        if any(t is not None and t <= 0 for t in temperatures):
            raise ValueError("temperatures must be positive")
        if self.num_random_locations < 0:
            raise ValueError("num_random_locations must be >= 0")
        if self.symmetric_reduction not in ("mean", "sum"):
            raise ValueError(f"symmetric_reduction must be 'mean' or 'sum', got {self.symmetric_reduction!r}")
        if not 0 <= self.num_nearby_locations <= self.num_random_locations:
            raise ValueError(f"num_nearby_locations must be in [0, num_random_locations="
                             f"{self.num_random_locations}], got {self.num_nearby_locations}")
        if self.nearby_km <= 0:
            raise ValueError(f"nearby_km must be positive, got {self.nearby_km}")

    @property
    def uses_random_locations(self) -> bool:
        return self.objective != "mse" and self.num_random_locations > 0 and self.random_location_weight > 0

    @property
    def uses_simcse(self) -> bool:
        return self.objective != "mse" and self.simcse_weight > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def info_nce(
    queries: Tensor, keys: Tensor, temperature: float, symmetric: bool = False, reduction: str = "mean"
) -> Tensor:
    """InfoNCE with the diagonal as target.

    Args:
        queries: ``(N, E)``; keys: ``(N, E)``, row i of each is a positive pair.
        temperature: tau > 0.
        symmetric: also the key->query direction, combined by ``reduction``: ``mean`` of the
            two or their ``sum`` (the reference code's ``contsoftmaxsym``).

    Returns:
        scalar loss.
    """
    logits = queries @ keys.T / temperature
    target = torch.arange(logits.shape[0], device=logits.device)
    loss = F.cross_entropy(logits, target)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if symmetric:
        loss = loss + F.cross_entropy(logits.T, target)
        if reduction == "mean":
            loss = 0.5 * loss
    return loss


def nearby_locations(lonlat: Tensor, random_lonlat: Tensor, max_km: float) -> Tensor:
    """Hard negative locations near each sample, from its random ones.

    Each random location r_ik sets a direction and a distance: the result lies on the great
    circle from x_i towards r_ik, at the angle ``theta(x_i, r_ik) * max_km / (pi R)`` (R the
    earth's radius), so at most ``max_km`` km from x_i. For r uniform on the sphere the
    direction is uniform and the distance d has density ``(pi / 2 max_km) sin(pi d / max_km)``
    on ``[0, max_km]`` (mean ``max_km / 2``; few negatives land on the positive itself).

    Args:
        lonlat: ``(B, 2)`` the samples' locations, degrees.
        random_lonlat: ``(B, k, 2)`` random locations, degrees (uniform on the sphere).
        max_km: the largest distance, km.

    Returns:
        ``(B, k, 2)`` (lon, lat) degrees.
    """
    x = unit_vectors(lonlat)[:, None, :]
    r = unit_vectors(random_lonlat)
    cos_theta = (x * r).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    alpha = torch.acos(cos_theta) * (km_to_radians(max_km) / math.pi)
    toward = F.normalize(r - cos_theta * x, dim=-1)  # unit tangent at x towards r
    point = F.normalize(torch.cos(alpha) * x + torch.sin(alpha) * toward, dim=-1)
    lon = torch.rad2deg(torch.atan2(point[..., 1], point[..., 0]))
    lat = torch.rad2deg(torch.asin(point[..., 2].clamp(-1.0, 1.0)))
    return torch.stack([lon, lat], dim=-1)


def random_location_loss(positive: Tensor, negatives: Tensor) -> Tensor:
    """Softmax loss of each positive against its own negatives.

    Args:
        positive: ``(B,)`` logits of the true pairs.
        negatives: ``(B, K)`` logits of the same image against K random locations.
    """
    logits = torch.cat([positive[:, None], negatives], dim=1)
    return -F.log_softmax(logits, dim=1)[:, 0].mean()


def binary_nce(positive: Tensor, negatives: Tensor) -> Tensor:
    """``mean_i [-log sig(pos_i) - mean_k log sig(-neg_ik)]``; positive ``(B,)``, negatives ``(B, K)``."""
    return (-F.logsigmoid(positive) - F.logsigmoid(-negatives).mean(dim=1)).mean()


def in_batch_binary_nce(queries: Tensor, keys: Tensor, temperature: float) -> Tensor:
    """:func:`binary_nce` with the diagonal of ``queries @ keys.T / tau`` as positives and the
    off-diagonal entries of each row as negatives; ``(N, E)`` each. No boolean indexing, so no
    host synchronisation on a GPU."""
    logits = queries @ keys.T / temperature
    n = logits.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=logits.device)
    negative_term = F.logsigmoid(-logits).masked_fill(eye, 0.0).sum(dim=1) / max(n - 1, 1)
    return (-F.logsigmoid(logits.diagonal()) - negative_term).mean()


def _maybe_normalize(x: Tensor, normalize: bool) -> Tensor:
    return F.normalize(x, dim=-1) if normalize else x


def csp_loss(
    model: LocationImageEncoder,
    batch: PretrainBatch,
    config: CSPLossConfig,
    random_lonlat: Tensor | None = None,
    gather: Gather = _identity,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The CSP pre-training objective on one batch.

    Args:
        model: location-image model (its objective must match ``config.objective``).
        batch: this process's ``(B, 2)`` locations and ``(B, F)`` frozen image features.
        config: weights and temperatures.
        random_lonlat: ``(B, K, 2)`` random negative locations in degrees (needed when
            ``config.uses_random_locations``); with ``config.num_nearby_locations = k`` the
            last k are replaced by :func:`nearby_locations` of the batch's own.
        gather: all-gather with gradients across processes for the in-batch terms; with
            ``torch.distributed`` this makes B negatives come from the global batch.

    Returns:
        ``(total, terms)``: scalar loss and its detached terms by name (no host sync).
    """
    if model.objective != config.objective:
        raise ValueError(f"model objective {model.objective!r} != loss objective {config.objective!r}")
    terms: dict[str, Tensor] = {}
    if config.objective == "mse":
        total = F.mse_loss(model.decode_locations(model.encode_locations(batch.lonlat)), batch.image_features)
        terms["mse"] = total.detach()
        return total, terms
    if config.uses_random_locations and random_lonlat is None:
        raise ValueError("random_lonlat (B, K, 2) is required for the random-location term")

    # One pass of the location network over [x, x again (SimCSE view), random locations]:
    # larger matrix products, and each row still gets its own dropout mask.
    size = batch.lonlat.shape[0]
    parts = [batch.lonlat]
    if config.uses_simcse:
        parts.append(batch.lonlat)
    if config.uses_random_locations:
        k = config.num_nearby_locations
        if k > 0:
            near = nearby_locations(batch.lonlat, random_lonlat[:, -k:], config.nearby_km)
            random_lonlat = torch.cat([random_lonlat[:, :-k], near], dim=1)
        parts.append(random_lonlat.reshape(-1, 2))
    encoded = _maybe_normalize(model.encode_locations(torch.cat(parts)), config.normalize)
    loc = encoded[:size]
    view = encoded[size : 2 * size] if config.uses_simcse else None
    img = _maybe_normalize(model.encode_images(batch.image_features), config.normalize)
    tau = config.temperature
    tau_random = config.random_location_temperature or tau
    positive = (loc * img).sum(-1) / tau_random
    negatives = None
    if config.uses_random_locations:
        neg_loc = encoded[size * len(parts[:-1]) :].view(size, -1, loc.shape[-1])
        negatives = torch.einsum("bke,be->bk", neg_loc, img) / tau_random

    # MC uses softmax (InfoNCE) terms, NCE their binary logistic counterparts.
    contrast = info_nce if config.objective == "mc" else in_batch_binary_nce
    against_random = random_location_loss if config.objective == "mc" else binary_nce
    total = loc.new_zeros(())
    global_loc = gather(loc)
    if config.in_batch_weight > 0:
        if config.objective == "mc":
            terms["in_batch"] = info_nce(
                global_loc, gather(img), tau, config.symmetric, config.symmetric_reduction
            )
        else:
            terms["in_batch"] = contrast(global_loc, gather(img), tau)
        total = total + config.in_batch_weight * terms["in_batch"]
    if negatives is not None:
        terms["random_location"] = against_random(positive, negatives)
        total = total + config.random_location_weight * terms["random_location"]
    if view is not None:
        terms["simcse"] = contrast(global_loc, gather(view), config.simcse_temperature)
        total = total + config.simcse_weight * terms["simcse"]
    return total, {name: value.detach() for name, value in terms.items()}


def presence_only_loss(
    logits: Tensor, labels: Tensor, random_logits: Tensor, pos_weight: float | None = None
) -> Tensor:
    """Supervised presence-only loss ("full" loss of GeoPrior / SINR).

    ``mean_{i,k}[ -log(1 - sig(l_ik)) for k != y_i, -pos_weight log sig(l_iy_i) for k = y_i ]
    + mean_{i,k}[ -log(1 - sig(r_ik)) ]``.

    Args:
        logits: ``(B, C)`` class logits at the observed locations.
        labels: ``(B,)`` int64 class indices.
        random_logits: ``(B', C)`` class logits at random locations (absences).
        pos_weight: weight of the positive term; default C (the number of classes).

    Returns:
        scalar loss.
    """
    num_classes = logits.shape[1]
    weight = float(num_classes) if pos_weight is None else pos_weight
    # -log(1 - sig(l)) = softplus(l); -log sig(l) = softplus(-l).
    negative_term = F.softplus(logits)
    positive_logit = logits.gather(1, labels[:, None]).squeeze(1)
    correction = weight * F.softplus(-positive_logit) - F.softplus(positive_logit)
    observed = (negative_term.sum() + correction.sum()) / logits.numel()
    return observed + F.softplus(random_logits).mean()


def sampled_presence_only_loss(
    embeddings: Tensor,
    labels: Tensor,
    random_embeddings: Tensor,
    head: Tensor,
    num_sampled: int,
    generator: torch.Generator | None = None,
    pos_weight: float | None = None,
) -> Tensor:
    """:func:`presence_only_loss` estimated from ``num_sampled`` classes, for very many classes.

    The negative terms sum ``softplus`` over all C classes; here they sum it over S classes
    drawn uniformly with replacement (shared by the batch) and scale by C / S, an unbiased
    estimate of the full sum. The positive term of each observation uses its own class's
    logit exactly. Cost per step O((B + B') S E) instead of O((B + B') C E).

    Args:
        embeddings: ``(B, E)`` location embeddings at the observed locations.
        labels: ``(B,)`` int64 class indices.
        random_embeddings: ``(B', E)`` embeddings at random locations (absences).
        head: ``(C, E)`` class-head weights (logit = embedding @ head.T, no bias).
        num_sampled: S > 0 classes per step.
        generator: draws the classes (on ``head``'s device).
        pos_weight: weight of the positive term; default C.

    Returns:
        scalar loss; its expectation over the draw equals :func:`presence_only_loss`.
    """
    if num_sampled <= 0:
        raise ValueError(f"num_sampled must be positive, got {num_sampled}")
    num_classes = head.shape[0]
    weight = float(num_classes) if pos_weight is None else pos_weight
    classes = torch.randint(0, num_classes, (num_sampled,), generator=generator, device=head.device)
    sampled = head[classes]  # (S, E)
    positive_logit = (embeddings * head[labels]).sum(-1)
    correction = weight * F.softplus(-positive_logit) - F.softplus(positive_logit)
    # mean over (B, S) of softplus = (C / S) * sum / (B C): the scaled estimate of the full mean.
    observed = F.softplus(embeddings @ sampled.T).mean() + correction.sum() / (labels.numel() * num_classes)
    return observed + F.softplus(random_embeddings @ sampled.T).mean()
