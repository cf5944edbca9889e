"""Captive awareness: known zoo / aquarium / park places, the captive flag and the three modes.

Known captive places
--------------------
The ``zoo`` rule of :mod:`csp.cleaning` marks records taken at a spot where at least
``zoo_min_species`` species were photographed far from the rest of their range (or outside
their expert range). On its own that signature also catches busy *wild* spots in cities and
parks, where many species with few records elsewhere were photographed (an earlier list built
from it covered 11 % of the held-out wild observations). :func:`find_captive_places` turns the
rule's records into compact places and keeps only those where captivity is the more likely
explanation of a record (:class:`PlaceRule`):

1. records of the rule closer than ``core_km`` to another one are one place (single linkage);
   its centre is the mean of its records on the sphere, its radius the distance to its
   farthest record plus ``core_km``;
2. a place is kept when at least ``min_species`` species were dropped there (one far species
   is a stray record, several are a collection) and when the zoo rule's records are at least
   ``min_captive_share`` of *all* records within its radius (0.5: most photos taken there are
   captive, so a photo there is more likely captive than wild; a city-wide cluster whose wild
   records outnumber its captive ones is not kept).

``core_km`` and ``min_species`` were chosen by ``python -m train experiment geoaware`` on the
validation split (see :data:`PLACE_RULE`); ``min_captive_share`` is the majority threshold,
not fitted. ``python -m train build-captive`` writes the places to ``captive_places.csv`` in the
model directory, one place a row (:data:`CAPTIVE_COLUMNS`):

``lon``, ``lat``  centre, degrees
``radius_km``     the place covers points this close to the centre
``n_species``     species recorded there far from their range
``n_records``     records the rule dropped there
``rule``          the rules and thresholds that found the place, e.g.
                  ``zoo(place_km=5,zoo_min_species=8,zoo_far_km=2000)+place(core_km=1,...)``

It is a co-occurrence pattern in the species data (see the limitations in :mod:`csp.cleaning`),
not a list of zoos: it also contains botanical gardens and insect houses, and misses zoos
nobody photographed far-away species at. No taxonomy above the genus ships offline, so the
rule cannot ask for several higher taxa.

The flag and the modes
----------------------
A photo is flagged as possibly captive when it was taken inside a known captive place, or when
its top image class is confident (``p >= csp.fusion.CONFIDENT``), linked to a species, and far
outside that species' range: its *range ratio* ``p_Tr(s | x) / p(s)`` (:func:`range_ratio`:
the prior there, read at the range temperature ``T_r``, relative to the species' average level)
is below ``out_of_range_ratio``. ``T_r`` and the threshold are fitted by ``python -m train
experiment geoaware``: the threshold is the 2 % quantile of the true species' range ratio at
held-out validation observations, and ``T_r`` the temperature at which the most records the
cleaning dropped as outside their range fall below it (one seeded half of those records; the
other half is scored). A sharper reading than the calibrated prior is needed: far from any
record the calibrated prior is flat, which would make a rare species look common there. Modes:

* ``wild``: the location prior re-ranks the image classes (:func:`csp.fusion.fuse`); a flag is
  still reported;
* ``captive``: the prior is not applied; the image ranking is kept (a captive animal says
  nothing about where its species lives);
* ``auto`` (default): ``captive`` when the photo is flagged, else ``wild``.

Either way the result is a re-ranking of the image's own classes, never a new species: the
fusion rule keeps a confident image class first, and the captive mode keeps the image ranking.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from csp.datasets._files import read_fixed_table
from csp.fusion import calibrate, likelihood_ratio
from csp.geo import chord_length, haversine_km, km_to_radians, unit_vectors, validate_lonlat

CAPTIVE_FILE = "captive_places.csv"
CAPTIVE_COLUMNS = ("lon", "lat", "radius_km", "n_species", "n_records", "rule")
MODES = ("wild", "captive", "auto")

OUT_OF_RANGE_QUANTILE = 0.02
"""Share of held-out wild observations whose true species' range ratio lies below
:data:`OUT_OF_RANGE_RATIO` (the error rate of the far-outside-range flag, by construction)."""

RANGE_TEMPERATURE = 0.0625
"""``T_r`` of :func:`range_ratio`, fitted by ``python -m train experiment geoaware`` (module
docstring; README section "Geo-aware classification"): the sharpest of the grid 1 … 0.0625,
where the share of out-of-range records flagged levels off (45.0 % at 0.125, 46.1 % here)."""

OUT_OF_RANGE_RATIO = 7.8e-34
"""Default ``out_of_range_ratio``: a range ratio (:func:`range_ratio`) below it counts as far
outside the range. The 2 % quantile of the range ratio of the true species at held-out
validation observations (so about 2 % of wild photos of a confident, correct class would be
flagged), fitted with :data:`RANGE_TEMPERATURE`."""


def range_ratio(
    prior: np.ndarray, class_frequency: np.ndarray, temperature: float = RANGE_TEMPERATURE
) -> np.ndarray:
    """``p_Tr(s | x) / p(s)``: the ``(N, C)`` normalised prior read at ``temperature``
    (:func:`csp.fusion.calibrate`) over the ``(C,)`` frequencies -> ``(N, C)``."""
    return likelihood_ratio(calibrate(prior, temperature), class_frequency)


@dataclass(frozen=True)
class PlaceRule:
    """How the zoo rule's records become known captive places (see the module docstring).

    Attributes:
        core_km: single-linkage distance between records of one place, km (> 0).
        min_species: species the zoo rule dropped at the place (>= 1).
        min_captive_share: the zoo rule's share of all records within the place, in [0, 1].
    """

    core_km: float = 0.5  # fitted on validation (grid 0.5 .. 5)
    min_species: int = 2  # fitted (grid 2 .. 8)
    min_captive_share: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.core_km) and self.core_km > 0):
            raise ValueError(f"PlaceRule.core_km must be > 0, got {self.core_km}")
        if self.min_species < 1:
            raise ValueError(f"PlaceRule.min_species must be >= 1, got {self.min_species}")
        if not 0.0 <= self.min_captive_share <= 1.0:
            raise ValueError(f"PlaceRule.min_captive_share must be in [0, 1], got {self.min_captive_share}")

    def describe(self) -> str:
        return (
            f"place(core_km={self.core_km:g},min_species={self.min_species},"
            f"min_captive_share={self.min_captive_share:g})"
        )


PLACE_RULE = PlaceRule()
"""The shipped :class:`PlaceRule`: ``core_km`` and ``min_species`` chosen by ``python -m train
experiment geoaware`` on the validation split (the most zoo-rule records covered while at most
:data:`MAX_WILD_COVERED` of the validation observations lie inside a place; see
docs/geoaware/geoaware.md)."""

MAX_WILD_COVERED = 0.02
"""Largest share of held-out wild observations the known places may cover (the fitting budget,
the same 2 % the out-of-range threshold allows)."""


@dataclass(frozen=True)
class CaptivePlace:
    """One known captive place (see the module docstring for the fields)."""

    lon: float
    lat: float
    radius_km: float
    n_species: int
    n_records: int
    rule: str

    def describe(self) -> str:
        return (
            f"a known captive site: {self.n_species} species recorded far from their ranges "
            f"within {self.radius_km:.0f} km of {self.lat:.3f}, {self.lon:.3f}"
        )


def _chord(km: float) -> float:
    return chord_length(km_to_radians(km))


def _components(lonlat: np.ndarray, km: float) -> np.ndarray:
    """``(N,)`` component label of single-linkage groups of points closer than ``km``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    pairs = cKDTree(unit_vectors(lonlat)).query_pairs(_chord(km), output_type="ndarray")
    n = len(lonlat)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def find_captive_places(
    lonlat: np.ndarray,
    labels: np.ndarray,
    zoo_drop: np.ndarray,
    rule: str,
    place_rule: PlaceRule = PLACE_RULE,
    counted: np.ndarray | None = None,
) -> list[CaptivePlace]:
    """Known captive places from the records the zoo rule dropped (see the module docstring).

    Args:
        lonlat: ``(N, 2)`` (lon, lat) degrees of all records.
        labels: ``(N,)`` species.
        zoo_drop: ``(N,)`` bool, the ``drop`` mask of :func:`csp.cleaning.flag_zoo_records`.
        rule: the zoo rule and its thresholds; each row's ``rule`` is it plus ``place_rule``.
        place_rule: how records become places and which places are kept.
        counted: ``(N,)`` bool, the records the captive share counts (default all; fitting
            leaves the held-out observations out).

    Returns:
        Places sorted by number of species (most first), then by position.
    """
    from scipy.spatial import cKDTree

    lonlat = np.asarray(lonlat, dtype=np.float64)
    labels = np.asarray(labels)
    zoo_drop = np.asarray(zoo_drop, dtype=bool)
    counted = np.ones(len(lonlat), dtype=bool) if counted is None else np.asarray(counted, dtype=bool)
    if not (zoo_drop.shape == labels.shape == counted.shape == (len(lonlat),)):
        raise ValueError("lonlat, labels, zoo_drop and counted must describe the same N records")
    at = np.flatnonzero(zoo_drop)
    if not len(at):
        return []
    tree = cKDTree(unit_vectors(lonlat[counted]))
    captive_counted = zoo_drop[counted]
    points, species = lonlat[at], labels[at]
    group = _components(points, place_rule.core_km)
    text = f"{rule}+{place_rule.describe()}"
    places = []
    for g in np.unique(group):
        members = group == g
        n_species = len(np.unique(species[members]))
        if n_species < place_rule.min_species:
            continue
        mean = unit_vectors(points[members]).sum(axis=0)
        mean /= np.linalg.norm(mean)
        centre = np.array([math.degrees(math.atan2(mean[1], mean[0])), math.degrees(math.asin(mean[2]))])
        radius = float(haversine_km(centre[None], points[members]).max()) + place_rule.core_km
        inside = tree.query_ball_point(mean, _chord(radius))
        if not inside or captive_counted[inside].mean() < place_rule.min_captive_share:
            continue
        lon, lat = round(float(centre[0]), 5), round(float(centre[1]), 5)
        places.append(CaptivePlace(lon, lat, round(radius, 2), n_species, int(members.sum()), text))
    places.sort(key=lambda p: (-p.n_species, p.lat, p.lon))
    return places


