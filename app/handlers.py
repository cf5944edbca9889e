"""Pure-Python handlers behind every action of the app (no Gradio here: testable directly).

Locations typed or shown to users are written "lat, lon" in degrees (as in map apps, and as
:func:`csp.geo.parse_lonlat_pair` reads them); everything else uses (lon, lat) degrees.
Handlers raise ``ValueError`` (or :class:`app.photos.PhotoError`) with a message meant for the
user; the tabs (:mod:`app.tabs`) show it as :func:`refusal` writes it. This module is the one
place where results become text and tables: the tabs only route view fields to components.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from app.countries import CountryLookup
from app.maps import HeatLayer, Legend, Marker
from app.model import ModelSlot
from app.photos import load_photo
from app.ranges import range_geojson, selected_area_km2
from app.raster import colorize, composite, png_data_uri
from csp.geo import haversine_km, lonlat_grid, parse_lonlat_pair, validate_lonlat, wrap_lon
from csp.names import is_scientific_name
from csp.predictor import ClassScore, Predictor

RANGE_STEP_DEG = 1.0
WHERE_STEP_DEG = 2.0
WHERE_HIDE_BELOW = 0.1  # on the square-root scale: cells below 1% of the peak density
MAX_PLACES = 10  # places listed by "where could this be" (the UI slider goes to 10)
PLACE_RADIUS_KM = 500.0
EXPORT_WIDTH = 1440
PRIOR_COLUMNS = ["rank", "class", "prior", "expert range"]
SCORE_COLUMNS = ["rank", "class", "score"]
GEO_COLUMNS = ["rank", "class", "score", "change"]
MOVED_COLUMNS = ["class", "rank image-only", "rank geo-aware", "prior at location"]
PLACE_COLUMNS = ["rank", "lat", "lon", "country", f"p within {PLACE_RADIUS_KM:.0f} km"]
EXPERT_NOTE = (
    "rests partly on expert-range pseudo-presences (points sampled inside the native "
    "countries where too few wild observations remained), not only on observations"
)
OPEN_WATER = "open water"


def refusal(err: Exception) -> str:
    """How a refused input is shown: one line with the reason (never a traceback)."""
    return f"⚠️ {err}"


def format_location(lon: float, lat: float) -> str:
    """``"lat, lon"`` with 5 decimals (about 1 m), the order :func:`parse_lonlat_pair` reads."""
    return f"{lat:.5f}, {lon:.5f}"


def place_text(lon: float, lat: float, country: str | None) -> str:
    """ "lat, lon (country)" for messages and marker tooltips."""
    return f"{format_location(lon, lat)} ({country or OPEN_WATER})"


def click_to_lonlat(lat: float, lng: float) -> tuple[float, float]:
    """A map click (Leaflet lat/lng, lng possibly outside ±180 after panning) -> (lon, lat).

    Raises:
        ValueError: for a non-finite value or a latitude beyond ±90.
    """
    lon, lat = float(wrap_lon(float(lng))), float(lat)
    validate_lonlat(np.array([lon, lat]), source="map click")
    return lon, lat


def parse_location(text: str | None) -> tuple[float, float] | None:
    """Typed "lat, lon" (decimal or DMS) -> (lon, lat) degrees; None for an empty box.

    Raises:
        ValueError: with the reason, from :func:`csp.geo.parse_lonlat_pair`.
    """
    if text is None or not text.strip():
        return None
    return parse_lonlat_pair(text)


def readable_class_name(name: str) -> str:
    """Short display name: "African elephant, Loxodonta africana" -> "African elephant
    (Loxodonta africana)"; "great white shark, white shark, ..." -> "great white shark";
    species names ("Panthera leo") and underscores ("Ursus_arctos") read as written."""
    lemmas = [part.strip() for part in name.replace("_", " ").split(",") if part.strip()]
    if not lemmas:
        return name
    first, last = lemmas[0], lemmas[-1]
    if len(lemmas) > 1 and is_scientific_name(last, binomial_only=True) and last != first:
        return f"{first} ({last})"
    return first


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")[:60] or "class"


@dataclass(frozen=True)
class PriorView:
    """The location prior at one place: ``table`` has ``PRIOR_COLUMNS``; ``marker`` is the
    place on the map."""

    lon: float
    lat: float
    country: str | None
    table: pd.DataFrame
    marker: Marker

    @property
    def location_text(self) -> str:
        return format_location(self.lon, self.lat)

    @property
    def country_text(self) -> str:
        return self.country or OPEN_WATER

    @property
    def message(self) -> str:
        return f"**{self.location_text}** (lat, lon): {self.country_text}"


@dataclass(frozen=True)
class RangeView:
    """A class's predicted range: the heat layer and a Markdown summary."""

    class_name: str
    heat: HeatLayer
    summary: str


