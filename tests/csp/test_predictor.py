"""Predictor API on a small model: prior, range maps, geo-aware re-weighting, loading."""

import numpy as np
import pytest
import torch

from csp.checkpoint import CheckpointError, describe_model, save_checkpoint
from csp.models import LocationEncoder, LocationEncoderConfig
from csp.predictor import Predictor


def _predictor(**kwargs) -> Predictor:
    torch.manual_seed(0)
    model = LocationEncoder(
        LocationEncoderConfig(
            encoding_kwargs={"frequency_num": 8}, hidden_dim=32, embed_dim=16, num_classes=4
        )
    )
    return Predictor(model, ["Panthera leo", "Panthera tigris", "Ursus arctos", "Ursus americanus"], **kwargs)


def test_prior_top_classes_and_search():
    predictor = _predictor()
    prior = predictor.prior(np.array([[10.0, 20.0], [-70.0, 45.0]]))
    assert prior.shape == (2, 4) and ((prior > 0) & (prior < 1)).all()
    np.testing.assert_allclose(prior.sum(axis=1), 1.0)  # p(species | x), normalised
    scores = predictor.range_scores(np.array([[10.0, 20.0]]))
    assert scores.shape == (1, 4) and np.argmax(scores[0]) == np.argmax(prior[0])
    top = predictor.top_classes(10.0, 20.0, k=3)
    np.testing.assert_allclose([s.score for s in top], sorted(prior[0], reverse=True)[:3], rtol=1e-6)
    assert predictor.search_classes("urs") == ["Ursus americanus", "Ursus arctos"]
    assert predictor.search_classes("lion")[0] == "Panthera leo"
    assert predictor.class_index("Ursus arctos") == 2
    with pytest.raises(KeyError):
        predictor.class_index("Ursus maritimus")
    with pytest.raises(ValueError, match="latitude"):
        predictor.prior(np.array([[0.0, 95.0]]))


def test_range_map_matches_pointwise_range_scores():
    predictor = _predictor()
    grid = predictor.range_map(1, step_deg=10.0)
    assert grid.shape == (18, 36)
    # Row 0 is the northernmost band (lat 85), column 0 the westernmost (lon -175).
    expected = predictor.range_scores(np.array([[-175.0, 85.0], [175.0, -85.0]]))[:, 1]
    np.testing.assert_allclose([grid[0, 0], grid[-1, -1]], expected, rtol=1e-5)
    with pytest.raises(IndexError):
        predictor.range_map(4)


def test_geo_reweight_moves_mass_only_within_linked_classes():
    # Image classes 0..5; classes 1 and 3 are linked to prior classes 0 and 2.
    from csp.fusion import LinkArrays, fuse

    predictor = _predictor(species_link={1: 0, 3: 2})
    probs = np.array([0.30, 0.20, 0.10, 0.20, 0.15, 0.05])
    lonlat = (10.0, 20.0)
    prior = predictor.normalised_prior(np.array([lonlat]))
    assert prior.sum() == pytest.approx(1.0)
    geo = predictor.geo_reweight(probs, lonlat)
    unlinked = [0, 2, 4, 5]
    np.testing.assert_allclose(geo[unlinked], probs[unlinked])
    np.testing.assert_allclose(geo[[1, 3]].sum(), 0.40)
    expected = fuse(
        probs, prior, predictor.class_frequency, LinkArrays.from_mapping({1: 0, 3: 2}), predictor.fusion
    )
    np.testing.assert_allclose(geo, expected.probs[0])


def test_from_directory_loads_prior_and_rejects_a_bad_one(tmp_path):
    predictor = _predictor()
    meta = describe_model(
        predictor.prior_model,
        class_names=predictor.class_names,
        expert_range_species=["Panthera leo"],
    )
    save_checkpoint(tmp_path / "model" / "prior", predictor.prior_model, meta)
    loaded = Predictor.from_directory(tmp_path / "model", load_image_encoder=False)
    assert loaded.expert_range_species == {"Panthera leo"}
    assert not loaded.has_image_encoder and not loaded.has_image_to_location
    np.testing.assert_allclose(loaded.prior(np.array([[1.0, 2.0]])), predictor.prior(np.array([[1.0, 2.0]])))
    with pytest.raises(CheckpointError):
        Predictor.from_directory(tmp_path / "missing", load_image_encoder=False)


def test_with_prior_swaps_the_prior_and_rereads_the_link(tmp_path):
    first = _predictor(species_link={1: 0}, image_encoder=torch.nn.Identity())
    torch.manual_seed(1)
    new = LocationEncoder(LocationEncoderConfig(encoding="wrap", embed_dim=8, num_classes=2))
    names = ["Ursus arctos", "Canis lupus"]
    save_checkpoint(tmp_path / "new", new, describe_model(new, class_names=names))
    link = tmp_path / "link.csv"
    link.write_text(
        "imagenet_index,imagenet_name,species,match,note\n"
        "294,brown bear,Ursus arctos,exact,\n"
        "385,Indian elephant,Elephas maximus,exact,\n"
    )
    swapped = first.with_prior(tmp_path / "new", link)
    assert swapped.class_names == names and swapped.image_encoder is first.image_encoder
    assert swapped.species_link == {294: 0}  # the elephant is not in the new prior
    with pytest.raises(CheckpointError, match="not a location prior"):
        bare = LocationEncoder(LocationEncoderConfig(encoding="wrap", embed_dim=8))
        save_checkpoint(tmp_path / "bare", bare, describe_model(bare))
        first.with_prior(tmp_path / "bare")
