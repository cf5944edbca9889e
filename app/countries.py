"""Which country a point lies in (Natural Earth 1:110m outlines, a geopandas spatial index).

The 1:110m outlines are coarse (coasts can be off by ~10 km), so a point just off a coast is
assigned to the nearest country within ``tolerance_deg``; further out it is open water.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely


class CountryLookup:
    """Point -> country name lookups on a set of country polygons.

    Args:
        geojson: polygons in EPSG:4326 with a ``name`` property.
        tolerance_deg: search radius in degrees (planar, in lon/lat space) for points that fall
            just outside every polygon.
    """

    def __init__(self, geojson: str | Path, tolerance_deg: float = 0.3) -> None:
        path = Path(geojson)
        if not path.is_file():
            raise FileNotFoundError(f"country outlines not found: {path}")
        frame = gpd.read_file(path)
        if "name" not in frame.columns:
            raise ValueError(f"{path}: country outlines need a 'name' property")
        self._names = frame["name"].astype(str).to_numpy()
        self._geometry = frame.geometry.to_numpy()
        self._tree = shapely.STRtree(self._geometry)
        self.tolerance_deg = float(tolerance_deg)

    def __len__(self) -> int:
        return len(self._names)

    def names_at(self, lonlat: np.ndarray) -> list[str | None]:
        """Country of each point: ``(N, 2)`` (lon, lat) degrees -> N names (None: open water)."""
        points = shapely.points(np.asarray(lonlat, dtype=np.float64).reshape(-1, 2))
        result: list[str | None] = [None] * len(points)
        point_idx, poly_idx = self._tree.query(points, predicate="intersects")
        for p, g in zip(point_idx[::-1], poly_idx[::-1], strict=True):
            result[p] = str(self._names[g])  # reversed: the first hit wins on shared borders
        missing = [i for i, name in enumerate(result) if name is None]
        if missing and self.tolerance_deg > 0:
            near_point, near_poly = self._tree.query_nearest(
                points[missing], max_distance=self.tolerance_deg, all_matches=False
            )
            for p, g in zip(near_point, near_poly, strict=True):
                result[missing[p]] = str(self._names[g])
        return result

    def name_at(self, lon: float, lat: float) -> str | None:
        """Country at one (lon, lat) point in degrees, or None for open water."""
        return self.names_at(np.array([[lon, lat]]))[0]
