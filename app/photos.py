"""Reading an uploaded photo: format check, EXIF GPS, orientation, downscaling.

Anything wrong with the file becomes a :class:`PhotoError` whose message can be shown to the
user as is (never a traceback).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import pillow_heif
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from csp.exif import GpsResult, read_gps

pillow_heif.register_heif_opener()  # HEIC/HEIF (the iPhone default) through Image.open
ACCEPTED_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WebP", "HEIF": "HEIC"}
"""Pillow format name -> what the user is told (MPO is the multi-picture JPEG of phones;
HEIF is read by ``pillow-heif``; phones name the file .heic)."""
KINDS = "JPEG, PNG, WebP or HEIC"
"""The accepted kinds, as messages name them."""
MAX_SIDE = 1024
"""Longest side, in pixels, photos are downscaled to (the classifier crops 224-260 px)."""


class PhotoError(ValueError):
    """The uploaded file cannot be used as a photo; the message says why."""


@dataclass(frozen=True)
class Photo:
    """A decoded photo.

    Attributes:
        image: RGB, upright (EXIF orientation applied), longest side at most ``MAX_SIDE``.
        gps: EXIF GPS position (lon, lat degrees) or the reason there is none.
        original_size: (width, height) of the file before downscaling.
        format: "JPEG", "PNG", "WebP" or "HEIC".
    """

    image: Image.Image
    gps: GpsResult
    original_size: tuple[int, int]
    format: str


def load_photo(path: str | Path, max_side: int = MAX_SIDE) -> Photo:
    """Open, check and downscale a photo file, keeping its EXIF GPS.

    Raises:
        PhotoError: no file given, the file is missing, not an image, not JPEG/PNG/WebP/HEIC,
            truncated or corrupt, or beyond Pillow's decompression-bomb limit (twice
            ``Image.MAX_IMAGE_PIXELS``, ~179 megapixels); larger photos below it are decoded
            (JPEG at a reduced DCT scale) and downscaled.
    """
    if not path:
        raise PhotoError(f"no photo: upload a {KINDS} file")
    path = Path(path)
    if not path.is_file():
        raise PhotoError(f"the uploaded file {path.name} is missing on the server; upload it again")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                kind = ACCEPTED_FORMATS.get(image.format or "")
                if kind is None:
                    raise PhotoError(f"{path.name} is a {image.format} image; upload a {KINDS} photo")
                gps = read_gps(image)
                original_size = image.size
                if kind == "JPEG":
                    image.draft("RGB", (max_side, max_side))  # decode at a reduced scale
                image.load()
                upright = ImageOps.exif_transpose(image)
                if upright.mode.startswith("I"):  # 16/32-bit integer: scale, don't clip, to 8 bit
                    upright = upright.point(lambda value: value / 257).convert("L")
                rgb = upright.convert("RGB")
    except PhotoError:
        raise
    except UnidentifiedImageError:
        raise PhotoError(f"{path.name} is not an image; upload a {KINDS} photo") from None
    except Image.DecompressionBombError:
        raise PhotoError(
            f"{path.name} has too many pixels to decode safely "
            f"(limit {2 * Image.MAX_IMAGE_PIXELS:,}); resize it first"
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise PhotoError(f"{path.name} is truncated or corrupt and cannot be decoded ({err})") from None
    rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return Photo(image=rgb, gps=gps, original_size=original_size, format=kind)


def save_with_gps(image: Image.Image, path: str | Path, lon: float, lat: float, format: str = "JPEG") -> Path:
    """Save ``image`` as a JPEG (or ``format="HEIF"``, a phone's .heic) whose EXIF GPS block
    holds (lon, lat) degrees (for examples, the benchmark and tests: a photo as a phone would
    write it)."""

    def dms(value: float) -> tuple[float, float, float]:
        seconds = round(abs(value) * 3600, 4)
        degrees, rest = divmod(seconds, 3600)
        minutes, seconds = divmod(rest, 60)
        return float(degrees), float(minutes), round(seconds, 4)

    exif = Image.Exif()
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N" if lat >= 0 else "S",
        ExifTags.GPS.GPSLatitude: dms(lat),
        ExifTags.GPS.GPSLongitudeRef: "E" if lon >= 0 else "W",
        ExifTags.GPS.GPSLongitude: dms(lon),
    }
    path = Path(path)
    image.convert("RGB").save(path, format=format, exif=exif, quality=90)
    return path
