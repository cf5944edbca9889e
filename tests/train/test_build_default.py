"""The default-model build runs end to end (quick sizes) and writes a loadable model directory."""

import json

import numpy as np
import pytest

from csp.geo import haversine_km
from csp.predictor import Predictor
from train import where
from train.build_default import BuildOptions, BuildPlan, build_default, pretraining_records


@pytest.mark.slow
def test_quick_build_writes_a_model_directory(tmp_path):
    out = tmp_path / "default"
    (out).mkdir()
    for name in ("imagenet_species_link.csv", "native_ranges.csv"):
        (out / name).write_text((BuildOptions().out / name).read_text())
    text = build_default(BuildOptions(out=out, work=tmp_path / "work", quick=True, device="cpu"))
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["test"] > 2000 and report["plan"]["photo_points"] == 600
    assert 0 < report["test"]["mrr"] <= 100
    assert "pseudo-presence" in text.lower() or "Pseudo-presences" in text
    predictor = Predictor.from_directory(out, load_image_encoder=False)
    assert predictor.csp_model is not None and len(predictor.class_names) == report["data"]["classes"]
    assert set(report["pseudo_presences"]) == predictor.expert_range_species
    assert len(predictor.captive_sites) > 0  # captive_places.csv written by build_captive


@pytest.mark.slow
def test_pretraining_records_are_the_plan_sizes_away_from_the_benchmark():
    plan = BuildPlan(photo_points=50, sphere_points=40, land_points=30)
    records = pretraining_records(plan, seed=3)
    counts = [sum(r.id.startswith(f"{p}-") for r in records) for p in ("mp16", "sphere", "land")]
    assert counts == [50, 40, 30]
    assert len({r.id for r in records}) == 120
    lonlat = np.array([[r.lon, r.lat] for r in records])
    bench = np.concatenate(list(where.benchmark_points().values()))
    assert haversine_km(lonlat[:, None], bench[None]).min() > where.HOLDOUT_KM
    assert records == pretraining_records(plan, seed=3)
