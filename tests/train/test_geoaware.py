"""The geo-aware benchmark's pieces on small hand-made cases (the full run is not a test)."""

import numpy as np

from csp.fusion import FusionParams
from train.geoaware import (
    RANGE_TEMPERATURES,
    Outcome,
    Pairs,
    PriorSource,
    expected_gain,
    fit_range_check,
    fusion_ratios,
    genus_pairs,
    pair_ratios,
    range_ratios,
    rule_difference,
    simulate,
)


def test_genus_pairs_pair_only_congeners():
    names = ["Ursus arctos", "Ursus americanus", "Canis lupus", "Panthera leo", "Panthera onca"]
    lonlat = np.zeros((4, 2))
    pairs = genus_pairs(lonlat, np.array([0, 2, 3, 1]), names, max_sisters=3, seed=0)
    assert list(pairs.truth) == [0, 3, 1] and list(pairs.sister) == [1, 4, 0]


def test_simulate_counts_fixes_and_breaks_by_hand():
    # Pair 0: truth 3x more likely than on average, sister 0.5x -> w = [1.9, 0.5] (clipped).
    # At p = 0.55 the confusion is fixed (0.45 * 1.9 > 0.55 * 0.5); at p = 0.85 it is not
    # (0.15 * 1.9 < 0.85 * 0.5). Pair 1 is the mirror image: its correct answer at 0.55 breaks.
    ratios = (np.array([3.0, 0.5]), np.array([0.5, 3.0]))
    pairs = Pairs(np.zeros((2, 2)), np.array([0, 1]), np.array([1, 0]))
    params = FusionParams(alpha=1.0, ratio_min=0.5, ratio_max=1.9)
    outcome = simulate(ratios, pairs, params, confidences=(0.55, 0.85))
    assert outcome.fixed == {0.55: 1, 0.85: 0} and outcome.broken == {0.55: 1, 0.85: 0}
    assert outcome.rate("fix", [0.55]) == 50.0
    captive = simulate(ratios, pairs, params, (0.55,), captive=lambda ll, r, c: np.array([True, True]))
    assert captive.fixed == {0.55: 0} and captive.broken == {0.55: 0}


def test_expected_gain_weights_fixes_and_breaks_by_calibrated_odds():
    outcome = Outcome(fixed={0.75: 4}, broken={0.75: 1}, n=10)
    assert expected_gain(outcome) == 100.0 * (0.25 * 4 - 0.75 * 1) / 10


def test_pair_ratios_read_the_prior_at_each_fusion_temperature():
    # Prior [0.8, 0.2] everywhere, frequency [0.5, 0.5]. At T_p = 0.5 the prior is squared and
    # renormalised: [0.64, 0.04] / 0.68.
    source = PriorSource("flat", lambda x: np.tile([0.8, 0.2], (len(x), 1)), np.array([0.5, 0.5]))
    pairs = Pairs(np.zeros((3, 2)), np.array([0, 1, 0]), np.array([1, 0, 1]))
    ratios = pair_ratios(source, pairs, (1.0, 0.5), block=2)
    np.testing.assert_allclose(ratios[1.0][0], [1.6, 0.4, 1.6])
    np.testing.assert_allclose(ratios[0.5][1], [0.04 / 0.68 / 0.5, 0.64 / 0.68 / 0.5, 0.04 / 0.68 / 0.5])
    params = FusionParams(prior_temperature=0.5, image_class_prior="frequency")
    np.testing.assert_allclose(fusion_ratios(source, pairs, params)[0], ratios[0.5][0])


