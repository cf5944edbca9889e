"""Supervised presence-only fine-tuning (or training from scratch: "Sup. only")."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from csp.checkpoint import CheckpointMeta, describe_model, load_checkpoint
from csp.losses import presence_only_loss, sampled_presence_only_loss
from csp.metrics import evaluate_prior
from csp.models import LocationEncoder, LocationEncoderConfig, LocationImageEncoder
from csp.samplers import LocationSampler, background_region, data_extent, sample_sphere
from train.batches import BatchRows, negative_locations
from train.config import FinetuneConfig, to_dict
from train.data import SpeciesSplits, label_fraction_subset, load_species
from train.engine import FitResult, run_task
from train.runtime import Distributed
from train.sites import mean_auc, per_species_auc, presence_scores


class PresenceObjective(nn.Module):
    """``forward(indices (b,), generator) -> (loss, terms)``: presence-only loss of one batch.

    Reads the batch's locations and labels from ``rows`` (columns ``lonlat``, ``labels``) and
    draws ``b`` background locations from ``sampler`` (uniform on the sphere by default; a
    land or region sampler restricts the pseudo-absences, see ``csp.samplers.background_region``).
    ``sampled_classes`` > 0 scores that many random classes per step instead of all
    (:func:`csp.losses.sampled_presence_only_loss`).
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


FIRST_LAYER = "net.0."  # the Linear that reads the position encoding (plain and residual MLPs)


def _describe_encoding(config: LocationEncoderConfig) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in sorted(config.encoding_kwargs.items()))
    return f"{config.encoding}({settings})"


def init_location_encoder(config: FinetuneConfig, num_classes: int) -> LocationEncoder:
    """A fresh encoder with ``num_classes`` outputs, its body copied from ``init_from`` if set.

    ``config.model`` is the architecture (with ``init_from`` it is the checkpoint's unless
    overridden, see :func:`train.config.load_config`). A position encoding that differs from
    the checkpoint's is an error unless ``config.reencode``: then the first layer and the
    encoding's own buffers start fresh and the rest of the body is copied. The class head is
    always new.
    """
    wanted = replace(config.model, num_classes=num_classes, num_users=0)
    encoder = LocationEncoder(wanted)
    if not config.init_from:
        return encoder
    pretrained, _ = load_checkpoint(config.init_from)
    source = pretrained.location_encoder if isinstance(pretrained, LocationImageEncoder) else pretrained
    have = source.config
    reencoding = (have.encoding, have.encoding_kwargs) != (wanted.encoding, wanted.encoding_kwargs)
    if reencoding and not config.reencode:
        raise ValueError(
            f"{config.init_from} was pre-trained with the encoding {_describe_encoding(have)}, "
            f"but the config asks for {_describe_encoding(wanted)}: drop the model.encoding "
            "settings to keep the checkpoint's, or pass --reencode to train a new first layer"
        )
    skip = ("class_emb", "user_emb", *((FIRST_LAYER, "position_encoding.") if reencoding else ()))
    body = {k: v for k, v in source.state_dict().items() if not k.startswith(skip)}
    try:
        missing, unexpected = encoder.load_state_dict(body, strict=False)
    except RuntimeError as err:
        raise ValueError(f"{config.init_from}: the weights do not fit the config ({err})") from None
    if unexpected or any(not k.startswith(skip) for k in missing):
        raise ValueError(f"{config.init_from}: cannot reuse weights ({missing=}, {unexpected=})")
    if config.freeze_encoder:
        trainable = ("class_emb", FIRST_LAYER) if reencoding else ("class_emb",)
        for name, param in encoder.named_parameters():
            param.requires_grad = name.startswith(trainable)
    return encoder


class FinetuneTask:
    """Fine-tuning task for :func:`train.engine.fit` (``config`` resolved by
    :func:`resolve_for_data`)."""

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
        self.metric = validation_metric(config, splits)
        self.model = init_location_encoder(config, len(splits.class_names)).to(device)
        columns = {"lonlat": torch.from_numpy(records.lonlat), "labels": torch.from_numpy(labels)}
        rows = BatchRows(columns, device, stream=bool(config.runtime.stream), rows=torch.from_numpy(train))
        sampler: LocationSampler = sample_sphere
        if config.background != "globe":
            buffer = config.background_buffer_deg
            sampler = background_region(config.background, records.lonlat[train], buffer)
        self.objective = PresenceObjective(
            self.model, rows, config.pos_weight, session, sampler, sampled_classes=config.sampled_classes
        )
        validation = BatchRows(columns, device, stream=False, rows=torch.from_numpy(splits.val))
        self.val_lonlat, self.val_labels = validation.columns["lonlat"], validation.columns["labels"]
        self.num_items = len(train)
        self.epochs_validated = 0
        self.train_size = len(train)
        self.train_classes = int(np.unique(labels[train]).size)

    def validate(self) -> dict[str, float]:
        """Validation metrics: MRR and top-k on held-out presences, mean per-species AUC on
        presence-absence sites. ``score`` is the chosen metric, or the epoch count (so the
        last epoch is kept) with ``select=last`` or when there is nothing to validate on
        (every class too small to give one up)."""
        self.epochs_validated += 1
        metrics: dict[str, float] = {}
        if len(self.val_labels):
            metrics |= evaluate_prior(self.model, self.val_lonlat, self.val_labels)["location"]
        if self.splits.val_sites is not None:
            sites, classes = self.splits.val_sites
            scores = presence_scores(self.model, sites.lonlat, classes)
            metrics["auc"] = mean_auc(per_species_auc(scores, sites))
        if self.metric is None or self.config.select == "last":
            return {"score": float(self.epochs_validated), **metrics}
        return {"score": metrics[self.metric], **metrics}

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


