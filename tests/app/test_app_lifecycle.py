"""Nothing left running or stale: the scratch folders of dead servers (app/scratch.py), and a
Train-tab trainer that does not outlive an app killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from conftest import free_port
from gradio_client import Client, handle_file

from app.scratch import LOCK_FILE, SCRATCH_PREFIX, make_scratch, remove_stale_scratch
from csp.run_dir import RunDir, pid_alive

ROOT = Path(__file__).resolve().parents[2]

# Holds the lock of a scratch folder like a live server, until killed.
HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from app.scratch import make_scratch
    print(make_scratch(Path(sys.argv[1])), flush=True)
    time.sleep(600)
    """
)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_only_folders_of_dead_servers_are_removed(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        live = Path(holder.stdout.readline().strip())
        _age(live / LOCK_FILE, 60)
        ours = make_scratch(tmp_path)  # this process is alive too
        _age(ours / LOCK_FILE, 60)
        dead = tmp_path / f"{SCRATCH_PREFIX}dead"
        (dead / "uploads").mkdir(parents=True)
        (dead / "uploads" / "photo.jpg").write_bytes(b"GPS-tagged")
        (dead / LOCK_FILE).touch()  # its server held it; nobody does now
        _age(dead / LOCK_FILE, 60)
        legacy_young, legacy_old = tmp_path / f"{SCRATCH_PREFIX}young", tmp_path / f"{SCRATCH_PREFIX}old"
        legacy_young.mkdir()
        legacy_old.mkdir()
        _age(legacy_old, 2 * 3600)
        unrelated = tmp_path / "other-folder"
        unrelated.mkdir()
        assert sorted(remove_stale_scratch(tmp_path)) == sorted([dead, legacy_old])
        assert live.is_dir() and ours.is_dir() and legacy_young.is_dir() and unrelated.is_dir()
        holder.kill()
        holder.wait()
        assert remove_stale_scratch(tmp_path) == [live]  # the kernel released its lock
    finally:
        holder.kill()
        holder.wait()


def _serve(port: int, runs: Path, env: dict[str, str], model_dir: Path) -> subprocess.Popen:
    command = [sys.executable, "app.py", "--checkpoint", str(model_dir), "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--runs-dir", str(runs)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
            return server
        except OSError:
            assert server.poll() is None, server.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the app did not start"
            time.sleep(0.5)


def _trainer_status(runs: Path, timeout: float) -> tuple[RunDir, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in runs.glob("*"):
            status = RunDir(path).read_status()
            if status is not None and status.alive():
                return RunDir(path), status.pid
        time.sleep(0.1)
    raise AssertionError("no live trainer appeared")


@pytest.mark.slow
def test_a_trainer_does_not_outlive_an_app_killed_with_sigkill(tmp_path, app_model_dir):
    data = pd.read_csv(ROOT / "assets/data/yfcc_inat2017_species.csv")
    counts = data["label"].value_counts()
    csv = tmp_path / "obs.csv"
    data[data["label"].isin(sorted(counts[counts >= 10].index)[:100])].to_csv(csv, index=False)
    temp, runs = tmp_path / "tmp", tmp_path / "runs"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "OMP_NUM_THREADS": "1"}
    port = free_port()
    server = _serve(port, runs, env, app_model_dir)
    try:
        Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            "sup-only", "grid", 1.0, 100, "uploaded CSV", handle_file(csv), api_name="/train_start"
        )
        run, trainer = _trainer_status(runs, 120)
        (first_scratch,) = temp.glob(f"{SCRATCH_PREFIX}*")
        assert any((first_scratch / "uploads").rglob("obs.csv"))
        server.send_signal(signal.SIGKILL)
        server.wait()
        killed = time.monotonic()
        while pid_alive(trainer) and time.monotonic() - killed < 15:
            time.sleep(0.1)
        assert not pid_alive(trainer), "the trainer outlived the killed app by 15 s"
        status = run.read_status()
        assert status.state == "cancelled" and "parent process" in status.error, status
    finally:
        server.kill()
        server.wait()

    port = free_port()
    restarted = _serve(port, runs, env, app_model_dir)
    try:
        assert not first_scratch.exists()  # the dead server's uploads (GPS photos) are gone
        message = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(api_name="/train_status")[0]
        assert message.startswith("Sup. only") and "Cancelled." in message, message
        assert str(run.root) in message
    finally:
        restarted.terminate()
        restarted.wait(timeout=30)
    assert not list(temp.glob(f"{SCRATCH_PREFIX}*"))  # a normal exit removes its own folder
