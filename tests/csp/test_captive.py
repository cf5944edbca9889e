"""Captive places, the captive flag and the wild / captive / auto modes (csp.captive)."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from csp.captive import (
    PLACE_RULE,
    CaptivePlace,
    CaptiveSites,
    PlaceRule,
    assess_captive,
    far_out_of_range,
    find_captive_places,
    read_captive_places,
    write_captive_places,
)
from csp.cleaning import CleaningConfig, flag_zoo_records
from csp.fusion import CONFIDENT
from csp.geo import haversine_km
from csp.predictor import Predictor

ZOO = (-0.1534, 51.5353)  # London


def _zoo_records() -> tuple[np.ndarray, np.ndarray]:
    """Ten species, each with three wild records in a far-away home box and one at the zoo."""
    rng = np.random.default_rng(0)
    lonlat, labels = [], []
    for s in range(10):
        home = np.array([-120.0 + 25 * s, -30.0 + 5 * s])
        lonlat += [home + rng.uniform(-1, 1, 2) for _ in range(3)]
        lonlat.append(np.array(ZOO) + rng.uniform(-0.01, 0.01, 2))
        labels += [f"Species s{s}"] * 4
    return np.array(lonlat), np.array(labels)


def test_zoo_rule_places_roundtrip(tmp_path):
    lonlat, labels = _zoo_records()
    config = CleaningConfig()
    zoo = flag_zoo_records(lonlat, labels, config)
    assert zoo.drop.sum() == 10
    rule = PlaceRule(core_km=5.0)
    places = find_captive_places(lonlat, labels, zoo.drop, "zoo(test)", rule)
    assert len(places) == 1
    place = places[0]
    assert (place.n_species, place.n_records) == (10, 10)
    assert place.rule == "zoo(test)+place(core_km=5,min_species=2,min_captive_share=0.5)"
    assert place.lon == pytest.approx(ZOO[0], abs=0.02) and place.lat == pytest.approx(ZOO[1], abs=0.02)
    assert rule.core_km < place.radius_km < rule.core_km + 2
    write_captive_places(places, tmp_path / "places.csv")
    assert read_captive_places(tmp_path / "places.csv") == places


def _city(n_wild: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Six captive records of six species at one zoo enclosure (within ~100 m) and ``n_wild``
    wild records of local species scattered within 2 km of it."""
    rng = np.random.default_rng(1)
    zoo = np.array(ZOO) + rng.uniform(-0.0005, 0.0005, (6, 2))
    wild = np.array(ZOO) + rng.uniform(-0.02, 0.02, (n_wild, 2))
    labels = np.array([f"Far s{i}" for i in range(6)] + [f"Local s{i % 5}" for i in range(n_wild)])
    drop = np.r_[np.ones(6, dtype=bool), np.zeros(n_wild, dtype=bool)]
    return np.concatenate([zoo, wild]), labels, drop


def test_a_place_whose_wild_records_outnumber_its_captive_ones_is_not_kept():
    lonlat, labels, drop = _city(n_wild=0)
    (zoo,) = find_captive_places(lonlat, labels, drop, "zoo", PlaceRule(core_km=0.5))
    assert zoo.n_species == 6 and zoo.radius_km < 0.7  # a compact place: the enclosure, not the city
    lonlat, labels, drop = _city(n_wild=400)
    inside = haversine_km(np.array([[zoo.lon, zoo.lat]]), lonlat) <= zoo.radius_km
    assert inside[6:].sum() > 6  # more wild records than captive ones within its radius
    assert find_captive_places(lonlat, labels, drop, "zoo", PlaceRule(core_km=0.5)) == []
    # The share counts only the records it is told to (fitting leaves held-out points out).
    counted = np.r_[np.ones(6, dtype=bool), np.zeros(400, dtype=bool)]
    assert len(find_captive_places(lonlat, labels, drop, "zoo", PlaceRule(core_km=0.5), counted)) == 1
    # One far species is a stray record, not a collection.
    assert find_captive_places(lonlat[:6], labels[:6], drop[:6], "zoo", PlaceRule(min_species=7)) == []


def test_place_rule_is_validated_and_described():
    assert PLACE_RULE.min_captive_share == 0.5
    assert PlaceRule(1.0, 3, 0.5).describe() == "place(core_km=1,min_species=3,min_captive_share=0.5)"
    with pytest.raises(ValueError, match="core_km"):
        PlaceRule(core_km=0.0)
    with pytest.raises(ValueError, match="min_species"):
        PlaceRule(min_species=0)
    with pytest.raises(ValueError, match="min_captive_share"):
        PlaceRule(min_captive_share=1.5)
    with pytest.raises(ValueError, match="same N records"):
        find_captive_places(np.zeros((3, 2)), np.zeros(3), np.ones(2, dtype=bool), "zoo")


