"""``python -m train experiment fewshot``: Sup. only vs CSP at several label fractions.

The protocol (issue 11): the real species observations, cleaned, with the leak-free split of
split seed ``split_seed`` (no pseudo-presences). For every training seed s:

- each CSP method is pre-trained again (run seed s) with the shipped build's recipe
  (:class:`train.build_default.BuildPlan`: epochs, batch, pairs away from held-out observations)
  on the chips of ``features``, in ``<out>/pretrain/<encoding>-<method>-<s>``;
- for every label fraction f, the class-stratified subset of seed s
  (:func:`train.data.label_fraction_subset`) is fine-tuned from each pre-trained encoder and
  from scratch ("Sup. only"), with one recipe for every method (batch, learning rate, early
  stopping on validation MRR with ``patience``, a generous epoch cap), in
  ``<out>/finetune/<encoding>-<method>-<f>-<s>``;
- the simple baselines (class frequency, spherical KDE, kNN; settings chosen on validation,
  :func:`csp.baselines.standard_baselines`) are fitted on the same label subset.

Every run's test ranks go to ``<out>/ranks/<name>.npy`` and one row per run to
``<out>/results.csv`` (finished runs are skipped when the command is repeated, so an
interrupted experiment resumes). ``<out>/fewshot.md`` and ``<out>/fewshot.png`` are computed
from the ranks files: mean ± sample SD over seeds and paired bootstrap 95 % intervals with seeds
and queries resampled (:func:`csp.stats.paired_bootstrap` on ``(seeds, queries)``).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from csp.baselines import scorer_ranks, standard_baselines
from csp.checkpoint import load_checkpoint
from csp.prior import LocationPrior
from csp.run_dir import RunDir
from csp.stats import paired_bootstrap, reciprocal_ranks, sample_sd, top_k_hits
from train.build_default import BuildPlan
from train.config import DataConfig, FinetuneConfig, PretrainConfig, load_config
from train.data import SpeciesSplits, label_fraction_subset, load_species, pairs_away_from_held_out
from train.finetune import run_finetune
from train.pretrain import run_pretrain

SUP_ONLY = "sup-only"
METHOD_LABELS = {
    SUP_ONLY: "Sup. only",
    "csp-globe": "CSP (csp-globe)",
    "csp-mc-bld": "CSP-MC-BLD",
    "csp-mc-bl": "CSP-MC-BL",
    "csp-nce-bld": "CSP-NCE-BLD",
    "mse": "MSE",
}
# Baselines: the method column of their rows; label -> the name csp.baselines.standard_baselines uses.
BASELINES = {"kde": "KDE", "knn": "kNN", "class-frequency": "class frequency"}
BASELINE_LABELS = {
    "kde": "KDE (same labels)",
    "knn": "kNN (same labels)",
    "class-frequency": "class frequency",
}
FIELDS = (
    "encoding",
    "method",
    "fraction",
    "seed",
    "train_points",
    "top1",
    "top5",
    "mrr",
    "epochs",
    "best_epoch",
    "cap",
    "early_stopped",
    "setting",
    "ranks",
)
BOOTSTRAP_SEED = 0
T = TypeVar("T")


def _build_encoding() -> tuple[str, ...]:
    """The shipped pre-training preset's position encoding."""
    return (load_config(PretrainConfig, BuildPlan.pretrain_preset).model.encoding,)


@dataclass(frozen=True)
class FewShotOptions:
    out: Path = Path("runs/fewshot")
    features: Path = Path("runs/build-default/features")  # the chips' feature store
    encodings: tuple[str, ...] = field(default_factory=_build_encoding)
    fractions: tuple[float, ...] = (0.05, 0.1, 0.2, 1.0)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    methods: tuple[str, ...] = (SUP_ONLY, BuildPlan.pretrain_preset)
    pretrain_epochs: int = BuildPlan.pretrain_epochs
    pretrain_batch: int = BuildPlan.pretrain_batch
    split_seed: int = 0
    # Fine-tuning, the same for every method and fraction: early stopping on validation MRR
    # after ``patience`` epochs without improvement, within ``max_epochs`` (a cap that the
    # measured runs stop well before; a run that reaches it is flagged in the table).
    max_epochs: int = 150
    patience: int = 5
    batch_size: int = 256
    device: str = "auto"

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHOD_LABELS]
        if unknown:
            raise ValueError(f"unknown few-shot method(s) {unknown}; choose from {sorted(METHOD_LABELS)}")
        if SUP_ONLY not in self.methods:
            raise ValueError(f"the few-shot table compares with {SUP_ONLY!r}; include it in methods")
        if not self.seeds:
            raise ValueError("give at least one seed")


