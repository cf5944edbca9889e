"""Sphere sampling is uniform by area; land sampling stays on land; batches split exactly."""

import numpy as np
import pytest
import torch

from csp.samplers import BatchIndexSampler, LandMask, sample_sphere


def test_sphere_sampler_is_uniform_by_area_chi_square():
    points = sample_sphere(200_000, generator=torch.Generator().manual_seed(0))
    assert points.shape == (200_000, 2)
    lat = points[:, 1].numpy()
    assert lat.min() >= -90 and lat.max() <= 90
    assert points[:, 0].min() >= -180 and points[:, 0].max() < 180
    edges = np.linspace(-90, 90, 19)  # 18 bands of 10 degrees
    observed, _ = np.histogram(lat, bins=edges)
    # Area of a latitude band is proportional to the difference of sin(lat).
    expected = np.diff(np.sin(np.deg2rad(edges))) / 2 * len(lat)
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 40.8  # chi-square 99.9% quantile with 17 degrees of freedom
    # Sampling latitude uniformly (the classic bug) fails the same test.
    uniform_lat = np.random.default_rng(0).uniform(-90, 90, len(lat))
    bad, _ = np.histogram(uniform_lat, bins=edges)
    assert ((bad - expected) ** 2 / expected).sum() > 1000


def test_sphere_sampler_is_seeded_and_covers_all_quadrants():
    a = sample_sphere((4, 3), generator=torch.Generator().manual_seed(1))
    b = sample_sphere((4, 3), generator=torch.Generator().manual_seed(1))
    assert a.shape == (4, 3, 2) and torch.equal(a, b)
    many = sample_sphere(4000, generator=torch.Generator().manual_seed(2))
    quadrants = {(bool(x > 0), bool(y > 0)) for x, y in many.tolist()}
    assert len(quadrants) == 4


def test_land_mask_sampling_stays_on_land():
    mask = np.zeros((18, 36), dtype=bool)
    mask[3:6, 10:14] = True  # one block of land
    land = LandMask(mask)
    points = land.sample(500, generator=torch.Generator().manual_seed(0))
    assert points.shape == (500, 2)
    assert bool(land.contains(points).all())
    assert points[:, 1].min() >= 30 and points[:, 1].max() <= 60
    assert points[:, 0].min() >= -80 and points[:, 0].max() <= -40


def test_land_mask_from_country_outlines():
    land = LandMask.from_geojson("assets/basemap/naturalearth_110m_countries.geojson", 2.0)
    probe = torch.tensor([[2.35, 48.85], [-30.0, 0.0], [25.0, -15.0], [-150.0, 0.0]])
    assert land.contains(probe).tolist() == [True, False, True, False]


def test_land_mask_rejects_bad_shapes():
    with pytest.raises(ValueError):
        LandMask(np.ones((10, 10), dtype=bool))
    with pytest.raises(ValueError):
        LandMask(np.zeros((10, 20), dtype=bool))


def test_batch_sampler_splits_global_batches_exactly_across_ranks():
    single = list(BatchIndexSampler(100, 8, seed=3).epoch(0))
    ranks = [list(BatchIndexSampler(100, 8, seed=3, rank=r, world_size=2).epoch(0)) for r in (0, 1)]
    assert len(single) == 12  # drop_last
    for b, batch in enumerate(single):
        assert torch.equal(torch.cat([ranks[0][b], ranks[1][b]]), batch)
    seen = torch.cat(single)
    assert seen.unique().numel() == seen.numel() == 96
    assert not torch.equal(torch.cat(list(BatchIndexSampler(100, 8, seed=3).epoch(1))), seen)
