"""Small generated data sets for trainer tests (never used by the shipped path).

* ``pairs``: locations uniform on the sphere with "image features" that are a fixed random
  non-linear function of the location plus noise, so a location encoder can learn to match them.
* ``write_species_csv``: presence-only observations of a few species, each living around its
  own centre, in the column layout of ``assets/data/yfcc_inat2017_species.csv``.
* ``small_pretrain_config``: the CSP-MC-BLD preset shrunk to a model and run that train in
  seconds, on a chosen device.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from csp.samplers import sample_sphere
from train.config import PretrainConfig, load_config

SPECIES_CENTRES = {  # (lon, lat)
    "Alpha borealis": (-100.0, 50.0),
    "Beta australis": (135.0, -25.0),
    "Gamma africana": (25.0, 0.0),
    "Delta europaea": (10.0, 48.0),
    "Epsilon andina": (-65.0, -15.0),
    "Zeta sinensis": (110.0, 30.0),
}


def pairs(n: int = 2048, feature_dim: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, 2)`` degrees and ``(n, feature_dim)`` features that depend on the location."""
    generator = torch.Generator().manual_seed(seed)
    lonlat = sample_sphere(n, generator=generator)
    rad = torch.deg2rad(lonlat)
    basis = torch.cat([torch.sin(rad * k) for k in (1, 2, 3)] + [torch.cos(rad * k) for k in (1, 2, 3)], 1)
    mixing = torch.randn(basis.shape[1], feature_dim, generator=generator)
    features = torch.tanh(basis @ mixing) + 0.05 * torch.randn(n, feature_dim, generator=generator)
    return lonlat, features


def write_species_csv(path: Path, per_species: int = 60, spread_deg: float = 8.0, seed: int = 0) -> Path:
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for name, (lon, lat) in SPECIES_CENTRES.items():
        offsets = torch.randn(per_species, 2, generator=generator) * spread_deg
        for i, (dx, dy) in enumerate(offsets.tolist()):
            rows.append(
                [
                    f"{name[:3]}{i}",
                    name,
                    round(max(-89.0, min(89.0, lat + dy)), 4),
                    round(((lon + dx + 180) % 360) - 180, 4),
                ]
            )
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["yfcc_id", "label", "latitude", "longitude"])
        writer.writerows(rows)
    return path


def small_pretrain_config(
    out: str | Path, device: str = "cpu", extra: tuple[str, ...] | list[str] = ()
) -> PretrainConfig:
    """A small CSP-MC-BLD pre-training config writing to ``out`` (``extra``: more overrides)."""
    small = [
        "model.encoding_kwargs={frequency_num: 8}",
        "model.hidden_dim=64",
        "model.embed_dim=32",
        "optim.epochs=2",
        "optim.batch_size=128",
        "runtime.progress=false",
        f"runtime.device={device}",
    ]
    return load_config(PretrainConfig, "csp-mc-bld", [*small, f"runtime.out_dir={out}", *extra])
