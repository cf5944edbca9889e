"""Tests for csp.geo: validation, wrapping, typed-coordinate parsing, grids, distances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from csp.geo import (
    EARTH_RADIUS_KM,
    haversine_km,
    lonlat_grid,
    parse_coordinate,
    parse_lonlat_pair,
    validate_lonlat,
    wrap_lon,
)

PARIS = (2.3522, 48.8566)
LONDON = (-0.1276, 51.5072)


# --- validate_lonlat ----------------------------------------------------------------------


def test_validate_returns_the_same_object_for_numpy_and_torch():
    arr = np.array([[-180.0, -90.0], [180.0, 90.0], [2.35, 48.85]], dtype=np.float32)
    assert validate_lonlat(arr) is arr
    tensor = torch.tensor(arr, requires_grad=True)
    assert validate_lonlat(tensor) is tensor
    assert validate_lonlat(np.zeros((0, 2))) is not None


@pytest.mark.parametrize(
    ("bad_row", "expected"),
    [
        ([np.nan, 10.0], "non-finite"),
        ([10.0, np.inf], "non-finite"),
        ([10.0, 90.5], "latitude 90.5 is outside [-90, 90]"),
        ([10.0, -91.0], "latitude -91.0 is outside"),
        ([190.0, 10.0], "longitude 190.0 is outside [-180, 180] (longitudes are rejected"),
        ([-180.5, 10.0], "longitude -180.5"),
    ],
)
def test_validate_names_source_and_first_bad_row(bad_row, expected):
    arr = np.array([[0.0, 0.0], [1.0, 1.0], bad_row, [200.0, 0.0]])
    with pytest.raises(ValueError) as info:
        validate_lonlat(arr, source="points.csv")
    message = str(info.value)
    assert message.startswith("points.csv: row 2: ")
    assert expected in message
    assert "(2 invalid rows in total)" in message


def test_validate_torch_tensor_and_custom_row_names():
    tensor = torch.tensor([[0.0, 0.0], [0.0, 95.0]])
    with pytest.raises(ValueError, match=r"^api: line 7: latitude 95.0"):
        validate_lonlat(tensor, source="api", describe_row=lambda i: f"line {i + 6}")


def test_validate_flat_row_index_for_batched_input_and_bad_shape():
    arr = np.zeros((2, 3, 2))
    arr[1, 0, 1] = -100.0
    with pytest.raises(ValueError, match="row 3: latitude -100.0"):
        validate_lonlat(arr)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        validate_lonlat(np.zeros((4, 3)), source="x")


# --- wrap_lon -----------------------------------------------------------------------------


def test_wrap_lon_known_values():
    assert wrap_lon(190.0) == -170.0
    assert wrap_lon(180.0) == -180.0
    assert wrap_lon(-180.0) == -180.0
    assert wrap_lon(-540.0) == -180.0
    assert wrap_lon(359.5) == -0.5
    assert isinstance(wrap_lon(10.0), float)
    np.testing.assert_allclose(wrap_lon(np.array([0.0, 370.0, -190.0])), [0.0, 10.0, 170.0])
    assert math.isnan(wrap_lon(float("nan")))


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_wrap_lon_range_and_congruence(lon):
    wrapped = wrap_lon(lon)
    assert -180.0 <= wrapped < 180.0
    turns = (lon - wrapped) / 360.0
    assert abs(turns - round(turns)) < 1e-9 * max(1.0, abs(lon))


# --- parse_coordinate ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "axis", "expected"),
    [
        ("48.85", "lat", 48.85),
        ("-2.35", "lon", -2.35),
        ("+2.35", "lon", 2.35),
        ("48.85 N", "lat", 48.85),
        ("48.85s", "lat", -48.85),
        ("N 48.85", "lat", 48.85),
        ("2°21'E", "lon", 2.35),
        ("2°21'W", "lon", -2.35),
        ("48°51'29.6\"N", "lat", 48 + 51 / 60 + 29.6 / 3600),
        ("48 51 29.6 N", "lat", 48 + 51 / 60 + 29.6 / 3600),
        ("48°51.494'", "lat", 48 + 51.494 / 60),
        ("48º51′29.6″N", "lat", 48 + 51 / 60 + 29.6 / 3600),
        ("33°51'24.4''S", "lat", -(33 + 51 / 60 + 24.4 / 3600)),
        ("  180 ", "lon", 180.0),
        ("-90", "lat", -90.0),
    ],
)
def test_parse_coordinate_accepts(text, axis, expected):
    assert parse_coordinate(text, axis) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("text", "axis", "message"),
    [
        ("", "lat", "empty"),
        ("Paris", "lat", "not a coordinate"),
        ("nan", "lat", "not a coordinate"),
        ("inf", "lon", "not a coordinate"),
        ("1e5", "lat", "not a coordinate"),
        ("48,85", "lat", "use '.' for decimals"),
        ("95", "lat", "latitude 95 is outside [-90, 90]"),
        ("90.0000001", "lat", "latitude 90.0000001 is outside"),
        ("181", "lon", "longitude 181 is outside [-180, 180]"),
        ("48.85 E", "lat", "belongs to lon"),
        ("2.35 N", "lon", "belongs to lat"),
        ("-48 S", "lat", "either a sign or a hemisphere"),
        ("48 61", "lat", "minutes must be below 60"),
        ("48 30 60", "lat", "seconds must be below 60"),
        ("48.5 30", "lat", "only the last"),
        ("51'29\"", "lat", "order"),
        ("1 2 3 4", "lat", "at most"),
        ("N 48 S", "lat", "not a coordinate"),
    ],
)
def test_parse_coordinate_rejects_with_reason(text, axis, message):
    with pytest.raises(ValueError) as info:
        parse_coordinate(text, axis)
    assert message in str(info.value)


def test_parse_coordinate_argument_errors():
    with pytest.raises(TypeError):
        parse_coordinate(48.85, "lat")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="axis"):
        parse_coordinate("48.85", "latitude")  # type: ignore[arg-type]


@given(
    st.integers(0, 89),
    st.integers(0, 59),
    st.decimals(min_value=0, max_value="59.9999", places=4),
    st.sampled_from(["N", "S"]),
)
def test_parse_coordinate_dms_roundtrip(degrees, minutes, seconds, hemisphere):
    text = f"{degrees}°{minutes}'{seconds}\"{hemisphere}"
    expected = degrees + minutes / 60 + float(seconds) / 3600
    if hemisphere == "S":
        expected = -expected
    assert parse_coordinate(text, "lat") == pytest.approx(expected, abs=1e-9)


@given(st.text(max_size=30))
def test_parse_coordinate_junk_gives_a_value_in_range_or_valueerror(text):
    try:
        value = parse_coordinate(text, "lon")
    except ValueError:
        return
    assert math.isfinite(value) and -180.0 <= value <= 180.0


# --- parse_lonlat_pair --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("48.8566, 2.3522", (2.3522, 48.8566)),
        ("48.8566,2.3522", (2.3522, 48.8566)),
        ("-33.8568; 151.2153", (151.2153, -33.8568)),
        ("48.8566 2.3522", (2.3522, 48.8566)),
        ("48°51'29.6\"N 2°21'07.9\"E", (2 + 21 / 60 + 7.9 / 3600, 48 + 51 / 60 + 29.6 / 3600)),
        ("2.35 E, 48.85 N", (2.35, 48.85)),
        ("22.95 S, 43.21 W", (-43.21, -22.95)),
        ("N 48.85 E 2.35", (2.35, 48.85)),
        ("2.35 E, 48.85", (2.35, 48.85)),
    ],
)
def test_parse_pair_is_lat_lon_unless_letters_say_otherwise(text, expected):
    lon, lat = parse_lonlat_pair(text)
    assert (lon, lat) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("48 51 2 21", "ambiguous"),
        ("10 20 30", "ambiguous"),
        ("48.85", "not a location"),
        ("48.85, 2.35, 7", "not a location"),
        ("48,85, 2,35", "use '.' for decimals"),
        ("48.85 N, 2.35 S", "not a location"),
        ("120, 30", "did you mean 30, 120?"),
        ("10, 200", "longitude 200 is outside"),
        ("Paris", "not a location"),
    ],
)
def test_parse_pair_rejects_clearly(text, message):
    with pytest.raises(ValueError) as info:
        parse_lonlat_pair(text)
    assert message in str(info.value)


@given(st.floats(-90, 90), st.floats(-180, 180))
def test_parse_pair_roundtrip(lat, lon):
    lon_out, lat_out = parse_lonlat_pair(f"{lat:.6f}, {lon:.6f}")
    assert (lon_out, lat_out) == pytest.approx((lon, lat), abs=5e-7)


# --- lonlat_grid --------------------------------------------------------------------------


def test_lonlat_grid_layout():
    grid = lonlat_grid(1.0)
    assert grid.shape == (180, 360, 2) and grid.dtype == np.float32
    np.testing.assert_array_equal(grid[0, 0], [-179.5, 89.5])  # north-west corner cell
    np.testing.assert_array_equal(grid[-1, -1], [179.5, -89.5])  # south-east corner cell
    assert (np.diff(grid[:, 0, 1]) < 0).all()  # rows run north -> south
    assert (np.diff(grid[0, :, 0]) > 0).all()  # columns run west -> east
    assert (grid[:, :, 0] == grid[0:1, :, 0]).all() and (grid[:, :, 1] == grid[:, 0:1, 1]).all()
    validate_lonlat(grid)
    assert lonlat_grid(0.25).shape == (720, 1440, 2)
    np.testing.assert_array_equal(lonlat_grid(180)[0], [[-90.0, 0.0], [90.0, 0.0]])


@pytest.mark.parametrize("step", [0, -1, 7, 0.7, 200, float("nan"), float("inf")])
def test_lonlat_grid_rejects_bad_steps(step):
    with pytest.raises(ValueError, match="step_deg"):
        lonlat_grid(step)


# --- haversine_km -------------------------------------------------------------------------


def test_haversine_known_distances():
    assert haversine_km(PARIS, LONDON) == pytest.approx(343.5, abs=1.0)
    assert haversine_km(PARIS, PARIS) == 0.0
    assert haversine_km((0.0, 0.0), (180.0, 0.0)) == pytest.approx(math.pi * EARTH_RADIUS_KM)
    assert haversine_km((0.0, 90.0), (123.0, -90.0)) == pytest.approx(math.pi * EARTH_RADIUS_KM)
    one_degree = math.pi * EARTH_RADIUS_KM / 180.0
    assert haversine_km((179.0, 0.0), (-179.0, 0.0)) == pytest.approx(2 * one_degree)


def test_haversine_broadcasts_to_a_matrix():
    a = np.array([PARIS, LONDON, (0.0, 0.0)])
    b = np.array([LONDON, PARIS])
    matrix = haversine_km(a[:, None, :], b[None, :, :])
    assert matrix.shape == (3, 2)
    assert matrix[0, 0] == pytest.approx(matrix[1, 1])
    assert matrix[0, 1] == 0.0
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        haversine_km(np.zeros(3), np.zeros(2))


_points = st.tuples(st.floats(-180, 180), st.floats(-90, 90))


@given(_points, _points, _points)
def test_haversine_is_a_metric(a, b, c):
    ab, ba = haversine_km(a, b), haversine_km(b, a)
    assert ab == pytest.approx(ba, abs=1e-9)
    assert 0.0 <= ab <= math.pi * EARTH_RADIUS_KM + 1e-6
    assert haversine_km(a, c) <= ab + haversine_km(b, c) + 1e-6


def test_chord_length_is_the_straight_line_between_unit_vectors():
    from csp.geo import chord_length, km_to_radians, unit_vectors

    a, b = unit_vectors(np.array([[0.0, 0.0], [90.0, 0.0]]))
    assert chord_length(math.pi / 2) == pytest.approx(float(np.linalg.norm(a - b)))
    assert chord_length(0.0) == 0.0 and chord_length(math.pi) == pytest.approx(2.0)
    assert chord_length(10 * math.pi) == pytest.approx(2.0)  # clipped to the antipode
    assert chord_length(km_to_radians(1.0)) == pytest.approx(1.0 / 6371.0088, rel=1e-6)
