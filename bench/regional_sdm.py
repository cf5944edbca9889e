"""Regional species-distribution benchmark of the trainer on a user's own data (issue 13).

Data: regional subsets of the bundled ``assets/data/yfcc_inat2017_species.csv`` (YFCC photos
of iNat-2017 species, at most 10 records per species worldwide), species with at least
``MIN_RECORDS`` records inside the region's box. No presence-absence data exist offline for
these species, so each species is scored by the AUC of its held-out test presences against
2,000 background points uniform by area in the region's box (the same points for every
method): presences vs background, not presences vs absences.

Every method sees the same cleaned records and the same leak-free split (``train.data``,
``--clean basic``, spatial split) and is compared on the same test presences:

- ``csp``: ``python -m train finetune`` defaults for a user's file (Sup. only preset, background
  from the data's extent, scale from the region), best epoch on validation MRR;
- ``csp-1deg``: the same with the global default finest wavelength of 1 degree (``--scale fixed``);
- ``csp-last``: the same, keeping the last epoch instead of the best on validation (``--select last``);
- ``kde``: per-species spherical KDE (``csp.baselines.SphericalKDE``), bandwidth chosen on
  validation MRR;
- ``logreg``: per-species logistic regression on standardised (lon, lat), presences of the
  training split vs 2,000 other background points of the box, L2 = 1e-3.

Run: ``python bench/regional_sdm.py [--regions california,europe] [--epochs 40]``. Prints a
markdown table: mean per-species AUC, paired 95 % bootstrap intervals (over species) of
csp minus each other method, and wall time per region on this CPU (with the load average).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from csp.baselines import KDE_BANDWIDTHS_KM, SphericalKDE, select_on_validation  # noqa: E402
from csp.datasets import read_csv  # noqa: E402
from csp.samplers import BoxRegion  # noqa: E402
from csp.stats import paired_bootstrap  # noqa: E402
from train.config import DEFAULT_SPECIES_CSV, FinetuneConfig, load_config  # noqa: E402
from train.data import load_species  # noqa: E402
from train.finetune import run_finetune  # noqa: E402
from train.predict import load_model  # noqa: E402
from train.sites import KDE_SITE_BANDWIDTHS_KM, auc, presence_scores  # noqa: E402

REGIONS = {  # west, south, east, north (degrees)
    "california": (-125.0, 32.0, -114.0, 42.0),
    "europe": (-10.0, 36.0, 20.0, 56.0),
    "costa-rica": (-86.0, 8.0, -82.5, 11.3),
    "australia-se": (140.0, -39.0, 154.0, -27.0),
}
MIN_RECORDS = 6
N_BACKGROUND = 2000


def regional_csv(region: str, out_dir: Path) -> Path:
    """The bundled records inside the region's box, species with >= MIN_RECORDS of them,
    written as a user's file would be (``spid, x, y``)."""
    west, south, east, north = REGIONS[region]
    records = read_csv(DEFAULT_SPECIES_CSV)
    lon, lat = records.lonlat[:, 0], records.lonlat[:, 1]
    inside = (lon >= west) & (lon <= east) & (lat >= south) & (lat <= north)
    names = np.asarray(records.class_names, dtype=object)[records.labels]
    species, counts = np.unique(names[inside], return_counts=True)
    keep = inside & np.isin(names, species[counts >= MIN_RECORDS])
    path = out_dir / f"{region}.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["spid", "x", "y"])
        writer.writerows(zip(names[keep], lon[keep], lat[keep], strict=True))
    return path


