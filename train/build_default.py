"""``python -m train build-default``: rebuild the shipped default model from the real data.

1. Pre-training pairs: chips of the NASA Blue Marble mosaic at real photo locations (MP-16)
   plus points uniform on the sphere (land and sea), encoded by the frozen image encoder.
2. CSP-MC-BLD pre-training on those pairs (no labels).
3. Presence-only fine-tuning on the cleaned species observations (captive records and range
   outliers dropped, see ``csp.cleaning``), with a fixed seeded split. Species linked to
   ImageNet whose wild training points are too few get pseudo-presences sampled inside their
   expert native range; those species are listed in the checkpoint and flagged in the app.
   Validation and test points are real observations only.
4. ``<out>/prior`` (fine-tuned prior), ``<out>/csp`` (pre-trained model for image -> location),
   ``<out>/report.md`` and ``report.json``. The reviewed ImageNet <-> species link and the
   native-range table already live in ``<out>``.

Chips: 2 x 2 degrees (30 x 30 Blue Marble pixels at 1/15 degree per pixel) resized to 96 px.
Larger chips blur the location signal; 96 px keeps the EfficientNet-Lite0 encoder at about
100 chips/s on two CPU cores: the 36,000 pre-training chips took 324 s (quiet machine).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from csp.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from csp.chips import ChipLoader, EquirectangularImage
from csp.cleaning import load_countries, load_native_ranges, native_country_codes, sample_pseudo_presences
from csp.datasets import GeoRecords
from csp.features import ImageRecord, extract_features, merge_shards
from csp.image_encoder import create_image_encoder
from csp.prior import LocationPrior, SelectionGrid, select_settings
from csp.run_dir import RunDir
from csp.samplers import sample_sphere
from csp.splits import DEFAULT_BUFFER_KM
from train.config import (
    DEFAULT_COUNTRIES,
    DEFAULT_NATIVE_RANGES,
    DataConfig,
    FinetuneConfig,
    PretrainConfig,
    RuntimeConfig,
    load_config,
)
from train.data import HELD_OUT_RADIUS_KM, SpeciesSplits, far_from, load_species, pairs_away_from_held_out
from train.evaluate import compare_with_baselines, evaluate_on_split, format_comparison
from train.finetune import run_finetune
from train.geoaware import build_captive
from train.pretrain import run_pretrain
from train.runtime import select_device
from train.where import (
    HOLDOUT_KM,
    PHOTO_ROWS,
    WhereOptions,
    away_from_benchmark,
    first_away_from_benchmark,
    photo_lonlat,
    render_where,
    sample_land,
    where_report,
)

BLUE_MARBLE = "assets/basemap/blue_marble_5400x2700.jpg"
SPLIT_FILE = "split.csv"
PSEUDO_PREFIX = "pseudo-presence:"


@dataclass
class BuildOptions:
    out: Path = Path("assets/default")
    work: Path = Path("runs/build-default")
    quick: bool = False  # a small build that exercises every step (tests)
    seed: int = 0
    device: str = "auto"
    # Reuse a pre-trained CSP checkpoint instead of steps 1-2 (chips and pre-training); the
    # report says so. Pre-training reads no labels, so the split does not enter it.
    pretrained: Path | None = None
    finetune_epochs: int | None = None  # default: the plan's
    # Seed of pre-training and fine-tuning (weights, batches, negatives); default ``seed``. The
    # data (split, pseudo-presences, pre-training points) follows ``seed`` only, so training
    # seeds can be compared on the same held-out queries (``experiment prior``).
    train_seed: int | None = None
    features: Path | None = None  # the chips' feature store; default ``<work>/features``


@dataclass(frozen=True)
class BuildPlan:
    """Sizes of one build."""

    # Pre-training pool: the shipped default's 18,000 chips, so that build-default reproduces the
    # model whose prior was studied over five training seeds (issue 11). Twice the pool (8,000 +
    # 8,000 + 20,000) did better on the where benchmark's validation split (README, "Where could
    # this be?", issue 16) and is the next rebuild's plan.
    photo_points: int = 4_000
    sphere_points: int = 4_000
    land_points: int = 10_000
    chip_size_deg: float = 2.0
    chip_px: int = 96
    pretrain_preset: str = "csp-globe"  # train/configs/csp-globe.yaml (issue 16)
    pretrain_epochs: int = 30
    pretrain_batch: int = 1024
    # Fine-tuning: 20 epochs of 1,024 (early stopping on validation MRR, patience 5). The class
    # head's cost (points x 4,402 classes) sets the pace; on a shared 2-core CPU 40 epochs of 256
    # took over half an hour, and the shipped prior's density terms carry most of its accuracy.
    finetune_epochs: int = 20
    finetune_batch: int = 1024
    min_wild_points: int = 5  # linked species with fewer get pseudo-presences up to this many

    @classmethod
    def for_options(cls, options: BuildOptions) -> BuildPlan:
        if options.quick:
            return cls(
                photo_points=600,
                sphere_points=200,
                land_points=200,
                pretrain_epochs=2,
                pretrain_batch=256,
                finetune_epochs=1,
                finetune_batch=2048,
            )
        return cls()


def pretraining_records(plan: BuildPlan, seed: int) -> list[ImageRecord]:
    """Chip records: MP-16 photo locations (seeded subsample), points uniform by area on the
    sphere (land and sea) and points uniform by area over land, all away from the where-could-
    this-be benchmark's points (:func:`train.where.away_from_benchmark`); ids ``mp16-<row>``,
    ``sphere-<i>``, ``land-<i>``."""
    rows = np.flatnonzero(away_from_benchmark(photo_lonlat(np.arange(PHOTO_ROWS))))
    rows = np.sort(np.random.default_rng(seed).choice(rows, size=plan.photo_points, replace=False))
    sphere = sample_sphere(2 * plan.sphere_points, generator=torch.Generator().manual_seed(seed)).numpy()
    sphere = first_away_from_benchmark(sphere, plan.sphere_points, "sphere")
    land = first_away_from_benchmark(sample_land(2 * plan.land_points, seed + 1), plan.land_points, "land")
    parts = [
        (f"mp16-{row}" for row in rows),
        (f"sphere-{i}" for i in range(len(sphere))),
        (f"land-{i}" for i in range(len(land))),
    ]
    return [
        ImageRecord(id=name, path=None, lon=float(lon), lat=float(lat))
        for names, lonlat in zip(parts, (photo_lonlat(rows), sphere, land), strict=True)
        for name, (lon, lat) in zip(names, lonlat, strict=True)
    ]


def add_pseudo_presences(
    splits: SpeciesSplits,
    min_wild: int,
    seed: int,
    linked_species: set[str],
    buffer_km: float = DEFAULT_BUFFER_KM,
) -> tuple[SpeciesSplits, dict[str, int]]:
    """Top up linked species with fewer than ``min_wild`` training points from expert ranges.

    No pseudo-presence lies within ``buffer_km`` of a validation or test observation of its
    species (the split's guarantee, :mod:`csp.splits`). Returns the new splits (pseudo-presences
    appended to the training split only, their ids prefixed with ``pseudo-presence:``) and the
    number added per species.
    """
    ranges = load_native_ranges(DEFAULT_NATIVE_RANGES)
    countries = load_countries(DEFAULT_COUNTRIES)
    records = splits.records
    counts = np.bincount(records.labels[splits.train], minlength=len(splits.class_names))
    held_out_index = np.concatenate([splits.val, splits.test])
    added: dict[str, int] = {}
    new_lonlat, new_labels = [], []
    for name in sorted(linked_species & set(ranges)):
        if name not in splits.class_names:
            continue
        label = splits.class_names.index(name)
        missing = min_wild - int(counts[label])
        codes = native_country_codes(ranges[name], countries)
        if missing <= 0 or not codes:
            continue
        # Drawn with room to spare, then kept only beyond the split's buffer from the species'
        # held-out observations, so the leak-free guarantee covers pseudo-presences too.
        points = sample_pseudo_presences(name, codes, 4 * missing, seed, countries)
        held_out = records.lonlat[held_out_index[records.labels[held_out_index] == label]]
        if len(held_out):
            points = points[far_from(points, held_out, buffer_km)]
        points = points[:missing]
        if not len(points):
            continue
        new_lonlat.append(points)
        new_labels.append(np.full(len(points), label, dtype=np.int64))
        added[name] = len(points)
    if not added:
        return splits, added
    lonlat = np.concatenate([records.lonlat, *new_lonlat])
    labels = np.concatenate([records.labels, *new_labels])
    extra = len(labels) - len(records)
    augmented = GeoRecords(
        ids=records.ids + [f"{PSEUDO_PREFIX}{i}" for i in range(extra)],
        paths=records.paths + [None] * extra,
        lonlat=lonlat,
        labels=labels,
        class_names=records.class_names,
    )
    train = np.concatenate([splits.train, np.arange(len(records), len(labels))])
    return replace(splits, records=augmented, train=train), added


def linked_species() -> set[str]:
    """Species of the reviewed ImageNet <-> species link (the classes the photo tab re-weights)."""
    from csp.species_link import read_species_link

    return {
        row.species
        for row in read_species_link(Path(DEFAULT_NATIVE_RANGES).parent / "imagenet_species_link.csv")
    }


def write_split_csv(path: Path, splits: SpeciesSplits) -> None:
    """``yfcc_id,split`` (train / val / test) for every real observation of the split, in
    record order; pseudo-presences are not observations and are not listed."""
    which = np.full(len(splits.records), "", dtype=object)
    for name in ("train", "val", "test"):
        which[getattr(splits, name)] = name
    lines = ["yfcc_id,split"]
    rows = zip(splits.records.ids, which, strict=True)
    lines += [f"{record_id},{part}" for record_id, part in rows if part]
    path.write_text("\n".join(lines) + "\n")


def data_starved_species(
    splits: SpeciesSplits, min_wild: int, pseudo: dict[str, int], data: DataConfig
) -> list[dict[str, Any]]:
    """Every ImageNet-linked species whose prior has fewer than ``min_wild`` wild training
    observations, with what the build did about it: pseudo-presences from its expert range,
    or nothing (then its ImageNet classes are re-weighted by a prior resting on few points, or,
    for a species that cleaning removed entirely, not re-weighted at all)."""
    from csp.datasets import read_csv
    from csp.species_link import read_species_link

    link = read_species_link(Path(DEFAULT_NATIVE_RANGES).parent / "imagenet_species_link.csv")
    imagenet: dict[str, list[str]] = {}
    for row in link:
        imagenet.setdefault(row.species, []).append(row.imagenet_name)
    raw = read_csv(data.csv)
    raw_species = np.asarray(raw.class_names, dtype=object)[raw.labels]
    raw_names, raw_sizes = np.unique(raw_species, return_counts=True)
    raw_counts = dict(zip(raw_names, raw_sizes, strict=True))
    names = splits.class_names
    wild = np.bincount(splits.records.labels[splits.train], minlength=len(names))
    starved = []
    for species in sorted(imagenet):
        count = int(wild[names.index(species)]) if species in names else 0
        if count >= min_wild:
            continue
        if species not in names:
            action = (
                f"removed by cleaning (all {int(raw_counts.get(species, 0))} records dropped): "
                "not in the prior, its ImageNet classes are not re-weighted"
            )
        elif species in pseudo:
            action = f"{pseudo[species]} pseudo-presences from its expert native range"
        else:
            action = "no expert range on file: not topped up, re-weighted by its few points"
        starved.append(
            {"species": species, "imagenet": imagenet[species], "wild_train": count, "action": action}
        )
    return starved


def _runtime(runtime: RuntimeConfig, options: BuildOptions, run: RunDir) -> RuntimeConfig:
    """The preset's runtime settings with this build's seed, device and run directory."""
    seed = options.seed if options.train_seed is None else options.train_seed
    return replace(
        runtime, seed=seed, device=options.device, progress=not options.quick, out_dir=str(run.root)
    )


def _pretrain(
    plan: BuildPlan,
    options: BuildOptions,
    splits: SpeciesSplits,
    device: torch.device,
    timings: dict[str, float],
    started: float,
) -> tuple[Path, int]:
    """Steps 1-2: chips -> frozen image features -> CSP-MC-BLD pre-training (no labels) on the
    pairs away from held-out observations. Returns the best checkpoint and the pairs left out."""
    work = Path(options.work)
    # 1. Pre-training pairs: Blue Marble chips -> frozen image features.
    features_dir = options.features or work / "features"
    encoder = create_image_encoder(device=device, image_size=plan.chip_px)
    loader = ChipLoader(EquirectangularImage.open(BLUE_MARBLE), plan.chip_size_deg, plan.chip_px)
    records = pretraining_records(plan, options.seed)
    extract_features(records, encoder, features_dir, image_loader=loader, progress=not options.quick)
    merge_shards(features_dir)
    timings["features"] = time.perf_counter() - started

    # 2. CSP pre-training (no labels), on pairs away from held-out observations.
    pretrain_run = RunDir(work / "pretrain")
    pretrain_config = load_config(PretrainConfig, plan.pretrain_preset)
    pretrain_config = replace(
        pretrain_config,
        features=str(features_dir),
        optim=replace(pretrain_config.optim, epochs=plan.pretrain_epochs, batch_size=plan.pretrain_batch),
        runtime=_runtime(pretrain_config.runtime, options, pretrain_run),
    )
    rows, left_out = pairs_away_from_held_out(pretrain_config, splits)
    pretrained = run_pretrain(pretrain_config, resume=pretrain_run.holds_run, rows=rows)
    timings["pretrain"] = time.perf_counter() - started - sum(timings.values())
    return pretrained.best_dir, left_out


@dataclass
class TrainedPrior:
    """Steps 1-4 of a build: the CSP model, the fine-tuned network and the readable prior."""

    prior: LocationPrior
    meta: CheckpointMeta  # the fine-tuned network's, with the class counts
    splits: SpeciesSplits  # with the pseudo-presences appended to the training split
    pseudo: dict[str, int]  # pseudo-presences added per species
    pretrained_dir: Path
    left_out: int | None  # pre-training pairs left out near held-out observations
    val_scores: dict[str, float]


def train_prior(
    options: BuildOptions, plan: BuildPlan, data: DataConfig, splits: SpeciesSplits, timings: dict[str, float]
) -> TrainedPrior:
    """Pre-train (unless ``options.pretrained``), fine-tune, choose the prior's settings on
    validation; ``timings`` gets the seconds of each step."""
    started = time.perf_counter()
    device = select_device(options.device)
    work = Path(options.work)
    finetune_run = RunDir(work / "finetune")
    if options.pretrained is None:
        pretrained_dir, left_out = _pretrain(plan, options, splits, device, timings, started)
    else:  # reuse a pre-trained CSP model (no labels were read to make it)
        pretrained_dir, left_out = Path(options.pretrained), None
        timings["features"] = timings["pretrain"] = 0.0

    # 3. Fine-tuning on cleaned observations (+ marked pseudo-presences for linked species).
    augmented, pseudo = add_pseudo_presences(splits, plan.min_wild_points, options.seed, linked_species())
    finetune_config = load_config(FinetuneConfig, "finetune")
    finetune_config = replace(
        finetune_config,
        data=data,
        init_from=str(pretrained_dir),
        optim=replace(
            finetune_config.optim,
            epochs=options.finetune_epochs or plan.finetune_epochs,
            batch_size=plan.finetune_batch,
        ),
        runtime=_runtime(finetune_config.runtime, options, finetune_run),
    )
    tuned = run_finetune(finetune_config, resume=finetune_run.holds_run, splits=augmented)
    timings["finetune"] = time.perf_counter() - started - timings["features"] - timings["pretrain"]

    # 4. The readable prior: term weights chosen on validation, temperature fitted there.
    network, meta = load_checkpoint(tuned.best_dir)
    records = augmented.records
    train_points = (records.lonlat[augmented.train], records.labels[augmented.train])
    settings, val_scores = select_settings(
        network, train_points, (records.lonlat[augmented.val], records.labels[augmented.val]), SelectionGrid()
    )
    location_prior = LocationPrior(network, settings, train_points)
    meta.expert_range_species = sorted(pseudo)
    meta.train |= {"pseudo_presences": pseudo}
    meta.train["class_counts"] = np.bincount(  # training labels per class: p(s) in csp.fusion
        records.labels[augmented.train], minlength=len(meta.class_names)
    ).tolist()
    return TrainedPrior(location_prior, meta, augmented, pseudo, pretrained_dir, left_out, val_scores)


def build_default(options: BuildOptions) -> str:
    """Run the whole chain; returns the Markdown report (also written to ``<out>/report.md``)."""
    plan = BuildPlan.for_options(options)
    work, out = Path(options.work), Path(options.out)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    device = select_device(options.device)
    data = DataConfig(split_seed=options.seed)
    splits = load_species(data)
    trained = train_prior(options, plan, data, splits, timings)
    # Every method on the real held-out test observations.
    comparison = compare_with_baselines(trained.prior, trained.splits, "test", seed=options.seed)
    test_metrics = next(row for row in comparison["rows"] if row["name"] == "prior")
    trained.meta.metrics = {
        "test": {k: test_metrics[k] for k in ("top1", "top3", "top5", "mrr", "nll", "ece")},
        "val": trained.meta.metrics,
        "network_test": evaluate_on_split(trained.prior.encoder, splits, "test")["location"],
    }
    save_checkpoint(out / "prior", trained.prior.encoder, trained.meta)
    trained.prior.save(out / "prior")
    write_split_csv(out / SPLIT_FILE, splits)
    csp_model, csp_meta = load_checkpoint(trained.pretrained_dir)
    csp_meta.image_size = plan.chip_px  # the app encodes query images like the chips
    save_checkpoint(out / "csp", csp_model, csp_meta)
    # Where could this be: held-out chips (too slow for the quick build's tests).
    where = (
        None
        if options.quick
        else where_report(
            WhereOptions(
                chips=work / "chips", checkpoints=(out / "csp",), out=work / "where", device=str(device)
            )
        )
    )
    build_captive(out, data)  # captive_places.csv: the zoo rule's places (csp.captive)
    timings["total"] = time.perf_counter() - started
    report = {
        "plan": asdict(plan),
        "seed": options.seed,
        "device": str(device),
        "pretrained_from": str(options.pretrained) if options.pretrained else None,
        "finetune_epochs": options.finetune_epochs or plan.finetune_epochs,
        "data": splits.summary(),
        "pairs_near_held_out": trained.left_out,
        "pseudo_presences": trained.pseudo,
        "data_starved": data_starved_species(splits, plan.min_wild_points, trained.pseudo, data),
        "prior_settings": asdict(trained.prior.settings),
        "val_selection": trained.val_scores,
        "comparison": comparison,
        "pretrain": {
            k.removeprefix("val_retrieval_"): v
            for k, v in csp_meta.metrics.items()
            if k.startswith("val_retrieval_")
        },
        "test": test_metrics,
        "where": where,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    text = render_report(report)
    (out / "report.md").write_text(text)
    return text


def prior_formula(settings: dict[str, Any]) -> str:
    """The shipped prior's score in words, from its :class:`csp.prior.PriorSettings` fields."""
    parts = []
    if settings["network_weight"]:
        parts.append(f"{settings['network_weight']:g} log sigmoid(network)")
    if settings["kde_weight"]:
        parts.append(f"{settings['kde_weight']:g} log(n_s KDE_s(x), {settings['kde_bandwidth_km']:g} km)")
    if settings["habitat_weight"]:
        scale = settings["habitat_scale_deg"]
        parts.append(f"{settings['habitat_weight']:g} log habitat_s(x) ({scale:g} deg land cover)")
    return " + ".join(parts) + f", T = {settings['temperature']:.3g}"


