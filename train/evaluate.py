"""Evaluate a fine-tuned checkpoint on its split of the observations it was trained on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from csp.checkpoint import CheckpointError, CheckpointMeta, load_checkpoint
from csp.metrics import evaluate_prior
from csp.models import LocationEncoder
from train.config import DataConfig
from train.data import SpeciesSplits, load_species


def checkpoint_data_config(meta: CheckpointMeta) -> DataConfig:
    """The data configuration a checkpoint was trained with.

    Checkpoints written before the leak-free split existed have no ``split`` field; they were
    split by observation, so that is what they get (their test split stays theirs).
    """
    data_dict = dict(meta.train.get("config", {}).get("data", {}))
    if not data_dict:
        return DataConfig()
    data_dict.setdefault("split", "observation")
    return DataConfig(**data_dict)


def evaluate_checkpoint(
    checkpoint: str | Path,
    split: str = "test",
    csv: str | None = None,
    device: str = "cpu",
    image_probs: str | Path | None = None,
) -> dict[str, Any]:
    """Location-only (and geo-aware) top-1/3/5 and MRR on ``split`` of the checkpoint's data.

    The data configuration (CSV, cleaning, split seed and fractions) is read from the
    checkpoint, so the test split is exactly the one held out during training.
    ``image_probs``: a ``.npy`` of image-classifier probabilities p(y | I), shape
    ``(points in the split, C)``, rows in the split's order and columns in the checkpoint's
    class order; adds image-only and geo-aware (p(y | I) times the prior) metrics.
    (:func:`csp.metrics.evaluate_prior` also takes a mask of points without a location, which
    fall back to p(y | I); every observation read here has one.)
    """
    model, meta = load_checkpoint(checkpoint, map_location=device)
    if not isinstance(model, LocationEncoder) or model.class_emb is None:
        raise CheckpointError(f"{checkpoint} is not a fine-tuned location prior")
    data = checkpoint_data_config(meta)
    if csv:
        data.csv = csv
    splits = load_species(data)
    if splits.class_names != meta.class_names:
        raise CheckpointError(
            f"{checkpoint} was trained on {len(meta.class_names)} classes; {data.csv} after "
            f"cleaning has {len(splits.class_names)} (different data or cleaning)"
        )
    results = evaluate_on_split(model, splits, split, device, image_probs)
    return {"checkpoint": str(checkpoint), "split": split, "points": len(getattr(splits, split)), **results}


def evaluate_on_split(
    model: LocationEncoder | str | Path,
    splits: SpeciesSplits,
    split: str = "test",
    device: str = "cpu",
    image_probs: str | Path | None = None,
) -> dict[str, dict[str, float]]:
    """:func:`csp.metrics.evaluate_prior` of a prior (a model or a checkpoint directory) on one
    split (``train``/``val``/``test``) of ``splits``: the one place a checkpoint is scored on
    the held-out observations. ``results["location"]`` holds top-1/3/5 and MRR (%)."""
    if not isinstance(model, LocationEncoder):
        model, _ = load_checkpoint(model, map_location=device)
    indices = torch.from_numpy(getattr(splits, split))
    lonlat = torch.from_numpy(splits.records.lonlat)[indices].to(device)
    labels = torch.from_numpy(splits.records.labels)[indices].to(device)
    probs = None
    if image_probs is not None:
        array = np.load(image_probs, allow_pickle=False)
        if array.shape != (len(indices), len(splits.class_names)):
            raise ValueError(
                f"{image_probs}: shape {array.shape}, expected ({len(indices)}, {len(splits.class_names)}) "
                f"for the {split} split"
            )
        probs = torch.from_numpy(array).float().to(device)
    return evaluate_prior(model.to(device), lonlat, labels, probs)
