"""Coordinate validation, parsing, wrapping, grids and distances.

Conventions (see docs/ARCHITECTURE.md): a location is ``(lon, lat)`` in **degrees**, shape
``(..., 2)``; longitude in [-180, 180], latitude in [-90, 90].

Longitude policy
----------------
Longitudes outside [-180, 180] are **rejected**, never silently wrapped, wherever they come
from a file or an API caller (:func:`validate_lonlat`, :func:`parse_coordinate`, every reader
in :mod:`csp.datasets`). A value such as 190 in a data file almost always means swapped or
corrupted columns, and wrapping it would hide the error. The one exception is a click on the
interactive map, where panning across the antimeridian legitimately produces longitudes such
as 200 or -540: the app wraps those itself with :func:`wrap_lon` before using them.

Typed coordinates
-----------------
:func:`parse_coordinate` reads one angle written as decimal degrees or degrees / minutes /
seconds, with an optional sign or hemisphere letter. :func:`parse_lonlat_pair` reads a typed
pair in the **"lat, lon"** order used by map apps (Google Maps, OpenStreetMap) unless hemisphere
letters say otherwise, and returns ``(lon, lat)`` like everything else in this package.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (IUGG), used by :func:`haversine_km`."""

ArrayT = TypeVar("ArrayT", "np.ndarray", "torch.Tensor")
Axis = Literal["lat", "lon"]
_LIMIT = {"lat": 90.0, "lon": 180.0}