def run_name(encoding: str, method: str, fraction: float, seed: int) -> str:
    """``<encoding>-<method>-<fraction>-<seed>`` (a baseline's encoding is ``""``: ``<method>-...``)."""
    return "-".join(str(part) for part in (encoding, method, fraction, seed) if part != "")


def pretrain_config(options: FewShotOptions, encoding: str, method: str, seed: int) -> PretrainConfig:
    """The build's pre-training recipe for ``method`` (a preset), run seed ``seed``."""
    config = load_config(PretrainConfig, method, encoding=encoding)
    root = options.out / "pretrain" / f"{encoding}-{method}-{seed}"
    return replace(
        config,
        features=str(options.features),
        optim=replace(config.optim, epochs=options.pretrain_epochs, batch_size=options.pretrain_batch),
        runtime=replace(config.runtime, out_dir=str(root), seed=seed, device=options.device, progress=False),
    )


def finetune_config(
    options: FewShotOptions, encoding: str, method: str, fraction: float, seed: int, init_from: Path | None
) -> FinetuneConfig:
    """One fine-tuning run: the label subset of ``seed`` at ``fraction``, the shared recipe."""
    overrides = () if init_from is None else (f"init_from={init_from}",)
    config = load_config(FinetuneConfig, "finetune", overrides, encoding=encoding)
    root = options.out / "finetune" / run_name(encoding, method, fraction, seed)
    return replace(
        config,
        data=replace(config.data, split_seed=options.split_seed, label_fraction=fraction, label_seed=seed),
        optim=replace(
            config.optim, batch_size=options.batch_size, patience=options.patience, epochs=options.max_epochs
        ),
        runtime=replace(config.runtime, out_dir=str(root), seed=seed, device=options.device, progress=False),
    )


def convergence(scores: list[float], patience: int) -> tuple[int, bool]:
    """``(best epoch, early-stopped)`` of a run from its validation scores, epoch by epoch.

    The best epoch is the first with the highest score (1-based, as the trainer keeps it); the
    run early-stopped when ``patience`` epochs followed it without improvement. A run that ended
    sooner reached its epoch cap while still improving.
    """
    if not scores:
        raise ValueError("no validation scores: the run logged no epoch")
    best = int(np.argmax(scores)) + 1
    return best, len(scores) - best >= patience


def _pretrain(options: FewShotOptions, splits: SpeciesSplits, encoding: str, method: str, seed: int) -> Path:
    config = pretrain_config(options, encoding, method, seed)
    run = RunDir(config.runtime.out_dir)
    if not run.completed():
        rows, _ = pairs_away_from_held_out(config, splits)
        run_pretrain(config, resume=run.holds_run, rows=rows)
    return run.best


def _test_queries(splits: SpeciesSplits) -> tuple[torch.Tensor, torch.Tensor]:
    records = splits.records
    return torch.from_numpy(records.lonlat[splits.test]), torch.from_numpy(records.labels[splits.test])


def _metrics(ranks: np.ndarray) -> dict[str, float]:
    return {
        "top1": round(float(top_k_hits(ranks, 1).mean()), 3),
        "top5": round(float(top_k_hits(ranks, 5).mean()), 3),
        "mrr": round(float(reciprocal_ranks(ranks).mean()), 3),
    }


def _save_ranks(options: FewShotOptions, name: str, ranks: torch.Tensor) -> dict[str, object]:
    """Writes ``<out>/ranks/<name>.npy`` (int64 ``(N,)``); returns the row's metric fields."""
    path = options.out / "ranks" / f"{name}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    array = ranks.numpy().astype(np.int64)
    np.save(path, array, allow_pickle=False)
    return {**_metrics(array), "ranks": path.name}


def _finetune(
    options: FewShotOptions,
    splits: SpeciesSplits,
    key: tuple[str, str, float, int],
    init_from: Path | None,
) -> dict:
    """Fine-tune (or finish) one run, rank the test queries with its best checkpoint."""
    encoding, method, fraction, seed = key
    config = finetune_config(options, encoding, method, fraction, seed, init_from)
    run = RunDir(config.runtime.out_dir)
    if not run.completed():
        run_finetune(config, resume=run.holds_run, splits=splits)
    status = run.read_status()
    if status is None or status.state != "completed":
        raise RuntimeError(f"{run.root}: fine-tuning did not complete ({status})")
    best_epoch, early = convergence([r["val_score"] for r in run.read_metrics()], options.patience)
    model, _ = load_checkpoint(run.best)
    ranks = scorer_ranks(LocationPrior(model).log_scores, *_test_queries(splits))
    return {
        "encoding": encoding,
        "method": method,
        "fraction": fraction,
        "seed": seed,
        "train_points": len(label_fraction_subset(splits.train, splits.records.labels, fraction, seed)),
        **_save_ranks(options, run_name(*key), ranks),
        "epochs": run.epochs_logged(),
        "best_epoch": best_epoch,
        "cap": status.epochs,  # the cap the run trained with
        "early_stopped": early,
        "setting": "" if init_from is None else f"init {init_from}",
    }