def logistic_scores(train_xy: np.ndarray, background: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Logistic regression of presence vs background on standardised (lon, lat); scores at query."""
    x = np.concatenate([train_xy, background])
    mean, std = x.mean(0), x.std(0) + 1e-9
    features = torch.as_tensor((x - mean) / std, dtype=torch.float64)
    target = torch.cat([torch.ones(len(train_xy)), torch.zeros(len(background))]).double()
    weight = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight], max_iter=100)
    # Presences and background weighted equally in total (the background is much larger).
    sample_weight = torch.where(target > 0, 0.5 / len(train_xy), 0.5 / len(background))

    def closure():
        optimiser.zero_grad()
        logits = features @ weight[:2] + weight[2]
        loss = (
            sample_weight
            * torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        ).sum()
        loss = loss + 1e-3 * (weight[:2] ** 2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    q = torch.as_tensor((query - mean) / std, dtype=torch.float64)
    return (q @ weight[:2] + weight[2]).detach().numpy()


def run_region(region: str, work: Path, epochs: int) -> dict:
    started = time.perf_counter()
    path = regional_csv(region, work)
    box = BoxRegion(*REGIONS[region])
    background = box.sample(N_BACKGROUND, torch.Generator().manual_seed(123)).double().numpy()
    fit_background = box.sample(N_BACKGROUND, torch.Generator().manual_seed(7)).double().numpy()
    results: dict[str, np.ndarray] = {}
    timings = {}
    splits = None
    for method, extra in (("csp", []), ("csp-1deg", ["scale=fixed"]), ("csp-last", ["select=last"])):
        t = time.perf_counter()
        out = work / f"{region}-{method}"
        overrides = [
            f"data.csv={path}",
            f"runtime.out_dir={out}",
            f"optim.epochs={epochs}",
            "runtime.progress=false",
        ]
        config = load_config(FinetuneConfig, "sup-only", overrides + extra)
        splits = splits or load_species(config.data)
        result = run_finetune(config, resume=(out / "metrics.jsonl").exists(), splits=splits)
        encoder = load_model(result.best_dir).encoder
        results[method] = _per_species(
            splits, background, lambda q, k, e=encoder: presence_scores(e, q, np.array([k]))[:, 0]
        )
        timings[method] = time.perf_counter() - t
    records, train, val = splits.records, splits.train, splits.val
    num = len(splits.class_names)
    t = time.perf_counter()
    candidates = sorted({*KDE_SITE_BANDWIDTHS_KM, *KDE_BANDWIDTHS_KM})

    def make(h: float) -> SphericalKDE:
        return SphericalKDE(records.lonlat[train], records.labels[train], num, h)

    bandwidth = select_on_validation(make, candidates, records.lonlat[val], records.labels[val]).value
    kde = make(bandwidth)
    results["kde"] = _per_species(
        splits, background, lambda q, k: kde.log_density(torch.as_tensor(q))[:, k].numpy()
    )
    timings["kde"] = time.perf_counter() - t
    t = time.perf_counter()

    def logreg(q: np.ndarray, k: int) -> np.ndarray:
        mine = train[records.labels[train] == k]
        return logistic_scores(records.lonlat[mine], fit_background, q)

    results["logreg"] = _per_species(splits, background, logreg)
    timings["logreg"] = time.perf_counter() - t
    return {
        "region": region,
        "species": num,
        "records": len(records),
        "test_species": int(np.sum(~np.isnan(results["csp"]))),
        "bandwidth_km": bandwidth,
        "auc": results,
        "seconds": timings,
        "total_seconds": time.perf_counter() - started,
        "min_radius": yaml.safe_load((work / f"{region}-csp" / "config.yaml").read_text())["model"][
            "encoding_kwargs"
        ]["min_radius"],
    }


def _per_species(splits, background: np.ndarray, score) -> np.ndarray:
    """AUC of each species' test presences vs the background points (NaN: no test presence)."""
    records, test = splits.records, splits.test
    out = np.full(len(splits.class_names), np.nan)
    for k in np.unique(records.labels[test]):
        presences = records.lonlat[test[records.labels[test] == k]]
        query = np.concatenate([presences, background])
        flags = np.concatenate([np.ones(len(presences)), np.zeros(len(background))])
        out[k] = auc(np.asarray(score(query, int(k)), dtype=np.float64), flags)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regions", default="california,europe")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--work", default="/work/cache/owndata/bench")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {os.getloadavg()[0]:.1f} (shared machine: wall times are inflated)")
    columns = ["region", "species (with test)", "records", "csp", "csp-1deg", "csp-last", "kde", "logreg"]
    columns += ["csp - kde [95% CI]", "csp - logreg [95% CI]", "csp - csp-1deg [95% CI]"]
    columns += ["wall s (csp / kde / logreg)"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for region in args.regions.split(","):
        r = run_region(region, work, args.epochs)
        a = r["auc"]
        ok = ~np.isnan(a["csp"])
        cells = []
        for other in ("kde", "logreg", "csp-1deg"):
            i = paired_bootstrap(a["csp"][ok], a[other][ok])
            cells.append(f"{i.difference:+.3f} [{i.low:+.3f}, {i.high:+.3f}]")
        means = " | ".join(
            f"{np.nanmean(a[m][ok]):.3f}" for m in ("csp", "csp-1deg", "csp-last", "kde", "logreg")
        )
        s = r["seconds"]
        print(
            f"| {region} | {r['species']} ({r['test_species']}) | {r['records']} | {means} | "
            f"{' | '.join(cells)} | {s['csp']:.0f} / {s['kde']:.1f} / {s['logreg']:.1f} |",
            flush=True,
        )
        note = f"{region}: KDE bandwidth {r['bandwidth_km']:g} km, csp min_radius {r['min_radius']:g} deg"
        print(f"<!-- {note}; total {r['total_seconds']:.0f} s; load {os.getloadavg()[0]:.1f} -->", flush=True)


if __name__ == "__main__":
    main()
