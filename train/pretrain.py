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
from csp.samplers import LocationSampler, sample_sphere
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


class PretrainTask:
    """Pre-training task for :func:`train.engine.fit`.

    ``lonlat (N, 2)`` degrees and ``features (N, F)`` (any float dtype; float16 for a store's
    memory map). With ``stream`` the training rows stay where they are and each batch reads its
    own (:class:`train.batches.BatchRows`); otherwise they are moved to the device as float32.
    The validation pairs (at most ``MAX_VALIDATION_PAIRS``) are always held on the device.
    """

    def __init__(
        self,
        config: PretrainConfig,
        lonlat: Tensor,
        features: Tensor,
        device: torch.device,
        session: Distributed,
        stream: bool = False,
        sampler: LocationSampler = sample_sphere,
    ) -> None:
        order = np.random.default_rng(config.runtime.seed).permutation(len(lonlat))
        n_val = min(MAX_VALIDATION_PAIRS, int(len(lonlat) * config.val_fraction))
        val, train = torch.from_numpy(order[:n_val]), torch.from_numpy(order[n_val:])
        columns = {"lonlat": lonlat, "features": features}
        validation = BatchRows(columns, device, stream=False, rows=val)
        self.config = config
        self.val_lonlat, self.val_features = validation.columns["lonlat"], validation.columns["features"]
        self.model = LocationImageEncoder(config.model, features.shape[1], config.loss.objective)
        self.model.to(device)
        rows = BatchRows(columns, device, stream=stream, rows=train)
        self.objective = CSPObjective(self.model, config.loss, rows, session, sampler)
        self.num_items = len(train)
        self.num_pairs = len(lonlat)

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
    config: PretrainConfig, resume: bool = False, pairs: tuple[Tensor, Tensor] | None = None
) -> FitResult:
    """Pre-train from ``config``; the run directory is ``config.runtime.out_dir``.

    ``pairs`` = (locations ``(N, 2)`` degrees, image features ``(N, F)``) replaces reading
    ``config.features``. ``config.runtime.stream`` (None: when reading ``config.features``)
    reads each batch's rows from the host tensors (the store's float16 memory map) instead of
    copying all features to the device.
    """
    stream = config.runtime.stream if config.runtime.stream is not None else pairs is None
    lonlat, features = pairs if pairs is not None else load_pairs(config, random_access=stream)
    return run_task(
        config,
        lambda device, session: PretrainTask(config, lonlat, features, device, session, stream),
        resume,
    )
