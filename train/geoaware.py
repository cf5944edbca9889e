"""Geo-aware classification: the captive-places layer and the benchmark.

``python -m train build-captive`` runs the cleaning rules of :mod:`csp.cleaning` on the species
observations the default build uses and writes the zoo rule's places to
``<model dir>/captive_places.csv`` (see :mod:`csp.captive`).

``python -m train experiment geoaware`` is the benchmark of :mod:`csp.fusion` and
:mod:`csp.captive` (see :func:`run_geoaware` for the protocol).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from csp.baselines import KDE_BANDWIDTHS_KM, KNN_KS, KNNVote, SphericalKDE, select_on_validation
from csp.captive import (
    CAPTIVE_FILE,
    MAX_WILD_COVERED,
    OUT_OF_RANGE_QUANTILE,
    OUT_OF_RANGE_RATIO,
    PLACE_RULE,
    RANGE_TEMPERATURE,
    CaptivePlace,
    CaptiveSites,
    PlaceRule,
    far_out_of_range,
    find_captive_places,
    write_captive_places,
)
from csp.cleaning import CleaningConfig, CleaningReport, clean_occurrences, load_countries, load_native_ranges
from csp.datasets import GeoRecords, read_csv
from csp.fusion import (
    CONFIDENT,
    IMAGE_CLASS_PRIORS,
    FusionParams,
    LinkArrays,
    calibrate,
    frequency_from_counts,
    fusion_ratio,
    prior_weight,
)
from csp.predictor import Predictor
from csp.stats import paired_bootstrap
from train.config import DataConfig
from train.data import SpeciesSplits, load_species
from train.evaluate import checkpoint_data_config


@dataclass
class Cleaned:
    """All labelled observations and the cleaning verdict on them (before any split)."""

    records: GeoRecords
    names: np.ndarray  # (N,) species name of each record
    report: CleaningReport
    config: CleaningConfig


def clean_all(data: DataConfig) -> Cleaned:
    """Read ``data.csv`` and run the cleaning rules exactly as :func:`train.data.load_species`."""
    records = read_csv(data.csv)
    if records.labels is None or records.class_names is None:
        raise ValueError(f"{data.csv}: no label column found (expected label/species/class)")
    records = records.subset(np.flatnonzero(records.labels >= 0))
    names = np.asarray(records.class_names, dtype=object)[records.labels]
    ranges = load_native_ranges(data.native_ranges) if data.native_ranges else None
    countries = load_countries(data.countries) if ranges is not None else None
    config = CleaningConfig()
    report = clean_occurrences(records.lonlat, names, config, ranges, countries)
    return Cleaned(records, names, report, config)


def captive_places(
    cleaned: Cleaned, place_rule: PlaceRule = PLACE_RULE, counted: np.ndarray | None = None
) -> list[CaptivePlace]:
    """The known captive places in ``cleaned`` (:func:`csp.captive.find_captive_places`);
    ``counted``: ``(N,)`` bool records the captive share counts (default all)."""
    zoo = next(rule for rule in cleaned.report.rules if rule.rule == "zoo")
    c = cleaned.config
    rule = f"zoo(place_km={c.place_km:g},zoo_min_species={c.zoo_min_species},zoo_far_km={c.zoo_far_km:g})"
    return find_captive_places(cleaned.records.lonlat, cleaned.names, zoo.drop, rule, place_rule, counted)


CORE_KMS = (0.5, 1.0, 2.0, 5.0)
PLACE_MIN_SPECIES = (2, 3, 5, 8)


@dataclass
class PlaceFit:
    """The place rule chosen on validation and the grid it was chosen from."""

    rule: PlaceRule
    grid: list[dict[str, float]]  # one row per candidate: core_km, min_species, places, val %, recall %


def held_out_mask(cleaned: Cleaned, splits: SpeciesSplits) -> np.ndarray:
    """``(N,)`` bool over ``cleaned.records``: the validation and test observations of ``splits``
    (the kept records, in order, are ``splits.records``)."""
    kept = np.flatnonzero(cleaned.report.keep)
    if not np.array_equal(cleaned.records.lonlat[kept], splits.records.lonlat):
        raise ValueError("the cleaned records and the split's records differ (different data or cleaning)")
    mask = np.zeros(len(cleaned.records.lonlat), dtype=bool)
    mask[kept[np.concatenate([splits.val, splits.test])]] = True
    return mask


def fit_place_rule(cleaned: Cleaned, splits: SpeciesSplits) -> PlaceFit:
    """Choose ``core_km`` and ``min_species`` of the place rule on the validation split.

    For each candidate the places are built with the captive share counted over the records
    outside the validation and test splits; the candidate covering the most zoo-rule records
    (recall, in-sample: the places are built from them) while at most
    :data:`csp.captive.MAX_WILD_COVERED` of the validation observations (wild: cleaning kept
    them) lie inside a place wins. ``min_captive_share`` stays at its majority value.
    """
    counted = ~held_out_mask(cleaned, splits)
    zoo = next(rule for rule in cleaned.report.rules if rule.rule == "zoo").drop
    val_ll = splits.records.lonlat[splits.val]
    grid, best = [], None
    for core_km in CORE_KMS:
        for min_species in PLACE_MIN_SPECIES:
            rule = PlaceRule(core_km, min_species, PLACE_RULE.min_captive_share)
            sites = CaptiveSites(captive_places(cleaned, rule, counted))
            wild = float(sites.covers(val_ll).mean())
            recall = float(sites.covers(cleaned.records.lonlat[zoo]).mean())
            grid.append({"core_km": core_km, "min_species": min_species, "places": len(sites),
                         "val_covered_pct": 100 * wild, "zoo_records_covered_pct": 100 * recall})  # fmt: skip
            if wild <= MAX_WILD_COVERED and (best is None or recall > best[0] + 1e-12):
                best = (recall, rule)
    if best is None:
        raise ValueError(f"no place rule covers at most {MAX_WILD_COVERED:.0%} of the validation points")
    return PlaceFit(best[1], grid)


def build_captive(out: str | Path = "assets/default", data: DataConfig | None = None) -> str:
    """Write ``<out>/captive_places.csv``; returns a one-line summary."""
    places = captive_places(clean_all(data or DataConfig()))
    path = Path(out) / CAPTIVE_FILE
    write_captive_places(places, path)
    records = sum(p.n_records for p in places)
    return f"{path}: {len(places)} captive places ({records} records dropped by the zoo rule)"


# --- benchmark -------------------------------------------------------------------------------

CONFIDENCES = (0.55, 0.65, 0.75, 0.85, 0.95)
"""Image confidence of the top class in the simulated two-way confusions (bin mid-points)."""

ALPHAS = (0.25, 0.5, 0.75, 1.0)
RATIO_MINS = (1e-3, 1e-2, 0.05, 0.1, 0.3, 1.0)
RATIO_MAXS = (2.0, 5.0, 10.0, 30.0, 100.0, 1e3, 1e4)
PRIOR_TEMPERATURES = (1.0, 0.5, 0.25, 0.125)
RANGE_TEMPERATURES = (*PRIOR_TEMPERATURES, 0.0625)
BY_FREQUENCY = "CSP prior ÷ p(s)"
"""The fit of the rule as if the image model had learnt the prior's class frequencies."""

