"""Batched ranking metrics and the location-prior / geo-aware evaluation.

The rank of the true class is ``#{k : score_k >= score_true}``: ties count against it (a model
that gives every class the same score ranks the true class last, not first). Computed by
comparison, without sorting: O(N C) and on the device. The comparisons are written as float32
0/1 into a buffer and summed (exact below 2**24 classes): on a CPU that is about three times
faster than counting a boolean tensor, which PyTorch first casts to an integer copy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from csp.fusion import FusionParams, fuse_all_linked
from csp.models import LocationEncoder

if TYPE_CHECKING:
    from csp.prior import LocationPrior

DEFAULT_KS = (1, 3, 5)


EXACT_FLOAT_COUNT = 2**24  # float32 sums of 0/1 are exact integers below this
POINTS_PER_PRODUCT = 2**22  # class scores per block's matrix product: b = this / C points
SCORES_IN_CACHE = 2**19  # scores per pass of the ranking (2 MiB of float32: two cores' L2)


def true_class_ranks(scores: Tensor, labels: Tensor) -> Tensor:
    """``scores (N, C)``, ``labels (N,)`` int64 -> ``(N,)`` int64 ranks, 1 = best, ties last.

    ``scores`` may be any strided view (a transposed product is read in place)."""
    true_score = scores.gather(1, labels[:, None])
    if scores.shape[1] >= EXACT_FLOAT_COUNT:
        return (scores >= true_score).sum(dim=1).long()
    hits = torch.empty_like(scores, dtype=torch.float32)  # in the layout of scores
    return torch.ge(scores, true_score, out=hits).sum(dim=1).long()


def rank_summary(ranks: Tensor, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
    """Top-k accuracies and MRR in percent from ``(N,)`` ranks."""
    if ranks.numel() == 0:
        raise ValueError("no ranks to summarise")
    ranks = ranks.double()
    summary = {f"top{k}": float((ranks <= k).double().mean() * 100) for k in ks}
    summary["mrr"] = float((1.0 / ranks).mean() * 100)
    return summary


@torch.inference_mode()
def evaluate_prior(
    encoder: LocationEncoder,
    lonlat: Tensor,
    labels: Tensor,
    image_probs: Tensor | None = None,
    has_location: Tensor | None = None,
    block_size: int | None = None,
    ks: tuple[int, ...] = DEFAULT_KS,
    prior: LocationPrior | None = None,
    class_frequency: np.ndarray | Tensor | None = None,
    fusion: FusionParams | None = None,
) -> dict[str, dict[str, float]]:
    """Location-only and (optionally) geo-aware ranking metrics.

    Args:
        encoder: location encoder with a class head of C classes (switched to eval mode).
        lonlat: ``(N, 2)`` degrees, on the encoder's device.
        labels: ``(N,)`` int64 true classes.
        image_probs: ``(N, C)`` image-classifier probabilities p(y | I) (optional).
        has_location: ``(N,)`` bool; where False the geo-aware score falls back to p(y | I).
        block_size: points per block; default ``POINTS_PER_PRODUCT / C`` (256 to 2,048).
        prior: the normalised p(species | x) the geo-aware score fuses (:mod:`csp.prior`) over
            ``encoder``; default the network alone, softmax-normalised.
        class_frequency: ``(C,)`` p(species) for the likelihood ratio; default
            ``prior.class_frequency()``, else uniform.
        fusion: the fusion rule's parameters (default :class:`csp.fusion.FusionParams`).

    The geo-aware score is :func:`csp.fusion.fuse_all_linked` (the rule the predictor applies,
    every class linked to itself), in float64.

    Points go in blocks: a block's embeddings and class logits (computed once, as ``head @
    embeddings.T`` of shape ``(C, b)``: the faster layout for a CPU's matrix product, and
    passed on to the prior instead of encoding the locations again) are ranked in sub-blocks
    small enough for the cache; no ``N x C`` array is ever made.

    Returns:
        ``{"location": {...}}`` plus ``"image"`` and ``"geo_aware"`` when ``image_probs`` is
        given; each maps ``top1``/``top3``/``top5``/``mrr`` to percentages.
    """
    was_training = encoder.training
    encoder.eval()
    if encoder.class_emb is None:
        raise ValueError("evaluate_prior needs a location encoder with a class head")
    if lonlat.shape[0] == 0:
        raise ValueError("no points to evaluate")
    head = encoder.class_emb.weight
    if image_probs is not None:
        if prior is None:
            from csp.prior import LocationPrior

            prior = LocationPrior(encoder)
        if class_frequency is None:
            class_frequency = prior.class_frequency()
        if class_frequency is None:
            class_frequency = np.full(head.shape[0], 1.0 / head.shape[0])
        frequency = torch.as_tensor(class_frequency, dtype=torch.float64, device=head.device)
        params = fusion or FusionParams()
    block = block_size or min(2048, max(256, POINTS_PER_PRODUCT // head.shape[0]))
    step = max(1, SCORES_IN_CACHE // head.shape[0])
    location_ranks, image_ranks, combined_ranks = [], [], []
    for start in range(0, lonlat.shape[0], block):
        logits_t = head @ encoder.embed(lonlat[start : start + block]).T
        for sub in range(0, logits_t.shape[1], step):
            logits = logits_t[:, sub : sub + step].T  # (b', C) view
            first, stop = start + sub, start + sub + logits.shape[0]
            block_labels = labels[first:stop]
            # The sigmoid is monotonic: location-only ranks come straight from the logits.
            location_ranks.append(true_class_ranks(logits, block_labels))
            if image_probs is None:
                continue
            probs = image_probs[first:stop]
            image_rank = true_class_ranks(probs, block_labels)
            own_logits = logits if prior.encoder is encoder else None
            location_prior = prior.probabilities(lonlat[first:stop], network_logits=own_logits)
            fused = fuse_all_linked(probs, location_prior, frequency, params)
            geo_rank = true_class_ranks(fused, block_labels)
            if has_location is not None:
                geo_rank = torch.where(has_location[first:stop], geo_rank, image_rank)
            image_ranks.append(image_rank)
            combined_ranks.append(geo_rank)
    encoder.train(was_training)
    results = {"location": rank_summary(torch.cat(location_ranks), ks)}
    if image_probs is not None:
        results["image"] = rank_summary(torch.cat(image_ranks), ks)
        results["geo_aware"] = rank_summary(torch.cat(combined_ranks), ks)
    return results
