"""Range-map exports for GIS users: a thresholded grid as GeoJSON polygons, and a PNG picture.

A grid is ``(H, W)`` over the globe, rows north -> south, columns west -> east, cell size
``180 / H`` degrees (``csp.geo.lonlat_grid`` order). Polygons follow cell edges exactly: they
are what the thresholded grid says, not a smoothed contour.
"""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from app.raster import check_grid
from csp.geo import EARTH_RADIUS_KM


def threshold_polygons(grid: np.ndarray, threshold: float) -> BaseGeometry:
    """Union of the cells with ``value >= threshold`` as (Multi)Polygon in lon/lat degrees.

    Each row's runs of consecutive selected cells become one rectangle; the rectangles of all
    rows are merged with a coverage union (they never overlap). An empty selection gives an
    empty polygon.
    """
    values = check_grid(grid)
    step = 180.0 / values.shape[0]
    selected = values >= threshold
    padded = np.zeros((selected.shape[0], selected.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = selected
    edges = np.diff(padded, axis=1)
    rows_start, cols_start = np.nonzero(edges == 1)
    _, cols_end = np.nonzero(edges == -1)  # same row order as the starts (row-major scan)
    if rows_start.size == 0:
        return shapely.Polygon()
    west = -180.0 + cols_start * step
    east = -180.0 + cols_end * step
    north = 90.0 - rows_start * step
    south = north - step
    boxes = shapely.box(west, south, east, north)
    return shapely.union_all(boxes)


def range_geojson(grid: np.ndarray, threshold: float, properties: dict[str, Any] | None = None) -> str:
    """GeoJSON FeatureCollection (EPSG:4326) with one feature: the thresholded range.

    ``properties`` (e.g. class name) are stored on the feature together with ``threshold``,
    ``cell_size_deg`` and ``area_km2`` (see :func:`selected_area_km2`).
    """
    values = check_grid(grid)
    geometry = threshold_polygons(values, threshold)
    frame = gpd.GeoDataFrame(
        [{**(properties or {}), "threshold": float(threshold), "cell_size_deg": 180.0 / values.shape[0]}],
        geometry=[geometry],
        crs="EPSG:4326",
    )
    frame["area_km2"] = round(selected_area_km2(values, threshold), 1)
    return frame.to_json(drop_id=True)


def selected_area_km2(grid: np.ndarray, threshold: float) -> float:
    """Area in km² of the cells with ``value >= threshold`` on a sphere of radius
    ``csp.geo.EARTH_RADIUS_KM`` (exact for grid cells: R² · Δlon · (sin lat_n − sin lat_s)).
    """
    values = check_grid(grid)
    step = np.radians(180.0 / values.shape[0])
    north = np.radians(90.0) - np.arange(values.shape[0]) * step
    band = EARTH_RADIUS_KM**2 * step * (np.sin(north) - np.sin(north - step))
    return float((band[:, None] * (values >= threshold)).sum())
