"""Samplers: random locations on the sphere (optionally on land or in a region) and batch indices.

Uniform by area: ``lon = 360 u - 180``, ``lat = asin(2 v - 1)`` (degrees), ``u, v ~ U[0, 1)``.
(Sampling latitude uniformly would over-sample the poles.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from csp.geo import lonlat_grid, unit_vectors


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


# --------------------------------------------------------------------------- background regions
#
# Samplers of background (pseudo-absence) locations restricted to a study region. Every one
# is a :class:`LocationSampler`: ``region(n, generator, device)`` maps ``n`` points drawn by
# :func:`sample_sphere` with that generator into the region (``from_sphere``), so a training
# loop that saves its generator redraws exactly the same points when resumed. The map is
# uniform by area over the region unless it is a fixed set of points; a point uniform on the
# sphere carries two independent uniforms, ``u = (lon + 180) / 360`` and
# ``v = (sin(lat) + 1) / 2``. ``sample(n, generator)`` draws directly, on the CPU.


class _FromSphere:
    """Mixin: the :class:`LocationSampler` call through ``from_sphere``."""

    def from_sphere(self, points: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        return self.from_sphere(sample_sphere(n, generator=generator, device=device))


def _uniforms(points: Tensor) -> tuple[Tensor, Tensor]:
    """The two U[0, 1) variables behind points uniform on the sphere ``(..., 2)`` degrees."""
    u = ((points[..., 0] + 180.0) / 360.0).clamp(0.0, 1.0 - 1e-7)
    v = ((torch.sin(torch.deg2rad(points[..., 1])) + 1.0) / 2.0).clamp(0.0, 1.0)
    return u, v


class BoxRegion(_FromSphere):
    """A lon/lat box ``west, south, east, north`` in degrees; ``west > east`` crosses the
    antimeridian. Sampling is uniform by area: longitude uniform, ``sin(lat)`` uniform."""

    def __init__(self, west: float, south: float, east: float, north: float) -> None:
        if not (-90.0 <= south < north <= 90.0):
            raise ValueError(f"box needs -90 <= south < north <= 90, got south={south}, north={north}")
        if not (-180.0 <= west <= 180.0 and -180.0 <= east <= 180.0):
            raise ValueError(f"box longitudes must be in [-180, 180], got west={west}, east={east}")
        self.west, self.south, self.east, self.north = west, south, east, north

    @property
    def width_deg(self) -> float:
        """Longitude span in degrees (through the antimeridian when ``west > east``)."""
        return (self.east - self.west) % 360.0 or (360.0 if self.east != self.west else 0.0)

    def contains(self, lonlat: np.ndarray) -> np.ndarray:
        """``(N, 2)`` degrees -> ``(N,)`` bool."""
        lon, lat = lonlat[:, 0], lonlat[:, 1]
        in_lat = (lat >= self.south) & (lat <= self.north)
        return in_lat & (((lon - self.west) % 360.0) <= self.width_deg)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        u = torch.rand((n, 2), generator=generator, dtype=torch.float64)
        return self._place(u[:, 0], u[:, 1]).float()

    def from_sphere(self, points: Tensor) -> Tensor:
        return self._place(*_uniforms(points))

    def _place(self, u: Tensor, v: Tensor) -> Tensor:
        """Inverse CDF: longitude uniform, ``sin(lat)`` uniform between the box's edges."""
        lon = torch.remainder(self.west + u * self.width_deg + 180.0, 360.0) - 180.0
        sin_s, sin_n = math.sin(math.radians(self.south)), math.sin(math.radians(self.north))
        lat = torch.rad2deg(torch.asin((sin_s + v * (sin_n - sin_s)).clamp(-1.0, 1.0)))
        return torch.stack([lon, lat], dim=-1)

    def __repr__(self) -> str:
        return f"BoxRegion({self.west:g}, {self.south:g}, {self.east:g}, {self.north:g})"