def test_bad_captive_files_are_one_line_errors(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("lon,lat\n1,2\n")
    with pytest.raises(ValueError, match="header"):
        read_captive_places(path)
    path.write_text("lon,lat,radius_km,n_species,n_records,rule\n200,2,5,3,3,zoo\n")
    with pytest.raises(ValueError, match=r"bad.csv:2"):
        read_captive_places(path)
    with pytest.raises(FileNotFoundError):
        read_captive_places(tmp_path / "missing.csv")


def test_sites_lookup():
    sites = CaptiveSites(
        [CaptivePlace(ZOO[0], ZOO[1], 10.0, 12, 20, "zoo"), CaptivePlace(151.2, -33.9, 5.0, 9, 9, "zoo")]
    )
    assert sites.at((-0.10, 51.50)).n_species == 12  # ~5 km away
    assert sites.at((2.35, 48.85)) is None  # Paris
    assert CaptiveSites([]).at((0.0, 0.0)) is None
    with pytest.raises(ValueError, match="latitude"):
        sites.at((0.0, 95.0))


PLACE = CaptivePlace(ZOO[0], ZOO[1], 10.0, 12, 20, "zoo")


@pytest.mark.parametrize(
    ("requested", "place", "prob", "ratio", "mode", "flagged"),
    [
        ("auto", None, 0.9, 5.0, "wild", False),  # confident, in range: wild
        ("auto", PLACE, 0.9, 5.0, "captive", True),  # at a known captive place
        ("auto", None, 0.9, 0.001, "captive", True),  # confident and far out of range
        ("auto", None, 0.6, 0.001, "wild", False),  # out of range but not confident
        ("auto", None, 0.9, None, "wild", False),  # unlinked top class
        ("wild", PLACE, 0.9, 0.001, "wild", True),  # flagged, but the user asked for wild
        ("captive", None, 0.9, 5.0, "captive", False),
    ],
)
def test_flag_and_modes(requested, place, prob, ratio, mode, flagged):
    check = assess_captive(requested, place, "lion", prob, ratio, CONFIDENT, out_of_range_ratio=0.05)
    assert (check.mode, check.flagged) == (mode, flagged)
    if flagged:
        assert check.message.endswith(("(captive mode); the image ranking is kept.", "(wild mode)."))
        assert "captive?" in check.message
    if place is not None:
        assert "zoo or park" in check.message
    if ratio is not None and ratio < 0.05 and prob >= CONFIDENT:
        assert "lion is far outside its species' known range" in check.message.lower()
        assert "than 98 % of held-out wild observations get for their own species" in check.message


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode must be one of wild, captive, auto"):
        assess_captive("zoo", None, "lion", 0.9, 1.0, CONFIDENT)


def test_predictor_modes_at_a_known_captive_place(app_predictor):
    from skimage import data

    photo = Image.fromarray(data.chelsea())
    where = (145.0, -30.0)  # inside the koala box of the test prior
    at_zoo = dataclasses.replace(PLACE, lon=where[0], lat=where[1])
    predictor = Predictor(
        app_predictor.prior_model,
        app_predictor.class_names,
        image_encoder=app_predictor.image_encoder,
        species_link=app_predictor.species_link,
        captive_sites=CaptiveSites([at_zoo]),
    )
    auto = predictor.classify(photo, where)
    assert auto.mode == "captive" and "zoo or park" in auto.flag
    assert [s.index for s in auto.geo_aware] == [s.index for s in auto.image_only] and auto.moved == []
    wild = predictor.classify(photo, where, mode="wild")
    assert wild.mode == "wild" and wild.flag  # still flagged
    plain = app_predictor.classify(photo, where, mode="auto")
    assert plain.mode == "wild" and plain.flag == ""
    assert predictor.classify(photo, where, mode="captive").mode == "captive"
    with pytest.raises(ValueError, match="mode must be"):
        predictor.classify(photo, where, mode="zoo")
    assert predictor.classify(photo, None).mode == "image-only"


def test_vectorised_cover_and_range_checks():
    sites = CaptiveSites([PLACE])
    np.testing.assert_array_equal(sites.covers(np.array([[-0.10, 51.50], [2.35, 48.85]])), [True, False])
    assert not CaptiveSites([]).covers(np.zeros((2, 2))).any()
    far = far_out_of_range(np.array([0.9, 0.9, 0.5]), np.array([0.01, 5.0, 0.01]), CONFIDENT, 0.05)
    np.testing.assert_array_equal(far, [True, False, False])


def test_save_pretrained_keeps_the_captive_places(app_model_dir, tmp_path):
    import csp

    model = csp.from_pretrained(app_model_dir, load_image_encoder=False)
    model.captive_sites = CaptiveSites([PLACE])
    again = csp.from_pretrained(model.save_pretrained(tmp_path / "copy"), load_image_encoder=False)
    assert again.captive_sites.places == [PLACE]