def _as_numpy(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """A NumPy view/copy of an array or a torch tensor, without importing torch."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def find_invalid_lonlat(lonlat: np.ndarray | torch.Tensor) -> tuple[int, str, int] | None:
    """Locate the first invalid row of a ``(..., 2)`` array of (lon, lat) degrees.

    Returns ``None`` when every row is valid, else ``(flat_row_index, reason, n_bad_rows)``
    where the index counts rows over all leading dimensions in C order. A row is invalid if
    either value is NaN or infinite, if |lat| > 90 or if |lon| > 180.
    """
    arr = _as_numpy(lonlat)
    if arr.ndim == 0 or arr.shape[-1] != 2:
        raise ValueError(f"expected (lon, lat) degrees with shape (..., 2), got shape {arr.shape}")
    rows = arr.reshape(-1, 2).astype(np.float64, copy=False)
    finite = np.isfinite(rows).all(axis=1)
    with np.errstate(invalid="ignore"):
        bad = ~finite | (np.abs(rows[:, 1]) > 90.0) | (np.abs(rows[:, 0]) > 180.0)
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    lon, lat = float(rows[i, 0]), float(rows[i, 1])
    if not finite[i]:
        reason = f"non-finite coordinate (lon={lon}, lat={lat})"
    elif abs(lat) > 90.0:
        reason = f"latitude {lat} is outside [-90, 90]"
    else:
        reason = f"longitude {lon} is outside [-180, 180] (longitudes are rejected, not wrapped)"
    return i, reason, int(bad.sum())


def validate_lonlat(
    lonlat: ArrayT,
    *,
    source: str = "input",
    describe_row: Callable[[int], str] | None = None,
) -> ArrayT:
    """Check that ``lonlat`` holds valid (lon, lat) degrees and return it unchanged.

    Args:
        lonlat: array or tensor of shape ``(..., 2)``, (lon, lat) in degrees.
        source: what the values came from (a file name, "API input"), used in the message.
        describe_row: turns a flat row index into a user-facing row name (for example a CSV
            line number); defaults to ``"row {i}"``.

    Raises:
        ValueError: naming ``source`` and the first bad row, for NaN/inf values, |lat| > 90
            or |lon| > 180 (see the longitude policy in the module docstring), or when the
            last dimension is not 2.
    """
    try:
        found = find_invalid_lonlat(lonlat)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    if found is not None:
        i, reason, n_bad = found
        row = describe_row(i) if describe_row is not None else f"row {i}"
        more = f" ({n_bad} invalid rows in total)" if n_bad > 1 else ""
        raise ValueError(f"{source}: {row}: {reason}{more}")
    return lonlat


def wrap_lon(lon_deg: float | np.ndarray) -> float | np.ndarray:
    """Wrap longitude(s) in degrees into [-180, 180); e.g. 190 -> -170, 180 -> -180.

    Scalars give a float, arrays an array of the same shape; NaN stays NaN.
    """
    wrapped = np.mod(np.asarray(lon_deg, dtype=np.float64) + 180.0, 360.0) - 180.0
    return float(wrapped) if np.ndim(wrapped) == 0 else wrapped


# --- typed coordinates -----------------------------------------------------------------

_HEMISPHERE_AXIS = {"N": "lat", "S": "lat", "E": "lon", "W": "lon"}
_MARKS = {  # unit marks people type, normalised to ° ' "
    "º": "°",
    "˚": "°",
    "′": "'",
    "’": "'",
    "‘": "'",
    "´": "'",
    "″": '"',
    "”": '"',
    "“": '"',
    "''": '"',
}
_UNIT_ORDER = ("°", "'", '"')
_COMPONENT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([°'\"]?)")
_PREFIX_HEMI = re.compile(r"^([NSEW])\s*(.*)$", re.IGNORECASE | re.DOTALL)
_SUFFIX_HEMI = re.compile(r"^(.*?)\s*([NSEW])$", re.IGNORECASE | re.DOTALL)


def _parse_angle(text: str) -> tuple[float, Axis | None]:
    """Parse one typed angle into signed degrees plus the axis its hemisphere letter implies.

    Range is not checked here. Raises ValueError with a user-facing message.
    """
    if not isinstance(text, str):
        raise TypeError(f"coordinate must be a string, got {type(text).__name__}")
    s = text.strip()
    if not s:
        raise ValueError("empty coordinate")
    for mark, norm in _MARKS.items():
        s = s.replace(mark, norm)

    hemisphere = None
    for pattern, group in ((_PREFIX_HEMI, 1), (_SUFFIX_HEMI, 2)):
        m = pattern.match(s)
        if m:
            hemisphere = m.group(group).upper()
            s = (m.group(2) if group == 1 else m.group(1)).strip()
            break
    if re.search(r"[^\W\d_]", s):
        raise ValueError(
            f"{text!r} is not a coordinate: letters other than one hemisphere letter "
            "(N, S, E or W) are not allowed"
        )

    sign = 1.0
    if s and s[0] in "+-":
        if hemisphere is not None:
            raise ValueError(f"{text!r}: use either a sign or a hemisphere letter, not both")
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:].strip()

    components: list[tuple[str, str]] = []
    pos = 0
    while pos < len(s):
        m = _COMPONENT.match(s, pos)
        if m is None or m.end() == pos:
            raise ValueError(
                f"{text!r} is not a coordinate: expected decimal degrees such as 48.85 or "
                "degrees/minutes/seconds such as 48°51'29.6\"N (use '.' for decimals)"
            )
        components.append((m.group(1), m.group(2)))
        pos = m.end()
    if not components:
        raise ValueError(f"{text!r}: no number found")
    if len(components) > 3:
        raise ValueError(f"{text!r}: at most degrees, minutes and seconds are allowed")
    for k, (number, mark) in enumerate(components):
        if mark and mark != _UNIT_ORDER[k]:
            raise ValueError(f"{text!r}: unit marks must come in the order ° ' \"")
        if "." in number and k < len(components) - 1:
            raise ValueError(f"{text!r}: only the last of degrees/minutes/seconds may have decimals")

    values = [float(number) for number, _ in components]
    for name, value in zip(("minutes", "seconds"), values[1:], strict=False):
        if value >= 60.0:
            raise ValueError(f"{text!r}: {name} must be below 60, got {value:.10g}")
    degrees = sum(v / 60.0**k for k, v in enumerate(values))
    if hemisphere in ("S", "W"):
        sign = -1.0
    return sign * degrees, (_HEMISPHERE_AXIS[hemisphere] if hemisphere else None)


def _check_range(value: float, axis: Axis, text: str) -> float:
    limit = _LIMIT[axis]
    name = "latitude" if axis == "lat" else "longitude"
    if not math.isfinite(value) or abs(value) > limit:
        raise ValueError(f"{text!r}: {name} {value:.10g} is outside [-{limit:g}, {limit:g}]")
    return value


def parse_coordinate(text: str, axis: Axis) -> float:
    """Parse one typed latitude or longitude into signed decimal degrees.

    Accepted: ``"48.85"``, ``"-2.35"``, ``"48.85 N"``, ``"N 48.85"``, ``"2°21'E"``,
    ``"48°51'29.6\\"N"``, ``"48 51 29.6 N"``, ``"48°51.494'"``; typographic marks (º ′ ″ ’ ”)
    are accepted too. S and W mean negative.

    Raises:
        ValueError: for anything else, with the reason: words, NaN/inf, a comma as decimal
            separator, a hemisphere letter of the other axis, minutes or seconds >= 60, both a
            sign and a letter, or a value out of range (|lat| > 90, |lon| > 180: longitudes
            are rejected, not wrapped).
        TypeError: if ``text`` is not a string.
    """
    if axis not in _LIMIT:
        raise ValueError(f"axis must be 'lat' or 'lon', got {axis!r}")
    value, letter_axis = _parse_angle(text)
    if letter_axis is not None and letter_axis != axis:
        raise ValueError(f"{text!r}: hemisphere letter belongs to {letter_axis}, but a {axis} was expected")
    return _check_range(value, axis, text)


def _parse_pair_at(left: str, right: str) -> tuple[float, float] | None:
    """Parse two halves as a (lon, lat) pair, or None if they do not form one."""
    try:
        (a, a_axis), (b, b_axis) = _parse_angle(left), _parse_angle(right)
    except ValueError:
        return None
    if a_axis is None and b_axis is None:
        a_axis, b_axis = "lat", "lon"  # the documented "lat, lon" order
    elif a_axis is None:
        a_axis = "lon" if b_axis == "lat" else "lat"
    elif b_axis is None:
        b_axis = "lon" if a_axis == "lat" else "lat"
    if a_axis == b_axis:
        return None
    lat, lon = (a, b) if a_axis == "lat" else (b, a)
    return lon, lat


def parse_lonlat_pair(text: str) -> tuple[float, float]:
    """Parse a typed location such as ``"48.8566, 2.3522"`` and return ``(lon, lat)`` degrees.

    Order: **latitude first, then longitude** ("lat, lon", as in map apps), separated by a
    comma or semicolon, or by whitespace. Hemisphere letters override the order, so
    ``"2.35 E, 48.85 N"`` and ``48°51'29.6"N 2°21'07.9"E`` both work. Each half accepts every
    format of :func:`parse_coordinate`.

    Raises:
        ValueError: when the text cannot be read as exactly one pair, when it could be split
            into a pair in more than one way (e.g. ``"48 51 2 21"``, which may be degrees and
            minutes or four numbers), or when a value is out of range; the message says which.
        TypeError: if ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"location must be a string, got {type(text).__name__}")
    s = text.strip()
    separators = [m.start() for m in re.finditer(r"[,;]", s)]
    if separators:
        splits = [(i, i + 1) for i in separators]
    else:
        splits = [(m.start(), m.end()) for m in re.finditer(r"\s+", s)]
    candidates = {pair for start, end in splits if (pair := _parse_pair_at(s[:start], s[end:])) is not None}
    in_range = {(lon, lat) for lon, lat in candidates if abs(lon) <= 180 and abs(lat) <= 90}
    results = in_range or candidates
    if len(results) > 1:
        raise ValueError(
            f"{text!r} is ambiguous: it can be read as {len(results)} different locations; "
            "write it as 'lat, lon' with a comma, e.g. '48.8566, 2.3522'"
        )
    if not results:
        raise ValueError(
            f"{text!r} is not a location: write 'lat, lon' in degrees, e.g. '48.8566, 2.3522' "
            "or 48°51'29.6\"N 2°21'07.9\"E (use '.' for decimals)"
        )
    lon, lat = results.pop()
    if abs(lat) > 90.0 and abs(lon) <= 90.0:
        raise ValueError(
            f"{text!r}: latitude {lat:.10g} is outside [-90, 90]; the order is 'lat, lon' "
            f"(did you mean {lon:.10g}, {lat:.10g}?)"
        )
    _check_range(lat, "lat", text)
    _check_range(lon, "lon", text)
    return lon, lat


