"""The fusion rule of csp.fusion: hand-computed cases, the floor, and the confidence guarantee."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from csp.captive import range_ratio
from csp.fusion import CONFIDENT, IMAGE_ONLY, FusionParams, LinkArrays, calibrate, fuse, fuse_all_linked

LINK = LinkArrays.from_mapping({1: 1, 0: 0})  # image classes 0, 1 -> species 0, 1; class 2 unlinked


def test_hand_computed_case():
    # ratio = prior / freq = [1.8, 0.2]; clipped to [0.5, 1.9] -> w = [1.8, 0.5];
    # linked mass 0.8; weighted [0.9, 0.15] (sum 1.05) -> q = 0.8 * [0.9, 0.15] / 1.05.
    fused = fuse(
        np.array([0.5, 0.3, 0.2]),
        np.array([0.9, 0.1]),
        np.array([0.5, 0.5]),
        LINK,
        FusionParams(alpha=1.0, ratio_min=0.5, ratio_max=1.9, prior_temperature=1.0),
    )
    np.testing.assert_allclose(fused.probs[0], [0.8 * 0.9 / 1.05, 0.8 * 0.15 / 1.05, 0.2])
    np.testing.assert_allclose(fused.weight[0], [1.8, 0.5])
    np.testing.assert_allclose(fused.factor[0], [0.8 * 0.9 / 1.05 / 0.5, 0.8 * 0.15 / 1.05 / 0.3])


def test_hand_computed_tempering_and_frequency():
    # freq [0.8, 0.2]: ratio = [0.5 / 0.8, 0.5 / 0.2] = [0.625, 2.5] -> clip [0.625, 2.0];
    # alpha 0.5 -> w = [sqrt(0.625), sqrt(2)]; image [0.6, 0.4, 0].
    params = FusionParams(
        alpha=0.5, ratio_min=0.25, ratio_max=2.0, prior_temperature=1.0, image_class_prior="frequency"
    )
    fused = fuse(np.array([0.6, 0.4, 0.0]), np.array([0.5, 0.5]), np.array([0.8, 0.2]), LINK, params)
    weighted = np.array([0.6 * math.sqrt(0.625), 0.4 * math.sqrt(2.0)])
    np.testing.assert_allclose(fused.probs[0], [*(weighted / weighted.sum()), 0.0])


def test_a_balanced_image_model_keeps_the_prior_class_frequencies():
    # Image model trained on balanced classes: r = C p(s | x), the frequencies cancel. Prior
    # [0.6, 0.4] at x, frequency [0.9, 0.1]: balanced r = [1.2, 0.8] favours the common species
    # 0; divided by the frequency, r = [0.667, 4] would favour the rare one. The range ratio
    # (csp.captive.range_ratio) is p / p(s) either way. Image [0.5, 0.5, 0], alpha 1,
    # no clip in effect.
    image, prior, frequency = np.array([0.5, 0.5, 0.0]), np.array([0.6, 0.4]), np.array([0.9, 0.1])
    balanced = FusionParams(alpha=1.0, ratio_min=0.01, ratio_max=100.0, prior_temperature=1.0)
    fused = fuse(image, prior, frequency, LINK, balanced)
    np.testing.assert_allclose(fused.weight[0], [1.2, 0.8])
    np.testing.assert_allclose(fused.probs[0], [0.6, 0.4, 0.0])
    np.testing.assert_allclose(range_ratio(prior[None], frequency, 1.0)[0], [0.6 / 0.9, 4.0])
    by_frequency = fuse(image, prior, frequency, LINK, replace(balanced, image_class_prior="frequency"))
    np.testing.assert_allclose(by_frequency.weight[0], [0.6 / 0.9, 4.0])
    np.testing.assert_allclose(by_frequency.probs[0], np.array([0.6 / 0.9, 4.0, 0.0]) / (0.6 / 0.9 + 4.0))
    with pytest.raises(ValueError, match="image_class_prior must be one of balanced, frequency"):
        FusionParams(image_class_prior="imagenet")


def test_temperature_calibration():
    np.testing.assert_allclose(calibrate(np.array([0.8, 0.2]), 2.0), [2 / 3, 1 / 3])
    np.testing.assert_allclose(calibrate(np.array([[0.5, 0.5]]), 0.5), [[0.5, 0.5]])


def test_floor_keeps_every_class_alive_and_unlinked_classes_untouched():
    params = FusionParams(alpha=1.0, ratio_min=0.5, ratio_max=1.9, prior_temperature=1.0)
    fused = fuse(np.array([0.4, 0.4, 0.2]), np.array([1.0, 0.0]), np.array([0.5, 0.5]), LINK, params)
    assert fused.probs[0, 1] > 0  # prior exactly 0, the image's 0.4 keeps a share
    assert fused.probs[0, 2] == 0.2
    assert fused.probs[0].sum() == pytest.approx(1.0)


def test_image_only_params_change_nothing():
    probs = np.array([0.1, 0.7, 0.2])
    fused = fuse(probs, np.array([1.0, 0.0]), np.array([0.5, 0.5]), LINK, IMAGE_ONLY)
    np.testing.assert_allclose(fused.probs[0], probs)


def test_params_that_could_overturn_a_confident_class_are_refused():
    with pytest.raises(ValueError, match=r"confident_range must be in \[1, 4\)"):
        FusionParams(confident_range=4.0)
    with pytest.raises(ValueError, match="alpha"):
        FusionParams(alpha=1.5)
    with pytest.raises(ValueError, match="ratio_max"):
        FusionParams(ratio_min=2.0, ratio_max=1.0)
    params = FusionParams(alpha=1.0, ratio_min=0.01, ratio_max=100.0, confident_range=2.0)
    assert params.dynamic_range == pytest.approx(1e4)
    assert (params.ratio_max / params.ratio_min) ** params.confident_alpha == pytest.approx(2.0)


def test_a_confident_image_gets_the_guarded_exponent():
    # ratio [0 -> 0.01, 2.0]; confident (0.85): a = log 2 / log 1e4; unsure (0.6): a = 1.
    params = FusionParams(alpha=1.0, ratio_min=0.01, ratio_max=100.0, confident_range=2.0)
    a = math.log(2.0) / math.log(1e4)
    confident = fuse(np.array([0.85, 0.15, 0.0]), np.array([0.0, 1.0]), np.array([0.5, 0.5]), LINK, params)
    weighted = np.array([0.85 * 0.01**a, 0.15 * 2.0**a])
    np.testing.assert_allclose(confident.probs[0, :2], weighted / weighted.sum())
    unsure = fuse(np.array([0.6, 0.4, 0.0]), np.array([0.0, 1.0]), np.array([0.5, 0.5]), LINK, params)
    weighted = np.array([0.6 * 0.01, 0.4 * 2.0])
    np.testing.assert_allclose(unsure.probs[0, :2], weighted / weighted.sum())
    assert unsure.probs[0].argmax() == 1 and confident.probs[0].argmax() == 0


def test_frequency_must_match_and_be_positive():
    with pytest.raises(ValueError, match="class_frequency"):
        fuse(np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.5]), np.array([1.0]), LINK, FusionParams())
    with pytest.raises(ValueError, match="> 0"):
        fuse(np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.5]), np.array([1.0, 0.0]), LINK, FusionParams())


@st.composite
def _cases(draw):
    k = draw(st.integers(2, 7))
    top = draw(st.integers(0, k - 1))
    confidence = draw(st.floats(CONFIDENT, 1.0))
    rest = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=k - 1, max_size=k - 1))) + 1e-9
    probs = np.insert(rest / rest.sum() * (1 - confidence), top, confidence)
    probs /= probs.sum()  # as fuse() reads them; the guarantee is for p >= c after this
    assume(probs[top] >= CONFIDENT)
    c = draw(st.integers(1, 5))
    linked = draw(st.lists(st.integers(0, k - 1), unique=True, max_size=k))
    link = {i: draw(st.integers(0, c - 1)) for i in linked}
    prior = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=c, max_size=c))) + 1e-12
    frequency = np.array(draw(st.lists(st.floats(1e-4, 1.0), min_size=c, max_size=c)))
    ratio_min = draw(st.floats(1e-6, 10.0))
    params = FusionParams(
        alpha=draw(st.floats(0.0, 1.0)),
        ratio_min=ratio_min,
        ratio_max=ratio_min * draw(st.floats(1.0, 1e8)),
        confident_range=draw(st.floats(1.0, 3.999)),
    )
    return probs, top, prior / prior.sum(), frequency / frequency.sum(), LinkArrays.from_mapping(link), params


@settings(max_examples=300, deadline=None)
@given(_cases())
def test_a_confident_image_class_is_never_replaced_by_the_prior(case):
    probs, top, prior, frequency, link, params = case
    fused = fuse(probs, prior, frequency, link, params).probs[0]
    others = np.delete(fused, top)
    assert (fused[top] > others).all()
    assert fused.sum() == pytest.approx(1.0)


def test_frequency_from_counts_is_add_one_smoothed():
    from csp.fusion import frequency_from_counts

    np.testing.assert_allclose(frequency_from_counts([3, 0, 1]), [4 / 7, 1 / 7, 2 / 7])
    with pytest.raises(ValueError, match="non-negative"):
        frequency_from_counts([1, -1])


@pytest.mark.parametrize("temperature", [1.0, 1.7])
def test_all_linked_torch_rule_is_fuse_with_the_identity_link(temperature):
    # The evaluation's torch path is the same rule as fuse() when class y is linked to species y.
    rng = np.random.default_rng(3)
    image = rng.dirichlet(np.full(6, 0.3), size=40)
    image[:5] = 0.02
    image[:5, 0] = 0.9  # confident rows take the guarded exponent
    prior = rng.dirichlet(np.full(6, 0.5), size=40)
    frequency = rng.dirichlet(np.ones(6))
    params = FusionParams(alpha=0.7, ratio_min=0.05, ratio_max=30.0, image_temperature=temperature)
    expected = fuse(image, prior, frequency, LinkArrays.from_mapping({i: i for i in range(6)}), params).probs
    got = fuse_all_linked(
        torch.from_numpy(image), torch.from_numpy(prior), torch.from_numpy(frequency), params
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    unchanged = fuse_all_linked(
        torch.from_numpy(image), torch.from_numpy(prior), torch.from_numpy(frequency), IMAGE_ONLY
    )
    np.testing.assert_allclose(unchanged.numpy(), image / image.sum(1, keepdims=True))


def test_hand_computed_prior_temperature():
    # T_p = 0.5: prior [0.75, 0.25] -> [0.5625, 0.0625] / 0.625 = [0.9, 0.1]; freq [0.5, 0.5]
    # -> ratio [1.8, 0.2], the hand-computed case above (clip [0.5, 1.9]).
    params = FusionParams(alpha=1.0, ratio_min=0.5, ratio_max=1.9, prior_temperature=0.5)
    fused = fuse(np.array([0.5, 0.3, 0.2]), np.array([0.75, 0.25]), np.array([0.5, 0.5]), LINK, params)
    np.testing.assert_allclose(fused.weight[0], [1.8, 0.5])
    np.testing.assert_allclose(fused.probs[0], [0.8 * 0.9 / 1.05, 0.8 * 0.15 / 1.05, 0.2])
    with pytest.raises(ValueError, match="prior_temperature must be > 0"):
        FusionParams(prior_temperature=0.0)
