"""Run a training command in a separate process and follow its progress.

One run at a time. The child writes a run directory; its progress is read from
``<run_dir>/metrics.jsonl`` (one JSON object per line, at least ``epoch`` and ``loss``), its
output goes to ``<run_dir>/stdout.log``. The manager is owned by the app, not by a browser
session, so a page that is reloaded attaches to the run in progress.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

RunState = Literal["idle", "running", "finished", "failed", "cancelled"]
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "stdout.log"
BEST_CHECKPOINT = Path("checkpoints") / "best"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl`` file, in order; [] if it does not exist yet.

    A last line without its newline is being written and is skipped.

    Raises:
        ValueError: naming the file and line, for a complete line that is not a JSON object.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = text.split("\n")[:-1]  # the part after the last newline is incomplete
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {number} is not JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}: line {number} is not a JSON object")
        records.append(record)
    return records


def tail(path: Path, max_chars: int = 2000) -> str:
    """The last ``max_chars`` characters of a text file ('' if missing)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 4 * max_chars))
            data = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return data[-max_chars:].replace("\r", "\n")


@dataclass(frozen=True)
class RunStatus:
    """Snapshot of the current (or last) run.

    Attributes:
        state: idle (no run yet), running, finished (exit 0), failed, cancelled.
        run_dir: the run directory, None when idle.
        epochs: planned number of epochs.
        history: metrics.jsonl records so far.
        returncode: the process exit code once it ended.
        log_tail: end of the process output.
        problem: why the metrics could not be read, if so.
    """

    state: RunState
    run_dir: Path | None = None
    epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    returncode: int | None = None
    log_tail: str = ""
    problem: str = ""

    @property
    def epoch(self) -> int:
        """Last completed epoch (0 before the first one)."""
        return max((int(r.get("epoch", 0)) for r in self.history), default=0)

    @property
    def progress(self) -> float:
        """Completed fraction in [0, 1]."""
        return 0.0 if self.epochs <= 0 else min(1.0, self.epoch / self.epochs)

    @property
    def best_checkpoint(self) -> Path | None:
        """``<run_dir>/checkpoints/best`` once the run finished and wrote it."""
        if self.state != "finished" or self.run_dir is None:
            return None
        path = self.run_dir / BEST_CHECKPOINT
        return path if path.is_dir() else None


class TrainingManager:
    """Starts, follows and cancels one training process at a time (thread-safe).

    Args:
        cwd: working directory of the child (the repository root, for ``python -m train``).
        env: extra environment variables for the child (e.g. ``OMP_NUM_THREADS``).
    """

    def __init__(self, cwd: Path, env: Mapping[str, str] | None = None) -> None:
        self.cwd = Path(cwd)
        self.env = dict(env or {})
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._run_dir: Path | None = None
        self._epochs = 0
        self._cancelled = False

    def start(self, command: Sequence[str], run_dir: Path, epochs: int) -> RunStatus:
        """Start ``command`` (argv list) writing to ``run_dir``.

        Raises:
            RuntimeError: if a run is still in progress.
            FileExistsError: if ``run_dir`` already holds metrics.
        """
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                raise RuntimeError(
                    f"a training run is already in progress ({self._run_dir}); wait for it or cancel it first"
                )
            run_dir = Path(run_dir)
            if (run_dir / METRICS_FILE).exists():
                raise FileExistsError(f"{run_dir} already holds a run")
            run_dir.mkdir(parents=True, exist_ok=True)
            with open(run_dir / LOG_FILE, "wb") as log:
                self._process = subprocess.Popen(
                    list(command),
                    cwd=self.cwd,
                    env={**os.environ, **self.env},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, cancelled as a whole
                )
            self._run_dir, self._epochs, self._cancelled = run_dir, int(epochs), False
            # Reap the child as soon as it exits, whether or not anyone polls (no zombie).
            threading.Thread(target=self._process.wait, daemon=True).start()
        return self.status()

    def status(self) -> RunStatus:
        """Current state, progress and output of the run."""
        with self._lock:
            process, run_dir = self._process, self._run_dir
            epochs, cancelled = self._epochs, self._cancelled
        if process is None or run_dir is None:
            return RunStatus("idle")
        returncode = process.poll()
        state: RunState
        if returncode is None:
            state = "running"
        elif cancelled:
            state = "cancelled"
        else:
            state = "finished" if returncode == 0 else "failed"
        problem = ""
        try:
            history = read_metrics(run_dir / METRICS_FILE)
        except ValueError as err:
            history, problem = [], str(err)
        return RunStatus(
            state=state,
            run_dir=run_dir,
            epochs=epochs,
            history=history,
            returncode=returncode,
            log_tail=tail(run_dir / LOG_FILE),
            problem=problem,
        )

    def cancel(self, timeout: float = 10.0) -> RunStatus:
        """Stop the run in progress (SIGTERM to its process group, SIGKILL after ``timeout`` s).

        Cancelling when nothing runs is a no-op.
        """
        with self._lock:
            process = self._process
            running = process is not None and process.poll() is None
            if running:
                self._cancelled = True
        if running:
            _stop(process, timeout)  # outside the lock: status() of other sessions stays responsive
        return self.status()

    def close(self) -> None:
        """Stop a run in progress (call at app exit)."""
        self.cancel(timeout=5.0)


def app_training_manager(cwd: Path) -> TrainingManager:
    """The app's manager: each child uses one torch thread (the server keeps the other core),
    and a run still in progress is stopped when the app exits."""
    manager = TrainingManager(cwd, env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    atexit.register(manager.close)
    return manager


def _stop(process: subprocess.Popen, timeout: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            continue
