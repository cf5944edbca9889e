"""Supervised presence-only fine-tuning (or training from scratch: "Sup. only")."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from csp.checkpoint import CheckpointMeta, describe_model, load_checkpoint
from csp.losses import presence_only_loss, sampled_presence_only_loss
from csp.metrics import evaluate_prior
from csp.models import LocationEncoder, LocationImageEncoder
from csp.samplers import LocationSampler, sample_sphere
from train.batches import BatchRows, negative_locations
from train.config import FinetuneConfig, to_dict
from train.data import SpeciesSplits, label_fraction_subset, load_species
from train.engine import FitResult, run_task
from train.runtime import Distributed


class PresenceObjective(nn.Module):
    """``forward(indices (b,), generator) -> (loss, terms)``: presence-only loss of one batch.

    Reads the batch's locations and labels from ``rows`` (columns ``lonlat``, ``labels``) and
    draws ``b`` background locations from ``sampler`` (uniform on the sphere by default; a
    land or region sampler restricts the pseudo-absences). ``sampled_classes`` > 0 scores that
    many random classes per step instead of all (:func:`csp.losses.sampled_presence_only_loss`).
    """

    def __init__(
        self,
        model: LocationEncoder,
        rows: BatchRows,
        pos_weight: float | None,
        session: Distributed,
        sampler: LocationSampler = sample_sphere,
        sampled_classes: int = 0,
    ) -> None:
        super().__init__()
        self.model = model
        self.rows = rows
        self.pos_weight = pos_weight
        self.session = session
        self.sampler = sampler
        self.sampled_classes = sampled_classes

    def forward(self, indices: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        data = self.rows.take(indices)
        background_lonlat = negative_locations(
            self.sampler, len(indices), 1, generator, self.session, data["lonlat"].device
        )[:, 0]
        if self.sampled_classes:
            loss = sampled_presence_only_loss(
                self.model.embed(data["lonlat"]),
                data["labels"],
                self.model.embed(background_lonlat),
                self.model.class_emb.weight,
                self.sampled_classes,
                generator,
                self.pos_weight,
            )
        else:
            observed = self.model.class_logits(data["lonlat"])
            background = self.model.class_logits(background_lonlat)
            loss = presence_only_loss(observed, data["labels"], background, self.pos_weight)
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

    def __init__(
        self, config: FinetuneConfig, splits: SpeciesSplits, device: torch.device, session: Distributed
    ) -> None:
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
        columns = {"lonlat": torch.from_numpy(records.lonlat), "labels": torch.from_numpy(labels)}
        rows = BatchRows(columns, device, stream=bool(config.runtime.stream), rows=torch.from_numpy(train))
        self.objective = PresenceObjective(
            self.model, rows, config.pos_weight, session, sampled_classes=config.sampled_classes
        )
        validation = BatchRows(columns, device, stream=False, rows=torch.from_numpy(splits.val))
        self.val_lonlat, self.val_labels = validation.columns["lonlat"], validation.columns["labels"]
        self.num_items = len(train)
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
        config,
        lambda device, session: FinetuneTask(config, splits or load_species(config.data), device, session),
        resume,
    )