def test_the_captive_check_reads_the_range_ratio_whatever_the_image_model():
    # Prior [0.8, 0.2], frequency [0.9, 0.1]: balanced r = 2 p = [1.6, 0.4]; range ratio
    # p / p(s) = [0.889, 2.0].
    source = PriorSource("flat", lambda x: np.tile([0.8, 0.2], (len(x), 1)), np.array([0.9, 0.1]))
    pairs = Pairs(np.zeros((1, 2)), np.array([0]), np.array([1]))
    params = FusionParams(alpha=1.0, ratio_min=0.01, ratio_max=100.0, prior_temperature=1.0)
    np.testing.assert_allclose(fusion_ratios(source, pairs, params), ([1.6], [0.4]))
    ranges = range_ratios(source, pairs, 1.0)
    np.testing.assert_allclose(ranges, ([0.8 / 0.9], [2.0]))
    # at T_r = 0.5 the prior is squared and renormalised: [0.64, 0.04] / 0.68
    np.testing.assert_allclose(range_ratios(source, pairs, 0.5), ([0.64 / 0.68 / 0.9], [0.04 / 0.68 / 0.1]))
    seen = []

    def captive(lonlat, top_ratio, c):
        seen.append(top_ratio)
        return np.zeros(len(lonlat), dtype=bool)

    simulate(fusion_ratios(source, pairs, params), pairs, params, (0.55,), captive, ranges)
    np.testing.assert_allclose(seen, [[2.0], [0.8 / 0.9]])  # the sister's, then the truth's


def test_rule_difference_pairs_the_two_rules_pair_by_pair():
    # Pairs 0, 1: truth 3x, sister 0.5x -> w = [1.9, 0.5]: fixed at every p < 0.8, never at
    # p >= 0.8 (guarded exponent). Pair 2 is the mirror image (broken at every p < 0.8), pair 3
    # a tie. Against the image-only rule (alpha 0): fix +50, break +25 points.
    pairs = Pairs(np.zeros((4, 2)), np.arange(4), np.arange(4))
    ratios = (np.array([3.0, 3.0, 0.5, 1.0]), np.array([0.5, 0.5, 3.0, 1.0]))
    shipped = (ratios, FusionParams(alpha=1.0, ratio_min=0.5, ratio_max=1.9))
    difference = rule_difference(shipped, (ratios, FusionParams(alpha=0.0)), pairs)
    assert difference["fix"][0] == 50.0 and difference["break"][0] == 25.0
    gain = np.mean([2 * (1 - c) - c if c < 0.8 else 0.0 for c in (0.55, 0.65, 0.75, 0.85, 0.95)]) * 100 / 4
    assert abs(difference["gain"][0] - gain) < 1e-9
    assert difference["fix"][1] <= 50.0 <= difference["fix"][2]


def test_the_range_check_keeps_the_temperature_that_flags_most_records_outside():
    # Two species; a prior that puts 0.9 on species 0 west of lon 0 and on species 1 east of it.
    # Validation: species 0 in the west (ratio high); records outside: species 0 in the east.
    def prior(x):
        west = (x[:, 0] < 0)[:, None]
        return np.where(west, [0.9, 0.1], [0.1, 0.9])

    source = PriorSource("halves", prior, np.array([0.5, 0.5]))
    west = np.column_stack([np.linspace(-50, -10, 50), np.zeros(50)])
    east = np.column_stack([np.linspace(10, 50, 40), np.zeros(40)])
    zeros = np.zeros(50, dtype=np.int64)
    val = Pairs(west, zeros, zeros)
    val.lonlat[0] = [20.0, 0.0]  # one validation observation outside: the 2 % quantile is low
    outside = Pairs(east, zeros[:40], zeros[:40])
    fit = fit_range_check(source, val, val, outside, seed=0)
    assert [g["temperature"] for g in fit.grid] == list(RANGE_TEMPERATURES)
    assert all(g["fit_pct"] == g["scored_pct"] for g in fit.grid)  # the halves are alike
    assert fit.temperature == max(fit.grid, key=lambda g: g["fit_pct"])["temperature"]
    chosen = next(g for g in fit.grid if g["temperature"] == fit.temperature)
    assert chosen["threshold"] == fit.threshold and chosen["test_pct"] <= 4.0
