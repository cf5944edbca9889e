"""Top places, flatness and geolocation errors on hand-checked cases."""

import math

import numpy as np
import pytest
import torch

from csp.geo import EARTH_RADIUS_KM
from csp.places import (
    concentration,
    distinct_peaks,
    error_summary,
    is_flat,
    location_log_probs,
    top_places,
    where_places,
)

KM_PER_DEG = 2 * math.pi * EARTH_RADIUS_KM / 360  # 111.195 km along the equator


def test_distinct_peaks_suppresses_by_great_circle_distance():
    # On the equator at lon 0, 5, 10, 30: 556 km, 1,112 km, 3,336 km from the first.
    lonlat = np.array([[0.0, 0.0], [5.0, 0.0], [10.0, 0.0], [30.0, 0.0]])
    peaks, owner = distinct_peaks(lonlat, np.array([1.0, 0.9, 0.8, 0.7]), k=5, min_separation_km=1000)
    assert peaks.tolist() == [0, 2, 3]  # lon 5 lies within 1,000 km of lon 0; lon 10 does not
    assert owner.tolist() == [0, 0, 1, 2]
    peaks, owner = distinct_peaks(lonlat, np.array([1.0, 0.9, 0.8, 0.7]), k=1, min_separation_km=1000)
    assert peaks.tolist() == [0] and owner.tolist() == [0, 0, -1, -1]


def test_distinct_peaks_across_the_antimeridian():
    # 179.5 E and 179.5 W are 111 km apart, not 39,900 km.
    lonlat = np.array([[179.5, 0.0], [-179.5, 0.0], [0.0, 0.0]])
    peaks, _ = distinct_peaks(lonlat, np.array([1.0, 0.9, 0.1]), k=3, min_separation_km=500)
    assert peaks.tolist() == [0, 2]


def test_distinct_peaks_rejects_bad_shapes():
    with pytest.raises(ValueError, match="lonlat"):
        distinct_peaks(np.zeros((3, 2)), np.zeros(4), k=1)
    with pytest.raises(ValueError, match="k must be"):
        distinct_peaks(np.zeros((3, 2)), np.zeros(3), k=0)


def _map(step: float = 2.0) -> np.ndarray:
    return np.zeros((round(180 / step), round(360 / step)))


def test_top_places_masses_and_cell_centres():
    mass = _map()
    mass[44, 90] = 0.5  # cell centred at (1 E, 1 N)
    mass[44, 91] = 0.1  # (3 E, 1 N): 222 km away, claimed by the first place
    mass[45, 10] = 0.4  # (159 W, 1 S)
    places = top_places(mass, k=5, min_separation_km=1000)
    assert [(p.lon, p.lat) for p in places[:2]] == [(1.0, 1.0), (-159.0, -1.0)]
    assert places[0].mass == pytest.approx(0.6) and places[1].mass == pytest.approx(0.4)
    assert sum(p.mass for p in places) == pytest.approx(1.0)


def test_top_places_rank_by_density_not_by_cell_mass():
    mass = _map()
    mass[0, 0] = 0.1  # (179 W, 89 N): a cell of cos(89 deg) = 0.017 the area of an equatorial one
    mass[45, 90] = 0.9  # (1 E, 1 S)
    places = top_places(mass, k=2)
    assert (places[0].lon, places[0].lat) == (-179.0, 89.0) and places[0].mass == pytest.approx(0.1)


def test_top_places_rejects_bad_maps():
    with pytest.raises(ValueError, match="2H"):
        top_places(np.ones((3, 3)))
    with pytest.raises(ValueError, match="no mass"):
        top_places(_map())
    bad = _map()
    bad[0, 0] = -1
    with pytest.raises(ValueError, match="non-negative"):
        top_places(bad)


def _area_map(step: float = 2.0) -> np.ndarray:
    lat = 90 - (np.arange(round(180 / step)) + 0.5) * step
    area = np.cos(np.radians(lat))[:, None] * np.ones(round(360 / step))
    return area / area.sum()


def test_concentration_of_hand_made_maps():
    area = _area_map()
    assert concentration(area) == pytest.approx(1.0)
    north = area.copy()
    north[45:] = 0  # uniform by area over the northern hemisphere: exp(log 2) = 2
    assert concentration(north) == pytest.approx(2.0)
    assert is_flat(north) and is_flat(area)
    one_cell = _map()
    one_cell[45, 0] = 1.0
    assert concentration(one_cell) == pytest.approx(1 / area[45, 0]) and not is_flat(one_cell)
    summary = where_places(one_cell, k=3)
    assert not summary.flat and len(summary.places) == 1 and summary.places[0].mass == pytest.approx(1.0)


def test_location_log_probs_is_area_weighted_softmax():
    lat = torch.tensor([0.0, 60.0, 0.0])
    cells = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    query = torch.tensor([[math.log(2.0), 0.0]])
    mass = location_log_probs(query, cells, lat, temperature=1.0, cosine=False).exp()[0]
    # weights: cos 0 * 1, cos 60 * 1 = 0.5, cos 0 * e^{log 2} = 2 -> 1 : 0.5 : 2
    assert mass.tolist() == pytest.approx([1 / 3.5, 0.5 / 3.5, 2 / 3.5])
    halved = location_log_probs(query, cells, lat, temperature=2.0, cosine=False).exp()[0]
    assert halved[2] / halved[0] == pytest.approx(math.sqrt(2.0))
    cosine = location_log_probs(10 * query, 3 * cells, lat, temperature=1.0, cosine=True).exp()[0]
    assert cosine[2] / cosine[0] == pytest.approx(math.e)  # cosine 1 vs 0


def test_error_summary_counts_thresholds_inclusively():
    summary = error_summary(np.array([50.0, 100.0, 400.0, 600.0, 3000.0]))
    assert summary == {
        "median_km": 400.0,
        "within_100km": 40.0,
        "within_500km": 60.0,
        "within_2500km": 80.0,
        "n": 5.0,
    }
    with pytest.raises(ValueError, match="non-empty"):
        error_summary(np.array([]))


def test_one_degree_on_the_equator():
    peaks, owner = distinct_peaks(np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([1.0, 0.5]), k=2,
                                  min_separation_km=KM_PER_DEG + 0.01)
    assert peaks.tolist() == [0] and owner.tolist() == [0, 0]
    peaks, _ = distinct_peaks(np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([1.0, 0.5]), k=2,
                              min_separation_km=KM_PER_DEG - 0.01)
    assert peaks.tolist() == [0, 1]
