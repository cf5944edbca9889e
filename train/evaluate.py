"""Evaluate a fine-tuned checkpoint on its split of the observations it was trained on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from csp.baselines import scorer_ranks, standard_baselines
from csp.calibration import calibrated_probabilities, expected_calibration_error, fit_temperature, nll
from csp.checkpoint import CheckpointError, CheckpointMeta, load_checkpoint
from csp.fusion import FusionParams
from csp.hub import ASSETS_DIR
from csp.metrics import evaluate_prior, rank_summary
from csp.models import LocationEncoder
from csp.prior import LocationPrior
from csp.stats import paired_bootstrap, reciprocal_ranks, top_k_hits
from train.config import DataConfig
from train.data import SpeciesSplits, load_species


def shipped_equivalent(path: str) -> str:
    """``path`` as recorded by a build in another checkout: kept when it exists here; else, when
    it names a file inside an ``assets`` folder (``.../assets/data/x.csv``) that is shipped
    here, the shipped file (:data:`csp.hub.ASSETS_DIR`). A checkpoint records absolute paths."""
    recorded = Path(path)
    if recorded.exists() or "assets" not in recorded.parts[:-1]:
        return path
    parts = recorded.parts
    inside = parts[len(parts) - 1 - parts[::-1].index("assets") + 1 :]
    here = ASSETS_DIR.joinpath(*inside)
    return str(here) if here.exists() else path


def checkpoint_data_config(meta: CheckpointMeta) -> DataConfig:
    """The data configuration a checkpoint was trained with.

    Checkpoints written before the leak-free split existed have no ``split`` field; they were
    split by observation, so that is what they get (their test split stays theirs). Shipped
    files recorded by another checkout are found here (:func:`shipped_equivalent`).
    """
    data_dict = dict(meta.train.get("config", {}).get("data", {}))
    if not data_dict:
        return DataConfig()
    data_dict.setdefault("split", "observation")
    for name in DataConfig.PATH_FIELDS:
        if data_dict.get(name):
            data_dict[name] = shipped_equivalent(data_dict[name])
    return DataConfig(**data_dict)


def evaluate_checkpoint(
    checkpoint: str | Path,
    split: str = "test",
    csv: str | None = None,
    device: str = "cpu",
    image_probs: str | Path | None = None,
    baselines: bool = False,
    image_class_prior: str = "balanced",
) -> dict[str, Any]:
    """Location-only (and geo-aware) top-1/3/5 and MRR on ``split`` of the checkpoint's data.

    ``baselines``: add ``"comparison"``, the calibrated prior (``prior.json`` next to the
    checkpoint, see :mod:`csp.prior`), the network alone and the standard baselines on the
    same split and classes (:func:`compare_with_baselines`).

    The data configuration (CSV, cleaning, split seed and fractions) is read from the
    checkpoint, so the test split is exactly the one held out during training.
    ``image_probs``: a ``.npy`` of image-classifier probabilities p(y | I), shape
    ``(points in the split, C)``, rows in the split's order and columns in the checkpoint's
    class order; adds image-only and geo-aware metrics (the calibrated prior fused with the
    image by :func:`csp.fusion.fuse_all_linked`, the rule the predictor applies, with the
    shipped :class:`csp.fusion.FusionParams` for an image model trained under
    ``image_class_prior``: ``"balanced"`` classes, as ImageNet, or the prior's ``"frequency"``).
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
    prior = LocationPrior.load(checkpoint, model)
    fusion = FusionParams(image_class_prior=image_class_prior)
    results = evaluate_on_split(model, splits, split, device, image_probs, prior, fusion)
    out = {"checkpoint": str(checkpoint), "split": split, "points": len(getattr(splits, split)), **results}
    if baselines:
        out["comparison"] = compare_with_baselines(prior, splits, split)
    return out


def evaluate_on_split(
    model: LocationEncoder | str | Path,
    splits: SpeciesSplits,
    split: str = "test",
    device: str = "cpu",
    image_probs: str | Path | None = None,
    prior: LocationPrior | None = None,
    fusion: FusionParams | None = None,
) -> dict[str, dict[str, float]]:
    """:func:`csp.metrics.evaluate_prior` of a prior (a model or a checkpoint directory) on one
    split (``train``/``val``/``test``) of ``splits``: the one place a checkpoint is scored on
    the held-out observations. ``results["location"]`` holds top-1/3/5 and MRR (%).
    ``prior``: the normalised prior the geo-aware metrics fuse (default the network alone);
    ``fusion``: the rule's parameters (default :class:`csp.fusion.FusionParams`)."""
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
    return evaluate_prior(model.to(device), lonlat, labels, probs, prior=prior, fusion=fusion)


def _nll_ece(prior: LocationPrior, lonlat: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    z = torch.cat([prior.log_scores(lonlat[i : i + 512]) for i in range(0, len(lonlat), 512)])
    t = prior.settings.temperature
    return nll(z, labels, t), expected_calibration_error(calibrated_probabilities(z, t), labels)


def compare_with_baselines(
    prior: LocationPrior, splits: SpeciesSplits, split: str = "test", seed: int = 0
) -> dict[str, Any]:
    """The prior, the network alone and the standard baselines on one split, in one table.

    Every method is fitted on the training split and tuned on the validation split only
    (baselines: :func:`csp.baselines.standard_baselines`; the network alone gets its own
    temperature fitted on validation). Rows carry top-1 / top-5 / MRR (%), NLL and ECE where
    the method gives probabilities, and the paired bootstrap 95 % interval of its MRR and top-5
    difference to the strongest baseline (by MRR on this split).

    Returns:
        ``{"split", "points", "classes", "strongest_baseline", "rows": [...]}``.
    """
    records = splits.records
    part = {name: getattr(splits, name) for name in ("train", "val", split)}
    if len(part["val"]) == 0 or len(part[split]) == 0:
        raise ValueError("comparing with baselines needs validation and evaluation observations")
    train = (records.lonlat[part["train"]], records.labels[part["train"]])
    val = (records.lonlat[part["val"]], records.labels[part["val"]])
    lonlat = torch.from_numpy(records.lonlat[part[split]])
    labels = torch.from_numpy(records.labels[part[split]])
    classes = prior.num_classes
    network = LocationPrior(prior.encoder)
    val_x, val_y = torch.from_numpy(val[0]), torch.from_numpy(val[1])
    network.settings.temperature = fit_temperature(
        torch.cat([network.log_scores(val_x[i : i + 512]) for i in range(0, len(val_x), 512)]), val_y
    )
    rows: list[dict[str, Any]] = []
    for name, method in (("prior", prior), ("network alone", network)):
        nll_value, ece = _nll_ece(method, lonlat, labels)
        rows.append(
            {
                "name": name,
                "setting": method.settings.describe(),
                "ranks": scorer_ranks(method.log_scores, lonlat, labels),
                "nll": nll_value,
                "ece": ece,
            }
        )
    for name, (scorer, setting) in standard_baselines(train, val, classes).items():
        rows.append({"name": name, "setting": setting, "ranks": scorer_ranks(scorer, lonlat, labels)})
    baselines = rows[2:]
    strongest = max(baselines, key=lambda row: float(reciprocal_ranks(row["ranks"].numpy()).mean()))
    reference = strongest["ranks"].numpy()
    for row in rows:
        ranks = row.pop("ranks").numpy()
        row.update(rank_summary(torch.from_numpy(ranks)))
        if row is not strongest:
            mrr = paired_bootstrap(reciprocal_ranks(ranks), reciprocal_ranks(reference), seed=seed)
            top5 = paired_bootstrap(top_k_hits(ranks, 5), top_k_hits(reference, 5), seed=seed)
            row["delta_mrr"] = [mrr.difference, mrr.low, mrr.high]
            row["delta_top5"] = [top5.difference, top5.low, top5.high]
    return {
        "split": split,
        "points": len(labels),
        "classes": classes,
        "strongest_baseline": strongest["name"],
        "rows": rows,
    }


def format_comparison(comparison: dict[str, Any]) -> str:
    """The comparison as a Markdown table (figures in %, NLL in nats)."""
    ref = comparison["strongest_baseline"]

    def interval(values: list[float] | None) -> str:
        return f"{values[0]:+.2f} [{values[1]:+.2f}, {values[2]:+.2f}]" if values else "(reference)"

    lines = [
        f"{comparison['split']} split: {comparison['points']:,} observations, "
        f"{comparison['classes']:,} classes; Δ: paired bootstrap 95 % interval against the "
        f"strongest baseline ({ref}).",
        "",
        "| method | setting (chosen on val) | top-1 | top-5 | MRR | "
        f"Δ MRR vs {ref} | Δ top-5 vs {ref} | NLL | ECE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in comparison["rows"]:
        nll_text = f"{row['nll']:.3f}" if "nll" in row else ""
        ece_text = f"{row['ece']:.2f}" if "ece" in row else ""
        lines.append(
            f"| {row['name']} | {row['setting']} | {row['top1']:.2f} | {row['top5']:.2f} | "
            f"{row['mrr']:.2f} | {interval(row.get('delta_mrr'))} | {interval(row.get('delta_top5'))} | "
            f"{nll_text} | {ece_text} |"
        )
    return "\n".join(lines)