# --- grids and distances ---------------------------------------------------------------


def lonlat_grid(step_deg: float) -> np.ndarray:
    """Cell-centre grid over the globe, float32 of shape ``(H, W, 2)`` holding (lon, lat).

    ``H = 180 / step_deg`` rows run north -> south, ``W = 360 / step_deg`` columns run
    west -> east; cell ``[i, j]`` is centred on
    ``(-180 + (j + 0.5) * step, 90 - (i + 0.5) * step)`` degrees.

    Raises:
        ValueError: if ``step_deg`` is not a positive number dividing 180.
    """
    step = float(step_deg)
    if not math.isfinite(step) or step <= 0.0:
        raise ValueError(f"step_deg must be a positive number of degrees, got {step_deg!r}")
    n_rows = round(180.0 / step)
    if n_rows < 1 or not math.isclose(n_rows * step, 180.0, rel_tol=0.0, abs_tol=1e-9):
        raise ValueError(f"step_deg must divide 180 exactly, got {step_deg!r}")
    lat = 90.0 - (np.arange(n_rows) + 0.5) * step
    lon = -180.0 + (np.arange(2 * n_rows) + 0.5) * step
    lon_grid, lat_grid = np.meshgrid(lon, lat)
    return np.stack([lon_grid, lat_grid], axis=-1).astype(np.float32)