def validation_metric(config: FinetuneConfig, splits: SpeciesSplits) -> str | None:
    """The metric that selects the best epoch (None: nothing to validate on).

    ``auto``: ``auc`` with presence-absence validation sites, else ``mrr``.

    Raises:
        ValueError: the metric asked for cannot be computed from the validation data.
    """
    has_sites, has_presences = splits.val_sites is not None, len(splits.val) > 0
    if config.metric == "auto":
        return "auc" if has_sites else ("mrr" if has_presences else None)
    if config.metric == "auc" and not has_sites:
        raise ValueError("metric auc needs presence-absence validation sites (--val FILE with a 0/1 column)")
    if config.metric != "auc" and not has_presences:
        raise ValueError(f"metric {config.metric} needs held-out validation presences")
    return config.metric


MIN_RADIUS_PER_EXTENT = 1 / 50
"""``scale=auto``: the finest wavelength is this fraction of the data's extent..."""
MIN_RADIUS_RANGE_DEG = (0.01, 1.0)
"""... clipped to this range of degrees (never coarser than the global default of 1 degree)."""


def region_min_radius(lonlat: np.ndarray) -> float:
    """Finest wavelength in degrees for data at ``lonlat (N, 2)``: its extent ``W`` (the larger
    of the box's east-west width times cos(mid latitude) and its north-south height, in
    degrees of arc) times :data:`MIN_RADIUS_PER_EXTENT`, clipped to
    :data:`MIN_RADIUS_RANGE_DEG`. A region 5 degrees wide gets 0.1 degrees (about 11 km)."""
    box = data_extent(lonlat)
    mid = math.radians((box.south + box.north) / 2)
    extent = max(box.width_deg * math.cos(mid), box.north - box.south)
    low, high = MIN_RADIUS_RANGE_DEG
    return float(f"{min(high, max(low, extent * MIN_RADIUS_PER_EXTENT)):.3g}")


def resolve_for_data(config: FinetuneConfig, splits: SpeciesSplits) -> FinetuneConfig:
    """The config with its data-dependent ``auto`` choices made, as the run will record it:
    background (``globe`` for the bundled data, else ``extent``); ``scale`` (a model from
    scratch on your own data with a multi-scale encoding gets ``min_radius`` from
    :func:`region_min_radius`); a batch no larger than the training set."""
    background = config.background
    if background == "auto":
        background = "globe" if config.data.bundled else "extent"
    model = config.model
    multiscale = "min_radius" in model.encoding_kwargs
    if config.scale == "auto" and not config.init_from and not config.data.bundled and multiscale:
        kwargs = dict(model.encoding_kwargs)
        kwargs["min_radius"] = min(
            region_min_radius(splits.records.lonlat[splits.train]), kwargs["max_radius"]
        )
        model = replace(model, encoding_kwargs=kwargs)
    n_train = round(len(splits.train) * config.data.label_fraction)
    optim = config.optim
    if not config.data.bundled and 0 < n_train < optim.batch_size:
        optim = replace(optim, batch_size=n_train)
    metric = validation_metric(config, splits) or config.metric
    return replace(config, background=background, model=model, optim=optim, scale="fixed", metric=metric)


def describe_data(splits: SpeciesSplits) -> str:
    """One line on the data a run trains on and what the cleaning dropped, rule by rule."""
    summary = splits.summary()
    kept = ", ".join(f"{k} {v}" for k, v in summary.items() if not k.startswith("dropped_"))
    dropped = ", ".join(f"{k[len('dropped_') :]} {v}" for k, v in summary.items() if k.startswith("dropped_"))
    return f"data: {kept}; dropped: {dropped or 'nothing'}"


def run_finetune(
    config: FinetuneConfig, resume: bool = False, splits: SpeciesSplits | None = None
) -> FitResult:
    """Fine-tune from ``config`` (``splits`` may be passed to reuse a loaded split).

    The data is read first, to make the config's data-dependent choices
    (:func:`resolve_for_data`) before the run directory records it; if reading fails the
    error is raised inside the run, so it is recorded as the run's failure.
    """
    try:
        splits = splits or load_species(config.data)
        config = resolve_for_data(config, splits)
    except Exception as err:  # noqa: BLE001 - re-raised inside the run below
        failure: Exception | None = err
    else:
        failure = None
        if int(os.environ.get("RANK", 0)) == 0:
            print(describe_data(splits), file=sys.stderr)

    def make_task(device: torch.device, session: Distributed) -> FinetuneTask:
        if failure is not None:
            raise failure
        return FinetuneTask(config, splits, device, session)

    return run_task(config, make_task, resume)
