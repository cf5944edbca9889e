"""GPS position (and capture time) from a photo's EXIF block.

The position comes from the GPS IFD (``image.getexif().get_ifd(ExifTags.IFD.GPSInfo)``):
``GPSLatitude`` / ``GPSLongitude`` hold degrees, minutes, seconds (each an ``IFDRational``, a
``(numerator, denominator)`` pair or a plain number; writers also store a single decimal-degree
value) and ``GPSLatitudeRef`` / ``GPSLongitudeRef`` hold N/S and E/W. A position is returned
only when it is complete and well formed; otherwise the result is ``None`` with a reason the
app can show, never a guess. Nothing here raises on malformed EXIF.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from numbers import Real

from PIL import ExifTags, Image

_GPS = ExifTags.GPS
_REFS = {"lat": ("N", "S"), "lon": ("E", "W")}
_LIMIT = {"lat": 90.0, "lon": 180.0}
_TAGS = {
    "lat": (_GPS.GPSLatitude, _GPS.GPSLatitudeRef, "GPSLatitude"),
    "lon": (_GPS.GPSLongitude, _GPS.GPSLongitudeRef, "GPSLongitude"),
}


@dataclass(frozen=True)
class GpsResult:
    """Outcome of reading EXIF GPS: ``lonlat`` in degrees or ``None``, and why."""

    lonlat: tuple[float, float] | None
    reason: str

    @property
    def ok(self) -> bool:
        return self.lonlat is not None


class _Unusable(Exception):
    """Internal: the GPS block cannot give a position; the message says why."""


def _number(value: object, what: str) -> float:
    """One EXIF number (IFDRational, (num, den) pair, int or float) as a finite float."""
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, Real) for v in value):
        num, den = value
        if den == 0:
            raise _Unusable(f"{what} has a zero denominator")
        value = num / den
    denominator = getattr(value, "denominator", 1)
    if isinstance(denominator, Real) and denominator == 0:
        raise _Unusable(f"{what} has a zero denominator")
    if isinstance(value, bool) or not isinstance(value, Real):
        raise _Unusable(f"{what} is not a number ({type(value).__name__})")
    number = float(value)
    if not math.isfinite(number):
        raise _Unusable(f"{what} is not a finite number")
    return number


def _degrees(value: object, name: str) -> float:
    """Unsigned degrees from a (degrees, minutes, seconds) triple or a single number."""
    parts = tuple(value) if isinstance(value, tuple | list) else (value,)
    if len(parts) not in (1, 3):  # the standard D, M, S triple, or one decimal-degree value
        raise _Unusable(f"{name} has {len(parts)} components (expected degrees, minutes, seconds)")
    numbers = [_number(p, f"{name}[{k}]") for k, p in enumerate(parts)]
    if any(n < 0 for n in numbers):
        raise _Unusable(f"{name} has a negative component (the hemisphere is given by its Ref)")
    if len(numbers) == 3:
        # Seconds of exactly 60 are a rounding other writers produce (59.996 -> "60.00"): they
        # carry over into the minute (the sum below does that). Anything beyond is malformed.
        if numbers[1] >= 60.0 or numbers[2] > 60.0:
            raise _Unusable(f"{name} has minutes of 60 or more or seconds over 60")
    return sum(n / 60.0**k for k, n in enumerate(numbers))


def _text(value: object) -> str | None:
    """An EXIF ASCII value (str or bytes) without NUL padding, upper-cased; else None."""
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    return value.strip("\x00 ").upper() if isinstance(value, str) else None


def _ref(value: object, axis: str, name: str) -> str:
    ref = _text(value)
    if ref is None:
        raise _Unusable(f"{name}Ref is not text")
    if ref not in _REFS[axis]:
        raise _Unusable(f"{name}Ref is {ref!r}, expected {' or '.join(_REFS[axis])}")
    return ref


def _gps_ifd(image: Image.Image) -> dict:
    if getattr(image, "format", None) == "PNG":
        image.load()  # a PNG's eXIf chunk may follow the pixel data
    return dict(image.getexif().get_ifd(ExifTags.IFD.GPSInfo))


def _position(gps: dict) -> tuple[float, float]:
    if not gps:
        raise _Unusable("the photo has no GPS data in its EXIF")
    if _text(gps.get(_GPS.GPSStatus)) == "V":
        raise _Unusable("the camera marked its GPS fix as void (GPSStatus V)")
    signed = {}
    for axis, (value_tag, ref_tag, name) in _TAGS.items():
        if value_tag not in gps:
            raise _Unusable(f"the EXIF GPS block has no {name}")
        if ref_tag not in gps:
            raise _Unusable(f"the EXIF GPS block has no {name}Ref (hemisphere unknown)")
        degrees = _degrees(gps[value_tag], name)
        if degrees > _LIMIT[axis]:
            raise _Unusable(f"{name} {degrees:.7g} is out of range [0, {_LIMIT[axis]:g}]")
        ref = _ref(gps[ref_tag], axis, name)
        signed[axis] = -degrees if ref in ("S", "W") else degrees
    if signed["lat"] == 0.0 and signed["lon"] == 0.0:
        raise _Unusable("the GPS position is exactly 0°, 0°, which cameras write when they have no fix")
    return signed["lon"], signed["lat"]


def read_gps(image: Image.Image) -> GpsResult:
    """Read the EXIF GPS position of an opened image; never raises on malformed data.

    Returns:
        ``GpsResult((lon, lat), "ok")`` with degrees (lon in [-180, 180], lat in [-90, 90]),
        or ``GpsResult(None, reason)`` when GPS is missing or unusable: no EXIF/GPS block,
        missing coordinate or reference tag, zero denominators, non-numeric or out-of-range
        values, minutes >= 60 or seconds > 60 (exactly 60 s carries over), a void fix, or
        exactly (0, 0).
    """
    try:
        gps = _gps_ifd(image)
    except Exception as err:  # corrupt EXIF must become a reason, not a crash
        return GpsResult(None, f"the EXIF block cannot be read ({type(err).__name__}: {err})")
    try:
        return GpsResult(_position(gps), "ok")
    except _Unusable as err:
        return GpsResult(None, str(err))
    except Exception as err:  # same contract for unforeseen value types
        return GpsResult(None, f"the EXIF GPS block is malformed ({type(err).__name__}: {err})")


def gps_from_exif(image: Image.Image) -> tuple[float, float] | None:
    """EXIF GPS position as ``(lon, lat)`` degrees, or ``None`` (see :func:`read_gps` for why)."""
    return read_gps(image).lonlat


def capture_time_from_exif(image: Image.Image) -> str | None:
    """EXIF ``DateTimeOriginal`` (else ``DateTime``) as ISO 8601 ``YYYY-MM-DDTHH:MM:SS``.

    Returns ``None`` when absent or malformed; never raises on malformed data.
    """
    try:
        exif = image.getexif()
        value = exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.DateTimeOriginal)
        if value is None:
            value = exif.get(ExifTags.Base.DateTime)
        if isinstance(value, bytes):
            value = value.decode("ascii", errors="replace")
        if not isinstance(value, str):
            return None
        return datetime.strptime(value.strip("\x00 "), "%Y:%m:%d %H:%M:%S").isoformat()
    except Exception:  # a bad timestamp is just an unknown date
        return None