def _baselines(options: FewShotOptions, splits: SpeciesSplits, fraction: float, seed: int) -> list[dict]:
    """The baselines fitted on the label subset of ``seed`` at ``fraction`` (val for settings)."""
    records = splits.records
    subset = label_fraction_subset(splits.train, records.labels, fraction, seed)
    train = (records.lonlat[subset], records.labels[subset])
    val = (records.lonlat[splits.val], records.labels[splits.val])
    fitted = standard_baselines(train, val, len(splits.class_names))
    rows = []
    for method, name in BASELINES.items():
        scorer, setting = fitted[name]
        ranks = scorer_ranks(scorer, *_test_queries(splits))
        rows.append(
            {
                "encoding": "",
                "method": method,
                "fraction": fraction,
                "seed": seed,
                "train_points": len(subset),
                **_save_ranks(options, run_name("", method, fraction, seed), ranks),
                "epochs": "",
                "best_epoch": "",
                "cap": "",
                "early_stopped": "",
                "setting": setting,
            }
        )
    return rows


def _done(path: Path) -> set[tuple[str, str, float, int]]:
    return {_key(row) for row in read_results(path)} if path.exists() else set()


def _key(row: dict) -> tuple[str, str, float, int]:
    return row["encoding"], row["method"], float(row["fraction"]), int(row["seed"])


