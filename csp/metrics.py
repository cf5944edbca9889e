"""Batched ranking metrics and the location-prior / geo-aware evaluation.

The rank of the true class is ``#{k : score_k >= score_true}``: ties count against it (a model
that gives every class the same score ranks the true class last, not first). Computed by
comparison, without sorting: O(N C) and on the device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from csp.models import LocationEncoder

DEFAULT_KS = (1, 3, 5)


def true_class_ranks(scores: Tensor, labels: Tensor) -> Tensor:
    """``scores (N, C)``, ``labels (N,)`` int64 -> ``(N,)`` int64 ranks, 1 = best, ties last."""
    true_score = scores.gather(1, labels[:, None])
    return (scores >= true_score).sum(dim=1, dtype=torch.int32).long()


def rank_summary(ranks: Tensor, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
    """Top-k accuracies and MRR in percent from ``(N,)`` ranks."""
    if ranks.numel() == 0:
        raise ValueError("no ranks to summarise")
    ranks = ranks.double()
    summary = {f"top{k}": float((ranks <= k).double().mean() * 100) for k in ks}
    summary["mrr"] = float((1.0 / ranks).mean() * 100)
    return summary


UNDERFLOW = 1e-30  # below this a float32 product p * sigmoid(l) may have lost its order


def _geo_aware_ranks(logits: Tensor, probs: Tensor, labels: Tensor) -> Tensor:
    """Ranks of ``p(y|I) * sigmoid(logit)``: a fast float32 product, and for rows whose true
    score is so small that other scores may have underflowed to ties with it, the exact
    order in log space, ``log p + log sigmoid(l)``."""
    ranks = true_class_ranks(torch.sigmoid(logits).mul_(probs), labels)
    product = probs.gather(1, labels[:, None]) * torch.sigmoid(logits.gather(1, labels[:, None]))
    tiny = product.squeeze(1) < UNDERFLOW
    if bool(tiny.any()):
        rows = tiny.nonzero().squeeze(1)
        exact = torch.log(probs[rows].clamp_min(torch.finfo(probs.dtype).tiny)) + F.logsigmoid(logits[rows])
        ranks[rows] = true_class_ranks(exact, labels[rows])
    return ranks


@torch.inference_mode()
def evaluate_prior(
    encoder: LocationEncoder,
    lonlat: Tensor,
    labels: Tensor,
    image_probs: Tensor | None = None,
    has_location: Tensor | None = None,
    block_size: int | None = None,
    ks: tuple[int, ...] = DEFAULT_KS,
) -> dict[str, dict[str, float]]:
    """Location-only and (optionally) geo-aware ranking metrics.

    Args:
        encoder: location encoder with a class head of C classes (switched to eval mode).
        lonlat: ``(N, 2)`` degrees, on the encoder's device.
        labels: ``(N,)`` int64 true classes.
        image_probs: ``(N, C)`` image-classifier probabilities p(y | I) (optional).
        has_location: ``(N,)`` bool; where False the geo-aware score falls back to p(y | I).
        block_size: points per block; default about 2**18 / C, so that a block's ``(b, C)``
            scores stay in the CPU cache through the passes over them.

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
    embeddings = encoder.embed(lonlat)
    head = encoder.class_emb.weight
    block = block_size or max(64, 2**18 // head.shape[0])
    location_ranks, image_ranks, combined_ranks = [], [], []
    for start in range(0, lonlat.shape[0], block):
        stop = start + block
        logits = embeddings[start:stop] @ head.T
        block_labels = labels[start:stop]
        # The sigmoid is monotonic: location-only ranks come straight from the logits.
        location_ranks.append(true_class_ranks(logits, block_labels))
        if image_probs is not None:
            probs = image_probs[start:stop]
            image_rank = true_class_ranks(probs, block_labels)
            geo_rank = _geo_aware_ranks(logits, probs, block_labels)
            if has_location is not None:
                geo_rank = torch.where(has_location[start:stop], geo_rank, image_rank)
            image_ranks.append(image_rank)
            combined_ranks.append(geo_rank)
    encoder.train(was_training)
    results = {"location": rank_summary(torch.cat(location_ranks), ks)}
    if image_probs is not None:
        results["image"] = rank_summary(torch.cat(image_ranks), ks)
        results["geo_aware"] = rank_summary(torch.cat(combined_ranks), ks)
    return results
