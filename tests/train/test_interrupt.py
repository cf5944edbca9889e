"""A training run killed with SIGKILL mid-epoch and resumed ends with the same weights."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from csp.checkpoint import load_checkpoint
from tests.synthetic import write_species_csv

ROOT = Path(__file__).resolve().parents[2]


def _command(csv_path: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "train",
        "finetune",
        "--preset",
        "sup-only",
        "--out",
        str(out),
        "--csv",
        str(csv_path),
        "--epochs",
        "4",
        "--no-progress",
        "--set",
        "data.clean=false",
        "--set",
        "optim.batch_size=32",
        "--set",
        "model.encoding_kwargs={frequency_num: 8}",
        "--set",
        "model.hidden_dim=256",
        *extra,
    ]


def _epoch_running(out: Path) -> int:
    """Index of the epoch in progress, from the run's status file (-1 before it exists)."""
    try:
        return int(json.loads((out / "status.json").read_text())["epoch"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


def _epochs_logged(out: Path) -> int:
    log = out / "metrics.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path):
    csv_path = write_species_csv(tmp_path / "species.csv", per_species=2000)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    reference = subprocess.run(
        _command(csv_path, tmp_path / "ref"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert reference.returncode == 0, reference.stderr[-2000:]

    run = tmp_path / "killed"
    process = subprocess.Popen(
        _command(csv_path, run), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while _epoch_running(run) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # the third epoch (index 2) has just started
    process.wait(timeout=30)
    assert 2 <= _epochs_logged(run) < 4, "the kill must land before the run finished"
    assert json.loads((run / "status.json").read_text())["state"] == "running"
    load_checkpoint(run / "checkpoints" / "last")  # complete, never half-written

    resumed = subprocess.run(
        _command(csv_path, run, "--resume"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, _ = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last")
    b, _ = load_checkpoint(run / "checkpoints" / "last")
    for (key, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), key
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]
