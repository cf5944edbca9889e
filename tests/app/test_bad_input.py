"""Bad input to the app and the trainer: each case gets a clear message and changes nothing else.

The app's handlers are driven directly (the handler fixtures of ``test_app_handlers``, on the
small model of ``conftest.build_app_model_dir``); the UI turns every ``ValueError`` they raise
(``PhotoError`` and ``CheckpointError`` are ValueErrors) into a "⚠️ message" line, so "no
traceback in the UI" means: a ValueError with a readable message, nothing else. A few cases go
through the named API of the running app (``conftest.app_server``) as well.

Coordinate policy (``csp.geo``): a latitude beyond ±90, a longitude beyond ±180, NaN and ±inf
typed by a user or sent to the API are **rejected**, never wrapped; only a click on the map
(panned across the antimeridian) is wrapped, by :func:`app.handlers.click_to_lonlat`.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import json
import shutil
import signal
import struct
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_gps_photo
from gradio_client import Client, handle_file
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from app.cli import main
from app.handlers import Handlers, click_to_lonlat
from app.model import ModelSlot
from app.photos import MAX_SIDE, PhotoError, load_photo
from app.train_handlers import TrainingHandlers
from app.training import TrainingManager
from csp.checkpoint import SCHEMA_VERSION, CheckpointError, describe_model, save_checkpoint
from csp.datasets import read_csv
from csp.models import LocationEncoder, LocationEncoderConfig
from tests.app import test_app_handlers
from train.config import DataConfig
from train.data import load_species
from train.evaluate import evaluate_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")

# The handler fixtures of tests/app/test_app_handlers.py, shared rather than copied.
assets, countries, handlers = (
    test_app_handlers.assets,
    test_app_handlers.countries,
    test_app_handlers.handlers,
)

GPS = ExifTags.GPS


def _state(handlers: Handlers) -> tuple:
    """What a refused request must leave as it was: the served model and the export folder."""
    slot = handlers.slot
    return slot.predictor, slot.prior_source, sorted(handlers.work_dir.rglob("*"))


@contextmanager
def refused(handlers: Handlers, match: str, error: type[ValueError] = ValueError) -> Iterator[None]:
    """The block raises ``error`` (a ValueError: shown as a message, not a traceback) whose
    message matches ``match``, and the app's state is unchanged."""
    before = _state(handlers)
    with pytest.raises(error, match=match) as raised:
        yield
    message = str(raised.value)
    assert message and "Traceback" not in message and 'File "' not in message
    assert _state(handlers) == before


# --- uploads ---------------------------------------------------------------------------------


def _text_as_jpeg(path: Path) -> None:
    path.write_text("Dear diary, today I renamed a text file to .jpg\n")


