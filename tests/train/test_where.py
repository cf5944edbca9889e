"""The where-could-this-be benchmark: errors, ranking, baselines and hold-out on hand-checked cases."""

import numpy as np
import pytest
import torch

from csp.geo import haversine_km
from train import where
from train.where import (
    BenchChips,
    Guesses,
    errors_km,
    gallery_guesses,
    paired_difference,
    render_where,
    score,
)


def test_errors_take_the_best_of_the_top_five():
    truth = np.array([[0.0, 0.0], [10.0, 0.0]])
    top5 = np.array([
        [[0.0, 1.0], [0.0, 0.5], [90.0, 0.0], [90.0, 0.0], [90.0, 0.0]],
        [[10.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
    ])
    top1, best = errors_km(Guesses("x", top5[:, 0], top5), truth)
    assert top1 == pytest.approx([111.195, 0.0], abs=0.01)  # one degree of latitude, then exact
    assert best == pytest.approx([55.597, 0.0], abs=0.01)


def test_gallery_returns_nearest_feature_and_distinct_places():
    # Gallery chips along the equator; the query's feature is closest to the chip at lon 20.
    lonlat = np.array([[0.0, 0.0], [5.0, 0.0], [20.0, 0.0], [22.0, 0.0], [60.0, 0.0]])
    features = np.array(
        [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.1, 0.95, 0.0], [0.0, 0.0, 1.0]]
    )
    query = np.array([[0.05, 1.0, 0.0]])
    guesses = gallery_guesses(query, features, lonlat, "gallery")
    assert guesses.top1.tolist() == [[20.0, 0.0]]
    # lon 22 is 222 km from lon 20 (suppressed); then lon 5 beats lon 0 and lon 60 on similarity,
    # lon 0 is within 1,000 km of lon 5; the list is padded with its last place.
    assert guesses.top5[0].tolist() == [[20.0, 0.0], [5.0, 0.0], [60.0, 0.0], [60.0, 0.0], [60.0, 0.0]]


def test_paired_difference_of_identical_and_shifted_errors():
    a = np.array([100.0, 200.0, 300.0, 400.0, 600.0])
    same = paired_difference(a, a)
    assert same["median_km"] == (0.0, 0.0, 0.0) and same["within_500km"] == (0.0, 0.0, 0.0)
    shifted = paired_difference(a, a + 1000.0)
    assert shifted["median_km"] == (-1000.0, -1000.0, -1000.0)
    assert shifted["within_500km"][0] == pytest.approx(80.0)


def test_score_and_table_per_part():
    truth = np.array([[0.0, 0.0], [0.0, 10.0], [0.0, 40.0]])
    bench = BenchChips(np.zeros((3, 4), np.float32), truth, np.array(["land", "land", "photo"]))
    guess = truth + np.array([0.0, 1.0])  # 111 km north of each
    rows = score(Guesses("m", guess, np.repeat(guess[:, None], 5, axis=1)), bench)
    assert rows["land"]["top1"]["n"] == 2 and rows["all"]["top1"]["n"] == 3
    assert rows["photo"]["top5"]["within_500km"] == 100.0 and rows["all"]["top1"]["within_100km"] == 0.0
    report = {"split": "test", "chips": (2.0, 96), "holdout_km": 100.0, "map_step_deg": 1.0,
              "results": {"m": rows}, "csp_minus_gallery": {}}
    table = render_where(report)
    assert "| land (2) | m | 111 | 0.0 % | 100.0 % | 100.0 % |" in table


@pytest.mark.slow
def test_benchmark_points_are_held_out_of_pretraining():
    points = where.benchmark_points()
    assert {k: len(v) for k, v in points.items()} == {"test-land": 500, "val-land": 200, "test-photo": 300,
                                                      "val-photo": 150}
    assert where.land_mask().contains(torch.from_numpy(points["test-land"]).float()).all()
    gallery = np.array([[r.lon, r.lat] for r in where.gallery_records()])
    bench = np.concatenate(list(points.values()))
    assert haversine_km(gallery[:, None], bench[None]).min() > where.HOLDOUT_KM
    assert not where.away_from_benchmark(bench).any()
