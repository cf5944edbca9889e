"""``python -m train experiment fewshot``: Sup. only vs CSP variants at several label fractions.

For every position encoding: one pre-training run per CSP variant on the pre-training pairs of
the default build (``<build>/features``), then, for every label fraction and seed, a fine-tuning
run from each pre-trained encoder and one from scratch ("Sup. only"), all on the same cleaned
split of the real species observations (no pseudo-presences). Each fine-tuning run stops early
on validation MRR, so methods are compared converged; the test split is scored once per run.

Results go to ``<out>/results.csv`` (one row per run; finished runs are skipped when the
command is repeated, so an interrupted experiment resumes), ``<out>/fewshot.md`` (mean +- std
over seeds) and ``<out>/fewshot.png``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from csp.run_dir import RunDir
from train.config import DataConfig, FinetuneConfig, PretrainConfig, load_config
from train.data import SpeciesSplits, load_species, pairs_away_from_held_out
from train.evaluate import evaluate_on_split
from train.finetune import run_finetune
from train.pretrain import run_pretrain

CSP_METHODS = ("csp-mc-bld", "csp-mc-bl", "csp-nce-bld", "mse")
METHOD_LABELS = {
    "sup-only": "Sup. only",
    "csp-mc-bld": "CSP-MC-BLD",
    "csp-mc-bl": "CSP-MC-BL",
    "csp-nce-bld": "CSP-NCE-BLD",
    "mse": "MSE",
}
FIELDS = ("encoding", "method", "fraction", "seed", "top1", "top5", "mrr", "epochs", "train_points")


@dataclass
class FewShotOptions:
    out: Path = Path("runs/fewshot")
    features: Path = Path("runs/build-default/features")
    encodings: tuple[str, ...] = ("grid", "sphereC+")
    fractions: tuple[float, ...] = (0.05, 0.1, 0.2, 1.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = ("sup-only", *CSP_METHODS)
    pretrain_epochs: int = 20
    min_steps: int = 600  # fine-tuning budget: at least this many steps ...
    max_epochs: int = 100  # ... within this many epochs, early stopping on validation
    patience: int = 5
    batch_size: int = 256


def _finetune_epochs(options: FewShotOptions, train_points: int) -> int:
    steps_per_epoch = max(1, train_points // options.batch_size)
    return min(options.max_epochs, max(20, math.ceil(options.min_steps / steps_per_epoch)))


def _done(path: Path) -> set[tuple[str, str, float, int]]:
    if not path.exists():
        return set()
    with open(path, newline="") as handle:
        return {
            (r["encoding"], r["method"], float(r["fraction"]), int(r["seed"])) for r in csv.DictReader(handle)
        }


def _append(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def _pretrain(options: FewShotOptions, splits: SpeciesSplits, encoding: str, method: str) -> Path:
    run = RunDir(options.out / "pretrain" / f"{encoding}-{method}")
    if run.completed():
        return run.best
    config = load_config(PretrainConfig, method, encoding=encoding)
    config = replace(
        config,
        features=str(options.features),
        optim=replace(config.optim, epochs=options.pretrain_epochs),
        runtime=replace(config.runtime, out_dir=str(run.root), progress=False),
    )
    rows, _ = pairs_away_from_held_out(config, splits)
    run_pretrain(config, resume=run.holds_run, rows=rows)
    return run.best


def _finetune(
    options: FewShotOptions,
    splits: SpeciesSplits,
    encoding: str,
    method: str,
    fraction: float,
    seed: int,
    init_from: Path | None,
) -> dict:
    run = RunDir(options.out / "finetune" / f"{encoding}-{method}-{fraction}-{seed}")
    train_points = round(len(splits.train) * fraction)
    config = load_config(FinetuneConfig, "finetune", encoding=encoding)
    config = replace(
        config,
        init_from=None if init_from is None else str(init_from),
        data=replace(config.data, label_fraction=fraction, label_seed=seed),
        optim=replace(
            config.optim,
            batch_size=options.batch_size,
            patience=options.patience,
            epochs=_finetune_epochs(options, train_points),
        ),
        runtime=replace(config.runtime, out_dir=str(run.root), seed=seed, progress=False),
    )
    result = run_finetune(config, resume=run.holds_run, splits=splits)
    metrics = evaluate_on_split(result.best_dir, splits, "test")["location"]
    return {
        "encoding": encoding,
        "method": method,
        "fraction": fraction,
        "seed": seed,
        "top1": round(metrics["top1"], 3),
        "top5": round(metrics["top5"], 3),
        "mrr": round(metrics["mrr"], 3),
        "epochs": run.epochs_logged(),
        "train_points": train_points,
    }


def run_fewshot(options: FewShotOptions) -> str:
    """Run (or resume) the experiment; returns the Markdown table."""
    options.out.mkdir(parents=True, exist_ok=True)
    results = options.out / "results.csv"
    done = _done(results)
    splits = load_species(DataConfig())
    for encoding in options.encodings:
        pretrained = {
            method: _pretrain(options, splits, encoding, method)
            for method in options.methods
            if method != "sup-only"
        }
        for fraction in options.fractions:
            for seed in options.seeds:
                for method in options.methods:
                    if (encoding, method, fraction, seed) in done:
                        continue
                    row = _finetune(options, splits, encoding, method, fraction, seed, pretrained.get(method))
                    _append(results, row)
                    print(", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    table = render_table(results)
    (options.out / "fewshot.md").write_text(table)
    plot(results, options.out / "fewshot.png")
    return table


def _read(results: Path) -> list[dict]:
    with open(results, newline="") as handle:
        return list(csv.DictReader(handle))


def _aggregate(rows: list[dict], metric: str) -> dict[tuple[str, str, float], tuple[float, float, int]]:
    groups: dict[tuple[str, str, float], list[float]] = {}
    for row in rows:
        key = (row["encoding"], row["method"], float(row["fraction"]))
        groups.setdefault(key, []).append(float(row[metric]))
    return {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in groups.items()}


def render_table(results: Path) -> str:
    """Markdown: one table per metric, rows = encoding x method, columns = label fractions."""
    rows = _read(results)
    fractions = sorted({float(r["fraction"]) for r in rows})
    lines = [
        "Test split of the cleaned YFCC species observations; location-only prior; "
        "mean ± std over seeds (n = seeds). Seeds vary the label subset and fine-tuning; each CSP "
        "variant was pre-trained once per encoding, so pre-training variance is not included.",
        "",
    ]
    for metric, title in (("top1", "top-1 (%)"), ("top5", "top-5 (%)"), ("mrr", "MRR (%)")):
        stats = _aggregate(rows, metric)
        lines += [
            f"**{title}**",
            "",
            "| encoding | method | " + " | ".join(f"{f:g}" for f in fractions) + " |",
            "|---|---|" + "---|" * len(fractions),
        ]
        for encoding, method in sorted(
            {(k[0], k[1]) for k in stats}, key=lambda em: (em[0], list(METHOD_LABELS).index(em[1]))
        ):
            cells = []
            for fraction in fractions:
                mean_std = stats.get((encoding, method, fraction))
                cells.append(f"{mean_std[0]:.2f} ± {mean_std[1]:.2f} (n={mean_std[2]})" if mean_std else "–")
            lines.append(f"| {encoding} | {METHOD_LABELS[method]} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(results: Path, path: Path) -> None:
    """MRR against label fraction, one panel per encoding, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _read(results)
    stats = _aggregate(rows, "mrr")
    encodings = sorted({k[0] for k in stats})
    fig, axes = plt.subplots(1, len(encodings), figsize=(5 * len(encodings), 4), squeeze=False)
    for ax, encoding in zip(axes[0], encodings, strict=True):
        for method, label in METHOD_LABELS.items():
            points = sorted((k[2], v) for k, v in stats.items() if k[0] == encoding and k[1] == method)
            if points:
                xs = [p[0] for p in points]
                ax.errorbar(
                    xs,
                    [p[1][0] for p in points],
                    yerr=[p[1][1] for p in points],
                    label=label,
                    marker="o",
                    capsize=3,
                )
        ax.set_xscale("log")
        ax.set_xlabel("label fraction")
        ax.set_ylabel("test MRR (%)")
        ax.set_title(f"{encoding} encoding")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
