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
from csp.places import PLACE_SEPARATION_KM, WherePlaces
from csp.predictor import ClassScore, GeoClassification, Move, Predictor

RANGE_STEP_DEG = 1.0
WHERE_STEP_DEG = 2.0
WHERE_HIDE_BELOW = 0.1  # on the square-root scale: cells below 1% of the peak density
MAX_PLACES = 10  # places listed by "where could this be" (the UI slider goes to 10)
EXPORT_WIDTH = 1440
PRIOR_LABEL = "p(species | observation here) %"
"""The location prior as the app shows it: normalised over the classes, in percent."""
RANGE_SCORE = "range score"
"""A per-species presence score in [0, 1] (range maps): not normalised, not a probability."""
LABEL_NOTE = (
    "The table lists p(species | observation here): for an observation made at this place, the "
    "probability that it is of each class (normalised over all classes of the prior, so a few "
    "percent is a strong signal among thousands). Range maps show the **range score**: each "
    "species' own presence score in [0, 1] (not normalised over species, not a probability)."
)
PRIOR_COLUMNS = ["rank", "class", PRIOR_LABEL, "expert range"]
SCORE_COLUMNS = ["rank", "class", "score"]
GEO_COLUMNS = ["rank", "class", "score", "change", "species link"]
MOVED_COLUMNS = [
    "class",
    "rank image-only",
    "rank geo-aware",
    PRIOR_LABEL,
    "factor applied",
]
MOVED_NOTE = (
    "How the location moved each class: geo-aware classification multiplies each linked class's "
    "image probability by its **p(species | observation here)**, the location prior at the photo "
    "(the image model learnt from equally many photos of every class, so a species common here "
    "gains over a rare look-alike), bounded so that the prior alone never drives a class to zero "
    "nor replaces an image class of probability ≥ 0.8, then renormalises the linked classes; "
    "**factor applied** is geo-aware ÷ image-only probability."
)
LINKED, NOT_LINKED = "linked", "not linked: image score kept"
UNLINKED_NOTE = (
    "Classes marked *not linked* have no species in the location prior; their image scores are kept."
)
NO_LOCATION = (
    "No location: showing the image-only scores (geo-aware = image-only). "
    "Click the map or type 'lat, lon' to re-rank by location."
)
PLACE_COLUMNS = ["rank", "lat", "lon", "country", f"share of p within {PLACE_SEPARATION_KM:,.0f} km %"]
EXPERT_NOTE = (
    "rests partly on expert-range pseudo-presences (points sampled inside the native "
    "countries where too few wild observations remained), not only on observations"
)
EXPERT_TAG = "  [expert range]"
SEARCH_LIMIT = 50
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
class SpeciesSearch:
    """A species search: the sentence to show ('' for an empty query) and the picker's
    ``(label, class name)`` choices, best first."""

    message: str
    choices: list[tuple[str, str]]


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


def percent(p: float) -> float:
    """A probability in [0, 1] as a percentage, to 0.01 %, for the tables."""
    return round(100.0 * float(p), 2)