# Real photos that install offline (package, path inside it) and the class that is right.
REAL_PHOTOS = (
    ("gradio", "media_assets/images/lion.jpg", "lion"),
    ("gradio", "media_assets/images/cheetah.jpg", "cheetah"),
    ("gradio", "media_assets/images/cheetah1.jpg", "cheetah"),
    ("gradio", "test_data/cheetah2.jpg", "cheetah"),
    ("skimage", "chelsea", "tabby"),
)
# (name, (lon, lat), where the lion / cheetah are wild there)
PLACES = (
    ("Serengeti, Tanzania", (34.83, -2.33), True),
    ("Etosha, Namibia", (16.0, -18.9), True),
    ("London Zoo, UK", (-0.1534, 51.5353), False),
    ("Taronga Zoo, Sydney", (151.241, -33.843), False),
    ("Nebraska farmland, USA", (-100.0, 41.5), False),
)


@dataclass
class Pairs:
    """Simulated two-way confusions: at ``lonlat`` the truth is ``truth``, the sister ``sister``."""

    lonlat: np.ndarray  # (P, 2) degrees
    truth: np.ndarray  # (P,) prior class index
    sister: np.ndarray  # (P,) prior class index

    def __len__(self) -> int:
        return len(self.truth)


@dataclass
class PriorSource:
    """A normalised location prior p(s | x) and the class frequencies p(s) it goes with."""

    name: str
    prior: Callable[[np.ndarray], np.ndarray]  # (P, 2) degrees -> (P, C), rows sum to 1
    frequency: np.ndarray  # (C,)


def genus_pairs(
    lonlat: np.ndarray, labels: np.ndarray, class_names: list[str], max_sisters: int, seed: int
) -> Pairs:
    """Every observation of a species with a congener, paired with up to ``max_sisters`` of its
    congeners (seeded choice): the classic fine-grained confusion."""
    rng = np.random.default_rng(seed)
    by_genus: dict[str, list[int]] = {}
    for i, name in enumerate(class_names):
        by_genus.setdefault(name.split(" ")[0], []).append(i)
    rows, sisters = [], []
    for row, label in enumerate(labels):
        congeners = [c for c in by_genus[class_names[label].split(" ")[0]] if c != label]
        if congeners:
            chosen = rng.choice(congeners, size=min(max_sisters, len(congeners)), replace=False)
            rows += [row] * len(chosen)
            sisters += list(chosen)
    rows_a = np.array(rows, dtype=np.int64)
    return Pairs(lonlat[rows_a], labels[rows_a], np.array(sisters, dtype=np.int64))


def classifier_sisters(predictor: Predictor) -> dict[int, int]:
    """``{species: sister species}`` among linked species: the linked image class whose
    classifier weight vector is most similar (cosine) to the species' own, of another species."""
    weight = predictor.image_encoder.model.get_classifier().weight.detach().float()
    link = LinkArrays.from_mapping(predictor.species_link)
    image, species = link.image_index, link.species_index
    w = torch.nn.functional.normalize(weight[torch.from_numpy(image)], dim=1)
    similarity = (w @ w.T).numpy()
    similarity[species[:, None] == species[None, :]] = -np.inf
    sisters: dict[int, int] = {}
    for j in np.argsort(-similarity.max(axis=1)):  # most confusable class of a species first
        sisters.setdefault(int(species[j]), int(species[np.argmax(similarity[j])]))
    return sisters


