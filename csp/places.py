"""Top places of a "where could this be" map, how flat the map is, and geolocation errors.

A map is probability mass per cell of a regular lon/lat grid (:func:`csp.geo.lonlat_grid`),
rows north -> south, summing to 1 over the sphere (the area of each cell, ``cos(lat)``, is part
of the mass). Locations are (lon, lat) in degrees; distances are great-circle km.

* :func:`distinct_peaks`: greedy non-maximum suppression by distance: the highest point, then
  the highest point farther than ``min_separation_km`` from every one already taken, and so
  on. Each peak *claims* the not yet claimed points within that distance of it.
* :func:`top_places`: the distinct peaks of a map with the share of the mass each one claims.
* :func:`concentration`: ``exp(KL(map || area))``, how many times smaller than the whole sphere
  the area the mass is spread over is (1: the mass is spread like area itself; a map uniform
  over one tenth of the sphere gives 10). :func:`is_flat` when it is below
  :data:`FLAT_CONCENTRATION`.
* :func:`location_log_probs`: the map itself from CSP embeddings, ``log p(x | I)``.
* :func:`error_summary`: median error and the share within 100 / 500 / 2,500 km.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from csp.geo import haversine_km, lonlat_grid

PLACE_SEPARATION_KM = 1000.0
"""Top places are at least this far apart (and each claims the mass within this distance)."""
FLAT_CONCENTRATION = 4.0
"""A map whose mass is spread over more than a quarter of the sphere's area is called flat."""
ERROR_THRESHOLDS_KM = (100.0, 500.0, 2500.0)


@dataclass(frozen=True)
class Place:
    """One top place: the peak cell's centre (degrees) and the share of the map's mass
    (in [0, 1]) within :data:`PLACE_SEPARATION_KM` of it that no higher place claimed."""

    lon: float
    lat: float
    mass: float


@dataclass(frozen=True)
class WherePlaces:
    """The top places of one map, its :func:`concentration`, whether it :func:`is_flat`, and
    the ``(H, 2H)`` map itself (mass per cell, rows north -> south)."""

    places: list[Place]
    concentration: float
    flat: bool
    mass_map: np.ndarray = field(compare=False, repr=False)