def write_captive_places(places: Iterable[CaptivePlace], path: str | Path) -> None:
    """Write places with the :data:`CAPTIVE_COLUMNS` header (atomically: temp file, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CAPTIVE_COLUMNS)
        for p in places:
            writer.writerow([p.lon, p.lat, p.radius_km, p.n_species, p.n_records, p.rule])
    tmp.replace(path)


def read_captive_places(path: str | Path) -> list[CaptivePlace]:
    """Read and validate a captive-places CSV.

    Raises FileNotFoundError for a missing file and ValueError naming the file and line for a
    wrong header, a non-numeric or out-of-range value or an empty rule.
    """
    places = []
    for where, _, row in read_fixed_table(path, CAPTIVE_COLUMNS, "captive places table"):
        try:
            lon, lat, radius = float(row["lon"]), float(row["lat"]), float(row["radius_km"])
            n_species, n_records = int(row["n_species"]), int(row["n_records"])
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        if not (abs(lon) <= 180 and abs(lat) <= 90 and math.isfinite(radius) and radius > 0):
            raise ValueError(f"{where}: need |lon| <= 180, |lat| <= 90 and radius_km > 0")
        if n_species < 1 or n_records < 1 or not row["rule"].strip():
            raise ValueError(f"{where}: need n_species >= 1, n_records >= 1 and a rule")
        places.append(CaptivePlace(lon, lat, radius, n_species, n_records, row["rule"].strip()))
    return places


class CaptiveSites:
    """Look-up of known captive places by location."""

    def __init__(self, places: Sequence[CaptivePlace]) -> None:
        self.places = list(places)
        self._lonlat = np.array([[p.lon, p.lat] for p in self.places], dtype=np.float64).reshape(-1, 2)
        self._radius = np.array([p.radius_km for p in self.places], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.places)

    def covers(self, lonlat: np.ndarray) -> np.ndarray:
        """``(N, 2)`` degrees -> ``(N,)`` bool: inside any known place."""
        points = np.asarray(lonlat, dtype=np.float64).reshape(-1, 2)
        if not self.places:
            return np.zeros(len(points), dtype=bool)
        km = haversine_km(points[:, None, :], self._lonlat[None, :, :])
        return (km <= self._radius).any(axis=1)

    def at(self, lonlat: tuple[float, float]) -> CaptivePlace | None:
        """The closest place whose radius covers ``(lon, lat)`` degrees, or None."""
        if not self.places:
            return None
        point = np.asarray(lonlat, dtype=np.float64).reshape(1, 2)
        validate_lonlat(point, source="location")
        km = haversine_km(point, self._lonlat)
        inside = np.flatnonzero(km <= self._radius)
        return self.places[int(inside[np.argmin(km[inside])])] if len(inside) else None


@dataclass(frozen=True)
class CaptiveCheck:
    """Whether a photo looks captive, and the mode used.

    Attributes:
        requested: the mode asked for (one of :data:`MODES`).
        mode: the mode used, ``"wild"`` or ``"captive"``.
        place: the known captive place the photo was taken in, if any.
        out_of_range: the confident top image class that is far outside its range, if any.
        ratio: that class's likelihood ratio p(s | x) / p(s) at the photo, if linked.
        message: one or two sentences for the user; ``""`` when nothing is flagged.
    """

    requested: str
    mode: str
    place: CaptivePlace | None
    out_of_range: str | None
    ratio: float | None
    message: str

    @property
    def flagged(self) -> bool:
        return self.place is not None or self.out_of_range is not None


def far_out_of_range(
    top_prob: np.ndarray | float,
    top_ratio: np.ndarray | float,
    confident: float,
    out_of_range_ratio: float = OUT_OF_RANGE_RATIO,
) -> np.ndarray:
    """A confident top class far outside its range: ``p >= confident`` and ratio below the
    threshold (element-wise; a NaN ratio, i.e. an unlinked class, is never far)."""
    return (np.asarray(top_prob) >= confident) & (np.asarray(top_ratio) < out_of_range_ratio)


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES`, else a one-line ValueError."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def assess_captive(
    requested: str,
    place: CaptivePlace | None,
    top_name: str,
    top_prob: float,
    top_ratio: float | None,
    confident: float,
    out_of_range_ratio: float = OUT_OF_RANGE_RATIO,
) -> CaptiveCheck:
    """Decide the flag and the mode (see the module docstring).

    Args:
        requested: ``"wild"``, ``"captive"`` or ``"auto"``.
        place: the known captive place at the photo (:meth:`CaptiveSites.at`), or None.
        top_name: readable name of the image's top class.
        top_prob: its calibrated image probability.
        top_ratio: its range ratio at the photo (:func:`range_ratio`); None if not linked.
        confident: image probability from which a class counts as confident.
        out_of_range_ratio: ratio below which the species counts as far outside its range.
    """
    check_mode(requested)
    far = top_ratio is not None and bool(far_out_of_range(top_prob, top_ratio, confident, out_of_range_ratio))
    out_of_range = top_name if far else None
    flagged = place is not None or far
    mode = requested if requested != "auto" else ("captive" if flagged else "wild")
    reasons = []
    if place is not None:
        reasons.append(f"this looks like a zoo or park ({place.describe()})")
    if far:
        reasons.append(
            f"{top_name} is far outside its species' known range (the prior gives it less here "
            f"than {100 * (1 - OUT_OF_RANGE_QUANTILE):.0f} % of held-out wild observations get "
            "for their own species)"
        )
    message = ""
    if flagged:
        message = "; ".join(reasons) + ": captive?"
        message = message[0].upper() + message[1:]
        if mode == "captive":
            message += " The location prior is not applied (captive mode); the image ranking is kept."
        else:
            message += " The location prior is applied anyway (wild mode)."
    elif mode == "captive":
        message = "Captive mode: the location prior is not applied; the image ranking is kept."
    return CaptiveCheck(requested, mode, place, out_of_range, top_ratio, message)
