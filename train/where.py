"""``python -m train experiment where``: can the CSP map find where a Blue Marble chip is?

Chips are cut exactly like the pre-training chips (:mod:`csp.chips`, the build's chip size and
pixels) at held-out points:

* ``land``: points uniform by area over land (Natural Earth countries, Antarctica included);
* ``photo``: MP-16 photo locations (rows drawn uniformly, so dense photo regions weigh more).

Each set has a test part (the table) and a validation part (for choosing settings; never the
test part). Held out means: pre-training pairs and gallery chips whose centre lies within
:data:`HOLDOUT_KM` of any benchmark point (test or validation) are dropped
(:func:`away_from_benchmark`), so no test chip was seen, nor any chip overlapping it by more
than about half.

Methods, all on the same chips and the same frozen image features:

* **CSP map**: ``p(x | I)`` of :func:`csp.places.location_logits` on a 1 degree grid; the top
  place is its peak, the top-5 its 5 highest distinct peaks (:func:`csp.places.top_places`).
* **gallery**: the image-feature nearest neighbour (cosine) among chips cut on a 4 degree grid
  over the whole globe (the baseline of issue 16); top-5 = the 5 most similar distinct chips.
* **random land**: a random land point (and 5 of them), the control.

Figures: median great-circle error and the share of chips within 100 / 500 / 2,500 km, for the
top place and for the best of the top-5.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from csp.chips import ChipLoader, EquirectangularImage
from csp.datasets import read_csv
from csp.features import FeatureStore, ImageRecord, extract_features, merge_shards
from csp.geo import haversine_km, lonlat_grid
from csp.image_encoder import create_image_encoder
from csp.places import (
    ERROR_THRESHOLDS_KM,
    PLACE_SEPARATION_KM,
    distinct_peaks,
    error_summary,
    location_log_probs,
    top_places,
)
from csp.samplers import LandMask
from csp.stats import paired_bootstrap

COUNTRIES = "assets/basemap/naturalearth_110m_countries.geojson"
PHOTO_LOCATIONS = "assets/data/mp16_photo_coordinates_100k.csv"
PHOTO_ROWS = 100_000  # rows of PHOTO_LOCATIONS
BENCH_SEED = 16
HOLDOUT_KM = 100.0
GALLERY_STEP_DEG = 4.0
LAND_MASK_STEP_DEG = 0.25


@dataclass(frozen=True)
class BenchSizes:
    """Chips per benchmark part."""

    test_land: int = 500
    test_photo: int = 300
    val_land: int = 200
    val_photo: int = 150


@lru_cache(maxsize=1)
def _default_benchmark_points() -> dict[str, np.ndarray]:
    return benchmark_points()


@lru_cache(maxsize=1)
def land_mask() -> LandMask:
    """Natural Earth land (all countries, Antarctica included) on a 0.25 degree raster."""
    return LandMask.from_geojson(COUNTRIES, step_deg=LAND_MASK_STEP_DEG)


def sample_land(n: int, seed: int) -> np.ndarray:
    """``(n, 2)`` float64 (lon, lat) degrees uniform by area over land, seeded."""
    return land_mask().sample(n, generator=torch.Generator().manual_seed(seed)).double().numpy()


@lru_cache(maxsize=1)
def _photo_lonlat() -> np.ndarray:
    return read_csv(PHOTO_LOCATIONS).lonlat.astype(np.float64)


def photo_lonlat(rows: np.ndarray) -> np.ndarray:
    """``(n, 2)`` float64 (lon, lat) degrees of MP-16 rows (``0 <= row <`` :data:`PHOTO_ROWS`)."""
    return _photo_lonlat()[rows]


def benchmark_points(sizes: BenchSizes = BenchSizes(), seed: int = BENCH_SEED) -> dict[str, np.ndarray]:
    """``{"test-land", "test-photo", "val-land", "val-photo"}`` -> ``(n, 2)`` (lon, lat) degrees."""
    land = sample_land(sizes.test_land + sizes.val_land, seed)
    n_photo = sizes.test_photo + sizes.val_photo
    photo = photo_lonlat(np.random.default_rng(seed).choice(PHOTO_ROWS, size=n_photo, replace=False))
    return {
        "test-land": land[: sizes.test_land],
        "val-land": land[sizes.test_land :],
        "test-photo": photo[: sizes.test_photo],
        "val-photo": photo[sizes.test_photo :],
    }


def benchmark_records(points: dict[str, np.ndarray]) -> list[ImageRecord]:
    """Chip records of the benchmark points, ids ``<part>-<i>`` (e.g. ``test-land-7``)."""
    return [
        ImageRecord(id=f"{part}-{i}", path=None, lon=float(lon), lat=float(lat))
        for part, lonlat in points.items()
        for i, (lon, lat) in enumerate(lonlat)
    ]


def away_from_benchmark(lonlat: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: which of ``lonlat (N, 2)`` degrees lie more than :data:`HOLDOUT_KM` from
    every benchmark point (test and validation). Pre-training pairs and gallery chips must."""
    from train.data import far_from

    bench = np.concatenate(list(_default_benchmark_points().values()))
    return far_from(np.asarray(lonlat, dtype=np.float64), bench, HOLDOUT_KM)


