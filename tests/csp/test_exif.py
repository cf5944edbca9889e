"""Tests for csp.exif: GPS and capture time from real Pillow-written EXIF blocks."""

from __future__ import annotations

import importlib.util
import io
import math
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from csp.exif import GpsResult, capture_time_from_exif, gps_from_exif, read_gps

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PHOTOS = FIXTURES / "photos"
G = ExifTags.GPS


def _fixture_script():
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PLACES = {name: (lon, lat) for name, lat, lon in _fixture_script().PLACES}


def _image_with_gps(gps: dict) -> Image.Image:
    """An in-memory image whose EXIF GPS IFD holds exactly ``gps`` (no file round trip)."""
    image = Image.new("RGB", (4, 4))
    image.getexif().get_ifd(ExifTags.IFD.GPSInfo).update(gps)
    return image


def _jpeg_roundtrip(gps: dict) -> Image.Image:
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.GPSInfo).update(gps)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG", exif=exif)
    return Image.open(io.BytesIO(buffer.getvalue()))


# --- real files written by tests/fixtures/make_fixtures.py ----------------------------------


@pytest.mark.parametrize(
    ("rel", "place"),
    [
        ("landmarks/eiffel_tower.jpg", "eiffel_tower"),  # N, E
        ("landmarks/sydney_opera_house.jpg", "sydney_opera_house"),  # S, E
        ("landmarks/christ_the_redeemer.jpg", "christ_the_redeemer"),  # S, W
        ("cities/anchorage.jpg", "anchorage"),  # N, W
        ("cities/ueno_park.png", "ueno_park"),  # PNG eXIf chunk
    ],
)
def test_fixture_photos_decode_to_their_places(rel, place):
    with Image.open(PHOTOS / rel) as image:
        result = read_gps(image)
        assert result.ok and result.reason == "ok"
        assert result.lonlat == pytest.approx(PLACES[place], abs=1e-5)
        assert gps_from_exif(image) == result.lonlat


@pytest.mark.parametrize(
    ("rel", "reason"),
    [
        ("no_gps.jpg", "no GPS data"),
        ("broken/missing_latitude_ref.jpg", "no GPSLatitudeRef"),
        ("broken/zero_denominator.jpg", "GPSLongitude[1] has a zero denominator"),
    ],
)
def test_fixture_photos_without_usable_gps(rel, reason):
    with Image.open(PHOTOS / rel) as image:
        result = read_gps(image)
        assert result.lonlat is None and reason in result.reason
        assert gps_from_exif(image) is None


def test_capture_time():
    with Image.open(PHOTOS / "landmarks/eiffel_tower.jpg") as image:
        assert capture_time_from_exif(image) == "2021-07-14T12:00:00"
    with Image.open(PHOTOS / "no_gps.jpg") as image:
        assert capture_time_from_exif(image) == "2020-01-01T09:00:00"
    with Image.open(PHOTOS / "landmarks/sydney_opera_house.jpg") as image:
        assert capture_time_from_exif(image) is None
    image = Image.new("RGB", (2, 2))
    image.getexif()[ExifTags.Base.DateTime] = "yesterday"
    assert capture_time_from_exif(image) is None


# --- value forms ---------------------------------------------------------------------------


PARIS_LAT = 48 + 51 / 60 + 29.6 / 3600
PARIS_LON = 2 + 17 / 60 + 40.2 / 3600


@pytest.mark.parametrize(
    ("lat_value", "lon_value"),
    [
        (
            (IFDRational(48), IFDRational(51), IFDRational(296, 10)),
            (IFDRational(2), IFDRational(17), IFDRational(402, 10)),
        ),
        (((48, 1), (51, 1), (296, 10)), ((2, 1), (17, 1), (402, 10))),  # tuples of rationals
        ((48.0, 51.0, 29.6), (2.0, 17.0, 40.2)),  # plain floats
        ([48, 51, Fraction(148, 5)], [2, 17, Fraction(201, 5)]),
        (PARIS_LAT, PARIS_LON),  # one decimal-degree value
        ((IFDRational(PARIS_LAT),), (IFDRational(PARIS_LON),)),
    ],
)
def test_value_forms(lat_value, lon_value):
    for lat_ref, lon_ref, sign in [
        ("N", "E", (1, 1)),
        ("S", "W", (-1, -1)),
        (b"S\x00", "e ", (1, -1)),
    ]:
        gps = {G.GPSLatitudeRef: lat_ref, G.GPSLatitude: lat_value}
        gps |= {G.GPSLongitudeRef: lon_ref, G.GPSLongitude: lon_value}
        lon, lat = gps_from_exif(_image_with_gps(gps))
        assert lat == pytest.approx(sign[1] * PARIS_LAT, abs=1e-9)
        assert lon == pytest.approx(sign[0] * PARIS_LON, abs=1e-9)