def data_extent(lonlat: np.ndarray, buffer_deg: float = 0.0) -> BoxRegion:
    """The smallest lon/lat box holding ``lonlat (N, 2)`` degrees, widened by ``buffer_deg``.

    The longitude interval is the complement of the largest gap between the sorted
    longitudes, so data on both sides of the antimeridian get a box that crosses it; when the
    widened box would cover every longitude it is the full circle.
    """
    lonlat = np.asarray(lonlat, dtype=np.float64)
    if lonlat.ndim != 2 or lonlat.shape[1] != 2 or not len(lonlat):
        raise ValueError(f"expected (N, 2) (lon, lat) degrees with N > 0, got shape {lonlat.shape}")
    lons = np.sort(lonlat[:, 0])
    gaps = np.diff(np.concatenate([lons, lons[:1] + 360.0]))
    k = int(np.argmax(gaps))
    west, east = lons[(k + 1) % len(lons)], lons[k]
    span = (east - west) % 360.0
    south = max(-90.0, float(lonlat[:, 1].min()) - buffer_deg)
    north = min(90.0, float(lonlat[:, 1].max()) + buffer_deg)
    if north <= south:  # one latitude and no buffer
        south, north = max(-90.0, south - 1e-6), min(90.0, north + 1e-6)
    if span + 2 * buffer_deg >= 360.0:
        return BoxRegion(-180.0, south, 180.0, north)
    wrap = lambda x: float((x + 180.0) % 360.0 - 180.0)  # noqa: E731
    west, east = wrap(west - buffer_deg), wrap(east + buffer_deg)
    if west == east:  # a single longitude and no buffer
        east = wrap(east + 1e-6)
    return BoxRegion(west, south, east, north)


POOL_SIZE = 65536
"""Points drawn once (seed 0) from a polygon or hull region, among which ``from_sphere`` picks."""


class _RejectionRegion(_FromSphere):
    """Uniform-by-area sampling from ``proposal`` kept where :meth:`contains` holds;
    ``from_sphere`` picks among :data:`POOL_SIZE` such points drawn once."""

    proposal: BoxRegion
    _pool: PointsBackground | None = None

    def from_sphere(self, points: Tensor) -> Tensor:
        if self._pool is None:
            self._pool = PointsBackground(self.sample(POOL_SIZE, torch.Generator().manual_seed(0)).numpy())
        return self._pool.from_sphere(points)

    def contains(self, lonlat: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        chunks, have, tries = [], 0, 0
        while have < n:
            points = self.proposal.sample(max(256, 2 * (n - have)), generator)
            points = points[torch.from_numpy(self.contains(points.double().numpy()))]
            chunks.append(points)
            have += len(points)
            tries += 1
            if tries > 1000 and have == 0:
                raise ValueError(f"{self!r}: no point of its bounding box falls inside it")
        return torch.cat(chunks)[:n]


class PolygonRegion(_RejectionRegion):
    """The inside of (multi)polygons in lon/lat degrees (EPSG:4326), e.g. a study area file."""

    def __init__(self, geometry: Any) -> None:
        import shapely

        if geometry.is_empty or geometry.area == 0:
            raise ValueError("the region polygon is empty or has no area")
        self.geometry = geometry
        shapely.prepare(geometry)
        west, south, east, north = geometry.bounds
        self.proposal = BoxRegion(max(west, -180.0), max(south, -90.0), min(east, 180.0), min(north, 90.0))

    @classmethod
    def from_file(cls, path: str | Path) -> PolygonRegion:
        """Read every polygon of a GeoJSON / GeoPackage / shapefile (reprojected to EPSG:4326)."""
        import geopandas as gpd
        import shapely

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"region file not found: {path}")
        frame = gpd.read_file(path)
        if frame.crs is not None:
            frame = frame.to_crs("EPSG:4326")
        polygons = [g for g in frame.geometry.values if g is not None and g.geom_type.endswith("Polygon")]
        if not polygons:
            raise ValueError(f"{path}: no polygon in the file")
        return cls(shapely.union_all(polygons))

    def contains(self, lonlat: np.ndarray) -> np.ndarray:
        import shapely

        return shapely.contains_xy(self.geometry, lonlat[:, 0], lonlat[:, 1])

    def __repr__(self) -> str:
        return f"PolygonRegion(bounds={tuple(round(b, 3) for b in self.geometry.bounds)})"


