"""Chips cut from the real Blue Marble mosaic: colours, antimeridian wrap, poles, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from csp.chips import ChipLoader, EquirectangularImage

BLUE_MARBLE = Path(__file__).resolve().parents[2] / "assets/basemap/blue_marble_5400x2700.jpg"
PX_PER_DEG = 15


@pytest.fixture(scope="module")
def earth() -> EquirectangularImage:
    return EquirectangularImage.open(BLUE_MARBLE)


def _mean_rgb(chip: Image.Image) -> np.ndarray:
    return np.asarray(chip, dtype=np.float64).reshape(-1, 3).mean(axis=0)


def test_sahara_is_bright_and_red_dominant(earth) -> None:
    r, g, b = _mean_rgb(earth.chip(10.0, 23.0, 2.0, 32))
    assert r > g > b
    assert r - b > 40
    assert (r + g + b) / 3 > 120


def test_mid_pacific_is_dark_blue(earth) -> None:
    r, g, b = _mean_rgb(earth.chip(-150.0, 0.0, 2.0, 32))
    assert b > g > r
    assert (r + g + b) / 3 < 60


def test_chip_shape_and_mode(earth) -> None:
    chip = earth.chip(2.35, 48.85, 1.0, 48)
    assert chip.size == (48, 48) and chip.mode == "RGB"


def test_chip_at_antimeridian_stitches_both_edges(earth) -> None:
    # 2 x 2 degrees at 30 px: output pixels coincide with source pixels (15 px / degree).
    chip = np.asarray(earth.chip(180.0, 0.0, 2.0, 2 * PX_PER_DEG))
    rows = slice(90 * PX_PER_DEG - PX_PER_DEG, 90 * PX_PER_DEG + PX_PER_DEG)
    stitched = np.concatenate(
        [earth.pixels[rows, -PX_PER_DEG:], earth.pixels[rows, :PX_PER_DEG]], axis=1
    )
    assert np.abs(chip.astype(int) - stitched).max() <= 1
    same = np.asarray(earth.chip(-180.0, 0.0, 2.0, 2 * PX_PER_DEG))
    assert np.array_equal(chip, same)


def test_chip_away_from_edges_equals_the_source_block(earth) -> None:
    chip = np.asarray(earth.chip(10.0, 23.0, 2.0, 2 * PX_PER_DEG))
    col, row = (10 + 180 - 1) * PX_PER_DEG, (90 - 23 - 1) * PX_PER_DEG
    block = earth.pixels[row : row + 30, col : col + 30]
    assert np.abs(chip.astype(int) - block).max() <= 1


def test_large_chip_is_antialiased(earth) -> None:
    # 30 x 30 degrees into 32 px: the chip's mean colour is the mean of the area it covers.
    chip = earth.chip(20.0, 0.0, 30.0, 32)
    col, row = (20 + 180 - 15) * PX_PER_DEG, (90 - 15) * PX_PER_DEG
    block = earth.pixels[row : row + 450, col : col + 450].reshape(-1, 3).mean(axis=0)
    assert np.abs(_mean_rgb(chip) - block).max() < 3


@pytest.mark.parametrize("lon,lat", [(0.0, 90.0), (123.0, -90.0), (-179.9, 89.5), (180, -90)])
def test_pole_chips_have_the_right_shape(earth, lon, lat) -> None:
    chips = earth.chips(np.array([[lon, lat]]), 30.0, 40)
    assert chips.shape == (1, 40, 40, 3) and chips.dtype == np.uint8


def test_over_the_pole_continues_on_the_opposite_meridian(earth) -> None:
    n = 32
    here, opposite = earth.chips(np.array([[30.0, 90.0], [-150.0, 90.0]]), 20.0, n)
    # Rows beyond the pole of one chip are the rows below the pole of the other, mirrored.
    assert np.abs(here[: n // 2].astype(int) - opposite[n // 2 :][::-1]).max() <= 1
    south_here, south_opposite = earth.chips(np.array([[30.0, -90.0], [-150.0, -90.0]]), 20.0, n)
    assert np.abs(south_here[n // 2 :].astype(int) - south_opposite[: n // 2][::-1]).max() <= 1


def test_vectorised_chips_match_single_chips(earth) -> None:
    lonlat = np.array([[-70.0, -33.0], [139.7, 35.7], [179.5, 65.0], [0.0, -89.0]])
    chips = earth.chips(lonlat, 3.0, 24)
    assert chips.shape == (4, 24, 24, 3)
    for (lon, lat), chip in zip(lonlat, chips, strict=True):
        assert np.array_equal(np.asarray(earth.chip(lon, lat, 3.0, 24)), chip)


def test_chip_loader_reads_record_coordinates(earth) -> None:
    class Record:
        lon, lat = 10.0, 23.0

    image = ChipLoader(earth, 2.0, 32)(Record())
    assert image.size == (32, 32)
    assert np.array_equal(np.asarray(image), np.asarray(earth.chip(10.0, 23.0, 2.0, 32)))


@pytest.mark.parametrize("lon,lat", [(180.5, 0.0), (-181.0, 0.0), (0.0, 90.1), (0.0, -91.0),
                                     (float("nan"), 0.0)])
def test_out_of_range_location_raises(earth, lon, lat) -> None:
    with pytest.raises(ValueError, match="outside"):
        earth.chip(lon, lat, 1.0, 16)


def test_bad_arguments_raise(earth) -> None:
    with pytest.raises(ValueError, match="size_deg"):
        earth.chip(0.0, 0.0, 0.0, 16)
    with pytest.raises(ValueError, match="out_px"):
        earth.chip(0.0, 0.0, 1.0, 0)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        earth.chips(np.zeros((3, 3)), 1.0, 16)
    with pytest.raises(ValueError, match="W == 2 H"):
        EquirectangularImage(np.zeros((10, 30, 3), dtype=np.uint8))
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        EquirectangularImage.open("missing.jpg")


def test_thirty_thousand_chips_are_fast(earth) -> None:
    import time

    rng = np.random.default_rng(0)
    lonlat = np.stack([rng.uniform(-180, 180, 30_000), rng.uniform(-90, 90, 30_000)], axis=1)
    start = time.perf_counter()
    chips = earth.chips(lonlat, 2.0, 16)
    assert chips.shape == (30_000, 16, 16, 3)
    assert time.perf_counter() - start < 10
