"""How a training run ends (train/lifecycle.py, recorded in the run directory's status):
failed with its error, cancelled by a signal, cancelled because the parent that started it died."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from csp.checkpoint import load_checkpoint
from csp.run_dir import RunDir, pid_alive
from tests.synthetic import write_species_csv
from tests.train.test_interrupt import _command
from train.config import FinetuneConfig, load_config
from train.finetune import run_finetune
from train.lifecycle import PARENT_PID_ENV

ROOT = Path(__file__).resolve().parents[2]


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _small_config(tmp_path: Path, csv: Path, out: Path, epochs: int = 2) -> FinetuneConfig:
    return load_config(
        FinetuneConfig,
        "sup-only",
        [
            f"data.csv={csv}",
            "data.clean=false",
            f"runtime.out_dir={out}",
            f"optim.epochs={epochs}",
            "optim.batch_size=64",
            "runtime.progress=false",
            "model.hidden_dim=64",
        ],
    )


def test_a_run_that_raises_records_failed_with_the_error(tmp_path):
    missing = tmp_path / "missing.csv"
    config = _small_config(tmp_path, missing, tmp_path / "run")
    with pytest.raises(FileNotFoundError):
        run_finetune(config)
    status = RunDir(tmp_path / "run").read_status()
    assert status.state == "failed" and "missing.csv" in status.error
    assert status.error.startswith("FileNotFoundError")


def test_a_run_refused_for_an_existing_directory_leaves_its_status_alone(tmp_path):
    run = RunDir(tmp_path / "run")
    run.prepare({}, resume=False)
    run.append_metrics({"epoch": 1, "loss": 1.0})
    before = run.write_status("completed", 1, 1)
    config = _small_config(tmp_path, write_species_csv(tmp_path / "s.csv", per_species=20), run.root)
    with pytest.raises(FileExistsError):
        run_finetune(config)
    assert run.read_status() == before


@pytest.mark.slow
def test_sigterm_records_cancelled_and_the_saved_checkpoint_loads(tmp_path):
    csv = write_species_csv(tmp_path / "species.csv", per_species=2000)
    run = RunDir(tmp_path / "run")
    command = _command(csv, run.root)
    command[command.index("4")] = "50"  # --epochs 50: still running when cancelled
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(lambda: run.best.is_dir(), 240, "the first checkpoint")
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 143, output[-2000:]
    assert "cancelled: stopped by SIGTERM" in output and "Traceback" not in output
    assert "epoch 1/50: loss" in output  # one line per epoch without progress bars
    status = run.read_status()
    assert status.state == "cancelled" and status.error == "stopped by SIGTERM" and status.epoch >= 1
    load_checkpoint(run.best)


# A stand-in for the app: starts the trainer as the app does, then waits to be killed.
PARENT = textwrap.dedent(
    f"""
    import os, subprocess, sys, time
    env = dict(os.environ)
    env[{PARENT_PID_ENV!r}] = str(os.getpid())
    child = subprocess.Popen(sys.argv[1:], env=env, start_new_session=True)
    print(child.pid, flush=True)
    time.sleep(600)
    """
)


@pytest.mark.slow
def test_a_trainer_ends_within_seconds_of_its_parent_being_killed(tmp_path):
    csv = write_species_csv(tmp_path / "species.csv", per_species=2000)
    run = RunDir(tmp_path / "run")
    command = _command(csv, run.root)
    command[command.index("4")] = "50"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, *command], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    trainer = int(parent.stdout.readline())
    _wait_for(lambda: run.status_file.exists(), 120, "the trainer to start")
    parent.kill()
    parent.wait()
    killed = time.monotonic()
    _wait_for(lambda: not pid_alive(trainer), 15, "the orphaned trainer to end")
    assert time.monotonic() - killed < 15
    status = run.read_status()
    assert status.state == "cancelled" and f"parent process {parent.pid}" in status.error
    assert json.loads(run.status_file.read_text())["state"] == "cancelled"
