"""Image chips cut from an equirectangular (plate carrée) global image.

The global image has column 0 at 180°W and row 0 at 90°N, ``W == 2 * H`` and square pixels of
``360 / W`` degrees (1/15 degree for ``assets/basemap/blue_marble_5400x2700.jpg``). A chip
centred at (lon, lat) spans ``size_deg`` degrees of longitude by ``size_deg`` degrees of
latitude (a square in lon/lat, not in km), sampled on a regular ``out_px x out_px`` lon/lat grid
of cell centres, rows north -> south, columns west -> east.

Edges of the world:
* Longitude wraps: samples past ±180° continue on the other side (columns modulo W).
* Latitude reflects over the poles: a sample at latitude ``90 + d`` is read at ``90 - d`` on the
  meridian ``lon + 180`` (and likewise at the south pole), which is where one arrives by walking
  straight over the pole. The part of a chip beyond a pole therefore shows the far side of the
  pole upside down, as seen when continuing across it. Within half a pixel of a pole (between
  the pole and the first row of pixel centres) samples take the nearest row.

Sampling is bilinear between pixel centres. When a chip covers more source pixels than it has
output pixels, it is sampled from a box-filtered copy of the image ``2**j`` times coarser
(``j = floor(log2(source pixels per output pixel))``, a mip pyramid built once per level), so
chips are anti-aliased and cost the same whatever their size in degrees.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

_CHUNK_SAMPLES = 262_144  # output samples per vectorised step (cache-sized temporaries)


class _Level:
    """One mip level: RGB packed into one uint32 per pixel (one gather per sample, not three)."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.height, self.width = pixels.shape[:2]
        self.deg_per_px = 360.0 / self.width
        packed = np.zeros((self.height * self.width, 4), dtype=np.uint8)
        packed[:, :3] = pixels.reshape(-1, 3)
        self.packed = packed.view(np.uint32).ravel()


def _check_lonlat(lonlat: np.ndarray) -> np.ndarray:
    lonlat = np.asarray(lonlat, dtype=np.float64)
    if lonlat.ndim != 2 or lonlat.shape[1] != 2:
        raise ValueError(f"lonlat must have shape (N, 2), got {lonlat.shape}")
    lon, lat = lonlat[:, 0], lonlat[:, 1]
    bad = ~((lon >= -180) & (lon <= 180) & (lat >= -90) & (lat <= 90))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"(lon, lat) = ({lon[i]}, {lat[i]}) at row {i} is outside [-180, 180] x [-90, 90] "
            "degrees (or not finite)"
        )
    return lonlat