def _classification_tables(result: GeoClassification, linked: set[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``SCORE_COLUMNS`` and ``GEO_COLUMNS`` tables of a classification; ``linked``: the image
    classes linked to a species of the prior (the others keep their image score)."""
    image_only = pd.DataFrame(_score_rows(result.image_only), columns=SCORE_COLUMNS)
    re_ranked = result.mode == "wild"
    before = {s.index: rank for rank, s in enumerate(result.image_only, 1)}
    geo_rows = []
    for row, score in zip(_score_rows(result.geo_aware), result.geo_aware, strict=True):
        previous = before.get(score.index)
        change = ("new" if previous is None else _arrow(previous - row[0])) if re_ranked else ""
        link = LINKED if score.index in linked else NOT_LINKED
        geo_rows.append([*row, change, link if re_ranked else ""])
    return image_only, pd.DataFrame(geo_rows, columns=GEO_COLUMNS)


def _moved_row(move: Move) -> list:
    """One ``MOVED_COLUMNS`` row: the ranks, the prior there (%, three significant digits: the
    weights are small and differ by orders of magnitude) and the factor applied."""
    return [
        readable_class_name(move.name),
        move.rank_before,
        move.rank_after,
        float(f"{100.0 * move.prior:.3g}"),
        f"×{move.factor:.3g}",
    ]


def _classification_note(result: GeoClassification, where: str, has_link: bool) -> str:
    """The sentence that leads a classification's message: what the location did."""
    if not has_link:
        return (
            f"At {where}: no image class is linked to a species of the loaded prior, so the "
            "scores are the image classifier's."
        )
    flag = f" ⚠️ {result.flag}" if result.flag else ""
    if result.mode == "captive":
        return f"Not re-ranked at {where}:" + (flag or f" {result.captive.message}")
    moved = f"{len(result.moved)} class(es) changed rank" if result.moved else "no class changed rank"
    return f"Re-ranked by the location prior at {where}: {moved}.{flag} {UNLINKED_NOTE}"


def where_message(result: WherePlaces, country: str) -> str:
    """The where-tab summary: the top place with its share of the probability mass, and a
    warning when the map is flat (:data:`csp.places.FLAT_CONCENTRATION`)."""
    top = result.places[0]
    message = (
        f"Most likely around {top.lat:.1f}, {top.lon:.1f} ({country}): {top.mass:.0%} of the "
        f"probability lies within {PLACE_SEPARATION_KM:,.0f} km of it."
    )
    if result.flat:
        message += (
            f" The map is nearly flat (its mass is spread like a uniform guess over "
            f"{1 / result.concentration:.0%} of the globe's area): the model cannot tell where this "
            "is, and the places listed are little better than a guess."
        )
    return message


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
        """Top-k classes of the location prior at (lon, lat) degrees, with the country: the
        table shows p(species | an observation here) in percent (normalised over the classes)."""
        validate_lonlat(np.array([lon, lat], dtype=np.float64), source="location")
        predictor = self.slot.predictor
        k = int(min(max(k, 1), len(predictor.class_names)))
        probabilities = predictor.normalised_prior(np.array([[lon, lat]]))[0]
        top = np.argsort(-probabilities, kind="stable")[:k]
        expert = predictor.expert_range_species
        names = predictor.class_names
        table = pd.DataFrame(
            [
                [
                    rank,
                    readable_class_name(names[i]),
                    percent(probabilities[i]),
                    "yes" if names[i] in expert else "",
                ]
                for rank, i in enumerate(top, 1)
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
        """Class names matching ``query`` by scientific or common name, best first (1 to 100)."""
        return self.slot.predictor.search_classes(query or "", limit=min(max(int(limit), 1), 100))

    def find_species(self, query: str, limit: int = SEARCH_LIMIT) -> SpeciesSearch:
        """The class picker's choices for a search by scientific or common name, and the
        library's sentence about it ("No species matches ..." when nothing does); an empty
        query gives every class and no message."""
        if not (query or "").strip():
            return SpeciesSearch("", self.class_choices())
        predictor = self.slot.predictor
        found = predictor.find_species(query, limit=limit)
        expert = predictor.expert_range_species
        choices = [
            (m.label + (EXPERT_TAG if m.class_name in expert else ""), m.class_name) for m in found.matches
        ]
        return SpeciesSearch(found.message if found.matches else f"⚠️ {found.message}", choices)

    def class_choices(self) -> list[tuple[str, str]]:
        """(label, name) pairs for the class picker; expert-range priors are marked."""
        predictor = self.slot.predictor
        expert = predictor.expert_range_species
        return [
            (f"{readable_class_name(n)}{EXPERT_TAG if n in expert else ''}", n)
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
            Legend(f"{RANGE_SCORE} of {name}", "0", "1"),
            float(np.clip(opacity, 0.0, 1.0)),
        )
        area = selected_area_km2(grid, threshold)
        summary = (
            f"**{name}**: {RANGE_SCORE} ≥ {threshold:.2f} over {area / 1e6:.2f} million km² "
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
        with range score ≥ ``threshold``; returns their paths (in a new folder of ``work_dir``)."""
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
            "source": f"CSP location prior: {RANGE_SCORE} >= {threshold:g} (predicted, thresholded)",
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

    def classify(
        self, path: str | None, location_text: str | None, k: int = 5, mode: str = "auto"
    ) -> ClassificationView:
        """:meth:`classify_at` a typed "lat, lon" (the API's form); a location that cannot
        be read gives the image-only result and the message says why."""
        try:
            lonlat = parse_location(location_text)
        except ValueError as err:
            return self.classify_at(path, None, k, note=f"Location not usable ({err}).", mode=mode)
        return self.classify_at(path, lonlat, k, mode=mode)

    def classify_at(
        self,
        path: str | None,
        lonlat: tuple[float, float] | None,
        k: int = 5,
        note: str = "",
        mode: str = "auto",
    ) -> ClassificationView:
        """Image-only and geo-aware top-k for a photo at (lon, lat) degrees (EXIF, clicked or
        typed); None: image-only, and the message says so. ``mode``: wild / captive / auto
        (:mod:`csp.captive`); a captive flag leads the message. ``note`` ends the message.

        Raises:
            PhotoError: if the file is not a usable photo.
            ValueError: no image classifier in the loaded model, an invalid ``lonlat`` or mode.
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
        result = predictor.classify(photo.image, lonlat, k=k, mode=mode)
        marker = None
        if lonlat is not None:
            where = place_text(*lonlat, self.countries.name_at(*lonlat))
            marker = Marker(*lonlat, where)
            notes.insert(0, _classification_note(result, where, bool(predictor.species_link)))
        else:
            notes.insert(0, NO_LOCATION)
        image_only, geo_aware = _classification_tables(result, set(predictor.species_link))
        moved = pd.DataFrame([_moved_row(m) for m in result.moved], columns=MOVED_COLUMNS)
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
        result = predictor.where_places(photo.image, min(max(int(n_places), 1), MAX_PLACES), WHERE_STEP_DEG)
        grid, places = result.mass_map, result.places
        names = self.countries.names_at(np.array([[p.lon, p.lat] for p in places]))
        table = pd.DataFrame(
            [
                [rank, round(p.lat, 1), round(p.lon, 1), name or OPEN_WATER, percent(p.mass)]
                for rank, (p, name) in enumerate(zip(places, names, strict=True), 1)
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
        message = where_message(result, table.iloc[0]["country"])
        photo_marker = None
        if photo.gps.lonlat is not None:
            lon, lat = photo.gps.lonlat
            photo_marker = Marker(lon, lat, "where the photo was taken (EXIF GPS)")
            distance = float(haversine_km(np.array([places[0].lon, places[0].lat]), np.array([lon, lat])))
            message += f" The photo's EXIF GPS is {distance:,.0f} km from the top place."
        return WhereView(heat, table, message, photo_marker)


def _arrow(delta: int) -> str:
    if delta > 0:
        return f"↑{delta}"
    if delta < 0:
        return f"↓{-delta}"
    return "="
