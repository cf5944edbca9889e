"""App handlers in plain Python, on the small model of ``conftest.build_app_model_dir``."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import shapely
import torch
from conftest import APP_SPECIES, write_gps_photo
from PIL import Image

from app.countries import CountryLookup
from app.handlers import (
    EXPERT_NOTE,
    GEO_COLUMNS,
    MOVED_COLUMNS,
    PLACE_COLUMNS,
    PRIOR_COLUMNS,
    PRIOR_LABEL,
    SCORE_COLUMNS,
    Handlers,
    click_to_lonlat,
    format_location,
    parse_location,
    readable_class_name,
    where_message,
)
from app.model import ModelSlot
from app.photos import PhotoError, load_photo
from app.static import StaticAssets
from csp.checkpoint import CheckpointError, describe_model, save_checkpoint
from csp.geo import lonlat_grid
from csp.models import LocationEncoder, LocationEncoderConfig
from csp.places import where_places


@pytest.fixture(scope="module")
def assets() -> StaticAssets:
    return StaticAssets.locate()


@pytest.fixture(scope="module")
def countries(assets) -> CountryLookup:
    return CountryLookup(assets.countries)


@pytest.fixture
def handlers(app_predictor, app_model_dir, countries, assets, tmp_path) -> Handlers:
    return Handlers(ModelSlot(app_predictor, app_model_dir), countries, assets.blue_marble, tmp_path)


@pytest.fixture(scope="module")
def gps_photo(tmp_path_factory):
    return write_gps_photo(tmp_path_factory.mktemp("photos") / "nairobi.jpg", lon=36.82, lat=-1.29)


def _decode(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def _png_shape(uri: str) -> tuple:
    return _decode(uri).shape


# --- locations and names ---------------------------------------------------------------------


def test_locations_are_written_and_read_lat_first():
    assert format_location(2.3522, 48.8566) == "48.85660, 2.35220"
    assert parse_location(format_location(-43.2105, -22.9519)) == pytest.approx((-43.2105, -22.9519))
    assert parse_location("48°51'29.6\"N 2°21'07.9\"E") == pytest.approx((2.35219, 48.85822), abs=1e-4)
    assert parse_location("   ") is None and parse_location(None) is None
    with pytest.raises(ValueError, match="not a location"):
        parse_location("Paris")


def test_map_clicks_wrap_longitude_and_reject_bad_latitude():
    assert click_to_lonlat(10.0, 200.0) == pytest.approx((-160.0, 10.0))
    assert click_to_lonlat(-5.0, -540.0) == pytest.approx((-180.0, -5.0))
    with pytest.raises(ValueError, match="latitude"):
        click_to_lonlat(95.0, 0.0)
    with pytest.raises(ValueError):
        click_to_lonlat(float("nan"), 0.0)


@pytest.mark.parametrize(
    ("name", "readable"),
    [
        ("African elephant, Loxodonta africana", "African elephant (Loxodonta africana)"),
        (
            "great white shark, white shark, man-eater, Carcharodon carcharias",
            "great white shark (Carcharodon carcharias)",
        ),
        ("tabby, tabby cat", "tabby"),
        ("Panthera leo", "Panthera leo"),
        ("Ursus_arctos", "Ursus arctos"),
        ("espresso", "espresso"),
    ],
)
def test_readable_class_names(name, readable):
    assert readable_class_name(name) == readable


# --- map: prior and ranges -------------------------------------------------------------------


def test_prior_at_a_place_lists_its_species_with_country_and_expert_flag(handlers):
    view = handlers.prior_at(20.0, 0.0, k=3)
    assert list(view.table.columns) == PRIOR_COLUMNS and len(view.table) == 3
    top = view.table.iloc[0]
    assert top["class"] == "Loxodonta africana" and top[PRIOR_LABEL] > 50 and top["expert range"] == "yes"
    assert view.table[PRIOR_LABEL].is_monotonic_decreasing and view.table[PRIOR_LABEL].sum() <= 100.01
    everywhere = handlers.prior_at(20.0, 0.0, k=len(APP_SPECIES)).table[PRIOR_LABEL]
    assert everywhere.sum() == pytest.approx(100.0, abs=0.05)  # normalised over the classes
    assert (view.table.iloc[1:]["expert range"] == "").all()
    assert view.country == "Dem. Rep. Congo" and view.location_text == "0.00000, 20.00000"
    assert view.marker.lon == 20.0 and "Dem. Rep. Congo" in view.marker.label


def test_prior_from_typed_text_and_k_bounds(handlers):
    view = handlers.prior_at_text("45 N, 100 W", k=100)
    assert view.table.iloc[0]["class"] == "Ursus americanus"
    assert len(view.table) == len(APP_SPECIES)  # k is capped at the number of classes
    assert view.country == "United States of America"
    with pytest.raises(ValueError, match="type a location"):
        handlers.prior_at_text("", 5)
    with pytest.raises(ValueError, match="outside"):
        handlers.prior_at(0.0, 91.0)


def test_search_and_class_choices_mark_expert_ranges(handlers):
    assert handlers.search_classes("ursus") == ["Ursus americanus", "Ursus arctos"]
    choices = dict((value, label) for label, value in handlers.class_choices())
    assert set(choices) == set(APP_SPECIES)
    assert choices["Loxodonta africana"].endswith("[expert range]")
    assert choices["Ursus arctos"] == "Ursus arctos"


def test_range_view_shows_the_heat_map_and_area(handlers):
    view = handlers.range_view("Elephas maximus", threshold=0.5, opacity=0.4)
    assert _png_shape(view.heat.image_uri) == (180, 360, 4)
    assert view.heat.opacity == 0.4 and "Elephas maximus" in view.heat.legend.title
    assert "**Elephas maximus**: range score ≥ 0.50 over" in view.summary and "million km²" in view.summary
    assert view.heat.legend.title == "range score of Elephas maximus"
    assert EXPERT_NOTE not in view.summary
    assert EXPERT_NOTE in handlers.range_view("Loxodonta africana").summary


@pytest.mark.parametrize(
    ("name", "threshold", "message"),
    [("", 0.1, "pick a class"), ("Homo sapiens", 0.1, "unknown class"), ("Ursus arctos", 1.0, "threshold")],
)
def test_range_view_errors(handlers, name, threshold, message):
    with pytest.raises(ValueError, match=message):
        handlers.range_view(name, threshold)


def test_export_range_writes_png_and_polygons_where_the_species_lives(handlers):
    png, geojson = handlers.export_range("Elephas maximus", threshold=0.5)
    assert png.suffix == ".png" and Image.open(png).size == (1440, 720)
    doc = json.loads(geojson.read_text())
    feature = doc["features"][0]
    assert (
        feature["properties"]["class"] == "Elephas maximus" and feature["properties"]["expert_range"] is False
    )
    shape = shapely.geometry.shape(feature["geometry"])
    lon0, lon1, lat0, lat1 = APP_SPECIES["Elephas maximus"][0]
    box = shapely.box(lon0, lat0, lon1, lat1)
    assert shape.intersection(box).area > 0.5 * box.area  # covers most of where it was observed
    assert shape.intersection(box).area > 0.5 * shape.area  # and lies mostly there
    files_before = sorted(handlers.work_dir.rglob("*"))
    again_png, _ = handlers.export_range("Elephas maximus", threshold=0.5)
    assert again_png == png and png.exists()  # the same export is rewritten, not piled up
    assert sorted(handlers.work_dir.rglob("*")) == files_before


# --- photo: geo-aware classification --------------------------------------------------------


def test_photo_location_from_exif(handlers, gps_photo, tmp_path):
    found = handlers.photo_location(str(gps_photo))
    assert found.location_text == "-1.29000, 36.82000" and "EXIF" in found.message
    assert found.image.size == (640, 427)
    plain = tmp_path / "plain.png"
    Image.new("RGB", (64, 64)).save(plain)
    none = handlers.photo_location(str(plain))
    assert none.location_text == "" and none.message.startswith("No GPS position in this photo")
    with pytest.raises(PhotoError):
        handlers.photo_location(None)


def test_classify_at_a_location(handlers, gps_photo):
    view = handlers.classify(str(gps_photo), "-1.29, 36.82")
    assert list(view.image_only.columns) == SCORE_COLUMNS and list(view.geo_aware.columns) == GEO_COLUMNS
    assert list(view.moved.columns) == MOVED_COLUMNS
    assert len(view.image_only) == len(view.geo_aware) == 5
    assert "cat" in view.image_only.iloc[0]["class"]  # scikit-image's "chelsea" is a tabby cat
    assert view.geo_aware["score"].is_monotonic_decreasing
    assert set(view.geo_aware["change"]) <= {"=", "new"} | {f"↑{i}" for i in range(1, 5)} | {
        f"↓{i}" for i in range(1, 5)
    }
    assert view.marker.lon == pytest.approx(36.82) and "Kenya" in view.marker.label
    assert view.message.startswith("Re-ranked by the location prior at -1.29000, 36.82000 (Kenya)")


def test_classify_without_or_with_a_bad_location_is_image_only(handlers, gps_photo):
    view = handlers.classify(str(gps_photo), "")
    assert view.message.startswith("No location: showing the image-only scores")
    assert view.marker is None and view.moved.empty
    assert list(view.geo_aware["class"]) == list(view.image_only["class"])
    assert (view.geo_aware["change"] == "").all()
    bad = handlers.classify(str(gps_photo), "somewhere nice")
    assert bad.marker is None and "Location not usable" in bad.message


def test_geo_aware_reweighting_moves_linked_classes(handlers, app_predictor, monkeypatch, gps_photo):
    """An image the classifier finds equally 'African' and 'Indian' elephant: the location
    decides. The image encoder's output is replaced; the re-weighting is the predictor's."""
    encoder = app_predictor.image_encoder
    index = {n.split(",")[0]: i for i, n in enumerate(encoder.class_names)}
    african, indian = index["African elephant"], index["Indian elephant"]
    probs = torch.full((1, len(encoder.class_names)), 0.1 / (len(encoder.class_names) - 2))
    probs[0, african], probs[0, indian] = 0.44, 0.46
    monkeypatch.setattr(encoder, "encode", lambda images: (torch.zeros(1, 1280), probs))
    in_kenya = handlers.classify(str(gps_photo), "-1.29, 36.82")
    assert in_kenya.image_only.iloc[0]["class"] == "Indian elephant (Elephas maximus)"
    assert in_kenya.geo_aware.iloc[0]["class"] == "African elephant (Loxodonta africana)"
    assert in_kenya.geo_aware.iloc[0]["change"] == "↑1"
    moved = in_kenya.moved.set_index("class")
    assert moved.loc["African elephant (Loxodonta africana)", "rank geo-aware"] == 1
    indian_ranks = moved.loc["Indian elephant (Elephas maximus)"]
    assert indian_ranks["rank image-only"] == 1 and indian_ranks["rank geo-aware"] >= 2
    assert indian_ranks[PRIOR_LABEL] < 1.0  # percent
    in_india = handlers.classify(str(gps_photo), "20, 80")
    assert in_india.geo_aware.iloc[0]["class"] == "Indian elephant (Elephas maximus)"
    assert in_india.moved.empty and "no class changed rank" in in_india.message


def test_moves_are_explained_and_unlinked_classes_said_so(handlers, app_predictor, monkeypatch, gps_photo):
    encoder = app_predictor.image_encoder
    index = {n.split(",")[0]: i for i, n in enumerate(encoder.class_names)}
    probs = torch.full((1, len(encoder.class_names)), 0.1 / (len(encoder.class_names) - 3))
    probs[0, index["African elephant"]], probs[0, index["Indian elephant"]] = 0.44, 0.46
    probs[0, index["tusker"]] = 0.05  # an unlinked class in the top 5 (rows are renormalised)
    monkeypatch.setattr(encoder, "encode", lambda images: (torch.zeros(1, 1280), probs))
    view = handlers.classify(str(gps_photo), "-1.29, 36.82", mode="wild")
    links = dict(zip(view.geo_aware["class"], view.geo_aware["species link"], strict=True))
    assert (
        links["African elephant (Loxodonta africana)"]
        == "linked"
        == links["Indian elephant (Elephas maximus)"]
    )
    assert links["tusker"] == "not linked: image score kept" and "*not linked*" in view.message
    moved = view.moved.set_index("class")
    indian, african = (
        moved.loc["Indian elephant (Elephas maximus)"],
        moved.loc["African elephant (Loxodonta africana)"],
    )
    assert indian[PRIOR_LABEL] < african[PRIOR_LABEL]  # near Nairobi
    assert float(indian["factor applied"].lstrip("×")) < 1 < float(african["factor applied"].lstrip("×"))


def test_captive_modes_and_the_flag(handlers, app_predictor, monkeypatch, gps_photo):
    """A confident African elephant photographed in India: far outside its range, so flagged;
    auto and captive keep the image ranking, wild applies the prior and still says so."""
    encoder = app_predictor.image_encoder
    index = {n.split(",")[0]: i for i, n in enumerate(encoder.class_names)}
    probs = torch.full((1, len(encoder.class_names)), 0.1 / (len(encoder.class_names) - 1))
    probs[0, index["African elephant"]] = 0.9
    monkeypatch.setattr(encoder, "encode", lambda images: (torch.zeros(1, 1280), probs))
    auto = handlers.classify(str(gps_photo), "20, 80")
    assert auto.message.startswith("Not re-ranked at 20.00000, 80.00000 (India): ⚠️ African elephant is far")
    assert "captive?" in auto.message and "not applied (captive mode)" in auto.message
    assert list(auto.geo_aware["class"]) == list(auto.image_only["class"]) and auto.moved.empty
    assert (auto.geo_aware["change"] == "").all()
    wild = handlers.classify(str(gps_photo), "20, 80", mode="wild")
    assert wild.message.startswith("Re-ranked by the location prior at 20.00000, 80.00000 (India)")
    assert "⚠️ African elephant is far" in wild.message and "applied anyway (wild mode)" in wild.message
    assert wild.geo_aware.iloc[0]["class"] == "African elephant (Loxodonta africana)"  # p >= 0.8 stays first
    with pytest.raises(ValueError, match="mode must be one of wild, captive, auto"):
        handlers.classify(str(gps_photo), "20, 80", mode="tame")


def test_species_search_by_common_name_says_when_nothing_matches(handlers):
    found = handlers.find_species("koala")
    assert found.choices == [("Phascolarctos cinereus (koala)", "Phascolarctos cinereus")]
    assert "1 species match 'koala'" in found.message
    elephants = handlers.find_species("elephant")
    assert [name for _, name in elephants.choices] == ["Elephas maximus", "Loxodonta africana"] or [
        name for _, name in elephants.choices
    ] == ["Loxodonta africana", "Elephas maximus"]
    assert elephants.choices[[n for _, n in elephants.choices].index("Loxodonta africana")][0].endswith(
        "[expert range]"
    )
    none = handlers.find_species("xyzzy")
    assert none.choices == [] and none.message.startswith("⚠️ No species matches 'xyzzy'")
    assert handlers.find_species("  ") == type(found)("", handlers.class_choices())


def test_classify_bad_files(handlers, tmp_path):
    text = tmp_path / "fake.jpg"
    text.write_text("not a photo")
    with pytest.raises(PhotoError, match="not an image"):
        handlers.classify(str(text), "0, 0")


# --- where could this be ----------------------------------------------------------------------


def test_where_message_warns_when_the_map_is_flat():
    lat = 90 - (np.arange(90) + 0.5) * 2
    area = np.cos(np.radians(lat))[:, None] * np.ones(180)
    flat = where_places(area / area.sum(), k=2)
    assert flat.flat and "nearly flat" in where_message(flat, "France") and "100%" in where_message(flat, "x")
    peaked = np.full((90, 180), 1e-12)
    peaked[20, 100] = 1.0  # lat 49, lon 21
    sharp = where_places(peaked / peaked.sum(), k=2)
    text = where_message(sharp, "Poland")
    assert text.startswith("Most likely around 49.0, 21.0 (Poland): 100% of the probability")
    assert "flat" not in text


def test_where_lists_places_and_shows_the_photo_gps(handlers, app_predictor, gps_photo):
    view = handlers.where(str(gps_photo), n_places=4)
    assert list(view.places.columns) == PLACE_COLUMNS and len(view.places) == 4
    shares = view.places[PLACE_COLUMNS[-1]]
    assert shares.between(0, 100).all() and shares.sum() <= 100.05
    assert _png_shape(view.heat.image_uri) == (90, 180, 4)
    mass = app_predictor.image_location_map(load_photo(gps_photo).image, step_deg=2.0)
    # The map shows density (mass per unit area): cells below 1% of its peak are hidden.
    density = mass / np.cos(np.deg2rad(lonlat_grid(2.0)[:, :1, 1]))
    alpha = _decode(view.heat.image_uri)[..., 3]
    peak = density.max()
    assert (alpha[density < 0.0099 * peak] == 0).all() and (alpha[density > 0.0101 * peak] > 0).all()
    assert view.photo_marker.lat == pytest.approx(-1.29) and "EXIF" in view.photo_marker.label
    assert view.message.startswith("Most likely around") and "km from the top place" in view.message


# --- swapping in a trained prior --------------------------------------------------------------


def test_load_prior_keeps_the_image_side_and_relinks_species(app_predictor, app_model_dir, tmp_path):
    names = ["Ursus arctos", "Canis lupus", "Elephas maximus"]
    model = LocationEncoder(LocationEncoderConfig(hidden_dim=16, embed_dim=8, num_classes=3))
    checkpoint = save_checkpoint(tmp_path / "best", model, describe_model(model, class_names=names))
    slot = ModelSlot(app_predictor, app_model_dir)
    predictor = slot.load_prior(checkpoint)
    assert slot.predictor is predictor and predictor.class_names == names
    assert (
        predictor.image_encoder is app_predictor.image_encoder
        and predictor.csp_model is app_predictor.csp_model
    )
    assert sorted(predictor.species_link.values()) == [0, 2]  # Canis lupus has no linked ImageNet class here
    assert slot.prior_source == checkpoint and slot.model_dir == app_model_dir
    assert slot.csp_checkpoint == app_model_dir / "csp"
    with pytest.raises(CheckpointError):
        slot.load_prior(app_model_dir / "csp")  # a location-image model is not a prior
    assert slot.predictor is predictor
