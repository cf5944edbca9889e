"""Score grids -> coloured RGBA images and PNG data URIs for map overlays and downloads.

A grid is a float array ``(H, W)`` over the globe, rows north -> south, columns west -> east
(``csp.geo.lonlat_grid`` cell order), values in [0, 1].
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

# A perceptually ordered ramp (after matplotlib's "plasma"): dark violet -> pink -> yellow.
RAMP_HEX = ("#0d0887", "#6a00a8", "#b12a90", "#e16462", "#fca636", "#f0f921")
_RAMP = np.array([[int(h[i : i + 2], 16) for i in (1, 3, 5)] for h in RAMP_HEX], dtype=np.float32)


def check_grid(grid: np.ndarray) -> np.ndarray:
    """``grid`` as float32 ``(H, W)`` with ``W == 2 H``; ValueError otherwise (or on NaN)."""
    array = np.asarray(grid, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != 2 * array.shape[0] or array.shape[0] < 1:
        raise ValueError(f"expected a global grid of shape (H, 2H), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("grid holds NaN or infinite values")
    return array


def colorize(grid: np.ndarray, threshold: float = 0.0, vmax: float | None = None) -> np.ndarray:
    """Colour a grid: ``(H, W)`` -> ``(H, W, 4)`` uint8 RGBA.

    Args:
        grid: values in [0, 1] (see module docstring).
        threshold: cells whose value is below it are fully transparent; values are compared
            before ``vmax`` scaling.
        vmax: value mapped to the top of the ramp (default 1; pass ``grid.max()`` to stretch
            a probability map whose values are all small).

    Visible cells get alpha rising from 0.35 to 1 with the scaled value, so weak scores let
    the basemap show through.
    """
    values = check_grid(grid)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    top = 1.0 if vmax is None else float(vmax)
    if not top > 0.0:
        raise ValueError(f"vmax must be positive, got {vmax}")
    scaled = np.clip(values / top, 0.0, 1.0)
    position = scaled * (len(_RAMP) - 1)
    low = np.minimum(position.astype(np.int64), len(_RAMP) - 2)
    frac = (position - low)[..., None]
    rgb = _RAMP[low] * (1.0 - frac) + _RAMP[low + 1] * frac
    alpha = np.where(values >= threshold, 0.35 + 0.65 * scaled, 0.0) * 255.0
    return np.dstack([rgb, alpha]).round().astype(np.uint8)


def png_bytes(rgba: np.ndarray) -> bytes:
    """Encode an ``(H, W, 4)`` uint8 array as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba), mode="RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def png_data_uri(rgba: np.ndarray) -> str:
    """``data:image/png;base64,...`` URI of an ``(H, W, 4)`` uint8 array."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(rgba)).decode("ascii")


def composite(basemap: Image.Image, rgba: np.ndarray) -> Image.Image:
    """Overlay a coloured grid on an equirectangular basemap (cells scaled up, not smoothed).

    Returns an RGB image of the basemap's size.
    """
    overlay = Image.fromarray(np.ascontiguousarray(rgba), mode="RGBA")
    overlay = overlay.resize(basemap.size, Image.Resampling.NEAREST)
    return Image.alpha_composite(basemap.convert("RGBA"), overlay).convert("RGB")