def _truncated_jpeg(path: Path) -> None:
    whole = write_gps_photo(path.with_name("whole.jpg"), lon=2.35, lat=48.85).read_bytes()
    path.write_bytes(whole[: len(whole) // 3])


def _zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def _bomb_png(path: Path) -> None:
    """A 16x16 PNG whose IHDR declares 30000x30000 px (900 megapixels), CRC fixed up."""
    buffer = io.BytesIO()
    Image.new("L", (16, 16)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", 30000, 30000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


BAD_UPLOADS = {
    "notes.jpg": (_text_as_jpeg, r"notes\.jpg is not an image; upload a JPEG, PNG, WebP or HEIC"),
    "cut.jpg": (_truncated_jpeg, r"cut\.jpg is truncated or corrupt"),
    "empty.jpg": (_zero_bytes, r"empty\.jpg is not an image"),
    "bomb.png": (_bomb_png, r"bomb\.png has too many pixels to decode safely"),
}


@pytest.mark.parametrize("action", ["photo_location", "classify", "where"])
@pytest.mark.parametrize("name", list(BAD_UPLOADS))
def test_unusable_uploads_are_refused_by_every_photo_action(handlers, tmp_path, name, action):
    build, message = BAD_UPLOADS[name]
    path = tmp_path / "upload" / name
    path.parent.mkdir()
    build(path)
    call = {
        "photo_location": lambda: handlers.photo_location(str(path)),
        "classify": lambda: handlers.classify(str(path), "-1.29, 36.82"),
        "where": lambda: handlers.where(str(path)),
    }[action]
    with refused(handlers, message, PhotoError):
        call()


@pytest.fixture(scope="module")
def fifty_megapixels(tmp_path_factory) -> Path:
    """A solid-colour 8660x5773 JPEG (50 MP; under 1 MB on disk, cheap to write)."""
    path = tmp_path_factory.mktemp("big") / "fifty_mp.jpg"
    Image.new("RGB", (8660, 5773), (40, 90, 160)).save(path, quality=80)
    return path


def test_a_fifty_megapixel_photo_is_downscaled_not_rejected(handlers, fifty_megapixels):
    photo = load_photo(fifty_megapixels)
    assert photo.original_size == (8660, 5773)
    assert photo.image.size == (MAX_SIDE, round(MAX_SIDE * 5773 / 8660)) and photo.image.mode == "RGB"
    assert np.abs(np.asarray(photo.image, dtype=int) - (40, 90, 160)).max() <= 3
    view = handlers.classify(str(fifty_megapixels), "48.85, 2.35")
    assert "Photo downscaled from 8660×5773 px." in view.message and len(view.image_only) == 5


def _colour(path: Path) -> np.ndarray:
    """Mean RGB of the photo the app would classify."""
    photo = load_photo(path)
    assert photo.image.mode == "RGB" and photo.gps.lonlat is None
    return np.asarray(photo.image, dtype=np.float64).reshape(-1, 3).mean(axis=0)


def test_cmyk_jpeg_is_converted_to_its_rgb_colours(handlers, tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (320, 200), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    with Image.open(path) as image:
        assert image.mode == "CMYK"
    assert _colour(path) == pytest.approx((255, 0, 0), abs=3)
    assert handlers.photo_location(str(path)).message.startswith("No GPS position in this photo")
    assert len(handlers.classify(str(path), "").image_only) == 5


def test_png_with_alpha_is_accepted_as_rgb(handlers, tmp_path):
    path = tmp_path / "alpha.png"
    image = Image.new("RGBA", (300, 200), (10, 120, 30, 255))
    image.paste((10, 120, 30, 0), (0, 0, 150, 200))  # left half transparent
    image.save(path)
    assert _colour(path) == pytest.approx((10, 120, 30), abs=1)
    assert len(handlers.classify(str(path), "0, 20").image_only) == 5


def _sixteen_bit_ramp(path: Path) -> np.ndarray:
    """A 16-bit greyscale PNG (mode I;16), a ramp over the full 0..65535 range; returns it."""
    ramp = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (64, 1))
    Image.fromarray(ramp).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"
    return ramp


def test_sixteen_bit_png_is_accepted(handlers, tmp_path):
    path = tmp_path / "sixteen.png"
    _sixteen_bit_ramp(path)
    photo = load_photo(path)
    assert photo.format == "PNG" and photo.image.mode == "RGB" and photo.image.size == (256, 64)
    assert len(handlers.classify(str(path), "").image_only) == 5


def test_sixteen_bit_png_keeps_its_tones(tmp_path):
    path = tmp_path / "sixteen.png"
    ramp = _sixteen_bit_ramp(path)
    grey = np.asarray(load_photo(path).image, dtype=np.float64)[..., 0]
    assert grey == pytest.approx(ramp / 257.0, abs=1.0)


def _gps_photo(path: Path, gps: dict) -> Path:
    exif = Image.Exif()
    exif[ExifTags.IFD.GPSInfo] = gps
    Image.new("RGB", (320, 200), (90, 120, 60)).save(path, exif=exif)
    return path


_PARIS_LAT = (IFDRational(48), IFDRational(51), IFDRational(296, 10))
_PARIS_LON = (IFDRational(2), IFDRational(17), IFDRational(402, 10))
MALFORMED_GPS = {
    "zero_denominator": (
        {GPS.GPSLatitudeRef: "N", GPS.GPSLatitude: (IFDRational(48, 0), IFDRational(51), IFDRational(0))}
        | {GPS.GPSLongitudeRef: "E", GPS.GPSLongitude: _PARIS_LON},
        "GPSLatitude[0] has a zero denominator",
    ),
    "latitude_95": (
        {GPS.GPSLatitudeRef: "N", GPS.GPSLatitude: (IFDRational(95), IFDRational(0), IFDRational(0))}
        | {GPS.GPSLongitudeRef: "E", GPS.GPSLongitude: _PARIS_LON},
        "GPSLatitude 95 is out of range [0, 90]",
    ),
    "longitude_200": (
        {GPS.GPSLatitudeRef: "N", GPS.GPSLatitude: _PARIS_LAT}
        | {GPS.GPSLongitudeRef: "W", GPS.GPSLongitude: (IFDRational(200), IFDRational(0), IFDRational(0))},
        "GPSLongitude 200 is out of range [0, 180]",
    ),
    "missing_refs": (
        {GPS.GPSLatitude: _PARIS_LAT, GPS.GPSLongitude: _PARIS_LON},
        "no GPSLatitudeRef (hemisphere unknown)",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED_GPS))
def test_malformed_exif_gps_gives_no_location_and_says_why(handlers, tmp_path, case):
    gps, reason = MALFORMED_GPS[case]
    path = _gps_photo(tmp_path / f"{case}.jpg", gps)
    before = _state(handlers)
    found = handlers.photo_location(str(path))
    assert found.location_text == "" and found.image.size == (320, 200)
    assert found.message.startswith("No GPS position in this photo (") and reason in found.message
    assert _state(handlers) == before


def test_a_photo_with_malformed_gps_is_still_classified_and_placed(handlers, tmp_path):
    path = _gps_photo(tmp_path / "zero.jpg", MALFORMED_GPS["zero_denominator"][0])
    view = handlers.classify(str(path), handlers.photo_location(str(path)).location_text)
    assert view.marker is None and view.message.startswith("No location: showing the image-only scores")
    where = handlers.where(str(path))
    assert where.photo_marker is None and "EXIF GPS" not in where.message


# --- coordinates -------------------------------------------------------------------------------

BAD_TYPED = {
    "nan, 0": "is not a location",
    "0, nan": "is not a location",
    "inf, 0": "is not a location",
    "-inf, 0": "is not a location",
    "0, -inf": "is not a location",
    "91, 0": r"latitude 91 is outside \[-90, 90\]",
    "-91, 10": r"latitude -91 is outside \[-90, 90\]",
    "0, 181": r"longitude 181 is outside \[-180, 180\]",
    "0, -181": r"longitude -181 is outside \[-180, 180\]",
    "abc": "is not a location",
    "abc, def": "is not a location",
    "": "type a location as 'lat, lon'",
    "   ": "type a location as 'lat, lon'",
}


@pytest.mark.parametrize("text", list(BAD_TYPED))
def test_typed_bad_locations_are_refused(handlers, text):
    with refused(handlers, BAD_TYPED[text]):
        handlers.prior_at_text(text)


@pytest.mark.parametrize(
    ("lon", "lat", "message"),
    [
        (float("nan"), 0.0, "non-finite coordinate"),
        (0.0, float("nan"), "non-finite coordinate"),
        (float("inf"), 0.0, "non-finite coordinate"),
        (0.0, float("-inf"), "non-finite coordinate"),
        (0.0, 91.0, r"latitude 91.0 is outside \[-90, 90\]"),
        (181.0, 0.0, r"longitude 181.0 is outside \[-180, 180\] \(longitudes are rejected, not wrapped\)"),
        (-181.0, 0.0, r"longitude -181.0 is outside \[-180, 180\]"),
    ],
)
def test_numeric_bad_locations_are_refused(handlers, lon, lat, message):
    with refused(handlers, message):
        handlers.prior_at(lon, lat)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # wrap_lon(inf)
@pytest.mark.parametrize(
    ("lat", "lng"), [(float("nan"), 0.0), (0.0, float("inf")), (91.0, 0.0), (-90.5, 0.0)]
)
def test_bad_map_clicks_are_refused(lat, lng):
    with pytest.raises(ValueError, match="map click"):
        click_to_lonlat(lat, lng)


def test_longitude_policy_is_the_same_everywhere(handlers, gps_photo):
    """Typed, API and classification locations beyond ±180 are rejected; only map clicks wrap."""
    for call in (lambda: handlers.prior_at_text("10, 181"), lambda: handlers.prior_at(181.0, 10.0)):
        with refused(handlers, "longitude 181"):
            call()
    view = handlers.classify(str(gps_photo), "10, 181")
    assert view.marker is None and "Location not usable" in view.message and "longitude 181" in view.message
    assert click_to_lonlat(10.0, 181.0) == pytest.approx((-179.0, 10.0))


@pytest.fixture(scope="module")
def gps_photo(tmp_path_factory) -> Path:
    return write_gps_photo(tmp_path_factory.mktemp("bad-input") / "nairobi.jpg", lon=36.82, lat=-1.29)


@pytest.fixture(scope="module")
def client(app_server) -> Client:
    return Client(app_server, verbose=False)


@pytest.mark.parametrize("text", ["nan, 0", "-inf, 0", "91, 0", "0, 181", "0, -181", "abc", ""])
def test_bad_locations_sent_to_the_api_get_a_message(client, gps_photo, text):
    message, country, table = client.predict(text, 5, api_name="/prior")
    assert message.startswith("⚠️ ") and "Traceback" not in message and country == ""
    assert table["data"] in ([], [[]])
    message, image_only, geo_aware, moved = client.predict(
        handle_file(str(gps_photo)), text, api_name="/classify"
    )
    expected = "No location" if not text else "Location not usable"
    assert expected in message and len(image_only["data"]) == 5
    assert [row[1] for row in geo_aware["data"]] == [row[1] for row in image_only["data"]]


# --- training inputs ---------------------------------------------------------------------------


def _rows(per_class: dict[str, int], seed: int = 0) -> str:
    """CSV text "lat,lon,label" with the given number of observations per label."""
    rng = np.random.default_rng(seed)
    lines = ["lat,lon,label"]
    for label, count in per_class.items():
        lines += [f"{rng.uniform(-60, 60):.4f},{rng.uniform(-170, 170):.4f},{label}" for _ in range(count)]
    return "\n".join(lines) + "\n"


BAD_CSVS = {
    "missing_lon.csv": ("lat,label\n10,a\n20,b\n", r"no longitude column found"),
    "missing_lat.csv": ("lon,species\n10,a\n20,b\n", r"no latitude column found"),
    "bad_number.csv": ("lat,lon,label\n10,20,a\n1O.5,20,b\n", r"line 3, column 'lat': bad latitude"),
    "bad_range.csv": (
        "lat,lon,label\n10,20,a\n10,20,a\n95,20,b\n",
        r"line 4, columns 'lon'/'lat': latitude 95.0 is outside",
    ),
    "bad_lon.csv": (
        "lat,lon,label\n10,20,a\n10,190,b\n",
        r"line 3, columns 'lon'/'lat': longitude 190.0 is outside",
    ),
    "nan.csv": ("lat,lon,label\n10,20,a\nnan,20,b\n", r"line 3, columns 'lon'/'lat': non-finite coordinate"),
    "short_row.csv": ("lat,lon,label\n10,20,a\n30,b\n", r"line 3: expected 3 fields, got 2"),
    "empty.csv": ("", r"the file is empty"),
    "header_only.csv": ("lat,lon,label\n", r"no data rows"),
}


@pytest.mark.parametrize("name", list(BAD_CSVS))
def test_bad_training_csvs_name_the_file_and_line(tmp_path, name):
    text, message = BAD_CSVS[name]
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=f"{path.name}: .*{message}"):
        read_csv(path)
    with pytest.raises(ValueError, match=message):
        load_species(DataConfig(csv=str(path), clean=False))


@pytest.fixture
def trainer(app_predictor, app_model_dir, tmp_path) -> Iterator[TrainingHandlers]:
    manager = TrainingManager(tmp_path, env={"OMP_NUM_THREADS": "1"})
    yield TrainingHandlers(
        manager, ModelSlot(app_predictor, app_model_dir), tmp_path / "runs", sys.executable
    )
    manager.close()


@pytest.mark.parametrize("name", list(BAD_CSVS))
def test_the_train_tab_refuses_a_bad_csv_before_starting(trainer, tmp_path, name):
    text, message = BAD_CSVS[name]
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        trainer.start("sup-only", "grid", 1.0, 1, str(path))
    assert trainer.manager.status().state == "idle" and not trainer.runs_dir.exists()


def test_a_label_with_one_sample_stays_in_train(tmp_path):
    path = tmp_path / "obs.csv"
    path.write_text(_rows({"common": 30, "rare": 1, "other": 20}))
    splits = load_species(DataConfig(csv=str(path), clean=False, val_fraction=0.2, test_fraction=0.2))
    rare = splits.class_names.index("rare")
    where = np.flatnonzero(splits.records.labels == rare)
    assert len(where) == 1 and where[0] in splits.train
    assert where[0] not in splits.val and where[0] not in splits.test
    assert len(splits.test) > 0 and len(splits.val) > 0


def test_evaluating_on_a_csv_with_more_classes_than_the_model_is_refused(tmp_path):
    small, large = tmp_path / "three.csv", tmp_path / "five.csv"
    small.write_text(_rows({"a": 20, "b": 20, "c": 20}))
    large.write_text(_rows({"a": 20, "b": 20, "c": 20, "d": 20, "e": 20}))
    model = LocationEncoder(LocationEncoderConfig(encoding="wrap", hidden_dim=16, embed_dim=8, num_classes=3))
    meta = describe_model(
        model, class_names=["a", "b", "c"], train={"config": {"data": {"csv": str(small), "clean": False}}}
    )
    checkpoint = save_checkpoint(tmp_path / "best", model, meta)
    assert evaluate_checkpoint(checkpoint)["points"] == 6  # its own data: 10% of 20 per class
    with pytest.raises(CheckpointError, match=r"trained on 3 classes; .*five\.csv after cleaning has 5"):
        evaluate_checkpoint(checkpoint, csv=str(large))


# --- checkpoints through the app's model loading ------------------------------------------------


def _truncate(directory: Path) -> None:
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def _future_schema(directory: Path) -> None:
    meta = json.loads((directory / "model.json").read_text())
    (directory / "model.json").write_text(json.dumps(meta | {"schema_version": SCHEMA_VERSION + 1}))


def _wrong_config(directory: Path) -> None:
    meta = json.loads((directory / "model.json").read_text())
    meta["location_encoder"]["hidden_dim"] *= 2
    (directory / "model.json").write_text(json.dumps(meta))


def _pickle_weights(directory: Path) -> None:
    """A torch pickle in place of the safetensors file, its hash recorded as if it belonged there
    (the hash guards against corruption, not against a crafted file: the reader must refuse it)."""
    state = {k: v.clone() for k, v in LocationEncoder(LocationEncoderConfig()).state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    (directory / "model.safetensors").write_bytes(buffer.getvalue())
    meta = json.loads((directory / "model.json").read_text())
    meta["weights_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    (directory / "model.json").write_text(json.dumps(meta))


BAD_CHECKPOINTS = {
    "truncated": (_truncate, "does not match the hash recorded"),
    "schema": (
        _future_schema,
        f"has schema version {SCHEMA_VERSION + 1}; this version of csp reads {SCHEMA_VERSION}",
    ),
    "mismatch": (_wrong_config, "do not match the config"),
    "pickle": (_pickle_weights, "is not a readable safetensors file"),
}


def _bad_model_dir(app_model_dir: Path, tmp_path: Path, case: str) -> Path:
    """A copy of the app's model directory whose ``prior/`` checkpoint is broken as ``case``."""
    directory = shutil.copytree(app_model_dir, tmp_path / f"model-{case}")
    BAD_CHECKPOINTS[case][0](directory / "prior")
    return directory


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_loading_a_bad_prior_into_the_app_is_refused(handlers, app_model_dir, tmp_path, case):
    directory = _bad_model_dir(app_model_dir, tmp_path, case)
    with refused(handlers, BAD_CHECKPOINTS[case][1], CheckpointError):
        handlers.slot.load_prior(directory / "prior")
    with refused(handlers, "checkpoint directory not found", CheckpointError):
        handlers.slot.load_prior(tmp_path / "nowhere")


@pytest.fixture
def cli_main(monkeypatch, tmp_path) -> Callable[[list[str]], int]:
    """``app.cli.main`` run in this process without touching it: temp folders under
    ``tmp_path``, environment, SIGTERM handler, torch threads and exit hooks restored after."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for name in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED"):
        monkeypatch.setenv(name, "unset-by-test")
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    monkeypatch.setattr(atexit, "register", lambda fn, *args, **kwargs: None)
    return main


@pytest.mark.parametrize("case", ["truncated", "schema", "pickle"])
def test_starting_the_app_on_a_bad_checkpoint_prints_a_clear_error(
    cli_main, app_model_dir, tmp_path, capsys, case
):
    directory = _bad_model_dir(app_model_dir, tmp_path, case)
    assert cli_main(["--checkpoint", str(directory), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(directory) in err and BAD_CHECKPOINTS[case][1] in err
