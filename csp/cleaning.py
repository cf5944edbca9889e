"""Detect captive (zoo) and out-of-range records in species occurrence data.

A reusable cleaning step in the spirit of R's CoordinateCleaner, for presence-only records:
``lonlat`` is ``(N, 2)`` (lon, lat) in **degrees**, ``labels`` is ``(N,)`` species (ints or
strings). Each rule returns a :class:`RuleResult` whose ``drop`` mask marks the records to
remove; :func:`clean_occurrences` runs them together and :func:`summarise` prints the table.

Rules
-----
Records of one species closer than ``place_km`` to each other (one 3-D grid cell of that
size) form a *place*: photos taken at one place are one observation event, however many, so
the statistics below count places, not photos.

1. ``zoo`` (captive signature). A place of a species is *far* when the median distance to the
   species' other places (those more than ``place_km`` away) exceeds ``zoo_far_km``; for a
   species with an expert range, when it lies outside that range. A spot where at least
   ``zoo_min_species`` species have a far place within ``place_km`` is a zoo, aquarium or
   park: the far places there are dropped, locally native species there are kept.
2. ``range_outlier``. For species with at least ``outlier_min_places`` places, a place is an
   outlier when fewer than ``max(1, ceil(outlier_min_support * n_other))`` of the species'
   ``n_other`` other places lie within ``outlier_km``. Counting support (rather than the
   distance to a centre) keeps species living on two continents (e.g. Holarctic ones) and
   species spread over a whole continent. Zoo-dropped places are not used as support.
3. ``expert_range`` (optional). For species with a :class:`NativeRange`, a record is out of
   range unless it lies in a native country (point in polygon), or off any country polygon
   (sea, or an island too small for the map) within ``sea_tolerance_km`` of one. Records in
   range are *vouched for*: the two statistical rules never drop them.

Basic rules (:func:`basic_cleaning`, for any user's data, in the spirit of CoordinateCleaner's
``cc_dupl``, ``cc_zero`` and ``cc_cen``):

- ``duplicate``: a second record of the same species at the same coordinates (rounded to
  ``duplicate_decimals`` decimals of a degree, 1e-5 deg is about 1 m) and the same date;
- ``zero_zero``: within ``zero_km`` of (0, 0), the usual placeholder for a missing location;
- ``country_centroid`` (with country polygons): within ``centroid_km`` of a country's centroid
  (of its whole polygon and of its largest part), where geocoders put records they only know
  the country of.

Invalid coordinates (unparseable, NaN, out of range) are dropped when the file is read
(:func:`csp.datasets.read_csv` with ``invalid="drop"``).

The zoo rule needs places that are far (``zoo_far_km``) from the rest of their species: in
data whose whole extent is smaller than that no place can be far, and :func:`clean_occurrences`
is run without it there (``rules=``).

Limitations: the zoo signature is a co-occurrence pattern, not a list of zoos. On the YFCC
species file it also catches botanical gardens (cultivated plants), insect collections and
spots where a camera's wrong default location mixes species from far away, which are not wild
records either; but with at most 10 records per species it can also catch a busy wild site
whose species have few records nearby (for example tropical species, or moths at a light trap
whose other records are across the continent). When most records of a species are captive,
its few wild records look far from the rest; expert ranges fix this for the species that have
one. Country-level ranges are coarse (a lion range includes all of India for the Gir forest).

:func:`sample_pseudo_presences` draws points uniformly by area inside native countries. They
are pseudo-presences from an expert range, not observations: the caller must store them with
a flag saying so and never present them as records.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Geod

from csp.datasets._files import read_fixed_table
from csp.geo import (
    EARTH_RADIUS_KM,
    chord_length,
    haversine_km,
    km_to_radians,
    unit_vectors,
    validate_lonlat,
)

RULES = ("zoo", "range_outlier", "expert_range")
"""Rule names, in the order :func:`clean_occurrences` reports them."""

BASIC_RULES = ("duplicate", "zero_zero", "country_centroid")
"""Rule names of :func:`basic_cleaning`, for any occurrence data (not specific to iNat)."""

NATIVE_RANGE_COLUMNS = ("species", "native_iso_a3", "native_continents", "source")

# Natural Earth features whose iso_a3 is "-99", mapped by name to the ISO code they belong to
# for range purposes (Northern Cyprus and Somaliland to the ISO countries that contain them).
_ISO_BY_NAME = {
    "France": "FRA",
    "Norway": "NOR",
    "Kosovo": "XKX",
    "N. Cyprus": "CYP",
    "Somaliland": "SOM",
}
# Overseas parts of a feature split off as their own country: (parent iso, iso, name,
# continent, (min_lon, min_lat, max_lon, max_lat) box containing the part).
_DETACHED_PARTS = (("FRA", "GUF", "French Guiana", "South America", (-55.0, 1.5, -51.0, 6.5)),)
_ISO_RE = re.compile(r"^[A-Z]{3}$")


# --- native ranges and country polygons ------------------------------------------------


@dataclass(frozen=True)
class NativeRange:
    """A species' native range from expert knowledge, at country / continent level.

    Attributes:
        species: scientific name, as in the occurrence labels.
        iso_a3: ISO 3166-1 alpha-3 codes of native countries.
        continents: Natural Earth continent names whose countries are all native.
        source: where the range comes from.
    """

    species: str
    iso_a3: tuple[str, ...]
    continents: tuple[str, ...]
    source: str


def _split_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(";") if part.strip())


def load_native_ranges(path: str | Path) -> dict[str, NativeRange]:
    """Read ``native_ranges.csv`` (columns :data:`NATIVE_RANGE_COLUMNS`) into ``{species: range}``.

    ``native_iso_a3`` and ``native_continents`` are ``;``-separated; at least one of them must
    be non-empty. Raises FileNotFoundError for a missing file and ValueError naming the file
    and line for a wrong header, a bad ISO code, a duplicate species or an empty source.
    """
    ranges: dict[str, NativeRange] = {}
    for where, _, row in read_fixed_table(path, NATIVE_RANGE_COLUMNS, "native range table"):
        species = row["species"].strip()
        iso = _split_list(row["native_iso_a3"])
        continents = _split_list(row["native_continents"])
        source = row["source"].strip()
        if not species:
            raise ValueError(f"{where}: empty species")
        if species in ranges:
            raise ValueError(f"{where}: duplicate species {species!r}")
        bad = [code for code in iso if not _ISO_RE.match(code)]
        if bad:
            raise ValueError(f"{where}: {species}: invalid ISO-A3 code(s) {bad}")
        if not iso and not continents:
            raise ValueError(f"{where}: {species}: no native country or continent")
        if not source:
            raise ValueError(f"{where}: {species}: empty source")
        ranges[species] = NativeRange(species, iso, continents, source)
    return ranges


def load_countries(path: str | Path) -> gpd.GeoDataFrame:
    """Country polygons (EPSG:4326) with columns ``name, iso_a3, continent, geometry``.

    Natural Earth gives some features iso_a3 ``"-99"``; France, Norway, Kosovo (``XKX``),
    N. Cyprus (``CYP``) and Somaliland (``SOM``) get their code from their name. French
    Guiana is split off France as ``GUF`` in South America. Other ``"-99"`` features keep
    that code and can only be made native through their continent.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"country polygons not found: {path}")
    frame = gpd.read_file(path)
    missing = {"name", "iso_a3", "continent"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing field(s) {sorted(missing)}")
    frame = frame[["name", "iso_a3", "continent", "geometry"]].to_crs("EPSG:4326")
    unknown = frame["iso_a3"] == "-99"
    frame.loc[unknown, "iso_a3"] = (
        frame.loc[unknown, "name"].map(_ISO_BY_NAME).fillna(frame.loc[unknown, "iso_a3"])
    )
    rows = []
    for parent, iso, name, continent, box in _DETACHED_PARTS:
        at = np.flatnonzero(frame["iso_a3"].to_numpy() == parent)
        if len(at) != 1:
            continue
        geometry = frame.geometry.iloc[at[0]]
        box_geom = shapely.box(*box)
        part = geometry.intersection(box_geom)
        if part.is_empty:
            continue
        frame.iloc[at[0], frame.columns.get_loc("geometry")] = geometry.difference(box_geom)
        rows.append({"name": name, "iso_a3": iso, "continent": continent, "geometry": part})
    if rows:
        frame = pd.concat([frame, gpd.GeoDataFrame(rows, crs=frame.crs)], ignore_index=True)
    return gpd.GeoDataFrame(frame, geometry="geometry", crs="EPSG:4326")


def native_country_codes(native: NativeRange, countries: gpd.GeoDataFrame) -> tuple[str, ...]:
    """ISO codes of every native country: listed codes plus countries on listed continents.

    Raises ValueError if a code or continent is not in ``countries`` (from :func:`load_countries`).
    """
    known_iso = set(countries["iso_a3"])
    known_continents = set(countries["continent"])
    bad_iso = sorted(set(native.iso_a3) - known_iso)
    bad_continents = sorted(set(native.continents) - known_continents)
    if bad_iso or bad_continents:
        raise ValueError(
            f"native range of {native.species}: unknown ISO code(s) {bad_iso} / continent(s) "
            f"{bad_continents}; known continents: {sorted(known_continents)}"
        )
    on_continents = countries.loc[countries["continent"].isin(native.continents), "iso_a3"]
    return tuple(sorted(set(native.iso_a3) | set(on_continents)))


# --- configuration and results ---------------------------------------------------------


@dataclass(frozen=True)
class CleaningConfig:
    """Thresholds of the cleaning rules, distances in km (see the module docstring).

    Attributes:
        place_km: records of a species closer than this are one place.
        zoo_min_species: species with a far place needed to call a spot a zoo.
        zoo_far_km: median distance to the species' other places that makes a place far.
        outlier_km: radius in which a place needs support from its species' other places.
        outlier_min_support: fraction of the other places that must lie within outlier_km.
        outlier_min_places: species with fewer places are not judged by range_outlier.
        sea_tolerance_km: records off every country polygon this close to a native country
            count as in range (250 km: Natural Earth 1:110m has no Shetland, ~220 km from
            the mainland polygon, and coastal points often fall just outside its coastlines).
        duplicate_decimals: decimals of a degree at which two records count as one place.
        zero_km: radius around (0, 0) of the ``zero_zero`` rule.
        centroid_km: radius around country centroids of the ``country_centroid`` rule.
    """

    place_km: float = 5.0
    zoo_min_species: int = 8
    zoo_far_km: float = 2000.0
    outlier_km: float = 3000.0
    outlier_min_support: float = 0.2
    outlier_min_places: int = 3
    sea_tolerance_km: float = 250.0
    duplicate_decimals: int = 5
    zero_km: float = 50.0
    centroid_km: float = 1.0

    def __post_init__(self) -> None:
        for name in ("place_km", "zoo_far_km", "outlier_km", "zero_km", "centroid_km"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"CleaningConfig.{name} must be a positive number of km")
        if not (math.isfinite(self.sea_tolerance_km) and self.sea_tolerance_km >= 0):
            raise ValueError("CleaningConfig.sea_tolerance_km must be >= 0 km")
        if self.zoo_min_species < 2:
            raise ValueError("CleaningConfig.zoo_min_species must be at least 2")
        if self.outlier_min_places < 2:
            raise ValueError("CleaningConfig.outlier_min_places must be at least 2")
        if not 0.0 <= self.outlier_min_support <= 1.0:
            raise ValueError("CleaningConfig.outlier_min_support must be in [0, 1]")


@dataclass(frozen=True)
class RuleResult:
    """One rule's verdict on ``N`` records.

    Attributes:
        rule: one of :data:`RULES`.
        drop: ``(N,)`` bool, True for records to drop.
        reason: the criterion, in words, with its thresholds.
        vouched: ``(N,)`` bool records the rule positively confirms (only ``expert_range``:
            records inside their species' native range), or None.
    """

    rule: str
    drop: np.ndarray
    reason: str
    vouched: np.ndarray | None = None


@dataclass(frozen=True)
class CleaningReport:
    """Outcome of :func:`clean_occurrences` on ``N`` records.

    Attributes:
        keep: ``(N,)`` bool, records that pass every rule.
        reason: ``(N,)`` str, ``""`` for kept records, else the rules that dropped the record
            joined by ``"+"`` (e.g. ``"zoo+expert_range"``).
        dropped_per_rule: records dropped by each rule that ran (a record can count for several).
        rules: the individual rule results.
        labels: ``(N,)`` the labels as given.
        n_species_with_range: species of the data that have an expert range.
    """

    keep: np.ndarray
    reason: np.ndarray
    dropped_per_rule: dict[str, int]
    rules: tuple[RuleResult, ...]
    labels: np.ndarray
    n_species_with_range: int


# --- geometry helpers --------------------------------------------------------------------


def _km_matrix(a_xyz: np.ndarray, b_xyz: np.ndarray) -> np.ndarray:
    """Great-circle distances in km between unit vectors, ``(A, B)``."""
    cos = np.clip(a_xyz @ b_xyz.T, -1.0, 1.0)
    return EARTH_RADIUS_KM * np.arccos(cos)


def _check_records(lonlat: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lonlat = np.asarray(lonlat, dtype=np.float64)
    labels = np.asarray(labels)
    if lonlat.ndim != 2 or lonlat.shape[1] != 2:
        raise ValueError(f"lonlat must be (N, 2) (lon, lat) degrees, got shape {lonlat.shape}")
    if labels.shape != (len(lonlat),):
        raise ValueError(f"labels must have shape ({len(lonlat)},), got {labels.shape}")
    missing = pd.isna(labels)
    if missing.any():
        raise ValueError(f"labels: record {int(np.argmax(missing))} has no species label")
    validate_lonlat(lonlat, source="occurrence records")
    return lonlat, labels


@dataclass(frozen=True)
class _Places:
    """Records of one species grouped by ~``place_km`` grid cell.

    ``species``: ``(P,)`` int species code; ``xyz``: ``(P, 3)`` unit vector of the mean
    record; ``of_record``: ``(N,)`` place index of each record.
    """

    species: np.ndarray
    xyz: np.ndarray
    of_record: np.ndarray

    def species_runs(self) -> Iterable[np.ndarray]:
        """Place indices of each species in turn."""
        order = np.argsort(self.species, kind="stable")
        bounds = np.flatnonzero(np.diff(self.species[order])) + 1
        return np.split(order, bounds)


def _places(xyz: np.ndarray, codes: np.ndarray, place_km: float) -> _Places:
    cells = np.floor(xyz / chord_length(km_to_radians(place_km))).astype(np.int64)
    keys = np.column_stack([codes, cells])
    _, of_record = np.unique(keys, axis=0, return_inverse=True)
    of_record = of_record.reshape(-1)
    n_places = int(of_record.max()) + 1 if len(of_record) else 0
    summed = np.zeros((n_places, 3))
    np.add.at(summed, of_record, xyz)
    place_xyz = summed / np.linalg.norm(summed, axis=1, keepdims=True)
    species = np.zeros(n_places, dtype=np.int64)
    species[of_record] = codes
    return _Places(species, place_xyz, of_record)


def _rows_in_chunks(n_rows: int, n_cols: int, budget: int = 4_000_000) -> Iterable[slice]:
    step = max(1, budget // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield slice(start, min(n_rows, start + step))


def _median_km_to_others(places: _Places, place_km: float) -> np.ndarray:
    """``(P,)`` median km from each place to its species' places more than ``place_km`` away.

    NaN when the species has no such other place.
    """
    median = np.full(len(places.species), np.nan)
    for run in places.species_runs():
        if len(run) < 2:
            continue
        for rows in _rows_in_chunks(len(run), len(run)):
            km = _km_matrix(places.xyz[run[rows]], places.xyz[run])
            km[km <= place_km] = np.nan
            has_other = ~np.isnan(km).all(axis=1)
            if has_other.any():
                median[run[rows][has_other]] = np.nanmedian(km[has_other], axis=1)
    return median


def _pairs_within(xyz: np.ndarray, km: float) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs ``(i, j)`` (including ``i == j``) of unit vectors within ``km``."""
    chord = chord_length(km_to_radians(km))
    cells = np.floor(xyz / chord).astype(np.int64)
    base = pd.DataFrame({"cx": cells[:, 0], "cy": cells[:, 1], "cz": cells[:, 2]})
    base["j"] = np.arange(len(xyz))
    left_all, right_all = [], []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                shifted = pd.DataFrame(
                    {"cx": cells[:, 0] + dx, "cy": cells[:, 1] + dy, "cz": cells[:, 2] + dz}
                )
                shifted["i"] = np.arange(len(xyz))
                merged = shifted.merge(base, on=["cx", "cy", "cz"])
                left_all.append(merged["i"].to_numpy())
                right_all.append(merged["j"].to_numpy())
    left, right = np.concatenate(left_all), np.concatenate(right_all)
    close = np.linalg.norm(xyz[left] - xyz[right], axis=1) <= chord
    return left[close], right[close]


def _expert_masks(expert: RuleResult | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(has_range, vouched)`` per record from an expert-range result (all False if None)."""
    if expert is None:
        return np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    if expert.vouched is None or expert.drop.shape != (n,):
        raise ValueError("expert must be the expert_range RuleResult for the same records")
    return expert.drop | expert.vouched, expert.vouched


# --- rules ---------------------------------------------------------------------------------


def flag_zoo_records(
    lonlat: np.ndarray,
    labels: np.ndarray,
    config: CleaningConfig,
    expert: RuleResult | None = None,
) -> RuleResult:
    """Rule 1: records at a captive hotspot (zoo, aquarium, park) far from their species' range.

    Args:
        lonlat: ``(N, 2)`` (lon, lat) degrees.
        labels: ``(N,)`` species.
        config: thresholds ``place_km``, ``zoo_far_km``, ``zoo_min_species``.
        expert: the ``expert_range`` result for the same records, if any: for species with a
            range, "far" means outside it, and records it vouches for are never dropped.
    """
    lonlat, labels = _check_records(lonlat, labels)
    codes, _ = pd.factorize(labels)
    has_range, vouched = _expert_masks(expert, len(labels))
    places = _places(unit_vectors(lonlat), codes, config.place_km)

    far = _median_km_to_others(places, config.place_km) > config.zoo_far_km
    place_ranged = np.zeros(len(places.species), dtype=bool)
    place_vouched = np.zeros(len(places.species), dtype=bool)
    np.logical_or.at(place_ranged, places.of_record, has_range)
    np.logical_or.at(place_vouched, places.of_record, vouched)
    far = np.where(place_ranged, ~place_vouched, far)

    far_idx = np.flatnonzero(far)
    zoo_place = np.zeros(len(places.species), dtype=bool)
    if len(far_idx):
        left, right = _pairs_within(places.xyz[far_idx], config.place_km)
        pairs = pd.DataFrame({"at": left, "species": places.species[far_idx][right]})
        n_species = pairs.groupby("at")["species"].nunique()
        hot = n_species.index[n_species.to_numpy() >= config.zoo_min_species].to_numpy()
        zoo_place[far_idx[hot]] = True

    drop = zoo_place[places.of_record] & ~vouched
    reason = (
        f">= {config.zoo_min_species} species within {config.place_km:g} km whose other "
        f"places are > {config.zoo_far_km:g} km away (median) or outside their expert range"
    )
    return RuleResult("zoo", drop, reason)


def flag_range_outliers(
    lonlat: np.ndarray,
    labels: np.ndarray,
    config: CleaningConfig,
    exclude: np.ndarray | None = None,
    expert: RuleResult | None = None,
) -> RuleResult:
    """Rule 2: records far from the rest of their species' places.

    Args:
        lonlat: ``(N, 2)`` (lon, lat) degrees.
        labels: ``(N,)`` species.
        config: thresholds ``place_km``, ``outlier_km``, ``outlier_min_support``,
            ``outlier_min_places``.
        exclude: ``(N,)`` bool records already dropped (e.g. by the zoo rule): they neither
            count as support nor get flagged here.
        expert: the ``expert_range`` result; records it vouches for are never dropped.
    """
    lonlat, labels = _check_records(lonlat, labels)
    n = len(labels)
    exclude = np.zeros(n, dtype=bool) if exclude is None else np.asarray(exclude, dtype=bool)
    if exclude.shape != (n,):
        raise ValueError(f"exclude must have shape ({n},), got {exclude.shape}")
    _, vouched = _expert_masks(expert, n)
    codes, _ = pd.factorize(labels)
    used = np.flatnonzero(~exclude)
    places = _places(unit_vectors(lonlat[used]), codes[used], config.place_km)

    outlier = np.zeros(len(places.species), dtype=bool)
    for run in places.species_runs():
        if len(run) < config.outlier_min_places:
            continue
        for rows in _rows_in_chunks(len(run), len(run)):
            km = _km_matrix(places.xyz[run[rows]], places.xyz[run])
            others = km > config.place_km
            n_other = others.sum(axis=1)
            support = (others & (km <= config.outlier_km)).sum(axis=1)
            needed = np.maximum(1, np.ceil(config.outlier_min_support * n_other))
            outlier[run[rows]] = (n_other > 0) & (support < needed)

    drop = np.zeros(n, dtype=bool)
    drop[used] = outlier[places.of_record]
    drop &= ~vouched
    reason = (
        f"fewer than max(1, {config.outlier_min_support:g} x other places) of the species' "
        f"places within {config.outlier_km:g} km (species with >= "
        f"{config.outlier_min_places} places)"
    )
    return RuleResult("range_outlier", drop, reason)


def flag_outside_native_range(
    lonlat: np.ndarray,
    labels: np.ndarray,
    native_ranges: Mapping[str, NativeRange],
    countries: gpd.GeoDataFrame,
    config: CleaningConfig,
) -> RuleResult:
    """Rule 3: records of species with an expert range that fall outside it.

    Args:
        lonlat: ``(N, 2)`` (lon, lat) degrees.
        labels: ``(N,)`` species names, matched to ``native_ranges`` keys as strings.
        native_ranges: ``{species: NativeRange}`` (see :func:`load_native_ranges`).
        countries: polygons from :func:`load_countries`.
        config: ``sea_tolerance_km`` for records off every country polygon.

    Returns:
        ``drop`` = out of range; ``vouched`` = in range. Species without a range get neither.
    """
    lonlat, labels = _check_records(lonlat, labels)
    names = labels.astype(str)
    points = gpd.GeoDataFrame(
        {"record": np.arange(len(names))},
        geometry=gpd.points_from_xy(lonlat[:, 0], lonlat[:, 1]),
        crs="EPSG:4326",
    )
    joined = gpd.sjoin(points, countries[["iso_a3", "geometry"]], how="left", predicate="within")
    joined = joined[~joined["record"].duplicated()]
    country = joined.sort_values("record")["iso_a3"].to_numpy()
    off_land = pd.isna(country)

    drop = np.zeros(len(names), dtype=bool)
    vouched = np.zeros(len(names), dtype=bool)
    for species in np.intersect1d(np.unique(names), list(native_ranges)):
        rows = np.flatnonzero(names == species)
        allowed = native_country_codes(native_ranges[species], countries)
        inside = np.isin(country[rows], allowed)
        sea = rows[off_land[rows]]
        if len(sea):
            native_geom = shapely.union_all(
                countries.loc[countries["iso_a3"].isin(allowed), "geometry"].to_numpy()
            )
            lines = shapely.shortest_line(native_geom, shapely.points(lonlat[sea]))
            nearest = shapely.get_coordinates(lines).reshape(-1, 2, 2)[:, 0, :]
            near = haversine_km(lonlat[sea], nearest) <= config.sea_tolerance_km
            inside[off_land[rows]] = near
        vouched[rows] = inside
        drop[rows] = ~inside
    reason = (
        "outside the native countries/continents of the species' expert range (off-map "
        f"records count as inside within {config.sea_tolerance_km:g} km of a native country)"
    )
    return RuleResult("expert_range", drop, reason, vouched=vouched)


def clean_occurrences(
    lonlat: np.ndarray,
    labels: np.ndarray,
    config: CleaningConfig | None = None,
    native_ranges: Mapping[str, NativeRange] | None = None,
    countries: gpd.GeoDataFrame | None = None,
    rules: Sequence[str] = RULES,
) -> CleaningReport:
    """Run the rules on ``N`` occurrence records and say which to keep and why.

    Args:
        lonlat: ``(N, 2)`` (lon, lat) in degrees.
        labels: ``(N,)`` species (ints or strings; strings to use ``native_ranges``).
        config: thresholds (defaults: :class:`CleaningConfig`).
        native_ranges: optional expert ranges; requires ``countries``.
        countries: polygons from :func:`load_countries`.
        rules: the statistical rules to run (``zoo``, ``range_outlier``); ``expert_range``
            runs whenever ranges are given.

    Order: ``expert_range`` (if given), then ``zoo`` (using the expert verdict), then
    ``range_outlier`` on the records the zoo rule kept.
    """
    config = config or CleaningConfig()
    lonlat, labels = _check_records(lonlat, labels)
    if (native_ranges is None) != (countries is None):
        raise ValueError("native_ranges and countries must be given together")
    expert = None
    n_with_range = 0
    if native_ranges is not None and countries is not None:
        expert = flag_outside_native_range(lonlat, labels, native_ranges, countries, config)
        n_with_range = len(np.intersect1d(np.unique(labels.astype(str)), list(native_ranges)))
    unknown = set(rules) - set(RULES)
    if unknown:
        raise ValueError(f"unknown cleaning rule(s) {sorted(unknown)}; known: {list(RULES)}")
    zoo = flag_zoo_records(lonlat, labels, config, expert) if "zoo" in rules else None
    outlier = None
    if "range_outlier" in rules:
        exclude = zoo.drop if zoo is not None else None
        outlier = flag_range_outliers(lonlat, labels, config, exclude=exclude, expert=expert)
    results = tuple(r for r in (zoo, outlier, expert) if r is not None)
    return _report(results, labels, n_with_range)


def _report(results: tuple[RuleResult, ...], labels: np.ndarray, n_with_range: int) -> CleaningReport:
    flags = np.stack([r.drop for r in results], axis=1) if results else np.zeros((len(labels), 0), bool)
    names = np.array([r.rule for r in results], dtype=object)
    reason = np.array(["+".join(names[row]) for row in flags], dtype=object)
    return CleaningReport(
        keep=~flags.any(axis=1),
        reason=reason,
        dropped_per_rule={r.rule: int(r.drop.sum()) for r in results},
        rules=results,
        labels=labels,
        n_species_with_range=n_with_range,
    )


def flag_duplicates(
    lonlat: np.ndarray, labels: np.ndarray, dates: Sequence[str | None] | None, config: CleaningConfig
) -> RuleResult:
    """Every record after the first of one species at one place (rounded) and one date."""
    rounded = np.round(np.asarray(lonlat, dtype=np.float64), config.duplicate_decimals)
    frame = pd.DataFrame({"species": labels, "lon": rounded[:, 0], "lat": rounded[:, 1]})
    if dates is not None:
        frame["date"] = ["" if d is None else str(d) for d in dates]
    drop = frame.duplicated(keep="first").to_numpy()
    on_date = " on the same date" if dates is not None else ""
    reason = f"same species at the same coordinates (1e-{config.duplicate_decimals} deg){on_date}"
    return RuleResult("duplicate", drop, reason)


def flag_zero_zero(lonlat: np.ndarray, config: CleaningConfig) -> RuleResult:
    """Records within ``zero_km`` of (0, 0)."""
    drop = haversine_km(np.asarray(lonlat, dtype=np.float64), np.zeros(2)) <= config.zero_km
    return RuleResult("zero_zero", drop, f"within {config.zero_km:g} km of (0, 0)")


def country_centroids(countries: gpd.GeoDataFrame) -> np.ndarray:
    """``(K, 2)`` (lon, lat) degrees: each country's centroid and that of its largest part."""
    points = []
    for geometry in countries.geometry.values:
        parts = list(getattr(geometry, "geoms", [geometry]))
        largest = max(parts, key=lambda part: part.area)
        points += [geometry.centroid.coords[0], largest.centroid.coords[0]]
    return np.unique(np.asarray(points, dtype=np.float64), axis=0)


def flag_country_centroids(
    lonlat: np.ndarray, countries: gpd.GeoDataFrame, config: CleaningConfig
) -> RuleResult:
    """Records within ``centroid_km`` of a country centroid (:func:`country_centroids`)."""
    centroids = unit_vectors(country_centroids(countries))
    xyz = unit_vectors(np.asarray(lonlat, dtype=np.float64))
    drop = np.zeros(len(xyz), dtype=bool)
    for rows in _rows_in_chunks(len(xyz), len(centroids)):
        drop[rows] = (xyz[rows] @ centroids.T).max(axis=1) >= math.cos(config.centroid_km / EARTH_RADIUS_KM)
    return RuleResult("country_centroid", drop, f"within {config.centroid_km:g} km of a country centroid")


def zoo_rule_applies(lonlat: np.ndarray, config: CleaningConfig | None = None) -> bool:
    """Whether two records of ``lonlat (N, 2)`` degrees may be more than ``zoo_far_km`` apart
    (an upper bound: twice the largest distance from their mean direction). Below that, no
    place can be "far" and the zoo rule has nothing to find."""
    config = config or CleaningConfig()
    xyz = unit_vectors(np.asarray(lonlat, dtype=np.float64))
    centre = xyz.mean(axis=0)
    norm = np.linalg.norm(centre)
    if norm < 1e-9:
        return True
    radius_km = EARTH_RADIUS_KM * float(np.arccos(np.clip(xyz @ (centre / norm), -1, 1)).max())
    return 2 * radius_km > config.zoo_far_km


def basic_cleaning(
    lonlat: np.ndarray,
    labels: np.ndarray,
    dates: Sequence[str | None] | None = None,
    countries: gpd.GeoDataFrame | None = None,
    config: CleaningConfig | None = None,
) -> CleaningReport:
    """The :data:`BASIC_RULES` on ``N`` records (``country_centroid`` only with ``countries``).

    Args:
        lonlat: ``(N, 2)`` (lon, lat) degrees.
        labels: ``(N,)`` species.
        dates: ``N`` dates (or None) that tell repeated visits from duplicates, or None.
        countries: polygons from :func:`load_countries`.
        config: thresholds (defaults: :class:`CleaningConfig`).
    """
    config = config or CleaningConfig()
    lonlat, labels = _check_records(lonlat, labels)
    results = [flag_duplicates(lonlat, labels, dates, config), flag_zero_zero(lonlat, config)]
    if countries is not None:
        results.append(flag_country_centroids(lonlat, countries, config))
    return _report(tuple(results), labels, 0)


def summarise(report: CleaningReport) -> str:
    """A plain-text table of what each rule dropped, plus totals."""
    n = len(report.keep)
    flags = np.stack([r.drop for r in report.rules], axis=1)
    only = flags & (flags.sum(axis=1, keepdims=True) == 1)
    lines = [f"{'rule':<14} {'dropped':>8} {'only':>6}  criterion"]
    for k, result in enumerate(report.rules):
        lines.append(
            f"{result.rule:<14} {int(flags[:, k].sum()):>8} {int(only[:, k].sum()):>6}  {result.reason}"
        )
    dropped = int((~report.keep).sum())
    all_species = pd.unique(report.labels)
    kept_species = pd.unique(report.labels[report.keep])
    share = 100.0 * dropped / n if n else 0.0
    lines += [
        f"{'any rule':<14} {dropped:>8}  of {n} records ({share:.1f}%)",
        f"{'kept':<14} {n - dropped:>8}",
        f"species: {len(all_species)}, with an expert range: {report.n_species_with_range}, "
        f"left with no record: {len(all_species) - len(kept_species)}",
    ]
    return "\n".join(lines)


# --- pseudo-presences ------------------------------------------------------------------------


def sample_pseudo_presences(
    species: str,
    native_countries: Sequence[str],
    n: int,
    seed: int,
    countries_gdf: gpd.GeoDataFrame,
) -> np.ndarray:
    """Sample ``n`` pseudo-presence points uniformly by area inside native countries.

    The polygons are split into parts, each part gets a multinomial share of ``n`` by its
    geodesic area, and points are drawn uniformly by area on the sphere inside each part's
    bounding box and kept if inside the part (rejection sampling). Deterministic for a given
    ``(species, seed)``; different species get different draws.

    These are NOT observations: store them with a flag marking them as pseudo-presences.

    Args:
        species: species name (seeds the generator and names errors).
        native_countries: ISO-A3 codes present in ``countries_gdf``.
        n: number of points (>= 0).
        seed: base seed.
        countries_gdf: polygons from :func:`load_countries`.

    Returns:
        ``(n, 2)`` float32 (lon, lat) degrees.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    codes = list(dict.fromkeys(native_countries))
    unknown = sorted(set(codes) - set(countries_gdf["iso_a3"]))
    if not codes or unknown:
        raise ValueError(
            f"pseudo-presences for {species}: need known ISO-A3 codes, got {codes} (unknown: {unknown})"
        )
    selected = countries_gdf[countries_gdf["iso_a3"].isin(codes)]
    parts = selected.geometry.explode(index_parts=False).to_numpy()
    parts = parts[shapely.area(parts) > 0]
    geod = Geod(ellps="WGS84")
    areas = np.array([abs(geod.geometry_area_perimeter(part)[0]) for part in parts])
    rng = np.random.default_rng([seed, zlib.crc32(species.encode("utf-8"))])
    counts = rng.multinomial(n, areas / areas.sum())
    samples = [_sample_in_polygon(part, k, rng) for part, k in zip(parts, counts, strict=True) if k > 0]
    if not samples:
        return np.zeros((0, 2), dtype=np.float32)
    return np.concatenate(samples).astype(np.float32)


def _sample_in_polygon(polygon: shapely.Polygon, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 2)`` (lon, lat) degrees uniform by area inside ``polygon`` (rejection sampling)."""
    min_lon, min_lat, max_lon, max_lat = polygon.bounds
    sin_lo, sin_hi = math.sin(math.radians(min_lat)), math.sin(math.radians(max_lat))
    shapely.prepare(polygon)
    found: list[np.ndarray] = []
    total = 0
    while total < n:
        batch = max(64, 4 * (n - total))
        lon = rng.uniform(min_lon, max_lon, batch)
        lat = np.degrees(np.arcsin(rng.uniform(sin_lo, sin_hi, batch)))
        inside = shapely.contains_xy(polygon, lon, lat)
        found.append(np.stack([lon[inside], lat[inside]], axis=1))
        total += int(inside.sum())
    return np.concatenate(found)[:n]