@dataclass(frozen=True)
class PhotoLocation:
    """Where a photo was taken according to its EXIF: (lon, lat) degrees or None, a message,
    and the photo as it will be classified (upright, downscaled)."""

    lonlat: tuple[float, float] | None
    message: str
    image: Image.Image

    @property
    def location_text(self) -> str:
        """ "lat, lon" for the location box ('' if the photo has no GPS position)."""
        return "" if self.lonlat is None else format_location(*self.lonlat)

    @property
    def marker(self) -> Marker | None:
        if self.lonlat is None:
            return None
        return Marker(*self.lonlat, "where the photo was taken (EXIF GPS)")


@dataclass(frozen=True)
class ClassificationView:
    """Image-only vs geo-aware top-k (``SCORE_COLUMNS`` / ``GEO_COLUMNS``) and the classes
    the location moved (``MOVED_COLUMNS``); ``marker`` is the location used, if any."""

    image_only: pd.DataFrame
    geo_aware: pd.DataFrame
    moved: pd.DataFrame
    message: str
    marker: Marker | None


@dataclass(frozen=True)
class WhereView:
    """Image -> location: heat layer, the top places (``PLACE_COLUMNS``), a message, and the
    photo's own GPS position (for comparison) if it has one."""

    heat: HeatLayer
    places: pd.DataFrame
    message: str
    photo_marker: Marker | None


def _score_rows(scores: list[ClassScore]) -> list[list]:
    return [[rank, readable_class_name(s.name), round(s.score, 4)] for rank, s in enumerate(scores, 1)]


def top_places(
    grid: np.ndarray, n: int, radius_km: float = PLACE_RADIUS_KM
) -> list[tuple[float, float, float]]:
    """The ``n`` highest peaks of a probability grid at least ``2 * radius_km`` apart.

    Args:
        grid: ``(H, 2H)`` probabilities over the globe (rows north -> south), summing to 1.
        n: number of places.
        radius_km: a place's probability is the mass of the cells within this distance.

    Returns:
        ``[(lon, lat, probability mass), ...]`` of peak cell centres, largest mass first.
    """
    centres = lonlat_grid(180.0 / grid.shape[0]).reshape(-1, 2)
    flat = np.asarray(grid, dtype=np.float64).reshape(-1)
    order = np.argsort(-flat, kind="stable")
    places: list[tuple[float, float, float]] = []
    for index in order:
        point = centres[index]
        if places and (haversine_km(np.array([p[:2] for p in places]), point) < 2 * radius_km).any():
            continue
        mass = float(flat[haversine_km(centres, point) <= radius_km].sum())
        places.append((float(point[0]), float(point[1]), mass))
        if len(places) == n:
            break
    return sorted(places, key=lambda place: -place[2])


