"""The search for a location prior that beats the baselines on the leak-free split.

``python -m train.prior_search train --name NAME --seed S [--set key=value ...]`` fine-tunes one
network (preset ``sup-only`` with overrides) on the leak-free split, then writes the per-query
ranks and the network's class logits of the validation and test points to
``<work>/<NAME>-s<S>/scores.npz``.

``python -m train.prior_search report --names A B ...`` scores the baselines (bandwidth and k
chosen on validation) and, for each trained network and seed, the network alone and the hybrid
``log sigmoid(network) + w * KDE log posterior`` (w and the bandwidth chosen on validation),
and prints test top-1 / top-5 / MRR with paired bootstrap intervals against the strongest
baseline. Every figure in ``docs/prior-results.md`` comes from these two commands.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from csp.baselines import (
    KDE_BANDWIDTHS_KM,
    KNN_KS,
    ClassFrequency,
    KNNVote,
    SphericalKDE,
    scorer_ranks,
    select_on_validation,
)
from csp.checkpoint import load_checkpoint
from csp.metrics import rank_summary, true_class_ranks
from csp.stats import paired_bootstrap, reciprocal_ranks, sample_sd, top_k_hits
from train.config import DataConfig, FinetuneConfig, load_config
from train.data import SpeciesSplits, load_species
from train.finetune import run_finetune

WORK = Path("/work/cache/prior/search")
HYBRID_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)


@torch.inference_mode()
def network_logits(checkpoint: Path, lonlat: np.ndarray, block: int = 1024) -> np.ndarray:
    model, _ = load_checkpoint(checkpoint)
    model.eval()
    x = torch.from_numpy(lonlat).float()
    return torch.cat([model.class_logits(x[i : i + block]) for i in range(0, len(x), block)]).numpy()


def train_one(name: str, seed: int, overrides: list[str], work: Path) -> Path:
    out = work / f"{name}-s{seed}"
    config = load_config(
        FinetuneConfig,
        "sup-only",
        [f"runtime.out_dir={out / 'run'}", f"runtime.seed={seed}", "runtime.progress=false", *overrides],
    )
    splits = load_species(config.data)
    result = run_finetune(config, resume=(out / "run" / "metrics.jsonl").exists(), splits=splits)
    records = splits.records
    saved = {}
    for part in ("val", "test"):
        index = getattr(splits, part)
        saved[f"{part}_logits"] = network_logits(result.best_dir, records.lonlat[index]).astype(np.float32)
    np.savez_compressed(out / "scores.npz", **saved)
    (out / "overrides.json").write_text(json.dumps(overrides))
    return out


def _ranks(scores: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    return true_class_ranks(scores, torch.from_numpy(labels)).numpy()


class Evaluation:
    """Baselines on one split, and the hybrid of a network's logits with the KDE."""

    def __init__(self, splits: SpeciesSplits) -> None:
        self.splits = splits
        r = splits.records
        self.classes = len(splits.class_names)
        self.train_lonlat, self.train_labels = r.lonlat[splits.train], r.labels[splits.train]
        self.lonlat = {p: r.lonlat[getattr(splits, p)] for p in ("val", "test")}
        self.labels = {p: r.labels[getattr(splits, p)] for p in ("val", "test")}
        self._kde_scores: dict[tuple[float, str], torch.Tensor] = {}

    def kde(self, bandwidth: float) -> SphericalKDE:
        return SphericalKDE(self.train_lonlat, self.train_labels, self.classes, bandwidth)

    def kde_scores(self, bandwidth: float, part: str) -> torch.Tensor:
        key = (bandwidth, part)
        if key not in self._kde_scores:
            kde = self.kde(bandwidth)
            x = torch.from_numpy(self.lonlat[part])
            self._kde_scores[key] = torch.cat([kde(x[i : i + 256]) for i in range(0, len(x), 256)])
        return self._kde_scores[key]

    def baselines(self) -> dict[str, tuple[np.ndarray, str]]:
        """``{name: (test ranks, chosen setting)}``."""
        val, test = (self.lonlat["val"], self.labels["val"]), (self.lonlat["test"], self.labels["test"])
        out = {
            "class frequency": (
                scorer_ranks(ClassFrequency(self.train_labels, self.classes), *test).numpy(),
                "",
            )
        }
        kde = select_on_validation(self.kde, KDE_BANDWIDTHS_KM, *val)
        out["KDE"] = (scorer_ranks(self.kde(kde.value), *test).numpy(), f"{kde.value:g} km")
        knn = select_on_validation(
            lambda k: KNNVote(self.train_lonlat, self.train_labels, self.classes, int(k)), KNN_KS, *val
        )
        out["kNN"] = (
            scorer_ranks(
                KNNVote(self.train_lonlat, self.train_labels, self.classes, int(knn.value)), *test
            ).numpy(),
            f"k = {knn.value:g}",
        )
        return out

    def hybrid(self, logits: dict[str, np.ndarray]) -> tuple[np.ndarray, str]:
        """Test ranks of ``logsigmoid(logits) + w * KDE`` with (w, bandwidth) chosen on val."""
        best = None
        for bandwidth in KDE_BANDWIDTHS_KM:
            net = torch.nn.functional.logsigmoid(torch.from_numpy(logits["val"]).double())
            for w in HYBRID_WEIGHTS:
                mrr = rank_summary(
                    torch.from_numpy(_ranks(net + w * self.kde_scores(bandwidth, "val"), self.labels["val"]))
                )["mrr"]
                if best is None or mrr > best[0]:
                    best = (mrr, bandwidth, w)
        _, bandwidth, w = best
        net = torch.nn.functional.logsigmoid(torch.from_numpy(logits["test"]).double())
        return _ranks(
            net + w * self.kde_scores(bandwidth, "test"), self.labels["test"]
        ), f"w = {w:g}, {bandwidth:g} km"