def _pretraining_lines(report: dict[str, Any]) -> list[str]:
    plan = report["plan"]
    retrieval = ", ".join(f"{k} {v:.1f}%" for k, v in report["pretrain"].items())
    if report.get("pretrained_from"):
        return [
            "## Pre-training (self-supervised, no labels)",
            f"- Not re-run: the CSP model in `{report['pretrained_from']}` was reused (`--pretrained`) and "
            "fine-tuned on the new split. Its pre-training read no labels; its pairs were kept "
            f"{HELD_OUT_RADIUS_KM:g} km away from the held-out points of the split it was built with, not "
            "from this split's. Held-out image -> location retrieval of that model: " + retrieval,
        ]
    return [
        "## Pre-training (self-supervised, no labels)",
        f"- {plan['photo_points']:,} MP-16 photo locations + {plan['sphere_points']:,} points uniform on "
        f"the sphere + {plan['land_points']:,} points uniform over land, all farther than "
        f"{HOLDOUT_KM:g} km from the where-benchmark's points; Blue Marble chips of "
        f"{plan['chip_size_deg']} deg at {plan['chip_px']} px, frozen `tf_efficientnet_lite0` features.",
        f"- {report['pairs_near_held_out']:,} pairs within {HELD_OUT_RADIUS_KM:g} km of a validation or test "
        "observation were left out of pre-training (MP-16 and the species photos are both Flickr).",
        f"- CSP-MC-BLD (preset `{plan['pretrain_preset']}`), {plan['pretrain_epochs']} epochs. Held-out "
        "image -> location retrieval: " + retrieval,
    ]


