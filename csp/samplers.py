"""Samplers: random locations on the sphere (optionally on land) and batch indices.

Uniform by area: ``lon = 360 u - 180``, ``lat = asin(2 v - 1)`` (degrees), ``u, v ~ U[0, 1)``.
(Sampling latitude uniformly would over-sample the poles.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from csp.geo import lonlat_grid


def sample_sphere(
    shape: tuple[int, ...] | int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Points uniform by area on the sphere, ``(*shape, 2)`` as (lon, lat) in degrees."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    u = torch.rand((*shape, 2), generator=generator, device=device, dtype=dtype)
    lon = u[..., 0] * 360.0 - 180.0
    lat = torch.rad2deg(torch.asin(u[..., 1] * 2.0 - 1.0))
    return torch.stack([lon, lat], dim=-1)


class LocationSampler(Protocol):
    """Draws ``n`` locations ``(n, 2)`` (lon, lat) degrees: :func:`sample_sphere`,
    :meth:`LandMask.sample`, or any callable of this signature (a training objective's source
    of negative or background locations)."""

    def __call__(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor: ...


class LandMask:
    """A boolean land raster on a regular lon/lat grid (rows north -> south, cell centres).

    Args:
        mask: ``(H, W)`` bool, ``H = 180 / step``, ``W = 360 / step``.
    """

    def __init__(self, mask: np.ndarray | Tensor) -> None:
        mask_t = torch.as_tensor(mask, dtype=torch.bool)
        height, width = mask_t.shape
        if width != 2 * height:
            raise ValueError(f"land mask must be (H, 2H), got {tuple(mask_t.shape)}")
        if not bool(mask_t.any()):
            raise ValueError("land mask has no land cell")
        self.mask = mask_t
        self.step_deg = 180.0 / height

    @classmethod
    def from_geojson(cls, path: str | Path, step_deg: float = 0.5) -> LandMask:
        """Rasterise polygons (e.g. Natural Earth countries) at cell centres."""
        import geopandas as gpd
        import shapely

        land = shapely.union_all(gpd.read_file(path).geometry.values)
        shapely.prepare(land)
        grid = lonlat_grid(step_deg)
        return cls(shapely.contains_xy(land, grid[..., 0], grid[..., 1]))

    def to(self, device: torch.device | str) -> LandMask:
        moved = LandMask.__new__(LandMask)
        moved.mask, moved.step_deg = self.mask.to(device), self.step_deg
        return moved

    def contains(self, lonlat: Tensor) -> Tensor:
        """``(..., 2)`` degrees -> ``(...)`` bool: whether each point's cell is land.

        ``lonlat`` must be on the mask's device (see :meth:`to`).
        """
        height, width = self.mask.shape
        row = ((90.0 - lonlat[..., 1]) / self.step_deg).long().clamp(0, height - 1)
        col = ((lonlat[..., 0] + 180.0) / self.step_deg).long().clamp(0, width - 1)
        return self.mask[row, col]

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """``(n, 2)`` points uniform by area over land (rejection from :func:`sample_sphere`).

        ``generator`` and ``device`` must match the mask's device (see :meth:`to`).
        """
        land_fraction = self._area_fraction()
        chunks: list[Tensor] = []
        have = 0
        while have < n:
            draw = max(64, math.ceil((n - have) / land_fraction * 1.2))
            points = sample_sphere(draw, generator=generator, device=device)
            points = points[self.contains(points)]
            chunks.append(points)
            have += points.shape[0]
        return torch.cat(chunks)[:n]

    def _area_fraction(self) -> float:
        height = self.mask.shape[0]
        lat_centres = 90.0 - (torch.arange(height) + 0.5) * self.step_deg
        weights = torch.cos(torch.deg2rad(lat_centres))[:, None]
        return float((self.mask.float() * weights).sum() / (weights.sum() * self.mask.shape[1]))


class BatchIndexSampler:
    """Shuffled batches of indices, drawn on the device, with an optional distributed split.

    Each epoch is one seeded permutation of ``range(n)`` cut into global batches of
    ``batch_size``; process ``rank`` of ``world_size`` takes the ``rank``-th contiguous slice of
    every global batch, so the union over processes is exactly the single-process batch.
    The last incomplete global batch is dropped: contrastive losses and DDP want equal batches.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} not divisible by world_size {world_size}")
        if n < batch_size:
            raise ValueError(f"only {n} items for a batch of {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)

    def __len__(self) -> int:
        return self.n // self.batch_size

    def epoch(self, epoch: int) -> Iterator[Tensor]:
        """Index tensors (int64, on the device) for this process, for one epoch."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.n, generator=generator).to(self.device)
        local = self.batch_size // self.world_size
        for b in range(len(self)):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield batch[self.rank * local : (self.rank + 1) * local]