class EquirectangularImage:
    """A global equirectangular RGB image held in memory as ``(H, W, 3)`` uint8."""

    def __init__(self, pixels: np.ndarray) -> None:
        """``pixels``: ``(H, W, 3)`` uint8 with ``W == 2 * H`` (column 0 = 180°W, row 0 = 90°N)."""
        pixels = np.asarray(pixels)
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 3) uint8 pixels, got {pixels.dtype} {pixels.shape}")
        height, width = pixels.shape[:2]
        if width != 2 * height or height < 2:
            raise ValueError(f"an equirectangular global image needs W == 2 H >= 4, got "
                             f"{width}x{height}")
        self.pixels = pixels
        self.height, self.width = height, width
        self.deg_per_px = 360.0 / width
        self._levels: dict[int, _Level] = {}

    def _level(self, j: int) -> _Level:
        """Mip level ``j``: the image box-filtered to ``2**j`` times fewer pixels per side."""
        if j not in self._levels:
            if j == 0:
                self._levels[j] = _Level(self.pixels)
            else:
                height = max(2, round(self.height / 2**j))
                small = Image.fromarray(self.pixels).resize((2 * height, height), Image.BOX)
                self._levels[j] = _Level(np.asarray(small))
        return self._levels[j]

    @classmethod
    def open(cls, path: str | Path) -> EquirectangularImage:
        """Load an image file (e.g. ``assets/basemap/blue_marble_5400x2700.jpg``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"equirectangular image not found: {path}")
        with Image.open(path) as img:
            return cls(np.asarray(img.convert("RGB")))

    def chip(self, lon: float, lat: float, size_deg: float, out_px: int) -> Image.Image:
        """The ``out_px x out_px`` RGB chip centred at (lon, lat) degrees, ``size_deg`` wide."""
        return Image.fromarray(self.chips(np.array([[lon, lat]]), size_deg, out_px)[0])

    def chips(self, lonlat: np.ndarray, size_deg: float, out_px: int) -> np.ndarray:
        """Chips centred at ``lonlat`` ``(N, 2)`` degrees -> ``(N, out_px, out_px, 3)`` uint8.

        Raises:
            ValueError: a location outside [-180, 180] x [-90, 90], ``size_deg`` not in
                (0, 180], or ``out_px`` < 1.
        """
        lonlat = _check_lonlat(lonlat)
        if not 0 < size_deg <= 180:
            raise ValueError(f"size_deg must be in (0, 180] degrees, got {size_deg}")
        if int(out_px) != out_px or out_px < 1:
            raise ValueError(f"out_px must be a positive integer, got {out_px}")
        out_px = int(out_px)
        source_px_per_out_px = size_deg / self.deg_per_px / out_px
        level = self._level(max(0, math.floor(math.log2(source_px_per_out_px))))
        out = np.empty((len(lonlat), out_px, out_px, 3), dtype=np.uint8)
        step = max(1, _CHUNK_SAMPLES // out_px**2)
        for start in range(0, len(lonlat), step):
            stop = start + step
            out[start:stop] = _sample(level, lonlat[start:stop], size_deg, out_px)
        return out


def _sample(level: _Level, lonlat: np.ndarray, size_deg: float, n: int) -> np.ndarray:
    """Bilinear samples of ``level`` on an ``n x n`` lon/lat grid per chip: ``(B, n, n, 3)``."""
    offsets = ((np.arange(n) + 0.5) / n - 0.5) * size_deg  # (n,) degrees
    lon = lonlat[:, :1] + offsets  # (B, n): one longitude per column, west -> east
    lat = lonlat[:, 1:] - offsets  # (B, n): one latitude per row, north -> south
    over_pole = np.abs(lat) > 90
    lat = np.where(over_pole, np.sign(lat) * 180 - lat, lat)
    # Fractional pixel coordinates, pixel centres at integers.
    x = (lon + 180) / level.deg_per_px - 0.5
    x0 = np.floor(x)
    wx = (x - x0).astype(np.float32)[:, None, :, None]  # (B, 1, n, 1)
    x0 = x0.astype(np.int64) % level.width  # (B, n)
    y = np.clip((90 - lat) / level.deg_per_px - 0.5, 0, level.height - 1)
    y0 = np.minimum(np.floor(y).astype(np.int64), level.height - 2)
    wy = (y - y0).astype(np.float32)[:, :, None, None]  # (B, n, 1, 1)
    row0 = (y0 * level.width)[:, :, None]  # (B, n, 1) flat index of the upper source row
    col0 = x0[:, None, :]  # (B, 1, n), or (B, n, n) when rows cross a pole
    if over_pole.any():
        col0 = (col0 + np.where(over_pole, level.width // 2, 0)[:, :, None]) % level.width
    col1 = (col0 + 1) % level.width

    def gather(index: np.ndarray) -> np.ndarray:  # (B, n, n) -> (B, n, n, 4) float32 RGBx
        return level.packed[index].view(np.uint8).reshape(*index.shape, 4).astype(np.float32)

    top = gather(row0 + col0)
    top += (gather(row0 + col1) - top) * wx
    bottom = gather(row0 + level.width + col0)
    bottom += (gather(row0 + level.width + col1) - bottom) * wx
    top += (bottom - top) * wy
    return np.rint(top[..., :3]).astype(np.uint8)


class _HasLonLat(Protocol):
    lon: float
    lat: float


class ChipLoader:
    """``image_loader`` for :func:`csp.features.extract_features`: record -> its chip.

    Works with any record that has ``lon`` and ``lat`` attributes (degrees).
    """

    def __init__(self, image: EquirectangularImage, size_deg: float, out_px: int) -> None:
        self.image = image
        self.size_deg = size_deg
        self.out_px = out_px

    def __call__(self, record: _HasLonLat) -> Image.Image:
        return self.image.chip(record.lon, record.lat, self.size_deg, self.out_px)