def linked_pairs(lonlat: np.ndarray, labels: np.ndarray, sisters: dict[int, int]) -> Pairs:
    """Observations of linked species, each paired with its classifier sister."""
    rows = np.flatnonzero(np.isin(labels, list(sisters)))
    return Pairs(
        lonlat[rows], labels[rows], np.array([sisters[int(s)] for s in labels[rows]], dtype=np.int64)
    )


@dataclass
class Outcome:
    """Fix and break counts of one rule on one set of pairs, per confidence ``c``."""

    fixed: dict[float, int]
    broken: dict[float, int]
    n: int

    def rate(self, which: str, confidences: Iterable[float]) -> float:
        table = self.fixed if which == "fix" else self.broken
        chosen = list(confidences)
        return 100.0 * sum(table[c] for c in chosen) / max(1, self.n * len(chosen))


Ratios = tuple[np.ndarray, np.ndarray]  # (P,) likelihood ratios of the truth and of the sister


def pair_ratios(
    source: PriorSource,
    pairs: Pairs,
    temperatures: Sequence[float] = (1.0,),
    image_class_prior: str = "frequency",
    block: int = 1024,
) -> dict[float, Ratios]:
    """``{T_p: (r_true, r_sister)}``: the ratios ``r`` of :func:`csp.fusion.fusion_ratio` (for
    ``"frequency"`` the range ratio p_Tp(s | x) / p(s)) of the truth and of the sister at each
    pair, the prior read at each fusion temperature ``T_p`` (computed once per block of pairs,
    :func:`csp.fusion.calibrate` per temperature)."""
    out = {t: (np.empty(len(pairs)), np.empty(len(pairs))) for t in temperatures}
    for start in range(0, len(pairs), block):
        rows = slice(start, start + block)
        prior = source.prior(pairs.lonlat[rows])
        index = np.arange(prior.shape[0])
        for t, (r_true, r_sister) in out.items():
            ratio = fusion_ratio(calibrate(prior, t), source.frequency, image_class_prior)
            r_true[rows], r_sister[rows] = ratio[index, pairs.truth[rows]], ratio[index, pairs.sister[rows]]
    return out


def fusion_ratios(source: PriorSource, pairs: Pairs, params: FusionParams) -> Ratios:
    """:func:`pair_ratios` as ``params`` weighs by them (its temperature and image class prior)."""
    t = params.prior_temperature
    return pair_ratios(source, pairs, (t,), params.image_class_prior)[t]


def range_ratios(source: PriorSource, pairs: Pairs, temperature: float = RANGE_TEMPERATURE) -> Ratios:
    """The range ratios p_Tr(s | x) / p(s) (:func:`csp.captive.range_ratio`) at the range
    temperature: what the captive check reads, whatever the image model."""
    return pair_ratios(source, pairs, (temperature,), "frequency")[temperature]


@dataclass
class RangeFit:
    """The range check chosen on validation (:mod:`csp.captive`) and the grid it came from."""

    temperature: float
    threshold: float
    grid: list[dict[str, float]]  # per T_r: threshold, outside flagged % (fit / scored half), test %


def fit_range_check(
    source: PriorSource, val_obs: Pairs, test_obs: Pairs, outside: Pairs, seed: int
) -> RangeFit:
    """For each range temperature of the grid, the threshold is the :data:`OUT_OF_RANGE_QUANTILE`
    of the true species' range ratio at validation observations; the temperature kept flags the
    most of a seeded half of ``outside`` (records the cleaning dropped as outside their range).
    The other half and the test observations (wild: flagged in error) are scored."""
    fit_half = np.random.default_rng(seed).permutation(len(outside)) < len(outside) // 2
    # The prior is read once per set, at every temperature of the grid.
    val, out, test = (
        pair_ratios(source, p, RANGE_TEMPERATURES, "frequency") for p in (val_obs, outside, test_obs)
    )
    grid = []
    for t in RANGE_TEMPERATURES:
        threshold = float(np.quantile(val[t][0], OUT_OF_RANGE_QUANTILE))
        below = out[t][0] < threshold
        grid.append(
            {
                "temperature": t,
                "threshold": threshold,
                "fit_pct": 100 * float(below[fit_half].mean()),
                "scored_pct": 100 * float(below[~fit_half].mean()),
                "test_pct": 100 * float((test[t][0] < threshold).mean()),
            }
        )
    best = max(grid, key=lambda row: row["fit_pct"])
    return RangeFit(best["temperature"], best["threshold"], grid)