def unit_vectors(lonlat: ArrayT) -> ArrayT:
    """(lon, lat) degrees ``(..., 2)`` -> unit vectors ``(..., 3)`` on the sphere.

    ``x = cos(lat) cos(lon), y = cos(lat) sin(lon), z = sin(lat)``: x points to (0E, 0N), y to
    (90E, 0N), z to the north pole. A NumPy array gives a float64 array; a torch tensor gives a
    tensor on its device in its floating dtype. The dot product of two unit vectors is the
    cosine of their great-circle angle (:func:`km_to_radians` converts distances).
    """
    if hasattr(lonlat, "detach"):
        import torch

        rad = torch.deg2rad(lonlat)
        lon, lat = rad[..., 0], rad[..., 1]
        cos_lat = torch.cos(lat)
        return torch.stack((cos_lat * torch.cos(lon), cos_lat * torch.sin(lon), torch.sin(lat)), -1)
    rad = np.radians(np.asarray(lonlat, dtype=np.float64))
    if rad.shape[-1:] != (2,):
        raise ValueError(f"expected (..., 2) (lon, lat) degrees, got shape {rad.shape}")
    lon, lat = rad[..., 0], rad[..., 1]
    return np.stack((np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)), -1)


def chord_length(angle_rad: float) -> float:
    """Straight-line distance between two unit vectors ``angle_rad`` radians apart on the sphere
    (the angle clipped to [0, pi]): ``2 sin(angle / 2)``, in [0, 2]."""
    return 2.0 * math.sin(min(max(float(angle_rad), 0.0), math.pi) / 2.0)


def km_to_radians(km: float) -> float:
    """A great-circle distance in km as an angle in radians on a sphere of :data:`EARTH_RADIUS_KM`."""
    return float(km) / EARTH_RADIUS_KM


def haversine_km(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Great-circle distance in km between (lon, lat) degree arrays ``a`` and ``b``.

    ``a`` and ``b`` have shape ``(..., 2)`` and broadcast against each other (e.g. ``(N, 1, 2)``
    against ``(1, M, 2)`` gives an ``(N, M)`` matrix). Returns float64 of the broadcast
    shape without the last axis, on a sphere of radius :data:`EARTH_RADIUS_KM`.
    """
    a_rad = np.radians(np.asarray(a, dtype=np.float64))
    b_rad = np.radians(np.asarray(b, dtype=np.float64))
    if a_rad.shape[-1:] != (2,) or b_rad.shape[-1:] != (2,):
        raise ValueError(f"expected (..., 2) arrays, got shapes {a_rad.shape} and {b_rad.shape}")
    dlon = b_rad[..., 0] - a_rad[..., 0]
    dlat = b_rad[..., 1] - a_rad[..., 1]
    h = np.sin(dlat / 2.0) ** 2 + np.cos(a_rad[..., 1]) * np.cos(b_rad[..., 1]) * np.sin(dlon / 2.0) ** 2
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
