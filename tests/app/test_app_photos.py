"""Reading uploaded photos: formats, EXIF GPS, orientation, downscaling, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_gps_photo
from PIL import Image

from app.photos import MAX_SIDE, PhotoError, load_photo, save_with_gps


def test_jpeg_with_gps(tmp_path):
    path = write_gps_photo(tmp_path / "nairobi.jpg", lon=36.82, lat=-1.29)
    photo = load_photo(path)
    assert photo.format == "JPEG" and photo.image.mode == "RGB"
    assert photo.gps.lonlat == pytest.approx((36.82, -1.29), abs=1e-4)
    assert photo.original_size == (640, 427) and photo.image.size == (640, 427)


def test_large_photo_is_downscaled_not_rejected(tmp_path):
    path = write_gps_photo(tmp_path / "big.jpg", lon=-43.21, lat=-22.95, size=(4000, 3000))
    photo = load_photo(path)
    assert photo.original_size == (4000, 3000)
    assert max(photo.image.size) == MAX_SIDE and photo.image.size == (MAX_SIDE, 768)
    assert photo.gps.lonlat == pytest.approx((-43.21, -22.95), abs=1e-4)


def test_heic_with_gps(tmp_path):
    """An iPhone's default format: HEIC (HEVC in HEIF), read through pillow-heif, GPS kept."""
    source = load_photo(write_gps_photo(tmp_path / "source.jpg", lon=151.21, lat=-33.87)).image
    path = save_with_gps(source, tmp_path / "IMG_0001.HEIC", lon=151.21, lat=-33.87, format="HEIF")
    assert path.read_bytes()[4:12] == b"ftypheic"
    photo = load_photo(path)
    assert photo.format == "HEIC" and photo.image.mode == "RGB" and photo.image.size == (640, 427)
    assert photo.gps.lonlat == pytest.approx((151.21, -33.87), abs=1e-4)
    assert abs(np.asarray(photo.image, dtype=int) - np.asarray(source, dtype=int)).mean() < 8  # lossy


@pytest.mark.parametrize(("suffix", "fmt", "kind"), [(".png", "PNG", "PNG"), (".webp", "WEBP", "WebP")])
def test_png_and_webp_without_gps(tmp_path, suffix, fmt, kind):
    path = tmp_path / f"plain{suffix}"
    Image.new("RGBA", (300, 200), (10, 120, 30, 255)).save(path, format=fmt)
    photo = load_photo(path)
    assert photo.format == kind and photo.image.mode == "RGB"
    assert photo.gps.lonlat is None and "no GPS" in photo.gps.reason


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (300, 200), (200, 10, 10)).save(path, exif=exif)
    assert load_photo(path).image.size == (200, 300)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo")
    with pytest.raises(PhotoError, match="notes.jpg is not an image"):
        load_photo(path)


def test_truncated_jpeg(tmp_path):
    whole = write_gps_photo(tmp_path / "whole.jpg", lon=2.35, lat=48.85).read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(PhotoError, match="cut.jpg is truncated or corrupt"):
        load_photo(path)


def test_other_image_formats_are_refused_by_name(tmp_path):
    path = tmp_path / "anim.gif"
    Image.new("P", (20, 20)).save(path, format="GIF")
    with pytest.raises(PhotoError, match="is a GIF image; upload a JPEG, PNG, WebP or HEIC"):
        load_photo(path)


def test_missing_or_no_file(tmp_path):
    with pytest.raises(PhotoError, match="no photo"):
        load_photo(None)
    with pytest.raises(PhotoError, match="missing on the server"):
        load_photo(tmp_path / "gone.jpg")
