"""csp.from_pretrained / save_pretrained: model, checkpoint and run directories, round trips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import csp
from csp.checkpoint import describe_model, point_link, save_checkpoint
from csp.hub import ASSETS_DIR, asset_path, default_model_dir, resolve_model_path
from csp.models import LocationEncoder, LocationEncoderConfig, LocationImageEncoder
from csp.predictor import PRIOR_DIR

PLACES = np.array([[36.82, -1.29], [2.35, 48.85], [151.21, -33.87]])  # (lon, lat) degrees


def test_import_csp_is_light() -> None:
    code = "import sys, csp; assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_default_model_is_found_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_model_dir() == ASSETS_DIR / "default" and (default_model_dir() / PRIOR_DIR).is_dir()
    assert resolve_model_path("default") == default_model_dir()
    with pytest.raises(FileNotFoundError, match="not among the shipped assets"):
        asset_path("no-such-file")


def test_from_pretrained_takes_model_checkpoint_and_run_directories(
    app_model_dir: Path, tmp_path: Path
) -> None:
    model = csp.from_pretrained(app_model_dir, load_image_encoder=False)
    prior = model.prior(PLACES)
    assert prior.shape == (3, len(model.class_names))
    embedding = model.embed(PLACES)
    assert embedding.shape == (3, model.csp_model.location_encoder.embed_dim)
    assert model.embed(PLACES, which="prior").shape == (3, model.prior_model.embed_dim)
    with pytest.raises(ValueError, match="which must be"):
        model.embed(PLACES, which="image")
    # A bare checkpoint directory (the prior/ of a model directory) and a trainer run directory.
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_checkpoint(run / "checkpoints" / "epoch-0001", model.prior_model, model.prior_meta)
    point_link(run / "checkpoints" / "best", run / "checkpoints" / "epoch-0001")
    for source in (app_model_dir / PRIOR_DIR, run):
        again = csp.from_pretrained(source, load_image_encoder=False)
        np.testing.assert_array_equal(again.prior(PLACES), prior)
        assert again.class_names == model.class_names
    with pytest.raises(FileNotFoundError, match="neither a model directory"):
        csp.from_pretrained(tmp_path)


def test_save_pretrained_round_trips_a_predictor(app_model_dir: Path, tmp_path: Path) -> None:
    model = csp.from_pretrained(app_model_dir, load_image_encoder=False)
    saved = model.save_pretrained(tmp_path / "copy")
    again = csp.from_pretrained(saved, load_image_encoder=False)
    np.testing.assert_array_equal(again.prior(PLACES), model.prior(PLACES))
    np.testing.assert_array_equal(again.embed(PLACES), model.embed(PLACES))
    assert again.prior_meta == model.prior_meta and again.csp_meta == model.csp_meta
    assert (saved / "imagenet_species_link.csv").read_bytes() == model.link_file.read_bytes()
    assert again.temperature == model.temperature and again.cosine_similarity == model.cosine_similarity


def test_save_pretrained_takes_bare_models(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = LocationEncoderConfig(encoding="grid", hidden_dim=16, embed_dim=8, num_classes=3, dropout=0.0)
    prior = LocationEncoder(config).eval()
    csp.save_pretrained(prior, tmp_path / "m", class_names=["a", "b", "c"])
    loaded = csp.from_pretrained(tmp_path / "m", load_image_encoder=False)
    expected = prior(torch.tensor(PLACES, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(loaded.range_scores(PLACES), expected, rtol=1e-6)  # sigmoid presence scores
    assert loaded.class_names == ["a", "b", "c"]
    pretrained = LocationImageEncoder(LocationEncoderConfig(hidden_dim=16, embed_dim=8), 5, "mc")
    csp.save_pretrained(pretrained, tmp_path / "m", image_encoder="tf_efficientnet_lite0")
    assert (tmp_path / "m" / "csp" / "model.json").is_file()
    assert describe_model(pretrained).objective == "mc"
    with pytest.raises(ValueError, match="2 class names for a head of 3"):
        csp.save_pretrained(prior, tmp_path / "n", class_names=["a", "b"])
    with pytest.raises(TypeError, match="cannot save a Linear"):
        csp.save_pretrained(torch.nn.Linear(2, 2), tmp_path / "n")
