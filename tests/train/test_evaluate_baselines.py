"""`python -m train evaluate` puts the prior, the network alone and every baseline in one table."""

from __future__ import annotations

import json

from tests.synthetic import SPECIES_CENTRES
from tests.train.test_trainer import _sup_only_config
from train.cli import main
from train.evaluate import format_comparison
from train.finetune import run_finetune


def test_evaluate_compares_the_prior_with_the_baselines_on_the_same_split(tmp_path, capsys):
    config = _sup_only_config(tmp_path, extra=["optim.epochs=3", "optim.batch_size=64", "optim.lr=0.01"])
    result = run_finetune(config)
    capsys.readouterr()  # the fine-tuning run's own output
    assert main(["evaluate", "--checkpoint", str(result.best_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    comparison = report["comparison"]
    assert comparison["points"] == report["points"] and comparison["classes"] == len(SPECIES_CENTRES)
    names = [row["name"] for row in comparison["rows"]]
    assert names == ["prior", "network alone", "class frequency", "KDE", "kNN"]
    assert comparison["strongest_baseline"] in names[2:]
    by_name = {row["name"]: row for row in comparison["rows"]}
    assert by_name["prior"]["mrr"] == report["location"]["mrr"]  # no prior.json: the network alone
    assert 0 < by_name["prior"]["nll"] and 0 <= by_name["prior"]["ece"] <= 100
    for row in comparison["rows"]:
        if row["name"] != comparison["strongest_baseline"]:
            low, high = row["delta_mrr"][1:]
            assert low <= row["delta_mrr"][0] <= high
    table = format_comparison(comparison)
    assert "| KDE | bandwidth" in table and "Δ MRR vs" in table
