"""Predictor.where_places and the image size the CSP map encodes a query at."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from csp.places import where_places
from csp.predictor import Predictor


def _sized(predictor: Predictor, size: int | None) -> Predictor:
    return Predictor(
        predictor.prior_model,
        predictor.class_names,
        csp_model=predictor.csp_model,
        image_encoder=predictor.image_encoder,
        csp_meta=dataclasses.replace(predictor.csp_meta, image_size=size),
    )


@pytest.mark.slow
def test_map_encodes_the_query_like_the_pretraining_chips(app_predictor):
    chip = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    sized = _sized(app_predictor, 96)
    assert sized._where_encoder().input_size == (3, 96, 96)
    assert _sized(app_predictor, None)._where_encoder() is app_predictor.image_encoder
    features, _ = sized._where_encoder().encode([chip])
    with torch.inference_mode():
        query = sized.csp_model.encode_images(features)
    mass = sized.image_location_map(chip, step_deg=2.0)
    assert mass.shape == (90, 180) and mass.sum() == pytest.approx(1.0, abs=1e-5)
    # The map at 96 px differs from the map at the encoder's own 224 px.
    assert not np.allclose(mass, _sized(app_predictor, None).image_location_map(chip, step_deg=2.0))
    assert query.shape == (1, sized.csp_model.location_encoder.config.embed_dim)


@pytest.mark.slow
def test_where_places_are_the_top_places_of_the_map(app_predictor):
    chip = Image.fromarray(np.random.default_rng(1).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    result = app_predictor.where_places(chip, k=3, step_deg=2.0)
    expected = where_places(app_predictor.image_location_map(chip, step_deg=2.0), 3)
    assert result == expected
    assert 1 <= len(result.places) <= 3 and 0 < sum(p.mass for p in result.places) <= 1 + 1e-9
    assert result.flat == (result.concentration < 4.0)