class Handlers:
    """The model-facing actions of the app.

    Args:
        slot: the served predictor (read once per call).
        countries: point -> country lookup.
        blue_marble: the basemap image, used for PNG exports.
        work_dir: where exported files are written (the caller cleans it up).
    """

    def __init__(self, slot: ModelSlot, countries: CountryLookup, blue_marble: Path, work_dir: Path) -> None:
        self.slot = slot
        self.countries = countries
        self.blue_marble = Path(blue_marble)
        self.work_dir = Path(work_dir)
        self._basemap: Image.Image | None = None
        self._basemap_lock = threading.Lock()

    def model_line(self) -> str:
        """One line on the model served now (shown at the top of every page)."""
        slot = self.slot
        predictor = slot.predictor
        source = f"`{slot.prior_source}`" if slot.prior_source is not None else "(in memory)"
        parts = [
            f"**Model** {source}: location prior over {len(predictor.class_names):,} classes",
            f"{len(predictor.expert_range_species)} resting partly on expert ranges",
            "geo-aware photo classification " + ("on" if predictor.has_image_encoder else "off"),
            "image → location " + ("on" if predictor.has_image_to_location else "off"),
        ]
        return "; ".join(parts) + "."

    # --- map: location prior ------------------------------------------------------------

    def prior_at(self, lon: float, lat: float, k: int = 10) -> PriorView:
        """Top-k classes of the location prior at (lon, lat) degrees, with the country."""
        validate_lonlat(np.array([lon, lat], dtype=np.float64), source="location")
        predictor = self.slot.predictor
        k = int(min(max(k, 1), len(predictor.class_names)))
        top = predictor.top_classes(lon, lat, k)
        expert = predictor.expert_range_species
        table = pd.DataFrame(
            [
                [rank, readable_class_name(s.name), round(s.score, 4), "yes" if s.name in expert else ""]
                for rank, s in enumerate(top, 1)
            ],
            columns=PRIOR_COLUMNS,
        )
        country = self.countries.name_at(lon, lat)
        return PriorView(lon, lat, country, table, Marker(lon, lat, place_text(lon, lat, country)))

    def prior_at_text(self, text: str, k: int = 10) -> PriorView:
        """:meth:`prior_at` for a typed "lat, lon"; ValueError if empty or unreadable."""
        lonlat = parse_location(text)
        if lonlat is None:
            raise ValueError("type a location as 'lat, lon', e.g. 48.8566, 2.3522, or click the map")
        return self.prior_at(*lonlat, k=k)

    def search_classes(self, query: str, limit: int = 20) -> list[str]:
        """Class names containing ``query`` (case-insensitive), prefix matches first (1 to 100)."""
        return self.slot.predictor.search_classes(query or "", limit=min(max(int(limit), 1), 100))

    def class_choices(self) -> list[tuple[str, str]]:
        """(label, name) pairs for the class picker; expert-range priors are marked."""
        predictor = self.slot.predictor
        expert = predictor.expert_range_species
        return [
            (f"{readable_class_name(n)}{'  [expert range]' if n in expert else ''}", n)
            for n in sorted(predictor.class_names)
        ]

    @staticmethod
    def _range_grid(predictor: Predictor, class_name: str) -> np.ndarray:
        if not class_name:
            raise ValueError("pick a class to see its range")
        try:
            index = predictor.class_index(class_name)
        except KeyError:
            raise ValueError(f"unknown class {class_name!r}; pick one from the list") from None
        return predictor.range_map(index, step_deg=RANGE_STEP_DEG)

    @staticmethod
    def _check_threshold(threshold: float) -> float:
        threshold = float(threshold)
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        return threshold

    def range_view(self, class_name: str, threshold: float = 0.1, opacity: float = 0.75) -> RangeView:
        """Predicted range of one class over the globe as a heat layer (cells below
        ``threshold`` hidden) and a summary with the area above it."""
        threshold = self._check_threshold(threshold)
        if not np.isfinite(opacity):
            raise ValueError(f"opacity must be a number in [0, 1], got {opacity}")
        predictor = self.slot.predictor  # read once: a model swap mid-request cannot mix models
        grid = self._range_grid(predictor, class_name)
        name = readable_class_name(class_name)
        heat = HeatLayer(
            png_data_uri(colorize(grid, threshold)),
            Legend(f"prior of {name}", "0", "1"),
            float(np.clip(opacity, 0.0, 1.0)),
        )
        area = selected_area_km2(grid, threshold)
        summary = (
            f"**{name}**: prior ≥ {threshold:.2f} over {area / 1e6:.2f} million km² "
            f"(maximum {grid.max():.3f} on a {RANGE_STEP_DEG:g}° grid)."
        )
        if class_name in predictor.expert_range_species:
            summary += f"\n\n⚠️ This prior {EXPERT_NOTE}."
        return RangeView(class_name, heat, summary)

    def _basemap_image(self) -> Image.Image:
        with self._basemap_lock:
            if self._basemap is None:
                with Image.open(self.blue_marble) as image:
                    image.draft("RGB", (EXPORT_WIDTH, EXPORT_WIDTH // 2))
                    self._basemap = image.convert("RGB").resize(
                        (EXPORT_WIDTH, EXPORT_WIDTH // 2), Image.Resampling.LANCZOS
                    )
            return self._basemap

    def export_range(self, class_name: str, threshold: float = 0.1) -> tuple[Path, Path]:
        """Write the range as a PNG (over the basemap) and as GeoJSON polygons of the cells
        with prior ≥ ``threshold``; returns their paths (in a new folder of ``work_dir``)."""
        threshold = self._check_threshold(threshold)
        predictor = self.slot.predictor
        grid = self._range_grid(predictor, class_name)
        # One file pair per (class, threshold, model): a repeated export overwrites, not piles up.
        stem = f"{_safe_name(class_name)}_range_t{threshold:.2f}"
        folder = self.work_dir / f"range-{id(predictor):x}"
        folder.mkdir(parents=True, exist_ok=True)
        png_path, geojson_path = folder / f"{stem}.png", folder / f"{stem}.geojson"
        composite(self._basemap_image(), colorize(grid, threshold)).save(png_path)
        properties = {
            "class": class_name,
            "expert_range": class_name in predictor.expert_range_species,
            "source": "CSP location prior (predicted, thresholded)",
        }
        geojson_path.write_text(range_geojson(grid, threshold, properties), encoding="utf-8")
        return png_path, geojson_path

    # --- photo: geo-aware classification --------------------------------------------------

    def photo_location(self, path: str | None) -> PhotoLocation:
        """EXIF GPS of an uploaded photo.

        Raises:
            PhotoError: if the file is not a usable photo.
        """
        photo = load_photo(path)
        if photo.gps.lonlat is None:
            return PhotoLocation(
                None,
                f"No GPS position in this photo ({photo.gps.reason}). "
                "Click the map or type 'lat, lon' to use a location.",
                photo.image,
            )
        lon, lat = photo.gps.lonlat
        message = f"The photo's EXIF GPS position: {format_location(lon, lat)} (lat, lon)."
        return PhotoLocation((lon, lat), message, photo.image)

    def classify(self, path: str | None, location_text: str | None, k: int = 5) -> ClassificationView:
        """:meth:`classify_at` a typed "lat, lon" (the API's form); a location that cannot
        be read gives the image-only result and the message says why."""
        try:
            lonlat = parse_location(location_text)
        except ValueError as err:
            return self.classify_at(path, None, k, note=f"Location not usable ({err}).")
        return self.classify_at(path, lonlat, k)

    def classify_at(
        self, path: str | None, lonlat: tuple[float, float] | None, k: int = 5, note: str = ""
    ) -> ClassificationView:
        """Image-only and geo-aware top-k for a photo at (lon, lat) degrees (EXIF, clicked or
        typed); None: image-only, and the message says so. ``note`` ends the message.

        Raises:
            PhotoError: if the file is not a usable photo.
            ValueError: if the loaded model has no image classifier, or ``lonlat`` is invalid.
        """
        photo = load_photo(path)
        predictor = self.slot.predictor
        if not predictor.has_image_encoder:
            raise ValueError("the loaded model has no image classifier (no image encoder)")
        if lonlat is not None:
            lonlat = (float(lonlat[0]), float(lonlat[1]))
            validate_lonlat(np.array(lonlat), source="location")
        notes = []
        if photo.image.size != photo.original_size:
            w, h = photo.original_size
            notes.append(f"Photo downscaled from {w}×{h} px.")
        if note:
            notes.append(note)
        result = predictor.classify(photo.image, lonlat, k=k)
        image_only = pd.DataFrame(_score_rows(result.image_only), columns=SCORE_COLUMNS)
        before = {s.index: rank for rank, s in enumerate(result.image_only, 1)}
        geo_rows = []
        for row, score in zip(_score_rows(result.geo_aware), result.geo_aware, strict=True):
            previous = before.get(score.index)
            change = "new" if previous is None else _arrow(previous - row[0])
            geo_rows.append([*row, change])
        moved = pd.DataFrame(
            [[readable_class_name(m.name), m.rank_before, m.rank_after, round(m.prior, 4)] for m in result.moved],
            columns=MOVED_COLUMNS,
        )
        marker = None
        if lonlat is None:
            notes.insert(
                0,
                "No location: showing the image-only scores (geo-aware = image-only). "
                "Click the map or type 'lat, lon' to re-rank by location.",
            )
            geo_rows = [[*row, ""] for row in _score_rows(result.image_only)]
        else:
            lon, lat = lonlat
            where = place_text(lon, lat, self.countries.name_at(lon, lat))
            marker = Marker(lon, lat, where)
            if not predictor.species_link:
                notes.insert(
                    0,
                    f"At {where}: no image class is linked to a species of the loaded prior, so "
                    "the scores are the image classifier's.",
                )
            else:
                moved_text = (
                    f"{len(result.moved)} class(es) changed rank" if result.moved else "no class changed rank"
                )
                notes.insert(0, f"Re-ranked by the location prior at {where}: {moved_text}.")
        geo_aware = pd.DataFrame(geo_rows, columns=GEO_COLUMNS)
        return ClassificationView(image_only, geo_aware, moved, " ".join(notes), marker)

    # --- image -> where could this be ---------------------------------------------------------

    def where(self, path: str | None, n_places: int = 5) -> WhereView:
        """Heat-map of p(location | image) over the globe and its top places.

        Raises:
            PhotoError: if the file is not a usable photo.
            ValueError: if the loaded model cannot map images to locations.
        """
        photo = load_photo(path)
        predictor = self.slot.predictor
        if not predictor.has_image_to_location:
            raise ValueError("the loaded model has no pre-trained CSP image-location model")
        grid = predictor.image_location_map(photo.image, step_deg=WHERE_STEP_DEG)
        places = top_places(grid, min(max(int(n_places), 1), MAX_PLACES))
        names = self.countries.names_at(np.array([p[:2] for p in places]))
        table = pd.DataFrame(
            [
                [rank, round(lat, 1), round(lon, 1), name or OPEN_WATER, round(mass, 4)]
                for rank, ((lon, lat, mass), name) in enumerate(zip(places, names, strict=True), 1)
            ],
            columns=PLACE_COLUMNS,
        )
        # Drawn as density (mass / cell area), so an equally good match looks equally strong at
        # 60 N as at the equator; square-root scale relative to the peak, cells under 1% of it
        # hidden: the mass sits in a few cells and a linear scale would veil the globe.
        cos_lat = np.cos(np.deg2rad(lonlat_grid(WHERE_STEP_DEG)[:, :1, 1]))
        density = grid / np.clip(cos_lat, 1e-6, None)
        relative = np.sqrt(density / density.max())
        heat = HeatLayer(
            png_data_uri(colorize(relative, WHERE_HIDE_BELOW)),
            Legend("p(location | image), √ relative to peak", "0", "peak"),
        )
        message = f"Most likely around {places[0][1]:.1f}, {places[0][0]:.1f} ({table.iloc[0]['country']})."
        photo_marker = None
        if photo.gps.lonlat is not None:
            lon, lat = photo.gps.lonlat
            photo_marker = Marker(lon, lat, "where the photo was taken (EXIF GPS)")
            distance = float(haversine_km(np.array(places[0][:2]), np.array([lon, lat])))
            message += f" The photo's EXIF GPS is {distance:,.0f} km from the top place."
        return WhereView(heat, table, message, photo_marker)


def _arrow(delta: int) -> str:
    if delta > 0:
        return f"↑{delta}"
    if delta < 0:
        return f"↓{-delta}"
    return "="
