"""The few-shot experiment's recipe, convergence flag and table, on hand-made ranks files (no training)."""

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from csp.checkpoint import describe_model, save_checkpoint
from csp.models import LocationImageEncoder
from train.build_default import BuildPlan
from train.experiment import (
    FIELDS,
    FewShotOptions,
    convergence,
    finetune_config,
    load_cells,
    plot,
    pretrain_config,
    render_table,
)

QUERIES = 40


def _row(encoding, method, fraction, seed, ranks_name, early_stopped=True, setting=""):
    network = bool(encoding)
    return {
        "encoding": encoding,
        "method": method,
        "fraction": fraction,
        "seed": seed,
        "train_points": 100,
        "top1": 0,
        "top5": 0,
        "mrr": 0,
        "epochs": 30 + seed if network else "",
        "best_epoch": 25 if network else "",
        "cap": 150 if network else "",
        "early_stopped": early_stopped if network else "",
        "setting": setting,
        "ranks": ranks_name,
    }


def _write(out: Path, runs: list[tuple[dict, np.ndarray]]) -> Path:
    """``results.csv`` and ``ranks/*.npy`` as the experiment writes them."""
    (out / "ranks").mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for row, ranks in runs:
            np.save(out / "ranks" / row["ranks"], ranks.astype(np.int64), allow_pickle=False)
            writer.writerow(row)
    return out / "results.csv"


def _constant(rank: int) -> np.ndarray:
    return np.full(QUERIES, rank)


def _grid(tmp_path: Path, capped_seed: int | None = None) -> Path:
    """At 5 %, three seeds: Sup. only ranks every query 4, 2, 4 (MRR 25, 50, 25); CSP ranks
    every query 2 (MRR 50); the KDE ranks every query 1 (MRR 100), kNN 10 (MRR 10)."""
    runs = []
    for seed, sup_rank in zip((2, 0, 1), (4, 4, 2), strict=True):  # written out of seed order
        runs.append((_row("grid", "sup-only", 0.05, seed, f"sup-{seed}.npy"), _constant(sup_rank)))
        early = seed != capped_seed
        runs.append((_row("grid", "csp-globe", 0.05, seed, f"csp-{seed}.npy", early), _constant(2)))
        runs.append(
            (_row("", "kde", 0.05, seed, f"kde-{seed}.npy", setting="bandwidth 800 km"), _constant(1))
        )
        runs.append(
            (_row("", "knn", 0.05, seed, f"knn-{seed}.npy", setting=f"k = {10 + seed}"), _constant(10))
        )
    return _write(tmp_path, runs)


def test_cells_are_stacked_in_seed_order_from_the_ranks_files(tmp_path):
    cells = load_cells(_grid(tmp_path))
    sup = cells["grid", "sup-only", 0.05]
    assert sup.seeds == (0, 1, 2)
    np.testing.assert_array_equal(sup.ranks[:, 0], [4, 2, 4])
    np.testing.assert_allclose(sup.per_seed("mrr"), [25.0, 50.0, 25.0])
    np.testing.assert_allclose(sup.per_seed("top1"), [0.0, 0.0, 0.0])
    np.testing.assert_allclose(sup.per_seed("top5"), [100.0, 100.0, 100.0])
    assert cells["", "knn", 0.05].settings == ("k = 10", "k = 11", "k = 12")


def test_table_gives_mean_and_sample_sd_and_paired_intervals(tmp_path):
    table = render_table(_grid(tmp_path))
    sd = math.sqrt(((25 - 100 / 3) ** 2 * 2 + (50 - 100 / 3) ** 2) / 2)  # ddof = 1: 14.43
    assert f"| Sup. only | {100 / 3:.2f} ± {sd:.2f} |" in table  # MRR
    assert "| CSP (csp-globe) | 50.00 ± 0.00 |" in table
    assert "| KDE (same labels) | 100.00 ± 0.00 |" in table
    assert "| class frequency" not in table  # not in this results file
    # CSP - Sup. only: reciprocal ranks 50 - 25 on seeds 0 and 2, 50 - 50 on seed 1; top-5 all hit.
    # Every bootstrap replicate averages those seeds' constant differences: within [0, +25].
    line = next(row for row in table.splitlines() if "CSP (csp-globe) − Sup. only" in row)
    top5, mrr = (cell.strip() for cell in line.strip(" |").split("|")[2:4])
    assert top5 == "+0.00 [+0.00, +0.00]"
    difference, low, high = (float(v) for v in mrr.replace("[", "").replace("]", "").replace(",", "").split())
    assert difference == pytest.approx(50 / 3, abs=0.005) and 0 <= low < difference < high <= 25
    # The strongest baseline (KDE, MRR 100) minus the best network (CSP, MRR 50): exactly +50.
    assert (
        "| 5 % | KDE (same labels) − CSP (csp-globe) | +0.00 [+0.00, +0.00] | +50.00 [+50.00, +50.00] |"
        in table
    )
    assert "- KDE (same labels) at 5 %: bandwidth 800 km" in table
    assert "- kNN (same labels) at 5 %: k = 10, k = 11, k = 12" in table
    assert "†" not in table.split("**Paired")[0]


