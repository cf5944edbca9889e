"""How robust is the density part of the prior? The baselines and "KDE + habitat" over split seeds.

``python -m train.prior_search --split-seeds 0 1 2 3 4 --out docs/prior-search.json``

For each seed of the leak-free split (:mod:`csp.splits`), fits the standard baselines (settings
chosen on that seed's validation split) and the network-free prior of :mod:`csp.prior` (KDE +
land-cover habitat term, weights chosen on validation), scores the test split, and prints test
MRR / top-5 per seed plus the paired bootstrap interval of "KDE + habitat" minus the KDE, per
seed and pooled over seeds (queries concatenated; each query is paired with itself). The
network's part needs a trained network per seed and is measured by the build instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from csp.baselines import HabitatRatio, SphericalKDE, scorer_ranks, standard_baselines
from csp.metrics import rank_summary
from csp.prior import SelectionGrid, select_settings
from csp.stats import paired_bootstrap, reciprocal_ranks, top_k_hits
from train.config import DataConfig
from train.data import load_species


def _density_prior(settings, train: tuple[np.ndarray, np.ndarray], classes: int):
    kde = SphericalKDE(*train, classes, settings.kde_bandwidth_km, settings.kde_background)
    habitat = HabitatRatio(*train, classes, settings.habitat_scale_deg, settings.habitat_smoothing)
    return lambda x: kde(x) + settings.habitat_weight * habitat(x)


def study_seed(seed: int) -> dict[str, dict]:
    """Test ranks of every baseline and of KDE + habitat on split seed ``seed``."""
    splits = load_species(DataConfig(split_seed=seed))
    r = splits.records
    classes = len(splits.class_names)
    train = (r.lonlat[splits.train], r.labels[splits.train])
    val = (r.lonlat[splits.val], r.labels[splits.val])
    test = (torch.from_numpy(r.lonlat[splits.test]), torch.from_numpy(r.labels[splits.test]))
    out = {}
    for name, (scorer, setting) in standard_baselines(train, val, classes).items():
        out[name] = {"setting": setting, "ranks": scorer_ranks(scorer, *test).numpy()}
    settings, _ = select_settings(None, train, val, SelectionGrid())
    out["KDE + habitat"] = {
        "setting": settings.describe(),
        "ranks": scorer_ranks(_density_prior(settings, train, classes), *test).numpy(),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, help="JSON file for the per-seed figures")
    args = parser.parse_args()
    per_seed, pooled = {}, {"KDE + habitat": [], "KDE": []}
    for seed in args.split_seeds:
        results = study_seed(seed)
        rows = {}
        for name, result in results.items():
            ranks = result["ranks"]
            rows[name] = {"setting": result["setting"], **rank_summary(torch.from_numpy(ranks))}
        ours, kde = results["KDE + habitat"]["ranks"], results["KDE"]["ranks"]
        rows["KDE + habitat"]["delta_mrr_vs_kde"] = str(
            paired_bootstrap(reciprocal_ranks(ours), reciprocal_ranks(kde))
        )
        rows["KDE + habitat"]["delta_top5_vs_kde"] = str(
            paired_bootstrap(top_k_hits(ours, 5), top_k_hits(kde, 5))
        )
        pooled["KDE + habitat"].append(ours)
        pooled["KDE"].append(kde)
        per_seed[seed] = rows
        print(json.dumps({seed: rows}, indent=1), flush=True)
    ours, kde = np.concatenate(pooled["KDE + habitat"]), np.concatenate(pooled["KDE"])
    summary = {
        "seeds": args.split_seeds,
        "pooled_delta_mrr_vs_kde": str(paired_bootstrap(reciprocal_ranks(ours), reciprocal_ranks(kde))),
        "pooled_delta_top5_vs_kde": str(paired_bootstrap(top_k_hits(ours, 5), top_k_hits(kde, 5))),
        "per_seed": per_seed,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "per_seed"}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