def _paris(**changes) -> dict:
    gps = {
        G.GPSLatitudeRef: "N",
        G.GPSLatitude: (48.0, 51.0, 29.6),
        G.GPSLongitudeRef: "E",
        G.GPSLongitude: (2.0, 17.0, 40.2),
    }
    for name, value in changes.items():
        tag = getattr(G, name)
        if value is None:
            del gps[tag]
        else:
            gps[tag] = value
    return gps


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"GPSLongitude": None}, "no GPSLongitude"),
        ({"GPSLongitudeRef": None}, "no GPSLongitudeRef"),
        ({"GPSLatitudeRef": "E"}, "GPSLatitudeRef is 'E', expected N or S"),
        ({"GPSLongitudeRef": "N"}, "expected E or W"),
        ({"GPSLatitudeRef": 5}, "GPSLatitudeRef is not text"),
        ({"GPSLatitude": ((48, 1), (51, 0), (0, 1))}, "GPSLatitude[1] has a zero denominator"),
        ({"GPSLatitude": (IFDRational(48, 0), 0.0, 0.0)}, "GPSLatitude[0] has a zero denominator"),
        ({"GPSLatitude": (91.0, 0.0, 0.0)}, "GPSLatitude 91 is out of range [0, 90]"),
        ({"GPSLongitude": (180.0, 0.0, 1.0)}, "GPSLongitude 180.0003 is out of range"),
        ({"GPSLatitude": (48.0, 60.0, 0.0)}, "minutes of 60 or more"),
        ({"GPSLatitude": (48.0, 51.0, 60.5)}, "seconds over 60"),
        ({"GPSLatitude": (-48.0, 51.0, 29.6)}, "negative component"),
        ({"GPSLatitude": (48.0, 51.0)}, "has 2 components"),
        ({"GPSLatitude": "48.85"}, "not a number"),
        ({"GPSLatitude": (float("nan"), 0.0, 0.0)}, "not a finite number"),
        ({"GPSStatus": "V"}, "void"),
    ],
)
def test_unusable_gps_gives_none_and_a_reason(changes, reason):
    result = read_gps(_image_with_gps(_paris(**changes)))
    assert result.lonlat is None
    assert reason in result.reason


def test_seconds_of_exactly_60_carry_over_into_the_minute():
    """Writers that round 59.996 s to two decimals store 60.00: 48°51'60" is 48°52'00"."""
    rounded = read_gps(_image_with_gps(_paris(GPSLatitude=(48.0, 51.0, IFDRational(6000, 100)))))
    exact = read_gps(_image_with_gps(_paris(GPSLatitude=(48.0, 52.0, 0.0))))
    assert rounded.ok and rounded.lonlat == pytest.approx(exact.lonlat, abs=1e-12)
    assert rounded.lonlat[1] == pytest.approx(48 + 52 / 60, abs=1e-12)


def test_null_island_and_empty_exif_are_not_positions():
    zero = {
        G.GPSLatitudeRef: "N",
        G.GPSLatitude: (0.0, 0.0, 0.0),
        G.GPSLongitudeRef: "E",
        G.GPSLongitude: (0.0, 0.0, 0.0),
    }
    assert "0°, 0°" in read_gps(_image_with_gps(zero)).reason
    assert read_gps(Image.new("RGB", (2, 2))) == GpsResult(None, "the photo has no GPS data in its EXIF")
    assert read_gps(_image_with_gps(_paris(GPSStatus="A"))).ok


# --- properties ----------------------------------------------------------------------------


def _dms_rationals(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    total = Fraction(round(abs(value) * 36_000_000), 10_000)  # seconds, to 1e-4 s
    degrees, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    return (
        IFDRational(int(degrees)),
        IFDRational(int(minutes)),
        IFDRational(seconds.numerator, seconds.denominator),
    )


@settings(max_examples=60, deadline=None)
@given(st.floats(-90, 90), st.floats(-180, 180))
def test_dms_rationals_roundtrip_through_a_jpeg(lat, lon):
    gps = {
        G.GPSLatitudeRef: "N" if lat >= 0 else "S",
        G.GPSLatitude: _dms_rationals(lat),
        G.GPSLongitudeRef: "E" if lon >= 0 else "W",
        G.GPSLongitude: _dms_rationals(lon),
    }
    result = read_gps(_jpeg_roundtrip(gps))
    if abs(lat) < 1e-8 and abs(lon) < 1e-8:
        assert result.lonlat is None  # exactly 0°, 0° is treated as "no fix"
        return
    assert result.ok, result.reason
    assert result.lonlat[0] == pytest.approx(lon, abs=1e-6)
    assert result.lonlat[1] == pytest.approx(lat, abs=1e-6)


_junk_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=5)
    | st.binary(max_size=5)
    | st.fractions(),
    lambda inner: st.lists(inner, max_size=4).map(tuple) | st.lists(inner, max_size=4),
    max_leaves=8,
)
_gps_tags = st.sampled_from([int(t) for t in G] + [999])


def _check_result(result: GpsResult) -> None:
    assert isinstance(result.reason, str) and result.reason
    if result.lonlat is not None:
        lon, lat = result.lonlat
        assert math.isfinite(lon) and math.isfinite(lat)
        assert -180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_gps_tags, _junk_value, max_size=8))
def test_junk_gps_values_never_raise(junk):
    _check_result(read_gps(_image_with_gps(junk)))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([b"MM\x00*", b"II*\x00", b""]), st.binary(max_size=300))
def test_junk_exif_bytes_in_a_jpeg_never_raise(byte_order, junk):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG", exif=b"Exif\x00\x00" + byte_order + junk)
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        _check_result(read_gps(image))
        capture_time_from_exif(image)
