"""``python -m train experiment prior``: the shipped recipe against the baselines over training seeds.

For each training seed, the chain of ``build-default`` (CSP pre-training on the same chips,
presence-only fine-tuning, the prior's settings chosen on validation) is re-run on the same data
and leak-free split (``--split-seed``, default 0), so every seed scores the same held-out test
queries. The baselines (class frequency, KDE, kNN) are deterministic given the split and are
fitted once. The table gives test top-5 and MRR as mean and sample SD over seeds, and the
paired bootstrap 95 % interval of each method minus the strongest baseline with seeds and
queries resampled (:func:`csp.stats.paired_bootstrap` on ``(seeds, queries)``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from csp.baselines import scorer_ranks, standard_baselines
from csp.prior import LocationPrior
from csp.stats import paired_bootstrap, reciprocal_ranks, sample_sd, top_k_hits
from train.build_default import BuildOptions, BuildPlan, add_pseudo_presences, linked_species, train_prior
from train.config import DataConfig
from train.data import SpeciesSplits, load_species


@dataclass(frozen=True)
class PriorSeedsOptions:
    out: Path = Path("runs/prior-seeds")
    features: Path = Path("runs/build-default/features")  # the chips' store, shared by the seeds
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    split_seed: int = 0
    device: str = "auto"


def _seed_ranks(
    options: PriorSeedsOptions, seed: int, data: DataConfig, splits: SpeciesSplits
) -> dict[str, np.ndarray]:
    """Test ranks ``(N,)`` of the prior and of the network alone for one training seed (cached in
    ``<out>/seed-<s>/ranks.json``, so an interrupted study resumes at the next seed)."""
    work = options.out / f"seed-{seed}"
    cached = work / "ranks.json"
    if cached.exists():
        return {name: np.asarray(r) for name, r in json.loads(cached.read_text()).items()}
    build = BuildOptions(
        work=work, seed=options.split_seed, train_seed=seed, device=options.device, features=options.features
    )
    trained = train_prior(build, BuildPlan(), data, splits, {})
    lonlat, labels = splits.records.lonlat[splits.test], splits.records.labels[splits.test]
    ranks = {
        "prior": scorer_ranks(trained.prior.log_scores, lonlat, labels).numpy(),
        "network alone": scorer_ranks(
            LocationPrior(trained.prior.encoder).log_scores, lonlat, labels
        ).numpy(),
    }
    cached.write_text(json.dumps({name: r.tolist() for name, r in ranks.items()}))
    return ranks


def _row(name: str, ranks: np.ndarray, reference: np.ndarray | None, seed: int) -> dict:
    """Mean and SD over seeds of test top-5 / MRR (%) for ``ranks (S, N)``, and the paired
    interval against ``reference (1 or S, N)``."""
    mrr, top5 = reciprocal_ranks(ranks), top_k_hits(ranks, 5)
    row = {
        "name": name,
        "seeds": len(ranks),
        "mrr": float(mrr.mean()),
        "mrr_sd": sample_sd(mrr.mean(axis=1)) if len(ranks) > 1 else None,
        "top5": float(top5.mean()),
        "top5_sd": sample_sd(top5.mean(axis=1)) if len(ranks) > 1 else None,
    }
    if reference is not None:
        for key, ours, theirs in (
            ("mrr", mrr, reciprocal_ranks(reference)),
            ("top5", top5, top_k_hits(reference, 5)),
        ):
            interval = paired_bootstrap(ours, theirs, seed=seed)
            row[f"delta_{key}"] = [interval.difference, interval.low, interval.high]
    return row


def run_prior_seeds(options: PriorSeedsOptions) -> str:
    """Run the study; writes ``<out>/prior-seeds.json`` and returns the Markdown table."""
    options.out.mkdir(parents=True, exist_ok=True)
    data = DataConfig(split_seed=options.split_seed)
    observed = load_species(data)
    per_seed = [_seed_ranks(options, seed, data, observed) for seed in options.seeds]
    # The baselines on the same augmented training split as the prior (pseudo-presences included).
    splits, _ = add_pseudo_presences(
        observed, BuildPlan().min_wild_points, options.split_seed, linked_species()
    )
    r = splits.records
    train = (r.lonlat[splits.train], r.labels[splits.train])
    val = (r.lonlat[splits.val], r.labels[splits.val])
    lonlat, labels = torch.from_numpy(r.lonlat[splits.test]), torch.from_numpy(r.labels[splits.test])
    baselines = {
        name: (scorer_ranks(scorer, lonlat, labels).numpy()[None], setting)
        for name, (scorer, setting) in standard_baselines(train, val, len(splits.class_names)).items()
    }
    strongest = max(baselines, key=lambda name: reciprocal_ranks(baselines[name][0]).mean())
    reference = baselines[strongest][0]
    rows = [
        _row(name, np.stack([ranks[name] for ranks in per_seed]), reference, options.split_seed)
        for name in ("prior", "network alone")
    ]
    rows += [
        _row(f"{name} ({setting})", ranks, None if name == strongest else reference, options.split_seed)
        for name, (ranks, setting) in baselines.items()
    ]
    result = {
        "options": {k: str(v) for k, v in vars(options).items()},
        "strongest": strongest,
        "queries": len(labels),
        "rows": rows,
    }
    (options.out / "prior-seeds.json").write_text(json.dumps(result, indent=2))
    return format_prior_seeds(result)


def _mean_sd(row: dict, key: str) -> str:
    sd = row[f"{key}_sd"]
    return f"{row[key]:.2f}" + (f" ± {sd:.2f}" if sd is not None else "")


def _delta(row: dict, key: str) -> str:
    if f"delta_{key}" not in row:
        return "(reference)"
    d, lo, hi = row[f"delta_{key}"]
    return f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def format_prior_seeds(result: dict) -> str:
    """The study's Markdown table (mean ± sample SD over training seeds; paired intervals)."""
    seeds = result["rows"][0]["seeds"]
    lines = [
        f"Test split: {result['queries']:,} observations; {seeds} training seeds (pre-training and "
        f"fine-tuning re-run per seed, same split); Δ: paired bootstrap 95 % interval (seeds and "
        f"queries resampled) against the strongest baseline, {result['strongest']}.",
        "",
        "| method | top-5 | MRR | Δ top-5 | Δ MRR |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['name']} | {_mean_sd(row, 'top5')} | {_mean_sd(row, 'mrr')} | "
            f"{_delta(row, 'top5')} | {_delta(row, 'mrr')} |"
        )
    return "\n".join(lines)
