"""The run directory (csp/run_dir.py): layout, status file, metrics log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from csp.run_dir import RunDir, TrainerStatus, pid_alive


def test_status_round_trip_and_bad_files(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.read_status() is None and not run.holds_run and run.read_metrics() == []
    run.prepare({"optim": {"epochs": 3}}, resume=False)
    written = run.write_status("running", 1, 3, best_score=0.5)
    assert run.read_status() == written and written.pid == os.getpid()
    assert written.alive() and not written.ended
    run.append_metrics({"epoch": 1, "loss": 2.0})
    assert run.holds_run and run.epochs_logged() == 1
    with pytest.raises(FileExistsError, match="already holds a run"):
        run.prepare({}, resume=False)
    run.prepare({}, resume=True)
    run.write_status("failed", 1, 3, error="ValueError: bad")
    assert run.read_status().error == "ValueError: bad" and not run.completed()
    run.status_file.write_text('{"state": "exploded"}')
    with pytest.raises(ValueError, match="not a run status"):
        run.read_status()
    run.status_file.write_text("{")
    with pytest.raises(ValueError, match="not JSON"):
        run.read_status()
    assert not run.completed()  # unreadable is not completed


def test_a_dead_or_reused_pid_is_not_alive(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid)
    record = TrainerStatus("running", 0, 1, os.getpid(), pid_start=1)  # our pid, another start
    assert not record.alive() or not Path("/proc").is_dir()
    assert not TrainerStatus("completed", 1, 1, os.getpid()).alive()


def test_truncate_metrics_drops_later_epochs_and_torn_lines(tmp_path):
    run = RunDir(tmp_path)
    run.metrics.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n{"epo')
    run.truncate_metrics(2)
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2]