def simulate(
    ratios: Ratios,
    pairs: Pairs,
    params: FusionParams,
    confidences: Sequence[float] = CONFIDENCES,
    captive: Callable[[np.ndarray, np.ndarray, float], np.ndarray] | None = None,
    ranges: Ratios | None = None,
) -> Outcome:
    """Two-way confusions at confidence ``c`` (simulated image probabilities; real places).

    Confusion: the image gives the sister ``c`` and the truth ``1 - c``; *fixed* when the fused
    truth beats the sister, ``(1 - c) w_truth > c w_sister`` (the linked group's renormalisation
    keeps this order, see :mod:`csp.fusion`). Correct: the image gives the truth ``c``; *broken*
    when ``(1 - c) w_sister > c w_truth``. ``ratios``: :func:`fusion_ratios` (at the fusion
    temperature of ``params``).
    ``captive(lonlat, top_ratio, c) -> (P,) bool`` marks pairs the auto mode sends to captive
    (image ranking kept: neither fixed nor broken); it reads the top class's range ratio from
    ``ranges`` (:func:`range_ratios`; default ``ratios``).
    """
    decisions = _decisions(ratios, pairs, params, confidences, captive, ranges)
    fixed = {c: int(fix.sum()) for c, (fix, _) in decisions.items()}
    broken = {c: int(brk.sum()) for c, (_, brk) in decisions.items()}
    return Outcome(fixed, broken, len(pairs))


def _decisions(
    ratios: Ratios,
    pairs: Pairs,
    params: FusionParams,
    confidences: Sequence[float],
    captive: Callable[[np.ndarray, np.ndarray, float], np.ndarray] | None = None,
    ranges: Ratios | None = None,
) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """``{c: (fixed (P,) bool, broken (P,) bool)}`` per pair, as :func:`simulate` counts them."""
    r_true, r_sister = ratios
    range_true, range_sister = ratios if ranges is None else ranges
    out = {}
    for c in confidences:
        w_true, w_sister = prior_weight(r_true, params, c), prior_weight(r_sister, params, c)
        fix = (1 - c) * w_true > c * w_sister
        brk = (1 - c) * w_sister > c * w_true
        if captive is not None:
            fix &= ~captive(pairs.lonlat, range_sister, c)
            brk &= ~captive(pairs.lonlat, range_true, c)
        out[c] = (fix, brk)
    return out


def rule_difference(
    a: tuple[Ratios, FusionParams], b: tuple[Ratios, FusionParams], pairs: Pairs, seed: int = 0
) -> dict[str, list[float]]:
    """Rule ``a`` minus rule ``b`` (each its ratios and parameters) on the same pairs, with paired
    bootstrap 95 % intervals over pairs: ``{"fix": [d, low, high], "break": ..., "gain": ...}``
    for the fix and break rates at p < :data:`CONFIDENT` and the :func:`expected_gain` (all
    confidences), in percentage points."""
    low = [c for c in CONFIDENCES if c < CONFIDENT]
    per_pair = []
    for ratios, params in (a, b):
        decisions = _decisions(ratios, pairs, params, CONFIDENCES)
        per_pair.append(
            {
                "fix": 100 * np.mean([decisions[c][0] for c in low], axis=0),
                "break": 100 * np.mean([decisions[c][1] for c in low], axis=0),
                "gain": 100 * np.mean([(1 - c) * f - c * k for c, (f, k) in decisions.items()], axis=0),
            }
        )
    out = {}
    for key in ("fix", "break", "gain"):
        interval = paired_bootstrap(per_pair[0][key], per_pair[1][key], seed=seed)
        out[key] = [interval.difference, interval.low, interval.high]
    return out


def old_rule(predictor: Predictor, pairs: Pairs, confidences: Sequence[float] = CONFIDENCES) -> Outcome:
    """The rule this replaces: image probability times the network's sigmoid presence score
    (its reference-API output, whatever :meth:`Predictor.prior` normalises), renormalised."""
    with torch.inference_mode():
        lonlat = torch.from_numpy(np.asarray(pairs.lonlat, dtype=np.float32)).to(predictor.device)
        presence = predictor.prior_model(lonlat).double().cpu().numpy()
    rows = np.arange(len(pairs))
    s_true, s_sister = presence[rows, pairs.truth], presence[rows, pairs.sister]
    fixed = {c: int(((1 - c) * s_true > c * s_sister).sum()) for c in confidences}
    broken = {c: int(((1 - c) * s_sister > c * s_true).sum()) for c in confidences}
    return Outcome(fixed, broken, len(pairs))


def expected_gain(outcome: Outcome) -> float:
    """Top-1 accuracy gained per prediction if the image were calibrated: at confidence ``c`` a
    share ``1 - c`` of its top answers is a confusion (fixable) and ``c`` correct (breakable);
    averaged over the confidences, in percentage points."""
    n = max(1, outcome.n)
    gains = [((1 - c) * outcome.fixed[c] - c * outcome.broken[c]) / n for c in outcome.fixed]
    return 100.0 * float(np.mean(gains))


def fit_params(
    source: PriorSource, pairs: Pairs, image_class_prior: str = "balanced"
) -> tuple[FusionParams, float]:
    """Grid search of the prior's fusion temperature, alpha, ratio_min and ratio_max on
    validation pairs (maximum :func:`expected_gain`), for an image model trained under
    ``image_class_prior`` (the simulated image probabilities know no class frequencies, as a
    classifier trained on balanced classes)."""
    by_temperature = pair_ratios(source, pairs, PRIOR_TEMPERATURES, image_class_prior)
    best: tuple[float, FusionParams] | None = None
    for temperature, ratios in by_temperature.items():
        for alpha in ALPHAS:
            for ratio_min in RATIO_MINS:
                for ratio_max in RATIO_MAXS:
                    params = FusionParams(
                        alpha=alpha,
                        ratio_min=ratio_min,
                        ratio_max=ratio_max,
                        prior_temperature=temperature,
                        image_class_prior=image_class_prior,
                    )
                    gain = expected_gain(simulate(ratios, pairs, params))
                    if best is None or gain > best[0] + 1e-12:
                        best = (gain, params)
    assert best is not None
    return best[1], best[0]