def first_away_from_benchmark(lonlat: np.ndarray, n: int, what: str) -> np.ndarray:
    """The first ``n`` rows of ``lonlat (M, 2)`` that are :func:`away_from_benchmark`."""
    kept = lonlat[away_from_benchmark(lonlat)]
    if len(kept) < n:
        raise ValueError(f"only {len(kept)} of {len(lonlat)} {what} points are away from the benchmark; "
                         f"{n} wanted")
    return kept[:n]


def gallery_records() -> list[ImageRecord]:
    """Chips on the :data:`GALLERY_STEP_DEG` cell-centre grid (whole globe) away from the
    benchmark, ids ``gallery-<cell>`` (row-major cell index, rows north -> south)."""
    grid = lonlat_grid(GALLERY_STEP_DEG).reshape(-1, 2).astype(np.float64)
    cells = np.flatnonzero(away_from_benchmark(grid))
    return [ImageRecord(id=f"gallery-{c}", path=None, lon=float(grid[c, 0]), lat=float(grid[c, 1]))
            for c in cells]


def chip_features(
    records: list[ImageRecord],
    out_dir: Path,
    chip_size_deg: float,
    chip_px: int,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> FeatureStore:
    """Blue Marble chips of ``records`` encoded by the frozen default encoder at ``chip_px``
    into the feature store ``out_dir`` (resumed, or reused as is when already complete)."""
    from train.build_default import BLUE_MARBLE

    encoder = create_image_encoder(device=device, image_size=chip_px)
    loader = ChipLoader(EquirectangularImage.open(BLUE_MARBLE), chip_size_deg, chip_px)
    extract_features(records, encoder, out_dir, image_loader=loader, progress=progress)
    return merge_shards(out_dir)


# --- the benchmark ------------------------------------------------------------------------

MAP_STEP_DEG = 1.0
TOP_K = 5
BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class Guesses:
    """One method's guesses for N chips: ``(N, 2)`` top place and ``(N, <=5, 2)`` top places
    (degrees; rows padded by repeating the last place when a method has fewer)."""

    name: str
    top1: np.ndarray
    top5: np.ndarray


def _pad(places: list[np.ndarray], k: int) -> np.ndarray:
    return np.stack([np.concatenate([p, np.repeat(p[-1:], k - len(p), axis=0)]) for p in places])


@torch.inference_mode()
def csp_guesses(
    model: torch.nn.Module, features: np.ndarray, temperature: float, cosine: bool, name: str = "CSP map",
    batch: int = 64,
) -> Guesses:
    """Top place and top-5 distinct places (:func:`csp.places.top_places`) of the CSP map
    ``p(x | I)`` on a :data:`MAP_STEP_DEG` grid for each of ``features (N, F)``."""
    grid = torch.from_numpy(lonlat_grid(MAP_STEP_DEG)).reshape(-1, 2)
    cells = model.encode_locations(grid)
    height = round(180 / MAP_STEP_DEG)
    top1, top5 = [], []
    for start in range(0, len(features), batch):
        chunk = np.asarray(features[start : start + batch], np.float32)
        queries = model.encode_images(torch.from_numpy(chunk))
        mass = location_log_probs(queries, cells, grid[:, 1], temperature, cosine).exp().numpy()
        for row in mass:
            places = top_places(row.reshape(height, 2 * height), TOP_K)
            top5.append(np.array([[p.lon, p.lat] for p in places]))
            top1.append(top5[-1][0])
    return Guesses(name, np.stack(top1), _pad(top5, TOP_K))


def gallery_guesses(
    features: np.ndarray, gallery_features: np.ndarray, gallery_lonlat: np.ndarray, name: str
) -> Guesses:
    """Cosine nearest neighbour of each of ``features (N, F)`` among ``gallery_features (G, F)``;
    top-5: the 5 most similar gallery chips at least :data:`PLACE_SEPARATION_KM` apart."""
    queries = F.normalize(torch.from_numpy(np.asarray(features, np.float32)), dim=-1)
    keys = F.normalize(torch.from_numpy(np.asarray(gallery_features, np.float32)), dim=-1)
    top5 = []
    for start in range(0, len(queries), 256):
        similarity = (queries[start : start + 256] @ keys.T).numpy()
        for row in similarity:
            candidates = np.argpartition(-row, 200)[:200] if len(row) > 200 else np.arange(len(row))
            peaks, _ = distinct_peaks(gallery_lonlat[candidates], row[candidates], TOP_K)
            top5.append(gallery_lonlat[candidates[peaks]])
    top5_arr = _pad(top5, TOP_K)
    return Guesses(name, top5_arr[:, 0], top5_arr)


def random_land_guesses(n: int, seed: int) -> Guesses:
    """The control: random land points (``n`` top places, 5 each for the top-5)."""
    points = sample_land(n * TOP_K, seed).reshape(n, TOP_K, 2)
    return Guesses("random land point", points[:, 0], points)


def errors_km(guesses: Guesses, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N,)`` top-place error and ``(N,)`` best-of-top-5 error, km."""
    top1 = haversine_km(guesses.top1, truth)
    top5 = haversine_km(guesses.top5, truth[:, None, :]).min(axis=1)
    return top1, top5


def paired_difference(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Method a minus method b on the same chips (``(N,)`` errors each, km), each as
    ``(estimate, low, high)`` with a paired 95 % bootstrap interval over chips:
    ``within_500km`` (percentage points, :func:`csp.stats.paired_bootstrap`) and ``median_km``
    (a median is no mean, so its replicates are drawn here, the same way)."""
    share = paired_bootstrap(100.0 * (a <= 500.0), 100.0 * (b <= 500.0), n_boot=BOOTSTRAP_SAMPLES, seed=seed)
    draws = np.random.default_rng(seed).integers(0, len(a), size=(BOOTSTRAP_SAMPLES, len(a)))
    medians = np.median(a[draws], axis=1) - np.median(b[draws], axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return {
        "median_km": (float(np.median(a) - np.median(b)), float(low), float(high)),
        "within_500km": (share.difference, share.low, share.high),
    }


@dataclass
class WhereOptions:
    """``python -m train experiment where``."""

    chips: Path = Path("runs/chips")  # feature stores bench/ and gallery-4deg/ (made if missing)
    checkpoints: tuple[Path, ...] = (Path("assets/default/csp"),)  # pre-trained CSP models
    split: str = "test"  # or "val" (choose settings on val, never on test)
    out: Path = Path("runs/where")
    pool: Path | None = None  # a pre-training feature store: adds its nearest-chip baseline
    device: str = "cpu"
    seed: int = 0


@dataclass(frozen=True)
class BenchChips:
    """The benchmark's chips of one split: ``features (N, F)``, ``lonlat (N, 2)`` degrees and
    the part of each chip (``land`` / ``photo``)."""

    features: np.ndarray
    lonlat: np.ndarray
    parts: np.ndarray


def chip_format() -> tuple[float, int]:
    """The pre-training chips' size in degrees and pixels (the build's plan)."""
    from train.build_default import BuildPlan

    plan = BuildPlan()
    return plan.chip_size_deg, plan.chip_px


def load_bench(chips: Path, split: str, device: str = "cpu") -> BenchChips:
    """The benchmark chips of ``split`` (``test`` or ``val``), extracted into ``chips/bench``
    if not there yet."""
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    store = chip_features(benchmark_records(benchmark_points()), Path(chips) / "bench", *chip_format(),
                          device=device, progress=False)
    parts = np.array([i.rsplit("-", 1)[0] for i in store.ids])
    keep = np.char.startswith(parts.astype(str), f"{split}-")
    return BenchChips(
        np.asarray(store.features[keep], dtype=np.float32),
        store.lonlat[keep].astype(np.float64),
        np.array([p.split("-", 1)[1] for p in parts[keep]]),
    )


def load_gallery(chips: Path, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """The 4-degree gallery: ``features (G, F)`` float32 and ``lonlat (G, 2)`` degrees."""
    store = chip_features(gallery_records(), Path(chips) / f"gallery-{GALLERY_STEP_DEG:g}deg",
                          *chip_format(), device=device, progress=False)
    return np.asarray(store.features, dtype=np.float32), store.lonlat.astype(np.float64)


def score(guesses: Guesses, bench: BenchChips) -> dict[str, dict[str, dict[str, float]]]:
    """``{part: {"top1": summary, "top5": summary}}`` for parts ``land``, ``photo``, ``all``."""
    top1, top5 = errors_km(guesses, bench.lonlat)
    rows = {}
    for part in ("land", "photo", "all"):
        mask = np.ones(len(top1), bool) if part == "all" else bench.parts == part
        rows[part] = {"top1": error_summary(top1[mask]), "top5": error_summary(top5[mask])}
    return rows


def method_guesses(options: WhereOptions, bench: BenchChips) -> list[Guesses]:
    """Guesses of every CSP checkpoint in ``options`` and of the baselines, on ``bench``."""
    from csp.checkpoint import load_checkpoint

    methods = []
    for directory in options.checkpoints:
        model, meta = load_checkpoint(directory, map_location="cpu")
        name = f"CSP map ({directory})"
        guesses = csp_guesses(model.eval(), bench.features, meta.temperature, meta.cosine_similarity, name)
        methods.append(guesses)
    methods.append(gallery_guesses(bench.features, *load_gallery(options.chips, options.device),
                                   f"nearest chip, {GALLERY_STEP_DEG:g} deg gallery"))
    if options.pool is not None:
        pool = FeatureStore.open(options.pool)
        methods.append(gallery_guesses(bench.features, np.asarray(pool.features, np.float32),
                                       pool.lonlat.astype(np.float64), "nearest pre-training chip"))
    methods.append(random_land_guesses(len(bench.lonlat), options.seed))
    return methods


def where_report(options: WhereOptions) -> dict[str, Any]:
    """Score every method on the benchmark; writes ``<out>/where.json`` and ``where.md`` and
    returns the report (``results``: method -> part -> top1/top5 -> :func:`error_summary`)."""
    bench = load_bench(options.chips, options.split, options.device)
    methods = method_guesses(options, bench)
    results = {m.name: score(m, bench) for m in methods}
    comparisons = {}
    gallery = errors_km(next(m for m in methods if m.name.startswith("nearest chip")), bench.lonlat)
    for method in methods:
        if method.name.startswith("CSP map"):
            errors = errors_km(method, bench.lonlat)
            comparisons[method.name] = {
                which: paired_difference(errors[i], gallery[i]) for i, which in enumerate(("top1", "top5"))
            }
    report = {"split": options.split, "chips": chip_format(), "holdout_km": HOLDOUT_KM,
              "map_step_deg": MAP_STEP_DEG, "results": results, "csp_minus_gallery": comparisons}
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "where.json").write_text(json.dumps(report, indent=2))
    (options.out / "where.md").write_text(render_where(report))
    return report


def run_where(options: WhereOptions) -> str:
    """``python -m train experiment where``: :func:`where_report` as Markdown."""
    return render_where(where_report(options))


def _cells(summary: dict[str, float]) -> str:
    shares = " | ".join(f"{summary[f'within_{t:g}km']:.1f} %" for t in ERROR_THRESHOLDS_KM)
    return f"{summary['median_km']:,.0f} | {shares}"


def render_where(report: dict[str, Any]) -> str:
    """The Markdown table of :func:`run_where`'s report."""
    size_deg, px = report["chips"]
    lines = [
        f"Where could this be: Blue Marble chips ({size_deg:g} deg, {px} px) at held-out points "
        f"({report['split']} split; nothing within {report['holdout_km']:g} km of them was used in "
        f"pre-training or the gallery). CSP map on a {report['map_step_deg']:g} deg grid; top-5 = "
        f"distinct places at least {PLACE_SEPARATION_KM:,.0f} km apart.",
        "",
        "| chips | method | median km | within 100 km | within 500 km | within 2,500 km "
        "| top-5: median km | within 100 km | within 500 km | within 2,500 km |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    first = next(iter(report["results"].values()))
    for part in first:
        for name, rows in report["results"].items():
            n = int(rows[part]["top1"]["n"])
            top1, top5 = _cells(rows[part]["top1"]), _cells(rows[part]["top5"])
            lines.append(f"| {part} ({n}) | {name} | {top1} | {top5} |")
    for name, by_k in report["csp_minus_gallery"].items():
        for which, diffs in by_k.items():
            median, share = diffs["median_km"], diffs["within_500km"]
            lines.append(
                f"\n{name} minus the gallery, {'top place' if which == 'top1' else 'best of top-5'}, all "
                f"chips, paired bootstrap 95 % interval: median {median[0]:+,.0f} km "
                f"[{median[1]:+,.0f}, {median[2]:+,.0f}], within 500 km {share[0]:+.1f} points "
                f"[{share[1]:+.1f}, {share[2]:+.1f}]."
            )
    return "\n".join(lines) + "\n"
