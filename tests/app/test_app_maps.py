"""App map layer: colouring, range polygons, the offline map page, country lookup."""

from __future__ import annotations

import base64
import io
import json
import math
import re

import numpy as np
import pytest
import shapely
from PIL import Image

from app.countries import CountryLookup
from app.maps import HeatLayer, Legend, Marker, render_map_page
from app.ranges import range_geojson, selected_area_km2, threshold_polygons
from app.raster import RAMP_HEX, colorize, composite, png_data_uri
from app.static import BASEMAP_DIR, StaticAssets, file_url
from csp.geo import EARTH_RADIUS_KM


@pytest.fixture(scope="module")
def assets() -> StaticAssets:
    return StaticAssets.locate()


@pytest.fixture(scope="module")
def countries(assets) -> CountryLookup:
    return CountryLookup(assets.countries)


def _decode(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


# --- raster ---------------------------------------------------------------------------------


def test_colorize_hides_cells_below_threshold_and_follows_the_ramp():
    grid = np.zeros((2, 4), dtype=np.float32)
    grid[0, 0], grid[0, 1], grid[1, 0] = 1.0, 0.5, 0.05
    rgba = colorize(grid, threshold=0.1)
    assert rgba.shape == (2, 4, 4) and rgba.dtype == np.uint8
    assert rgba[1, 0, 3] == 0 and rgba[1, 3, 3] == 0  # below threshold: transparent
    assert rgba[0, 0, 3] == 255 and 0 < rgba[0, 1, 3] < 255
    top = tuple(int(RAMP_HEX[-1][i : i + 2], 16) for i in (1, 3, 5))
    assert tuple(rgba[0, 0, :3]) == top


def test_colorize_vmax_stretches_small_probabilities():
    grid = np.full((2, 4), 1e-3, dtype=np.float32)
    grid[0, 0] = 2e-3
    rgba = colorize(grid, vmax=float(grid.max()))
    assert rgba[0, 0, 3] == 255
    assert rgba[1, 1, 3] == round((0.35 + 0.65 * 0.5) * 255)


@pytest.mark.parametrize("bad", [np.zeros((3, 3)), np.zeros(6), np.full((2, 4), np.nan)])
def test_colorize_rejects_non_global_or_nan_grids(bad):
    with pytest.raises(ValueError):
        colorize(bad)


def test_png_data_uri_round_trips_and_composite_keeps_basemap_size():
    rgba = colorize(np.linspace(0, 1, 18 * 36, dtype=np.float32).reshape(18, 36))
    assert np.array_equal(_decode(png_data_uri(rgba)), rgba)
    basemap = Image.new("RGB", (72, 36), (0, 0, 255))
    out = composite(basemap, rgba)
    assert out.size == (72, 36) and out.mode == "RGB"
    assert out.getpixel((71, 35)) != (0, 0, 255)  # top of the ramp, opaque, covers the basemap


# --- range polygons ------------------------------------------------------------------------


def test_threshold_polygons_follow_cell_edges():
    grid = np.zeros((18, 36), dtype=np.float32)  # 10 degree cells
    grid[2:4, 20:23] = 0.9  # lat 70..50, lon 20..50
    grid[12, 0] = 0.8  # lat -30..-40, lon -180..-170
    shape = threshold_polygons(grid, 0.5)
    parts = list(shape.geoms)
    assert shape.geom_type == "MultiPolygon" and len(parts) == 2
    assert shapely.equals(
        shape, shapely.union_all([shapely.box(20, 50, 50, 70), shapely.box(-180, -40, -170, -30)])
    )
    assert threshold_polygons(grid, 0.95).is_empty


def test_threshold_polygons_merge_ragged_rows_into_one_polygon():
    grid = np.zeros((18, 36), dtype=np.float32)
    grid[5, 10:15] = 1.0
    grid[6, 12:20] = 1.0
    shape = threshold_polygons(grid, 0.5)
    assert shape.geom_type == "Polygon" and shape.is_valid
    assert shape.area == pytest.approx(13 * 100.0)


def test_selected_area_is_exact_on_the_sphere():
    grid = np.ones((180, 360), dtype=np.float32)
    assert selected_area_km2(grid, 0.5) == pytest.approx(4 * math.pi * EARTH_RADIUS_KM**2, rel=1e-9)
    grid[90:] = 0.0  # southern hemisphere off
    assert selected_area_km2(grid, 0.5) == pytest.approx(2 * math.pi * EARTH_RADIUS_KM**2, rel=1e-9)


def test_range_geojson_is_a_feature_collection_with_properties():
    grid = np.zeros((180, 360), dtype=np.float32)
    grid[0:90, 180:360] = 0.7  # north-east quarter
    doc = json.loads(range_geojson(grid, 0.5, {"class": "Ursus arctos"}))
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 1
    feature = doc["features"][0]
    assert feature["properties"]["class"] == "Ursus arctos"
    assert feature["properties"]["threshold"] == 0.5 and feature["properties"]["cell_size_deg"] == 1.0
    assert feature["properties"]["area_km2"] == pytest.approx(math.pi * EARTH_RADIUS_KM**2, rel=1e-6)
    assert shapely.geometry.shape(feature["geometry"]).bounds == (0.0, 0.0, 180.0, 90.0)


# --- the map page --------------------------------------------------------------------------


def test_map_page_is_offline_and_uses_packaged_leaflet(assets):
    page = render_map_page(assets)
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", page), "page references an outside host"
    assert f'src="{file_url(assets.leaflet_js)}"' in page
    assert f'href="{file_url(assets.leaflet_css)}"' in page
    assert "js_lib_leaflet" in str(assets.leaflet_js) and assets.leaflet_js.is_file()
    assert file_url(assets.blue_marble) in page and file_url(assets.countries) in page
    assert "L.CRS.EPSG4326" in page and "tileLayer" not in page
    for name in ("jquery", "bootstrap", "font-awesome", "awesome-markers"):
        assert name not in page.lower()


def test_static_assets_report_a_missing_basemap(tmp_path):
    with pytest.raises(FileNotFoundError, match="blue_marble"):
        StaticAssets.locate(tmp_path)
    assert StaticAssets.locate(BASEMAP_DIR).blue_marble.parent == BASEMAP_DIR


def test_map_layers_round_trip_through_props():
    marker = Marker(2.35, 48.85, "Paris")
    assert marker.to_props() == {"lat": 48.85, "lon": 2.35, "label": "Paris"}
    assert Marker.from_props(marker.to_props()) == marker
    assert Marker.from_props(None) is None and Marker.from_props("") is None and Marker.from_props({}) is None
    heat = HeatLayer("data:image/png;base64,AA==", Legend("t", "0", "1"), 0.5).to_props()
    assert heat["url"] == "data:image/png;base64,AA==" and heat["legend"]["colors"] == list(RAMP_HEX)
    assert heat["legend"]["title"] == "t" and "opacity" not in heat  # a prop of its own


# --- countries -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lon", "lat", "name"),
    [
        (2.3522, 48.8566, "France"),
        (139.6503, 35.6762, "Japan"),
        (-43.2105, -22.9519, "Brazil"),
        (36.82, -1.29, "Kenya"),
        (-30.0, 0.0, None),  # mid-Atlantic
        (-160.0, -60.0, None),
    ],
)
def test_country_at(countries, lon, lat, name):
    assert countries.name_at(lon, lat) == name


def test_country_lookup_tolerates_coarse_coasts_and_is_vectorised(countries):
    # Valletta (Malta) is not covered by the 1:110m outlines; Sicily is the nearest land,
    # but 0.6 degrees away: beyond the tolerance, so open water rather than a wrong country.
    assert countries.name_at(14.51, 35.90) is None
    # 0.2 degrees off the coast of Portugal: still Portugal.
    assert countries.name_at(-9.7, 39.0) == "Portugal"
    points = np.array([[2.3522, 48.8566], [-30.0, 0.0], [139.6503, 35.6762]])
    assert countries.names_at(points) == ["France", None, "Japan"]


def test_country_lookup_requires_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="country outlines"):
        CountryLookup(tmp_path / "missing.geojson")
