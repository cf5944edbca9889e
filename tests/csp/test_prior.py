"""LocationPrior: normalised p(species | x) from network + KDE + habitat terms; storage; selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from csp.baselines import HabitatRatio, SphericalKDE
from csp.models import LocationEncoder, LocationEncoderConfig
from csp.prior import POINTS_FILE, SETTINGS_FILE, LocationPrior, PriorSettings, SelectionGrid, select_settings

TRAIN = (np.array([[2.35, 48.85], [2.0, 48.5], [36.8, -1.3], [-60.0, -3.0]]), np.array([0, 0, 1, 2]))


def _encoder(classes: int = 3) -> LocationEncoder:
    torch.manual_seed(0)
    return LocationEncoder(
        LocationEncoderConfig(encoding="wrap", hidden_dim=8, embed_dim=4, num_classes=classes)
    )


def test_log_scores_are_the_weighted_sum_of_the_terms_and_rows_sum_to_one():
    encoder = _encoder()
    settings = PriorSettings(
        network_weight=0.5,
        kde_weight=1.0,
        kde_bandwidth_km=300.0,
        habitat_weight=2.0,
        habitat_scale_deg=0.5,
        temperature=2.0,
    )
    prior = LocationPrior(encoder, settings, TRAIN)
    x = torch.tensor([[2.2, 48.7], [30.0, 0.0]], dtype=torch.float64)
    encoder.eval()
    with torch.no_grad():
        net = F.logsigmoid(encoder.class_logits(x.float()).double())
    kde = SphericalKDE(*TRAIN, 3, 300.0)(x)
    habitat = HabitatRatio(*TRAIN, 3, 0.5)(x)
    assert torch.allclose(prior.log_scores(x), 0.5 * net + kde + 2.0 * habitat, atol=1e-6)
    probs = prior.probabilities(x)
    assert torch.allclose(probs.sum(1), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(probs, torch.softmax((0.5 * net + kde + 2.0 * habitat) / 2.0, 1), atol=1e-6)
    assert int(probs[0].argmax()) == 0  # next to species 0's two points
    scores = prior.range_scores(x)
    assert torch.allclose(scores.double(), net.exp(), atol=1e-5)  # sigmoid(l) = exp(logsigmoid(l))


def test_network_alone_without_settings_file(tmp_path):
    prior = LocationPrior.load(tmp_path, _encoder())
    assert prior.settings == PriorSettings() and prior.class_frequency() is None
    x = torch.zeros(1, 2)
    assert float(prior.probabilities(x).sum()) == pytest.approx(1.0)


def test_save_and_load_round_trip(tmp_path):
    encoder = _encoder()
    settings = PriorSettings(
        kde_weight=1.0, kde_bandwidth_km=150.0, temperature=3.0, fitted_on={"split": "val"}
    )
    LocationPrior(encoder, settings, TRAIN).save(tmp_path)
    assert (tmp_path / SETTINGS_FILE).is_file() and (tmp_path / POINTS_FILE).is_file()
    loaded = LocationPrior.load(tmp_path, encoder)
    assert loaded.settings == settings
    assert np.array_equal(loaded.points[0], TRAIN[0]) and np.array_equal(loaded.points[1], TRAIN[1])
    assert loaded.class_frequency().tolist() == pytest.approx([3 / 7, 2 / 7, 2 / 7])
    (tmp_path / SETTINGS_FILE).write_text('{"bogus": 1}')
    with pytest.raises(ValueError, match="unknown fields"):
        LocationPrior.load(tmp_path, encoder)


def test_select_settings_prefers_the_kde_next_to_training_points():
    # Validation points right next to their species' training points: the KDE term wins and
    # the fitted temperature makes the (correct) top class confident.
    val = (np.array([[2.3, 48.8], [36.7, -1.2], [-60.1, -3.1]]), np.array([0, 1, 2]))
    grid = SelectionGrid(
        network_weights=(0.0, 1.0),
        kde_bandwidths_km=(50.0, 5000.0),
        habitat_weights=(0.0,),
        habitat_scale_deg=0.5,
    )
    settings, scores = select_settings(_encoder(), TRAIN, val, grid)
    assert settings.kde_bandwidth_km == 50.0 and scores["mrr"] == 100.0
    assert settings.fitted_on["split"] == "val" and settings.temperature > 0
    assert scores["nll"] < np.log(3)