def _append(path: Path, rows: list[dict]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        print(", ".join(f"{k}={row[k]}" for k in FIELDS if k != "setting"), flush=True)


def _timed(label: str, step: Callable[..., T], *args: object) -> T:
    """``step(*args)``, printing its wall time."""
    started = time.perf_counter()
    result = step(*args)
    print(f"{label}: {time.perf_counter() - started:.0f} s", flush=True)
    return result


def run_fewshot(options: FewShotOptions) -> str:
    """Run (or resume) the experiment; returns the Markdown table (also ``<out>/fewshot.md``)."""
    options.out.mkdir(parents=True, exist_ok=True)
    results = options.out / "results.csv"
    done = _done(results)
    splits = load_species(DataConfig(split_seed=options.split_seed))
    for seed in options.seeds:
        pretrained: dict[tuple[str, str], Path] = {}
        for fraction in options.fractions:
            if ("", "kde", fraction, seed) not in done:
                _append(
                    results,
                    _timed(f"baselines {fraction} {seed}", _baselines, options, splits, fraction, seed),
                )
            for encoding in options.encodings:
                for method in options.methods:
                    key = (encoding, method, fraction, seed)
                    if key in done:
                        continue
                    init_from = None
                    if method != SUP_ONLY:
                        if (encoding, method) not in pretrained:
                            pretrained[encoding, method] = _pretrain(options, splits, encoding, method, seed)
                        init_from = pretrained[encoding, method]
                    _append(results, [_timed(run_name(*key), _finetune, options, splits, key, init_from)])
    table = render_table(results)
    (options.out / "fewshot.md").write_text(table)
    plot(results, options.out / "fewshot.png")
    return table


def read_results(path: Path) -> list[dict]:
    """The rows of ``results.csv``."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@dataclass(frozen=True)
class Cell:
    """The runs of one method at one fraction: ``ranks (S, N)`` in seed order."""

    seeds: tuple[int, ...]
    ranks: np.ndarray
    capped: int  # runs that reached the epoch cap while still improving
    settings: tuple[str, ...]  # per seed (baselines: the setting chosen on validation)
    epochs: tuple[int, ...] = ()  # fine-tuning epochs run, per seed (baselines: none)

    def per_seed(self, metric: str) -> np.ndarray:
        """``(S,)`` test ``metric`` (top1 / top5 / mrr, %) of each seed."""
        if metric == "mrr":
            return reciprocal_ranks(self.ranks).mean(axis=1)
        return top_k_hits(self.ranks, int(metric.removeprefix("top"))).mean(axis=1)

    def per_query(self, metric: str) -> np.ndarray:
        """``(S, N)`` per-query values of ``metric`` (reciprocal rank or top-k hit, %)."""
        if metric == "mrr":
            return reciprocal_ranks(self.ranks)
        return top_k_hits(self.ranks, int(metric.removeprefix("top")))


def load_cells(results: Path) -> dict[tuple[str, str, float], Cell]:
    """``{(encoding, method, fraction): Cell}`` from ``results.csv`` and the ranks files next to
    it (``ranks/<name>.npy``)."""
    groups: dict[tuple[str, str, float], list[dict]] = {}
    for row in read_results(results):
        groups.setdefault((row["encoding"], row["method"], float(row["fraction"])), []).append(row)
    cells = {}
    for key, rows in groups.items():
        rows = sorted(rows, key=lambda r: int(r["seed"]))
        ranks = [np.load(results.parent / "ranks" / r["ranks"], allow_pickle=False) for r in rows]
        if len({len(r) for r in ranks}) != 1:
            raise ValueError(f"{results}: the runs of {key} ranked different numbers of test queries")
        cells[key] = Cell(
            seeds=tuple(int(r["seed"]) for r in rows),
            ranks=np.stack(ranks),
            capped=sum(r["early_stopped"] == "False" for r in rows),
            settings=tuple(r["setting"] for r in rows),
            epochs=tuple(int(r["epochs"]) for r in rows if r["epochs"]),
        )
    return cells


def _label(encoding: str, method: str, encodings: set[str]) -> str:
    if not encoding:
        return BASELINE_LABELS[method]
    return METHOD_LABELS[method] + (f", {encoding}" if len(encodings) > 1 else "")


def _order(key: tuple[str, str]) -> tuple[int, str, int]:
    encoding, method = key
    if not encoding:
        return 1, "", list(BASELINES).index(method)
    return 0, encoding, list(METHOD_LABELS).index(method)


def _percent(fraction: float) -> str:
    return f"{100 * fraction:g} %"


def _paired(a: Cell, b: Cell, metric: str) -> str:
    """``mean(a) - mean(b)`` with its paired bootstrap 95 % interval, on the seeds both ran."""
    common = [s for s in a.seeds if s in b.seeds]
    pick = [a.seeds.index(s) for s in common], [b.seeds.index(s) for s in common]
    values = a.per_query(metric)[pick[0]], b.per_query(metric)[pick[1]]
    return str(paired_bootstrap(*values, seed=BOOTSTRAP_SEED)) + (
        "" if len(common) == max(len(a.seeds), len(b.seeds)) else f" (seeds {common})"
    )


def comparisons(cells: dict[tuple[str, str, float], Cell], fraction: float) -> list[tuple[str, Cell, Cell]]:
    """The claims checked at ``fraction``: each CSP method minus Sup. only (same encoding), and
    the strongest baseline minus the best network (both by mean test MRR)."""
    here = {k[:2]: c for k, c in cells.items() if k[2] == fraction}
    encodings = {e for e, _ in here if e}
    pairs = [
        (f"{_label(e, m, encodings)} − {_label(e, SUP_ONLY, encodings)}", cell, here[e, SUP_ONLY])
        for (e, m), cell in sorted(here.items(), key=lambda item: _order(item[0]))
        if e and m != SUP_ONLY and (e, SUP_ONLY) in here
    ]
    networks = [k for k in here if k[0]]
    baselines = [k for k in here if not k[0]]
    if networks and baselines:
        best = max(networks, key=lambda k: here[k].per_seed("mrr").mean())
        strongest = max(baselines, key=lambda k: here[k].per_seed("mrr").mean())
        pairs.append(
            (f"{_label(*strongest, encodings)} − {_label(*best, encodings)}", here[strongest], here[best])
        )
    return pairs


def _grid_table(
    cells: dict, fractions: list[float], encodings: set[str], keys: set[tuple], text: Callable[[Cell], str]
) -> list[str]:
    """Markdown rows = methods (``keys``, in the table's order), columns = label fractions, each
    cell ``text(cell)`` ("–" where a method has no run at a fraction)."""
    lines = ["| method | " + " | ".join(map(_percent, fractions)) + " |", "|---|" + "---|" * len(fractions)]
    for key in sorted(keys, key=_order):
        row = [text(cells[(*key, f)]) if (*key, f) in cells else "–" for f in fractions]
        lines.append(f"| {_label(*key, encodings)} | " + " | ".join(row) + " |")
    return lines


def _metric_table(cells: dict, fractions: list[float], metric: str, encodings: set[str]) -> list[str]:
    most = max(len(c.seeds) for c in cells.values())

    def text(cell: Cell) -> str:
        values = cell.per_seed(metric)
        out = f"{values.mean():.2f}" + (f" ± {sample_sd(values):.2f}" if len(values) > 1 else "")
        out += f" (n={len(values)})" if len(values) != most else ""
        return out + (" †" if cell.capped else "")

    return _grid_table(cells, fractions, encodings, {k[:2] for k in cells}, text)


def _convergence_table(cells: dict, fractions: list[float], encodings: set[str]) -> list[str]:
    def text(cell: Cell) -> str:
        stopped = f"{len(cell.seeds) - cell.capped}/{len(cell.seeds)}"
        return f"{stopped} (epochs {min(cell.epochs)}–{max(cell.epochs)})"

    return _grid_table(cells, fractions, encodings, {k[:2] for k in cells if k[0]}, text)


def _settings_lines(cells: dict, fractions: list[float]) -> list[str]:
    lines = []
    for method in BASELINES:
        for fraction in fractions:
            cell = cells.get(("", method, fraction))
            if cell is not None and method != "class-frequency":
                chosen = ", ".join(dict.fromkeys(cell.settings))  # distinct, in seed order
                lines.append(f"- {BASELINE_LABELS[method]} at {_percent(fraction)}: {chosen}")
    return lines


def render_table(results: Path) -> str:
    """Markdown from ``results.csv`` and its ranks files: per metric, rows = methods and
    baselines, columns = label fractions (mean ± sample SD over seeds); then the paired
    intervals, the convergence counts and the baselines' chosen settings."""
    cells = load_cells(results)
    fractions = sorted({k[2] for k in cells})
    encodings = {k[0] for k in cells if k[0]}
    queries = next(iter(cells.values())).ranks.shape[1]
    most = max(len(c.seeds) for c in cells.values())
    capped = sum(c.capped for c in cells.values())
    lines = [
        f"Test split: {queries:,} real observations (leak-free split); location-only scores. Mean ± "
        f"sample SD over {most} seeds (n = seeds where fewer). Seed s re-runs the CSP pre-training, "
        "draws the label subset (class-stratified) and fine-tunes; the baselines are fitted on the same "
        "subset, their settings chosen on validation."
        + (" † = a run of the cell reached its epoch cap still improving." if capped else ""),
        "",
    ]
    for metric, title in (("top1", "top-1 (%)"), ("top5", "top-5 (%)"), ("mrr", "MRR (%)")):
        lines += [f"**{title}**", "", *_metric_table(cells, fractions, metric, encodings), ""]
    lines += [
        "**Paired differences** (bootstrap 95 % interval, seeds and queries resampled; a claim holds "
        "where the interval excludes zero). The strongest baseline and the best network are those "
        "with the highest mean test MRR at that fraction.",
        "",
        "| labels | comparison | Δ top-5 | Δ MRR |",
        "|---|---|---|---|",
    ]
    for fraction in fractions:
        for name, a, b in comparisons(cells, fraction):
            lines.append(
                f"| {_percent(fraction)} | {name} | {_paired(a, b, 'top5')} | {_paired(a, b, 'mrr')} |"
            )
    lines += [
        "",
        "**Convergence**: fine-tuning runs that stopped early on validation MRR (patience), of all "
        "runs, and the range of epochs run",
        "",
        *_convergence_table(cells, fractions, encodings),
        "",
        "**Baselines' settings** (chosen on validation; distinct values over the seeds)",
        "",
        *_settings_lines(cells, fractions),
        "",
    ]
    return "\n".join(lines)


def plot(results: Path, path: Path) -> None:
    """Test MRR against label fraction: mean ± sample SD over seeds, networks solid, baselines
    dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = load_cells(results)
    encodings = {k[0] for k in cells if k[0]}
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in sorted({k[:2] for k in cells}, key=_order):
        points = sorted((k[2], c.per_seed("mrr")) for k, c in cells.items() if k[:2] == key)
        ax.errorbar(
            [p[0] for p in points],
            [float(p[1].mean()) for p in points],
            yerr=[sample_sd(p[1]) if len(p[1]) > 1 else 0.0 for p in points],
            label=_label(*key, encodings),
            marker="o" if key[0] else "s",
            linestyle="-" if key[0] else "--",
            capsize=3,
        )
    ax.set_xscale("log")
    ax.set_xticks(sorted({k[2] for k in cells}), [_percent(f) for f in sorted({k[2] for k in cells})])
    ax.set_xlabel("labelled training observations")
    ax.set_ylabel("test MRR (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