def distinct_peaks(
    lonlat: np.ndarray, scores: np.ndarray, k: int, min_separation_km: float = PLACE_SEPARATION_KM
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy non-maximum suppression by great-circle distance.

    Args:
        lonlat: ``(M, 2)`` point locations, degrees.
        scores: ``(M,)`` higher is better (probabilities, similarities); -inf or NaN: never a peak.
        k: at most this many peaks (fewer when every point is claimed first).
        min_separation_km: peaks are farther apart than this.

    Returns:
        ``(peaks, owner)``: ``(<= k,)`` int64 indices of the peaks, best first, and ``(M,)``
        int64, for each point the position in ``peaks`` of the peak that claimed it, or -1.
    """
    lonlat, scores = np.asarray(lonlat, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if lonlat.ndim != 2 or lonlat.shape[1] != 2 or scores.shape != lonlat.shape[:1]:
        raise ValueError(f"expected lonlat (M, 2) and scores (M,), got {lonlat.shape} and {scores.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    owner = np.full(len(scores), -1, dtype=np.int64)
    free = np.where(np.isnan(scores), -np.inf, scores)  # -inf: never a peak
    peaks: list[int] = []
    while len(peaks) < k and np.isfinite(free).any():
        best = int(np.argmax(free))
        near = (haversine_km(lonlat[best], lonlat) <= min_separation_km) & (owner < 0)
        owner[near] = len(peaks)
        free[near] = -np.inf
        peaks.append(best)
    return np.asarray(peaks, dtype=np.int64), owner


def _check_map(mass_map: np.ndarray) -> tuple[np.ndarray, float]:
    mass_map = np.asarray(mass_map, dtype=np.float64)
    if mass_map.ndim != 2 or mass_map.shape[1] != 2 * mass_map.shape[0]:
        raise ValueError(f"a map is (H, 2H) mass per cell, got shape {mass_map.shape}")
    if not np.isfinite(mass_map).all() or (mass_map < 0).any():
        raise ValueError("a map must hold finite, non-negative mass")
    return mass_map, 180.0 / mass_map.shape[0]


def top_places(
    mass_map: np.ndarray, k: int = 5, min_separation_km: float = PLACE_SEPARATION_KM
) -> list[Place]:
    """The ``k`` highest distinct peaks of the density of ``mass_map`` ``(H, 2H)`` (rows north ->
    south; cells without mass excluded) and the share of the total mass each claims
    (:func:`distinct_peaks`)."""
    mass_map, step = _check_map(mass_map)
    cells = lonlat_grid(step).reshape(-1, 2)
    mass = mass_map.ravel()
    total = mass.sum()
    if total <= 0:
        raise ValueError("the map holds no mass")
    # Peaks of the density (mass per unit area), so that cells near the poles are not penalised.
    # Cells without mass are never places.
    density = np.where(mass > 0, mass / np.cos(np.radians(cells[:, 1])), -np.inf)
    peaks, owner = distinct_peaks(cells, density, k, min_separation_km)
    claimed = np.bincount(owner[owner >= 0], weights=mass[owner >= 0], minlength=len(peaks)) / total
    return [
        Place(float(cells[p, 0]), float(cells[p, 1]), float(m)) for p, m in zip(peaks, claimed, strict=True)
    ]


def concentration(mass_map: np.ndarray) -> float:
    """``exp(KL(map || area))`` of a ``(H, 2H)`` map: 1 when mass follows area, ``1 / f`` when
    it is uniform over a fraction ``f`` of the sphere's area."""
    mass_map, step = _check_map(mass_map)
    area = np.cos(np.radians(lonlat_grid(step)[..., 1].astype(np.float64)))
    p, q = mass_map / mass_map.sum(), area / area.sum()
    nz = p > 0
    return float(np.exp(np.sum(p[nz] * np.log(p[nz] / q[nz]))))


def is_flat(mass_map: np.ndarray) -> bool:
    """Whether the map's mass is spread over more than ``1 / FLAT_CONCENTRATION`` of the sphere."""
    return concentration(mass_map) < FLAT_CONCENTRATION


def where_places(mass_map: np.ndarray, k: int = 5) -> WherePlaces:
    """:func:`top_places`, :func:`concentration` and :func:`is_flat` of one map."""
    c = concentration(mass_map)
    return WherePlaces(top_places(mass_map, k), c, c < FLAT_CONCENTRATION, np.asarray(mass_map))


def location_log_probs(
    queries: Tensor, cell_embeddings: Tensor, cell_lat: Tensor, temperature: float, cosine: bool
) -> Tensor:
    """``log p(x | I)`` over grid cells: ``log_softmax_x(<e(x), q> / tau + log cos(lat_x))``.

    Args:
        queries: ``(B, E)`` projected image features ``W f(I)``.
        cell_embeddings: ``(M, E)`` location embeddings ``e(x)`` of the cell centres.
        cell_lat: ``(M,)`` cell-centre latitudes, degrees (the area term).
        temperature: tau > 0 of the CSP objective.
        cosine: L2-normalise both sides first (the model was trained on cosine similarity).

    Returns:
        ``(B, M)`` log mass per cell (each row's exp sums to 1).
    """
    if cosine:
        queries, cell_embeddings = F.normalize(queries, dim=-1), F.normalize(cell_embeddings, dim=-1)
    log_area = torch.log(torch.cos(torch.deg2rad(cell_lat)).clamp(min=1e-6))
    return torch.log_softmax(queries @ cell_embeddings.T / temperature + log_area, dim=-1)


def error_summary(
    errors_km: np.ndarray, thresholds_km: tuple[float, ...] = ERROR_THRESHOLDS_KM
) -> dict[str, float]:
    """``{"median_km", "within_<t>km" (percent) for each threshold, "n"}`` of ``(N,)`` errors."""
    errors_km = np.asarray(errors_km, dtype=np.float64)
    if errors_km.ndim != 1 or len(errors_km) == 0 or not np.isfinite(errors_km).all():
        raise ValueError("errors_km must be a non-empty 1-d array of finite distances")
    summary = {"median_km": float(np.median(errors_km))}
    summary |= {f"within_{t:g}km": float(100.0 * np.mean(errors_km <= t)) for t in thresholds_km}
    return summary | {"n": float(len(errors_km))}