class HullRegion(_RejectionRegion):
    """The convex hull of points on the sphere, widened by ``buffer_deg``.

    The points are projected gnomonically on the plane tangent at their mean direction
    (great circles become straight lines, so the planar hull there is the spherical hull);
    the buffer is applied in that plane in radians, exact at the centre and a little wider
    away from it. The points must lie within 80 degrees of their mean direction.
    """

    MAX_RADIUS_DEG = 80.0

    def __init__(self, lonlat: np.ndarray, buffer_deg: float = 0.0) -> None:
        import shapely

        lonlat = np.asarray(lonlat, dtype=np.float64)
        xyz = unit_vectors(lonlat)
        centre = xyz.mean(axis=0)
        if np.linalg.norm(centre) < 1e-9:
            raise ValueError("the points surround the globe: they have no convex hull on the sphere")
        centre /= np.linalg.norm(centre)
        if np.degrees(np.arccos(np.clip(xyz @ centre, -1, 1))).max() > self.MAX_RADIUS_DEG:
            raise ValueError(
                f"the points spread more than {self.MAX_RADIUS_DEG:g} degrees from their centre: "
                "use the extent or the whole globe as background"
            )
        helper = np.array([0.0, 0.0, 1.0]) if abs(centre[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        self.e1 = np.cross(helper, centre)
        self.e1 /= np.linalg.norm(self.e1)
        self.e2 = np.cross(centre, self.e1)
        self.centre = centre
        hull = shapely.MultiPoint(self._project(xyz)).convex_hull
        self.geometry = hull.buffer(math.radians(buffer_deg)) if buffer_deg > 0 else hull
        if self.geometry.area == 0:
            raise ValueError("the points are collinear: their hull has no area (add a buffer)")
        shapely.prepare(self.geometry)
        self.proposal = data_extent(lonlat, buffer_deg * 1.5 + 0.01)

    def _project(self, xyz: np.ndarray) -> np.ndarray:
        """Unit vectors ``(N, 3)`` -> gnomonic plane coordinates ``(N, 2)`` (NaN behind)."""
        depth = xyz @ self.centre
        with np.errstate(divide="ignore", invalid="ignore"):
            plane = xyz / depth[:, None]
        coords = np.stack([plane @ self.e1, plane @ self.e2], 1)
        coords[depth <= 1e-6] = np.nan
        return coords

    def contains(self, lonlat: np.ndarray) -> np.ndarray:
        import shapely

        coords = self._project(unit_vectors(lonlat))
        inside = np.zeros(len(coords), dtype=bool)
        ok = ~np.isnan(coords).any(axis=1)
        inside[ok] = shapely.contains_xy(self.geometry, coords[ok, 0], coords[ok, 1])
        return inside

    def __repr__(self) -> str:
        return f"HullRegion(area_sr~{self.geometry.area:.4g})"


class PointsBackground(_FromSphere):
    """A fixed set of background points ``(M, 2)`` degrees, drawn with replacement."""

    def __init__(self, lonlat: np.ndarray) -> None:
        self.lonlat = torch.as_tensor(np.asarray(lonlat, dtype=np.float32))
        if self.lonlat.ndim != 2 or self.lonlat.shape[1] != 2 or not len(self.lonlat):
            raise ValueError(f"background points must be (M, 2) with M > 0, got {tuple(self.lonlat.shape)}")

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.lonlat[torch.randint(len(self.lonlat), (n,), generator=generator)]

    def from_sphere(self, points: Tensor) -> Tensor:
        u, _ = _uniforms(points)
        if self.lonlat.device != points.device:
            self.lonlat = self.lonlat.to(points.device)
        index = (u * len(self.lonlat)).long().clamp(max=len(self.lonlat) - 1)
        return self.lonlat[index].to(points.dtype)

    def __repr__(self) -> str:
        return f"PointsBackground({len(self.lonlat)} points)"


class GlobeRegion(_FromSphere):
    """The whole sphere (:func:`sample_sphere`)."""

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return sample_sphere(n, generator=generator)

    def from_sphere(self, points: Tensor) -> Tensor:
        return points

    def __repr__(self) -> str:
        return "GlobeRegion()"


Region = BoxRegion | PolygonRegion | HullRegion | PointsBackground | GlobeRegion
POLYGON_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp")


def background_region(spec: str, lonlat: np.ndarray, buffer_deg: float = 1.0) -> Region:
    """The background sampler named by ``spec`` for training data ``lonlat (N, 2)`` degrees.

    ``globe``; ``extent`` (:func:`data_extent` plus ``buffer_deg``); ``hull``
    (:class:`HullRegion` plus ``buffer_deg``); a polygon file (``.geojson``, ``.json``,
    ``.gpkg``, ``.shp``: :class:`PolygonRegion`); any other path is a CSV/TSV of background
    points read with :func:`csp.datasets.read_csv` (:class:`PointsBackground`).
    """
    if spec == "globe":
        return GlobeRegion()
    if spec == "extent":
        return data_extent(lonlat, buffer_deg)
    if spec == "hull":
        return HullRegion(lonlat, buffer_deg)
    path = Path(spec)
    if not path.is_file():
        raise ValueError(
            f"background {spec!r}: not globe, extent, hull, nor an existing polygon or points file"
        )
    if path.suffix.lower() in POLYGON_SUFFIXES:
        return PolygonRegion.from_file(path)
    from csp.datasets import read_csv

    return PointsBackground(read_csv(path, label_col=None, id_col=None, path_col=None, date_col=None).lonlat)
