"""Supervised presence-only fine-tuning (or training from scratch: "Sup. only")."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from csp.checkpoint import CheckpointMeta, describe_model, load_checkpoint
from csp.losses import presence_only_loss
from csp.metrics import evaluate_prior
from csp.models import LocationEncoder, LocationImageEncoder
from train.config import FinetuneConfig, to_dict
from train.data import SpeciesSplits, label_fraction_subset, load_species
from train.engine import FitResult, run_task


class PresenceObjective(nn.Module):
    """``forward(indices (b,), random_lonlat (b, K, 2)) -> (loss, terms)``: presence-only loss."""

    def __init__(
        self, model: LocationEncoder, lonlat: Tensor, labels: Tensor, pos_weight: float | None
    ) -> None:
        super().__init__()
        self.model = model
        self.lonlat = lonlat
        self.labels = labels
        self.pos_weight = pos_weight

    def forward(self, indices: Tensor, random_lonlat: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        observed = self.model.class_logits(self.lonlat[indices])
        background = self.model.class_logits(random_lonlat[:, 0])
        loss = presence_only_loss(observed, self.labels[indices], background, self.pos_weight)
        return loss, {}


def init_location_encoder(config: FinetuneConfig, num_classes: int) -> LocationEncoder:
    """A fresh encoder with ``num_classes`` outputs, its body copied from ``init_from`` if set.

    The pre-trained checkpoint's location-encoder configuration wins over ``config.model``
    (the architecture must match the weights); the class head is always new.
    """
    if not config.init_from:
        return LocationEncoder(replace(config.model, num_classes=num_classes))
    pretrained, _ = load_checkpoint(config.init_from)
    source = pretrained.location_encoder if isinstance(pretrained, LocationImageEncoder) else pretrained
    encoder = LocationEncoder(replace(source.config, num_classes=num_classes))
    body = {k: v for k, v in source.state_dict().items() if not k.startswith(("class_emb", "user_emb"))}
    missing, unexpected = encoder.load_state_dict(body, strict=False)
    if unexpected or any(not k.startswith("class_emb") for k in missing):
        raise ValueError(f"{config.init_from}: cannot reuse weights ({missing=}, {unexpected=})")
    if config.freeze_encoder:
        for name, param in encoder.named_parameters():
            param.requires_grad = name.startswith("class_emb")
    return encoder


class FinetuneTask:
    """Fine-tuning task for :func:`train.engine.fit`."""

    def __init__(self, config: FinetuneConfig, splits: SpeciesSplits, device: torch.device) -> None:
        records = splits.records
        labels = records.labels
        train = label_fraction_subset(
            splits.train, labels, config.data.label_fraction, config.data.label_seed
        )
        if len(train) < config.optim.batch_size:
            raise ValueError(
                f"{len(train)} training observations at label fraction "
                f"{config.data.label_fraction}, fewer than one batch of {config.optim.batch_size}"
            )
        self.config = config
        self.splits = splits
        self.model = init_location_encoder(config, len(splits.class_names)).to(device)
        lonlat = torch.from_numpy(records.lonlat).to(device)
        all_labels = torch.from_numpy(labels).to(device)
        train_t = torch.from_numpy(train).to(device)
        self.objective = PresenceObjective(
            self.model, lonlat[train_t], all_labels[train_t], config.pos_weight
        )
        val = torch.from_numpy(splits.val).to(device)
        self.val_lonlat, self.val_labels = lonlat[val], all_labels[val]
        self.num_items = len(train)
        self.num_random_locations = 1
        self.epochs_validated = 0
        self.train_size = len(train)
        self.train_classes = int(np.unique(labels[train]).size)

    def validate(self) -> dict[str, float]:
        """Validation MRR; with no validation observations (every class too small to give one
        up), the score is the epoch count, so the last epoch is kept as the best."""
        self.epochs_validated += 1
        if len(self.val_labels) == 0:
            return {"score": float(self.epochs_validated)}
        metrics = evaluate_prior(self.model, self.val_lonlat, self.val_labels)["location"]
        return {"score": metrics["mrr"], **metrics}

    def checkpoint_meta(self, metrics: dict[str, Any]) -> CheckpointMeta:
        return describe_model(
            self.model,
            class_names=self.splits.class_names,
            metrics=metrics,
            train={
                "stage": "finetune",
                "config": to_dict(self.config),
                "data": self.splits.summary(),
                "train_observations": self.train_size,
                "train_classes": self.train_classes,
            },
        )


def run_finetune(
    config: FinetuneConfig, resume: bool = False, splits: SpeciesSplits | None = None
) -> FitResult:
    """Fine-tune from ``config`` (``splits`` may be passed to reuse a loaded split; the data is
    read inside the run, so unreadable data is recorded as the run's failure)."""
    return run_task(
        config, lambda device, _: FinetuneTask(config, splits or load_species(config.data), device), resume
    )
