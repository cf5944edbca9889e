"""Background regions (csp.samplers), the basic cleaning rules and the encoding registry's defaults."""

import json

import numpy as np
import pytest
import torch

from csp.cleaning import basic_cleaning, zoo_rule_applies
from csp.encodings import create_encoding, encoding_defaults, list_encodings, resolve_encoding_kwargs
from csp.samplers import (
    BoxRegion,
    HullRegion,
    PointsBackground,
    PolygonRegion,
    background_region,
    data_extent,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_extent_crosses_the_antimeridian_and_samples_by_area():
    points = np.array([[170.0, -40.0], [-175.0, -35.0], [178.0, -45.0]])
    box = data_extent(points, buffer_deg=1.0)
    assert (box.west, box.south, box.east, box.north) == (169.0, -46.0, -174.0, -34.0)
    sample = box.sample(20000, _gen()).double().numpy()
    assert box.contains(sample).all()
    # Uniform by area: the share of points in the southern half of the box follows its area.
    sin = np.sin(np.radians([-46.0, -40.0, -34.0]))
    expected = (sin[1] - sin[0]) / (sin[2] - sin[0])
    assert abs((sample[:, 1] < -40).mean() - expected) < 0.015
    assert data_extent(np.array([[-170.0, 0.0], [10.0, 0.0], [100.0, 5.0]]), 60).width_deg == 300.0
    assert data_extent(np.array([[-170.0, 0.0], [10.0, 0.0], [100.0, 5.0]]), 90).width_deg == 360.0


def test_hull_and_polygon_regions_contain_their_samples(tmp_path):
    points = np.array([[-122.0, 36.0], [-118.0, 34.0], [-120.0, 40.0], [-119.5, 37.0]])
    hull = HullRegion(points, buffer_deg=0.5)
    assert hull.contains(points).all()
    assert not hull.contains(np.array([[-110.0, 37.0], [60.0, -37.0]])).any()
    sample = hull.sample(500, _gen()).double().numpy()
    assert hull.contains(sample).all() and sample[:, 0].min() > -123.5
    with pytest.raises(ValueError, match="spread more than 80 degrees"):
        HullRegion(np.array([[0.0, 0.0], [120.0, 0.0], [-120.0, 10.0]]))
    square = {"type": "Polygon", "coordinates": [[[5, 45], [7, 45], [7, 47], [5, 47], [5, 45]]]}
    path = tmp_path / "area.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": square}]}))  # fmt: skip
    region = background_region(str(path), points)
    assert isinstance(region, PolygonRegion)
    drawn = region.sample(300, _gen()).numpy()
    assert (drawn[:, 0] >= 5).all() and (drawn[:, 0] <= 7).all() and (drawn[:, 1] <= 47).all()


def test_background_points_file_and_bad_specs(tmp_path):
    path = tmp_path / "bg.csv"
    path.write_text("lon,lat\n1,2\n3,4\n")
    region = background_region(str(path), np.zeros((1, 2)))
    assert isinstance(region, PointsBackground)
    assert set(map(tuple, region.sample(50, _gen()).tolist())) == {(1.0, 2.0), (3.0, 4.0)}
    with pytest.raises(ValueError, match="not globe, extent, hull"):
        background_region("nowhere.geojson", np.zeros((1, 2)))
    with pytest.raises(ValueError, match="south < north"):
        BoxRegion(0, 10, 1, 5)


def test_basic_cleaning_rules():
    lonlat = np.array([[10.0, 45.0], [10.0, 45.0], [10.0, 45.0], [0.1, 0.1], [20.0, 50.0]])
    labels = np.array(["a", "a", "b", "a", "a"])
    report = basic_cleaning(lonlat, labels, dates=["d1", "d1", "d1", None, None])
    assert report.keep.tolist() == [True, False, True, False, True]
    assert report.dropped_per_rule == {"duplicate": 1, "zero_zero": 1}
    # Same place on another date is a repeated visit, not a duplicate.
    assert basic_cleaning(lonlat[:2], labels[:2], dates=["d1", "d2"]).keep.all()
    assert not zoo_rule_applies(np.array([[10.0, 45.0], [15.0, 47.0]]))
    assert zoo_rule_applies(np.array([[10.0, 45.0], [-70.0, -30.0]]))


@pytest.mark.parametrize("name", list_encodings())
def test_registry_defaults_build_the_default_encoding(name):
    defaults = encoding_defaults(name)
    assert resolve_encoding_kwargs(name, {}) == defaults
    assert create_encoding(name, **defaults).config == create_encoding(name).config


def test_from_sphere_maps_uniform_points_into_every_region_deterministically(tmp_path):
    from csp.samplers import GlobeRegion, sample_sphere

    points = np.array([[-122.0, 36.0], [-118.0, 34.0], [-120.0, 40.0]])
    uniform = sample_sphere(4000, generator=_gen(1))
    regions = (data_extent(points, 1.0), HullRegion(points, 0.5), PointsBackground(points), GlobeRegion())
    for region in regions:
        mapped = region.from_sphere(uniform)
        assert mapped.shape == uniform.shape and torch.equal(mapped, region.from_sphere(uniform))
        if hasattr(region, "contains"):
            assert region.contains(mapped.double().numpy()).all()
    box = data_extent(points, 1.0)
    lat = box.from_sphere(uniform)[:, 1].numpy()
    sin = np.sin(np.radians([box.south, 37.0, box.north]))
    assert abs((lat < 37.0).mean() - (sin[1] - sin[0]) / (sin[2] - sin[0])) < 0.03