UNBOUNDED = (1e-12, 1e12)
"""Clip of the "unbounded" rule in :func:`what_the_prior_allows` (no floor or ceiling in effect)."""


def what_the_prior_allows(
    source: PriorSource, pairs: Pairs, image_class_prior: str = "balanced"
) -> list[dict[str, float]]:
    """For each fusion temperature of the grid: the share of pairs whose true species has the
    larger ratio ``r`` (the fix rate no rule can beat as p -> 0.5), and the fix and break
    rates at p < 0.8 of the plain Bayes rule (alpha 1, :data:`UNBOUNDED` clip), in percent."""
    low = [c for c in CONFIDENCES if c < CONFIDENT]
    rows = []
    ratios = pair_ratios(source, pairs, PRIOR_TEMPERATURES, image_class_prior)
    for temperature, (r_true, r_sister) in ratios.items():
        params = FusionParams(
            1.0, *UNBOUNDED, prior_temperature=temperature, image_class_prior=image_class_prior
        )
        outcome = simulate((r_true, r_sister), pairs, params)
        rows.append(
            {
                "image_class_prior": image_class_prior,
                "prior_temperature": temperature,
                "order_pct": 100 * float((r_true > r_sister).mean()),
                "fix_pct": outcome.rate("fix", low),
                "break_pct": outcome.rate("break", low),
            }
        )
    return rows


@dataclass
class GeoAwareOptions:
    model_dir: Path = Path("assets/default")
    out: Path = Path("runs/geoaware")
    max_sisters: int = 3  # congeners paired with each observation
    seed: int = 0


@dataclass
class Datasets:
    """Pairs per evaluation set: ``{set name: {"linked": Pairs, "genus": Pairs}}``."""

    val: dict[str, Pairs] = field(default_factory=dict)
    sets: dict[str, dict[str, Pairs]] = field(default_factory=dict)


def _softmax_rows(scores: torch.Tensor) -> np.ndarray:
    return torch.softmax(scores.double(), dim=1).numpy()


def kde_source(splits: SpeciesSplits) -> tuple[PriorSource, float]:
    """Per-species spherical KDE on the real training observations, bandwidth chosen on
    validation MRR; p(s | x) = softmax(log n_s + log p(x | s)). Returns it and the bandwidth."""
    lonlat, labels = splits.records.lonlat, splits.records.labels
    n = len(splits.class_names)
    train_ll, train_lab = lonlat[splits.train], labels[splits.train]

    def make(bandwidth: float) -> SphericalKDE:
        return SphericalKDE(train_ll, train_lab, n, bandwidth)

    chosen = select_on_validation(make, KDE_BANDWIDTHS_KM, lonlat[splits.val], labels[splits.val])
    kde = make(chosen.value)
    frequency = frequency_from_counts(np.bincount(train_lab, minlength=n))
    source = PriorSource(
        f"KDE prior ({chosen.value:g} km)", lambda x: _softmax_rows(kde(torch.from_numpy(x))), frequency
    )
    return source, chosen.value


def knn_source(splits: SpeciesSplits) -> tuple[PriorSource, int]:
    """Votes of the k nearest training observations, k chosen on validation MRR, smoothed by
    one pseudo-vote spread by class frequency: p(s | x) = (votes_s + p(s)) / (k + 1)."""
    lonlat, labels = splits.records.lonlat, splits.records.labels
    n = len(splits.class_names)
    train_ll, train_lab = lonlat[splits.train], labels[splits.train]

    def make(k: float) -> KNNVote:
        return KNNVote(train_ll, train_lab, n, int(k))

    chosen = select_on_validation(make, KNN_KS, lonlat[splits.val], labels[splits.val])
    knn = make(chosen.value)
    frequency = frequency_from_counts(np.bincount(train_lab, minlength=n))

    def prior(x: np.ndarray) -> np.ndarray:
        votes = (knn(torch.from_numpy(x)) - knn.tie_break).numpy()
        return (votes + frequency) / (knn.k + 1.0)

    return PriorSource(f"kNN prior (k = {int(chosen.value)})", prior, frequency), int(chosen.value)


OUTSIDE_RULES = ("range_outlier", "expert_range")
"""Cleaning rules that drop a record as outside its species' range (:mod:`csp.cleaning`)."""


