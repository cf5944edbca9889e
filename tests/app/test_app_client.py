"""The app's named API endpoints through ``gradio_client``, against the app running in-process."""

from __future__ import annotations

import json
import logging
import urllib.request
from pathlib import Path

import pytest
from conftest import write_gps_photo
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app.static import StaticAssets, file_url
from csp.checkpoint import describe_model, save_checkpoint
from csp.models import LocationEncoder, LocationEncoderConfig

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
    assert [p["parameter_name"] for p in named["/classify"]["parameters"]] == ["path", "location", "mode"]
    assert named["/classify"]["parameters"][2]["parameter_default"] == "auto"


def test_prior(client):
    message, country, table = client.predict("0, 20", 3, api_name="/prior")
    assert country == "Dem. Rep. Congo" and "0.00000, 20.00000" in message
    assert table["headers"] == ["rank", "class", "p(species | observation here) %", "expert range"]
    assert 50 < table["data"][0][2] <= 100 and sum(row[2] for row in table["data"]) <= 100.01
    assert table["data"][0][1:2] == ["Loxodonta africana"] and table["data"][0][3] == "yes"
    message, country, table = client.predict("somewhere", 3, api_name="/prior")
    assert message.startswith("⚠️") and "not a location" in message and table["data"] in ([], [[]])


def test_search_range_and_export(client):
    assert client.predict("ursus", 5, api_name="/search_classes") == ["Ursus americanus", "Ursus arctos"]
    summary = client.predict("Ursus arctos", 0.3, 0.6, api_name="/range")
    assert summary.startswith("**Ursus arctos**: range score ≥ 0.30 over")
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
    assert geo_aware["headers"] == ["rank", "class", "score", "change", "species link"]
    assert moved["headers"] == [
        "class",
        "rank image-only",
        "rank geo-aware",
        "p(species | observation here) %",
        "factor applied",
    ]
    captive = client.predict(handle_file(str(gps_photo)), location, "captive", api_name="/classify")
    assert captive[0].startswith("Not re-ranked at -22.95190, -43.21050 (Brazil): Captive mode")
    assert [row[1] for row in captive[2]["data"]] == [row[1] for row in image_only["data"]]
    with pytest.raises(AppError, match="'tame' .* is not in the list of choices"):
        client.predict(handle_file(str(gps_photo)), location, "tame", api_name="/classify")


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


def test_refused_inputs_log_one_line_not_a_traceback(client, tmp_path, caplog, capfd):
    fake = tmp_path / "fake.jpg"
    fake.write_text("definitely not a JPEG")
    capfd.readouterr()
    with caplog.at_level(logging.WARNING, logger="app"):
        assert client.predict("somewhere", 3, api_name="/prior")[0].startswith("⚠️")
        assert client.predict("Nope", 0.3, 0.6, api_name="/range").startswith("⚠️")
        with pytest.raises(AppError, match="unknown class 'Nope'"):
            client.predict("Nope", 0.3, api_name="/range_export")
        assert "not an image" in client.predict(handle_file(str(fake)), "0, 0", api_name="/classify")[0]
        with pytest.raises(AppError, match="upload a CSV"):
            client.predict("sup-only", "grid", 0.1, 1, "uploaded CSV", None, api_name="/train_start")
    refused = [r.getMessage() for r in caplog.records if r.name == "app"]
    assert [m.split(":")[0] for m in refused] == [
        "refused prior",
        "refused range",
        "refused range export",
        "refused classify",
        "refused training start",
    ]
    assert all("\n" not in m for m in refused)
    assert "Traceback" not in capfd.readouterr().err


def test_every_page_names_the_model_served_now(app_predictor, app_model_dir, tmp_path):
    """A prior loaded by one session is named on every page: on load and while it stays open."""
    from app.training import TrainingManager
    from app.ui import build_app

    demo = build_app(
        app_predictor, model_dir=app_model_dir, work_dir=tmp_path, training=TrainingManager(tmp_path)
    )
    (line,) = [f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "model_line"]
    assert {event for _, event in line.targets} == {"load", "tick"}
    assert str(app_model_dir) in line.fn()
    names = ["Ursus arctos", "Canis lupus"]
    model = LocationEncoder(LocationEncoderConfig(hidden_dim=16, embed_dim=8, num_classes=2))
    checkpoint = save_checkpoint(tmp_path / "best", model, describe_model(model, class_names=names))
    line.fn.__self__.slot.load_prior(checkpoint)
    assert str(checkpoint) in line.fn() and "2 classes" in line.fn()