def _row(name: str, ranks: np.ndarray, setting: str, reference: np.ndarray | None) -> str:
    """One table row; ``ranks`` ``(N,)`` or ``(S, N)`` over seeds."""
    ranks2 = ranks if ranks.ndim == 2 else ranks[None]
    per_seed = [rank_summary(torch.from_numpy(r)) for r in ranks2]
    cells = []
    for metric in ("top1", "top5", "mrr"):
        values = [m[metric] for m in per_seed]
        sd = f" ± {sample_sd(values):.2f}" if len(values) > 1 else ""
        cells.append(f"{np.mean(values):.2f}{sd}")
    compare = ""
    if reference is not None:
        mrr = paired_bootstrap(reciprocal_ranks(ranks2), reciprocal_ranks(reference))
        top5 = paired_bootstrap(top_k_hits(ranks2, 5), top_k_hits(reference, 5))
        compare = f" | {mrr} | {top5}"
    else:
        compare = " | | "
    return f"| {name} | {setting} | {len(ranks2)} | " + " | ".join(cells) + compare + " |"


def report(names: list[str], work: Path, data: DataConfig) -> str:
    evaluation = Evaluation(load_species(data))
    baselines = evaluation.baselines()
    strongest = max(baselines, key=lambda n: reciprocal_ranks(baselines[n][0]).mean())
    reference = baselines[strongest][0]
    lines = [
        f"Test split: {len(reference):,} observations, {evaluation.classes:,} classes; intervals: paired "
        f"bootstrap 95 % against the strongest baseline ({strongest}), seeds and queries resampled.",
        "",
        "| method | setting (chosen on val) | seeds | top-1 | top-5 | MRR | Δ MRR vs "
        f"{strongest} | Δ top-5 vs {strongest} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, (ranks, setting) in baselines.items():
        lines.append(_row(name, ranks, setting, None if name == strongest else reference))
    for name in names:
        runs = sorted(work.glob(f"{name}-s*/scores.npz"))
        if not runs:
            continue
        net, hyb, settings = [], [], []
        for path in runs:
            scores = np.load(path)
            logits = {p: scores[f"{p}_logits"] for p in ("val", "test")}
            net.append(_ranks(torch.from_numpy(logits["test"]), evaluation.labels["test"]))
            ranks, setting = evaluation.hybrid(logits)
            hyb.append(ranks)
            settings.append(setting)
        lines.append(_row(f"network {name}", np.stack(net), "", reference))
        lines.append(_row(f"hybrid {name} + KDE", np.stack(hyb), "; ".join(sorted(set(settings))), reference))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train")
    train.add_argument("--name", required=True)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--set", action="append", default=[], dest="overrides")
    rep = sub.add_parser("report")
    rep.add_argument("--names", nargs="+", required=True)
    for p in (train, rep):
        p.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args()
    if args.command == "train":
        print(train_one(args.name, args.seed, args.overrides, args.work))
    else:
        print(report(args.names, args.work, DataConfig()))


if __name__ == "__main__":
    main()
