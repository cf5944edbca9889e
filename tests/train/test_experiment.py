"""The few-shot table and plot are computed from the per-run results file."""

import csv

from train.experiment import FIELDS, FewShotOptions, _finetune_epochs, plot, render_table


def _write(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def test_table_reports_mean_and_std_over_seeds(tmp_path):
    rows = []
    for method, base in (("sup-only", 2.0), ("csp-mc-bld", 3.0)):
        for seed, delta in enumerate((-1.0, 0.0, 1.0)):
            rows.append(
                {
                    "encoding": "grid",
                    "method": method,
                    "fraction": 0.05,
                    "seed": seed,
                    "top1": base + delta,
                    "top5": 10,
                    "mrr": base * 2 + delta,
                    "epochs": 20,
                    "train_points": 100,
                }
            )
    _write(tmp_path / "results.csv", rows)
    table = render_table(tmp_path / "results.csv")
    assert "| grid | Sup. only | 2.00 ± 0.82 (n=3) |" in table
    assert "| grid | CSP-MC-BLD | 3.00 ± 0.82 (n=3) |" in table
    assert table.index("Sup. only") < table.index("CSP-MC-BLD")
    plot(tmp_path / "results.csv", tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_finetune_budget_gives_small_fractions_more_epochs():
    options = FewShotOptions()
    assert _finetune_epochs(options, 1_200) == 100  # 4 steps an epoch: capped
    assert _finetune_epochs(options, 4_700) == 34  # 18 steps an epoch: 600 steps
    assert _finetune_epochs(options, 23_600) == 20  # 92 steps an epoch: at least 20 epochs