def _dropped_records(
    cleaned: Cleaned, class_names: list[str], rules: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Records the cleaning dropped (by any rule, or by one of ``rules`` and not the zoo rule)
    whose species the prior knows: lonlat, labels."""
    position = {name: i for i, name in enumerate(class_names)}
    dropped = ~cleaned.report.keep
    if rules is not None:
        reasons = [set(r.split("+")) for r in cleaned.report.reason]
        dropped &= np.array([bool(r & set(rules)) and "zoo" not in r for r in reasons])
    dropped = np.flatnonzero(dropped)
    known = np.array([cleaned.names[i] in position for i in dropped], dtype=bool)
    rows = dropped[known]
    labels = np.array([position[cleaned.names[i]] for i in rows], dtype=np.int64)
    return cleaned.records.lonlat[rows], labels


def build_datasets(
    predictor: Predictor, splits: SpeciesSplits, cleaned: Cleaned, options: GeoAwareOptions
) -> Datasets:
    """Validation pairs (for fitting) and the evaluation sets (a) wild test and (b) dropped."""
    sisters = classifier_sisters(predictor)
    lonlat, labels = splits.records.lonlat, splits.records.labels
    names = splits.class_names

    def both(ll: np.ndarray, lab: np.ndarray) -> dict[str, Pairs]:
        return {
            "linked": linked_pairs(ll, lab, sisters),
            "genus": genus_pairs(ll, lab, names, options.max_sisters, options.seed),
        }

    out = Datasets()
    out.val = both(lonlat[splits.val], labels[splits.val])
    out.sets["(a) wild: held-out test observations"] = both(lonlat[splits.test], labels[splits.test])
    d_ll, d_lab = _dropped_records(cleaned, names)
    out.sets["(b) captive / out of range: records cleaning drops"] = both(d_ll, d_lab)
    return out


def _observations(splits: SpeciesSplits, split: str) -> Pairs:
    """The observations of one split as pairs of a species with itself."""
    rows = getattr(splits, split)
    return Pairs(splits.records.lonlat[rows], splits.records.labels[rows], splits.records.labels[rows])


def _observations_outside(cleaned: Cleaned, splits: SpeciesSplits) -> Pairs:
    """Records the cleaning dropped as outside their range (:data:`OUTSIDE_RULES`)."""
    lonlat, labels = _dropped_records(cleaned, splits.class_names, OUTSIDE_RULES)
    return Pairs(lonlat, labels, labels)


def _concat(*pairs: Pairs) -> Pairs:
    return Pairs(
        np.concatenate([p.lonlat for p in pairs]),
        np.concatenate([p.truth for p in pairs]),
        np.concatenate([p.sister for p in pairs]),
    )


def _photo(package: str, name: str) -> Image.Image:
    """A real photo that installs offline: a file inside an installed package, or skimage.data."""
    if package == "skimage":
        from skimage import data

        return Image.fromarray(getattr(data, name)())
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"package {package!r} is not installed (needed for {name})")
    return Image.open(Path(spec.origin).parent / name)


def real_photo_rows(predictor: Predictor, params: FusionParams) -> list[dict[str, object]]:
    """Every real photo at every place in :data:`PLACES`, classified in wild and auto mode."""
    predictor.fusion = params
    rows = []
    for package, name, truth in REAL_PHOTOS:
        image = _photo(package, name).convert("RGB")
        for place, lonlat, native in PLACES:
            wild = predictor.classify(image, lonlat, mode="wild")
            auto = predictor.classify(image, lonlat, mode="auto")
            top = wild.image_only[0]
            rows.append(
                {
                    "photo": Path(name).name,
                    "place": place,
                    "in range": native if truth != "tabby" else None,
                    "image top-1": f"{top.name.split(',')[0]} {top.score:.2f}",
                    "wild top-1": wild.geo_aware[0].name.split(",")[0],
                    "auto top-1": auto.geo_aware[0].name.split(",")[0],
                    "auto mode": auto.mode,
                    "flagged": bool(auto.flag),
                    "correct kept (wild, auto)": (
                        truth in wild.geo_aware[0].name.lower(),
                        truth in auto.geo_aware[0].name.lower(),
                    ),
                }
            )
    return rows


def run_geoaware(options: GeoAwareOptions) -> str:
    """The benchmark (simulated confusions at real places, plus real photos); returns Markdown.

    Protocol: the shipped prior's own split (:func:`train.evaluate.checkpoint_data_config`).
    Parameters are fitted on validation pairs only (classifier sisters of linked species plus
    congeners of every species); the out-of-range threshold is the 2 % quantile of the true
    species' likelihood ratio at validation observations. Test and dropped records are scored
    once. Image probabilities in the pairs are simulated; places, labels and priors are real.
    """
    predictor = Predictor.from_directory(options.model_dir)
    data = checkpoint_data_config(predictor.prior_meta)
    splits = load_species(data)
    if splits.class_names != predictor.class_names:
        raise ValueError(f"{options.model_dir}: the prior's classes differ from {data.csv} after cleaning")
    cleaned = clean_all(data)
    datasets = build_datasets(predictor, splits, cleaned, options)
    csp_source = PriorSource("CSP prior", predictor.normalised_prior, predictor.class_frequency)
    kde, _ = kde_source(splits)
    knn, _ = knn_source(splits)
    val_pairs = _concat(datasets.val["linked"], datasets.val["genus"])
    fits = {source.name: fit_params(source, val_pairs) for source in (csp_source, kde, knn)}
    fits[BY_FREQUENCY] = fit_params(csp_source, val_pairs, "frequency")  # the rule of 87cbc36
    val_obs = _observations(splits, "val")
    csp_params = fits[csp_source.name][0]
    range_fit = fit_range_check(
        csp_source,
        val_obs,
        _observations(splits, "test"),
        _observations_outside(cleaned, splits),
        options.seed,
    )
    threshold = range_fit.threshold
    place_fit = fit_place_rule(cleaned, splits)
    sites = CaptiveSites(captive_places(cleaned, place_fit.rule))  # as build-captive writes it
    predictor.captive_sites = sites

    def auto(lonlat: np.ndarray, r_top: np.ndarray, c: float) -> np.ndarray:
        return sites.covers(lonlat) | far_out_of_range(c, r_top, CONFIDENT, threshold)

    results: dict[str, dict[str, dict[str, Outcome]]] = {}
    differences: dict[str, dict[str, list[float]]] = {}  # shipped rule minus the ÷ p(s) one
    for set_name, by_kind in datasets.sets.items():
        results[set_name] = {}
        for kind, pairs in by_kind.items():
            csp_ratios = fusion_ratios(csp_source, pairs, csp_params)
            ranges = range_ratios(csp_source, pairs, range_fit.temperature)
            kde_params, knn_params, by_frequency = (fits[n][0] for n in (kde.name, knn.name, BY_FREQUENCY))
            results[set_name][kind] = {
                "old rule (image × presence score)": old_rule(predictor, pairs),
                "KDE prior, fusion rule, wild": simulate(
                    fusion_ratios(kde, pairs, kde_params), pairs, kde_params
                ),
                "kNN prior, fusion rule, wild": simulate(
                    fusion_ratios(knn, pairs, knn_params), pairs, knn_params
                ),
                "CSP prior, fusion rule ÷ p(s), wild": simulate(
                    fusion_ratios(csp_source, pairs, by_frequency), pairs, by_frequency
                ),
                "CSP prior, fusion rule, wild": simulate(csp_ratios, pairs, csp_params),
                "CSP prior, fusion rule, auto": simulate(
                    csp_ratios, pairs, csp_params, captive=auto, ranges=ranges
                ),
            }
            if kind == "genus":
                by_frequency_ratios = fusion_ratios(csp_source, pairs, by_frequency)
                differences[set_name] = rule_difference(
                    (csp_ratios, csp_params), (by_frequency_ratios, by_frequency), pairs, options.seed
                )
    wild_test = datasets.sets["(a) wild: held-out test observations"]["genus"]
    allows = [row for c in IMAGE_CLASS_PRIORS for row in what_the_prior_allows(csp_source, wild_test, c)]
    photos = real_photo_rows(predictor, csp_params)
    report = {
        "model_dir": str(options.model_dir),
        "split": data.split,
        "frequency": "training counts" if predictor.prior_meta.train.get("class_counts") else "uniform",
        "fits": {name: {"params": vars(p), "val_gain_pp": g} for name, (p, g) in fits.items()},
        "out_of_range_ratio": threshold,
        "range_fit": vars(range_fit),
        "range_check_is_shipped": range_fit.temperature == RANGE_TEMPERATURE
        and math.isclose(threshold, OUT_OF_RANGE_RATIO, rel_tol=0.01),
        "val_pairs": {k: len(v) for k, v in datasets.val.items()},
        "captive_places": len(sites),
        "place_rule": vars(place_fit.rule),
        "place_rule_is_shipped": place_fit.rule == PLACE_RULE,
        "place_grid": place_fit.grid,
        "test_covered_pct": 100 * float(sites.covers(splits.records.lonlat[splits.test]).mean()),
        "results": {
            s: {k: {r: vars(o) for r, o in rules.items()} for k, rules in kinds.items()}
            for s, kinds in results.items()
        },
        "photos": photos,
        "what_the_prior_allows": allows,
        "balanced_minus_by_frequency": differences,
    }
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "geoaware.json").write_text(json.dumps(report, indent=2, default=str))
    text = render_geoaware(report, results)
    (options.out / "geoaware.md").write_text(text)
    return text


def _interval(values: list[float]) -> str:
    d, low, high = values
    return f"{d:+.2f} [{low:+.2f}, {high:+.2f}]"


def _cell(outcome: Outcome, c: float) -> str:
    return f"{outcome.rate('fix', [c]):.0f} / {outcome.rate('break', [c]):.0f}"


def render_geoaware(report: dict, results: dict[str, dict[str, dict[str, Outcome]]]) -> str:
    """The Markdown report: fitted parameters, fix / break tables, target lines, real photos."""
    csp_fit = report["fits"]["CSP prior"]["params"]
    lines = [
        "# Geo-aware classification benchmark",
        "",
        f"`python -m train experiment geoaware` on `{report['model_dir']}` (its own `{report['split']}` "
        f"split; p(s) from {report['frequency']}). Image probabilities are **simulated** two-way "
        "confusions (top class at confidence p, the other class 1 - p); places, labels and priors are real.",
        "",
        "Fitted on validation pairs only ("
        + ", ".join(f"{k}: {v:,}" for k, v in report["val_pairs"].items())
        + "): "
        + "; ".join(
            f"{name}: prior temperature {f['params']['prior_temperature']:g}, "
            f"alpha {f['params']['alpha']:g}, ratio in [{f['params']['ratio_min']:.3g}, "
            f"{f['params']['ratio_max']:.3g}], expected top-1 gain {f['val_gain_pp']:.2f} pp"
            for name, f in report["fits"].items()
        )
        + f". {report['captive_places']} known captive places.",
        "",
        "Range check (csp.captive.range_ratio): range temperature "
        f"{report['range_fit']['temperature']:g}, threshold {report['out_of_range_ratio']:.3g}"
        + (
            " (the shipped values)"
            if report["range_check_is_shipped"]
            else " (differs from the shipped values!)"
        )
        + ". Per temperature: the threshold (2 % quantile at validation observations), the share "
        "of records the cleaning dropped as outside their range that fall below it (the fit's "
        "half / the scored half), and the share of wild test observations that do (flagged in error):",
        "",
        "| T_r | threshold | outside, fit half % | outside, scored half % | wild test % |",
        "|---|---|---|---|---|",
        *(
            f"| {g['temperature']:g} | {g['threshold']:.3g} | {g['fit_pct']:.1f} | "
            f"{g['scored_pct']:.1f} | {g['test_pct']:.1f} |"
            for g in report["range_fit"]["grid"]
        ),
        "",
        "Known captive places (csp.captive.PlaceRule) chosen on validation: "
        + ", ".join(f"{k} {v:g}" for k, v in report["place_rule"].items())
        + (" (the shipped PLACE_RULE)" if report["place_rule_is_shipped"] else " (differs from PLACE_RULE!)")
        + f"; they cover {report['test_covered_pct']:.1f} % of the test observations. Candidates "
        "(the captive share counted without validation and test points; recall is in-sample, the "
        "places are built from those records):",
        "",
        "| core_km | min_species | places | validation obs. inside % | zoo-rule records covered % |",
        "|---|---|---|---|---|",
        *(
            f"| {g['core_km']:g} | {g['min_species']} | {g['places']} | {g['val_covered_pct']:.2f} | "
            f"{g['zoo_records_covered_pct']:.1f} |"
            for g in report["place_grid"]
        ),
        "",
        "Cells: fix % / break % at image confidence p. Fix: the image's top class is the sister, "
        "the truth comes first after fusion. Break: the image's top class is right, the sister "
        "comes first after fusion. Image-only is 0 / 0 everywhere, and so is the class-frequency "
        "prior (its likelihood ratio is 1 everywhere).",
    ]
    for set_name, kinds in results.items():
        for kind, rules in kinds.items():
            n = next(iter(rules.values())).n
            pair_kind = (
                "linked species vs. classifier sister" if kind == "linked" else "congeners (all species)"
            )
            lines += ["", f"### {set_name}: {pair_kind}, {n:,} pairs", ""]
            lines.append(
                "| rule | "
                + " | ".join(f"p = {c}" for c in CONFIDENCES)
                + " | fix, p < 0.8 | break, p ≥ 0.8 |"
            )
            lines.append("|---" * (len(CONFIDENCES) + 3) + "|")
            low = [c for c in CONFIDENCES if c < CONFIDENT]
            high = [c for c in CONFIDENCES if c >= CONFIDENT]
            for rule, outcome in rules.items():
                cells = " | ".join(_cell(outcome, c) for c in CONFIDENCES)
                fix, brk = outcome.rate("fix", low), outcome.rate("break", high)
                lines.append(f"| {rule} | {cells} | {fix:.1f} | {brk:.1f} |")
    lines += [
        "",
        "### What this prior allows: (a) wild test congeners, p < 0.8",
        "",
        "Truth first: the share of pairs whose true species has the larger ratio r (no "
        "rule fixes more as p -> 0.5). Bayes rule: alpha 1, no clip in effect. Image class prior: "
        "balanced, r = C p(s | x); frequency, r = p(s | x) / p(s) (csp.fusion).",
        "",
        "| image class prior | T_p | truth first % | Bayes rule fix % | Bayes rule break % |",
        "|---|---|---|---|---|",
        *(
            f"| {a['image_class_prior']} | {a['prior_temperature']:g} | {a['order_pct']:.1f} | "
            f"{a['fix_pct']:.1f} | {a['break_pct']:.1f} |"
            for a in report["what_the_prior_allows"]
        ),
        "",
        "### The shipped rule (balanced image classes) minus the rule that divides by p(s)",
        "",
        "Congener pairs, each rule with its own parameters fitted on validation; paired bootstrap "
        "95 % intervals over pairs, percentage points.",
        "",
        "| pairs | fix, p < 0.8 | break, p < 0.8 | expected top-1 gain |",
        "|---|---|---|---|",
        *(
            f"| {name} | " + " | ".join(_interval(d[key]) for key in ("fix", "break", "gain")) + " |"
            for name, d in report["balanced_minus_by_frequency"].items()
        ),
    ]
    lines += ["", "### Real photos (classified by the shipped model; location passed as (lon, lat))", ""]
    photos = report["photos"]
    keys = [k for k in photos[0] if k != "correct kept (wild, auto)"]
    lines.append("| " + " | ".join(keys) + " |")
    lines.append("|---" * len(keys) + "|")
    for row in photos:
        lines.append("| " + " | ".join("" if row[k] is None else str(row[k]) for k in keys) + " |")
    lines.append("")
    lines.append(f"Fusion parameters used for the photos: {csp_fit}.")
    return "\n".join(lines) + "\n"
