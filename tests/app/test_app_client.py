"""The app's named API endpoints through ``gradio_client``, against the app running in-process."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from conftest import write_gps_photo
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app.static import StaticAssets, file_url

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")

ENDPOINTS = {
    "/prior",
    "/search_classes",
    "/range",
    "/range_export",
    "/photo_location",
    "/classify",
    "/where",
    "/train_start",
    "/train_status",
    "/train_cancel",
    "/train_load",
}


@pytest.fixture(scope="module")
def client(app_server) -> Client:
    return Client(app_server, verbose=False)


@pytest.fixture(scope="module")
def gps_photo(tmp_path_factory) -> Path:
    return write_gps_photo(tmp_path_factory.mktemp("client") / "rio.jpg", lon=-43.2105, lat=-22.9519)


def test_every_action_is_a_named_endpoint(client):
    named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(named) == ENDPOINTS
    assert [p["parameter_name"] for p in named["/prior"]["parameters"]] == ["text", "k"]
    assert [p["parameter_name"] for p in named["/classify"]["parameters"]] == ["path", "location"]


def test_prior(client):
    message, country, table = client.predict("0, 20", 3, api_name="/prior")
    assert country == "Dem. Rep. Congo" and "0.00000, 20.00000" in message
    assert table["headers"] == ["rank", "class", "prior", "expert range"]
    assert table["data"][0][1:2] == ["Loxodonta africana"] and table["data"][0][3] == "yes"
    message, country, table = client.predict("somewhere", 3, api_name="/prior")
    assert message.startswith("⚠️") and "not a location" in message and table["data"] in ([], [[]])


def test_search_range_and_export(client):
    assert client.predict("ursus", 5, api_name="/search_classes") == ["Ursus americanus", "Ursus arctos"]
    summary = client.predict("Ursus arctos", 0.3, 0.6, api_name="/range")
    assert summary.startswith("**Ursus arctos**: prior ≥ 0.30 over")
    assert client.predict("Nope", 0.3, 0.6, api_name="/range").startswith("⚠️ unknown class")
    png, geojson = client.predict("Ursus arctos", 0.3, api_name="/range_export")
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads(Path(geojson).read_text())
    assert doc["features"][0]["properties"]["class"] == "Ursus arctos"
    assert doc["features"][0]["geometry"]["type"] in ("Polygon", "MultiPolygon")


def test_photo_location_and_classify(client, gps_photo):
    location, message, preview = client.predict(handle_file(str(gps_photo)), api_name="/photo_location")
    assert location == "-22.95190, -43.21050" and "EXIF" in message and Path(preview).is_file()
    message, image_only, geo_aware, moved = client.predict(
        handle_file(str(gps_photo)), location, api_name="/classify"
    )
    assert message.startswith("Re-ranked by the location prior at -22.95190, -43.21050 (Brazil)")
    assert len(image_only["data"]) == len(geo_aware["data"]) == 5
    assert geo_aware["headers"] == ["rank", "class", "score", "change"]
    assert moved["headers"] == ["class", "rank image-only", "rank geo-aware", "prior at location"]


def test_bad_uploads_get_a_message_not_a_traceback(client, tmp_path):
    fake = tmp_path / "fake.jpg"
    fake.write_text("definitely not a JPEG")
    location, message, preview = client.predict(handle_file(str(fake)), api_name="/photo_location")
    assert location == "" and preview is None
    assert message == "⚠️ fake.jpg is not an image; upload a JPEG, PNG, WebP or HEIC photo"
    message, *tables = client.predict(handle_file(str(fake)), "0, 0", api_name="/classify")
    assert "not an image" in message and "Traceback" not in message


def test_where(client, gps_photo):
    message, places = client.predict(handle_file(str(gps_photo)), 3, api_name="/where")
    assert message.startswith("Most likely around") and "EXIF GPS" in message
    assert len(places["data"]) == 3 and places["headers"][:4] == ["rank", "lat", "lon", "country"]


def test_train_endpoints_when_idle(client):
    message, progress, curve, log = client.predict(api_name="/train_status")
    assert message == "No training run yet." and "no run" in progress and log == ""
    message, model_line = client.predict(api_name="/train_load")
    assert message == "⚠️ no finished training run with a checkpoint to load"
    assert "6 classes" in model_line
    with pytest.raises(AppError, match="upload a CSV with lat, lon and label columns"):
        client.predict("sup-only", "grid", 0.1, 1, "uploaded CSV", None, api_name="/train_start")
    with pytest.raises(AppError, match="hexagons is not in the list of choices"):
        client.predict("sup-only", "hexagons", 0.1, 1, "bundled species data", None, api_name="/train_start")
    assert client.predict(api_name="/train_status")[0] == "No training run yet."


def test_map_assets_are_served_by_the_app(app_server):
    assets = StaticAssets.locate()
    for path in (assets.leaflet_js, assets.leaflet_css, assets.countries):
        with urllib.request.urlopen(app_server.rstrip("/") + file_url(path), timeout=10) as response:
            assert response.status == 200 and response.read() == path.read_bytes()
