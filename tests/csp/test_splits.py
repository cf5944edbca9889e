"""Leak-free split: clusters, the 10 km guarantee, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from csp.geo import haversine_km
from csp.splits import leak_free_split, min_distance_to_train_km, spatial_clusters

KM_PER_DEG_LAT = 111.195  # on the sphere of csp.geo.EARTH_RADIUS_KM


def test_single_linkage_chains_and_separates():
    # Points 8 km apart along a meridian chain together (16 km end to end); one 30 km away
    # stays alone; a point across the antimeridian 5 km away joins its neighbour.
    step = 8.0 / KM_PER_DEG_LAT
    lonlat = np.array(
        [[0, 0], [0, step], [0, 2 * step], [0, 2 * step + 30 / KM_PER_DEG_LAT], [179.99, 0], [-179.995, 0]]
    )
    clusters = spatial_clusters(lonlat, 10.0)
    assert clusters.tolist() == [0, 0, 0, 3, 4, 4]
    assert spatial_clusters(lonlat, 5.0).tolist() == [0, 1, 2, 3, 4, 4]


def test_clusters_need_positive_buffer():
    with pytest.raises(ValueError, match="positive"):
        spatial_clusters(np.zeros((2, 2)), 0.0)


def _random_observations(seed: int, n_species: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lonlat, labels = [], []
    for s in range(n_species):
        centres = rng.uniform([-170, -60], [170, 60], size=(rng.integers(1, 6), 2))
        for _ in range(rng.integers(1, 25)):
            c = centres[rng.integers(len(centres))]
            lonlat.append(c + rng.normal(0, 0.08, 2))  # ~9 km jitter: clusters of many sizes
            labels.append(s)
    return np.array(lonlat), np.array(labels)


def test_no_held_out_point_within_buffer_of_same_species_training_point():
    lonlat, labels = _random_observations(1)
    train, val, test = leak_free_split(lonlat, labels, 0.1, 0.1, seed=3)
    assert len(val) and len(test)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(len(labels)))
    distance = min_distance_to_train_km(lonlat, labels, train, np.concatenate([val, test]))
    assert distance.min() > 10.0
    # Brute force, independent of the helper.
    for i in np.concatenate([val, test]):
        same = train[labels[train] == labels[i]]
        assert haversine_km(lonlat[i], lonlat[same]).min() > 10.0
    # Every species keeps a training observation.
    assert set(labels[train]) == set(labels)


def test_split_is_deterministic_and_seeded():
    lonlat, labels = _random_observations(2)
    a = leak_free_split(lonlat, labels, seed=0)
    b = leak_free_split(lonlat, labels, seed=0)
    c = leak_free_split(lonlat, labels, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_single_cluster_species_is_train_only_and_fractions_are_near_target():
    lonlat = np.array([[0, 0], [0, 0.01], [0, 0.02]])
    train, val, test = leak_free_split(lonlat, np.zeros(3, dtype=int), 0.3, 0.3)
    assert train.tolist() == [0, 1, 2] and not len(val) and not len(test)
    # Ten isolated points: 10 % test and validation are one point each.
    lonlat = np.stack([np.arange(10) * 1.0, np.zeros(10)], 1)
    train, val, test = leak_free_split(lonlat, np.zeros(10, dtype=int), 0.1, 0.1)
    assert (len(train), len(val), len(test)) == (8, 1, 1)
