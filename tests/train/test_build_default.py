"""The default-model build runs end to end (quick sizes) and writes a loadable model directory."""

import json

import pytest

from csp.predictor import Predictor
from train.build_default import BuildOptions, build_default


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
