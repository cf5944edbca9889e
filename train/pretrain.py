"""CSP self-supervised pre-training: (location, frozen image feature) pairs, no labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from csp.checkpoint import CheckpointMeta, describe_model
from csp.losses import CSPLossConfig, PretrainBatch, csp_loss
from csp.metrics import rank_summary, true_class_ranks
from csp.models import LocationImageEncoder
from csp.samplers import LocationSampler, background_region, sample_sphere
from train.batches import BatchRows, negative_locations
from train.config import PretrainConfig, to_dict
from train.data import load_pairs
from train.engine import FitResult, run_task
from train.runtime import Distributed

MAX_VALIDATION_PAIRS = 2000


class CSPObjective(nn.Module):
    """``forward(indices (b,), generator) -> (loss, terms)``: the CSP loss of one batch.

    Reads the batch's locations ``(b, 2)`` and frozen image features ``(b, F)`` from ``rows``
    (columns ``lonlat`` and ``features``; no labels exist here) and draws the batch's
    ``(b, K, 2)`` random negative locations from ``sampler`` with ``generator``.
    """

    def __init__(
        self,
        model: LocationImageEncoder,
        loss: CSPLossConfig,
        rows: BatchRows,
        session: Distributed,
        sampler: LocationSampler = sample_sphere,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.rows = rows
        self.session = session
        self.sampler = sampler

    def forward(self, indices: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        data = self.rows.take(indices)
        batch = PretrainBatch(lonlat=data["lonlat"], image_features=data["features"])
        negatives = None
        if self.loss.uses_random_locations:
            negatives = negative_locations(
                self.sampler, len(indices), self.loss.num_random_locations, generator,
                self.session, batch.lonlat.device,
            )
        return csp_loss(self.model, batch, self.loss, negatives, gather=self.session.all_gather)


@torch.inference_mode()
def retrieval_metrics(
    model: LocationImageEncoder, lonlat: Tensor, features: Tensor, normalize: bool = False
) -> dict[str, float]:
    """Image -> location retrieval among held-out pairs: rank of each image's own location.

    Scores are the training objective's similarities (cosine if ``normalize``); for ``mse``
    the decoded location embeddings are compared with the image features instead.
    """
    was_training = model.training
    model.eval()
    locations = model.encode_locations(lonlat)
    if model.objective == "mse":
        scores = -torch.cdist(features, model.decode_locations(locations))
    elif normalize:
        scores = F.normalize(model.encode_images(features), dim=-1) @ F.normalize(locations, dim=-1).T
    else:
        scores = model.encode_images(features) @ locations.T
    model.train(was_training)
    ranks = true_class_ranks(scores, torch.arange(len(lonlat), device=lonlat.device))
    return rank_summary(ranks)


def negative_sampler(spec: str, device: torch.device, lonlat: Tensor, rows: Tensor) -> LocationSampler:
    """The sampler of the L term's random negative locations named by
    :attr:`train.config.PretrainConfig.negative_locations`: ``globe`` (uniform on the sphere),
    ``land`` (uniform by area over land, :func:`train.where.land_mask`), or any
    :func:`csp.samplers.background_region` spec (``extent`` / ``hull`` of the training
    locations, rows ``rows (n,)`` of ``lonlat (N, 2)`` degrees, plus 1 degree; a polygon or a
    points file)."""
    if spec == "globe":
        return sample_sphere
    if spec == "land":
        from train.where import land_mask  # the bundled Natural Earth land raster

        return land_mask().to(device).sample
    return background_region(spec, lonlat[rows].double().numpy())


class PretrainTask:
    """Pre-training task for :func:`train.engine.fit`.

    ``lonlat (N, 2)`` degrees and ``features (N, F)`` (any float dtype; float16 for a store's
    memory map); ``rows``: optional ``(n,)`` int64 indices, the pairs to use (default all N),
    selected without copying the columns. With ``stream`` the training rows stay where they are
    and each batch reads its own (:class:`train.batches.BatchRows`); otherwise they are moved to
    the device as float32. The validation pairs (at most ``MAX_VALIDATION_PAIRS``) are always
    held on the device. ``sampler``: the negative locations' sampler; default the one
    ``config.negative_locations`` names (:func:`negative_sampler`).
    """

    def __init__(
        self,
        config: PretrainConfig,
        lonlat: Tensor,
        features: Tensor,
        device: torch.device,
        session: Distributed,
        stream: bool = False,
        sampler: LocationSampler | None = None,
        rows: Tensor | None = None,
    ) -> None:
        pairs = torch.arange(len(lonlat)) if rows is None else rows.cpu().long()
        order = torch.from_numpy(np.random.default_rng(config.runtime.seed).permutation(len(pairs)))
        n_val = min(MAX_VALIDATION_PAIRS, int(len(pairs) * config.val_fraction))
        val, train = pairs[order[:n_val]], pairs[order[n_val:]]
        columns = {"lonlat": lonlat, "features": features}
        validation = BatchRows(columns, device, stream=False, rows=val)
        self.config = config
        self.val_lonlat, self.val_features = validation.columns["lonlat"], validation.columns["features"]
        self.model = LocationImageEncoder(config.model, features.shape[1], config.loss.objective)
        self.model.to(device)
        rows_of_training = BatchRows(columns, device, stream=stream, rows=train)
        if sampler is None:
            sampler = negative_sampler(config.negative_locations, device, lonlat, train)
        self.objective = CSPObjective(self.model, config.loss, rows_of_training, session, sampler)
        self.num_items = len(train)
        self.num_pairs = len(pairs)

    def validate(self) -> dict[str, float]:
        if len(self.val_lonlat) == 0:
            return {"score": 0.0}
        metrics = retrieval_metrics(
            self.model, self.val_lonlat, self.val_features, self.config.loss.normalize
        )
        return {"score": metrics["mrr"], **{f"retrieval_{k}": v for k, v in metrics.items()}}

    def checkpoint_meta(self, metrics: dict[str, Any]) -> CheckpointMeta:
        return describe_model(
            self.model,
            image_encoder=self.config.image_encoder,
            cosine_similarity=self.config.loss.normalize,
            temperature=self.config.loss.temperature,
            metrics=metrics,
            train={"stage": "pretrain", "config": to_dict(self.config), "pairs": self.num_pairs},
        )


def run_pretrain(
    config: PretrainConfig,
    resume: bool = False,
    pairs: tuple[Tensor, Tensor] | None = None,
    rows: Tensor | None = None,
) -> FitResult:
    """Pre-train from ``config``; the run directory is ``config.runtime.out_dir``.

    ``pairs`` = (locations ``(N, 2)`` degrees, image features ``(N, F)``) replaces reading
    ``config.features``; ``rows``: ``(n,)`` int64 indices of the pairs to train on (e.g.
    :func:`train.data.pairs_away_from_held_out`), default all. ``config.runtime.stream`` (None:
    when reading ``config.features``) reads each batch's rows from the host tensors (the store's
    float16 rows) instead of copying all features to the device.
    """
    stream = config.runtime.stream if config.runtime.stream is not None else pairs is None
    lonlat, features = pairs if pairs is not None else load_pairs(config, random_access=stream)
    return run_task(
        config,
        lambda device, session: PretrainTask(config, lonlat, features, device, session, stream, rows=rows),
        resume,
    )