def test_a_run_that_reached_its_cap_is_flagged(tmp_path):
    table = render_table(_grid(tmp_path, capped_seed=1))
    assert "| CSP (csp-globe) | 50.00 ± 0.00 † |" in table
    assert "| Sup. only | 33.33 ± 14.43 |" in table  # its other cells are not flagged
    convergence_rows = table.split("**Convergence**")[1]
    assert "| CSP (csp-globe) | 2/3 (epochs 30–32) |" in convergence_rows
    assert "| Sup. only | 3/3 (epochs 30–32) |" in convergence_rows


def test_convergence_reads_the_validation_scores():
    assert convergence([1.0, 2.0, 3.0, 2.5, 2.9, 2.0, 1.0, 3.0], patience=5) == (3, True)
    assert convergence([1.0, 2.0, 3.0, 2.5], patience=5) == (3, False)  # stopped by the cap
    assert convergence([1.0, 3.0, 3.0, 3.0], patience=2) == (2, True)  # ties do not improve
    with pytest.raises(ValueError, match="no validation scores"):
        convergence([], patience=5)


def test_runs_that_ranked_different_queries_are_refused(tmp_path):
    results = _write(
        tmp_path,
        [
            (_row("grid", "sup-only", 0.05, 0, "a.npy"), _constant(1)),
            (_row("grid", "sup-only", 0.05, 1, "b.npy"), np.ones(QUERIES + 1)),
        ],
    )
    with pytest.raises(ValueError, match="different numbers of test queries"):
        load_cells(results)


def test_plot_writes_a_png(tmp_path):
    results = _grid(tmp_path)
    plot(results, tmp_path / "fewshot.png")
    assert (tmp_path / "fewshot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pretraining_is_the_builds_recipe_rerun_per_seed(tmp_path):
    options = FewShotOptions(out=tmp_path, features=tmp_path / "store")
    plan = BuildPlan()
    assert options.methods == ("sup-only", plan.pretrain_preset) and options.seeds == (0, 1, 2, 3, 4)
    config = pretrain_config(options, "grid", plan.pretrain_preset, seed=3)
    assert (config.optim.epochs, config.optim.batch_size) == (plan.pretrain_epochs, plan.pretrain_batch)
    assert config.runtime.seed == 3 and config.features == str(tmp_path / "store")
    assert config.runtime.out_dir == str(tmp_path / "pretrain" / "grid-csp-globe-3")
    assert options.encodings == (config.model.encoding,)


def test_finetuning_budget_is_one_recipe_for_every_method_and_fraction(tmp_path):
    options = FewShotOptions(out=tmp_path)
    pretrained = pretrain_config(options, "grid", "csp-globe", seed=0)
    model = LocationImageEncoder(pretrained.model, 8, pretrained.loss.objective)
    init = save_checkpoint(tmp_path / "best", model, describe_model(model))
    recipes = set()
    for fraction in options.fractions:
        sup = finetune_config(options, "grid", "sup-only", fraction, 2, None)
        csp = finetune_config(options, "grid", "csp-globe", fraction, 2, init)
        assert csp.init_from == str(init) and sup.init_from is None
        assert csp.model == sup.model  # the checkpoint's architecture is the preset's
        for config in (sup, csp):
            assert (config.data.label_fraction, config.data.label_seed, config.runtime.seed) == (
                fraction,
                2,
                2,
            )
            recipes.add(
                (config.optim.epochs, config.optim.patience, config.optim.batch_size, config.optim.lr)
            )
        assert csp.runtime.out_dir == str(tmp_path / "finetune" / f"grid-csp-globe-{fraction}-2")
    assert recipes == {(options.max_epochs, options.patience, options.batch_size, sup.optim.lr)}


def test_options_refuse_unknown_methods_and_a_table_without_sup_only():
    with pytest.raises(ValueError, match="unknown few-shot method"):
        FewShotOptions(methods=("sup-only", "csp-typo"))
    with pytest.raises(ValueError, match="include it"):
        FewShotOptions(methods=("csp-globe",))