def render_report(report: dict[str, Any]) -> str:
    data, plan = report["data"], report["plan"]
    pseudo = report["pseudo_presences"]
    lines = [
        "# Default model: build report",
        "",
        f"Built by `python -m train build-default` "
        f"(seed {report['seed']}, {report['device']}) "
        f"in {report['seconds']['total'] / 60:.1f} min "
        f"(features {report['seconds']['features']:.0f} s, "
        f"pre-training {report['seconds']['pretrain']:.0f} s, "
        f"fine-tuning {report['seconds']['finetune']:.0f} s).",
        "",
        *_pretraining_lines(report),
        "",
        "## Where could this be (image -> location on held-out chips, `python -m train experiment where`)",
        "",
        render_where(report["where"]) if report.get("where") else "Not run in this build.",
        "",
        "## Fine-tuning data (YFCC species observations)",
        f"- Presence-only fine-tuning from the CSP model, {report['finetune_epochs']} epochs of "
        f"{plan['finetune_batch']:,} (early stopping on validation MRR).",
        f"- {data['observations']:,} observations of {data['classes']:,} species kept after cleaning; "
        f"dropped by rule (a record may count twice): zoo {data.get('dropped_zoo', 0):,}, "
        f"range outlier {data.get('dropped_range_outlier', 0):,}, "
        f"expert range {data.get('dropped_expert_range', 0):,}.",
        "- The cleaning rules run on all observations before the split, so isolated test points "
        "are dropped like any other (this makes the test set somewhat easier for every method).",
        f"- Leak-free split (`csp.splits`, seed {report['seed']}): per species, observations linked by "
        f"chains of steps of at most {DEFAULT_BUFFER_KM:g} km form a cluster and whole clusters go to "
        f"train {data['train']:,}, validation {data['val']:,} or test {data['test']:,}; no validation or "
        f"test observation lies within {DEFAULT_BUFFER_KM:g} km of a training observation of its species. "
        f"The split is in `{SPLIT_FILE}` (`yfcc_id,split`).",
        f"- Pseudo-presences (expert native range, training split only) for {len(pseudo)} ImageNet-linked "
        f"species with fewer than {plan['min_wild_points']} wild training points"
        + (": " + ", ".join(f"*{k}* ({v})" for k, v in pseudo.items()) if pseudo else "")
        + ".",
        "",
        "## Data-starved ImageNet-linked species",
        "",
        f"Linked species with fewer than {plan['min_wild_points']} wild training observations, and what "
        "the build did:",
        "",
        "| species | ImageNet classes | wild training points | done |",
        "|---|---|---|---|",
        *[
            f"| *{row['species']}* | {', '.join(row['imagenet'])} | {row['wild_train']} | {row['action']} |"
            for row in report["data_starved"]
        ],
        "",
        "## Location prior on the held-out test observations (real observations only)",
        "",
        "The shipped prior is p(species | x) = softmax(z / T) with z = "
        f"{prior_formula(report['prior_settings'])}; "
        "weights and bandwidth chosen on validation by MRR, the temperature T on validation by NLL "
        "(`csp.prior`). Every row is fitted on the same training points and tuned on the same validation "
        "split; NLL (nats) and ECE (%, 15 bins) for the methods that give probabilities.",
        "",
        format_comparison(report["comparison"]),
        "",
    ]
    return "\n".join(lines)
