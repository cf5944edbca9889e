"""Run a training command in a separate process and follow its progress.

One run at a time. The child writes a run directory (layout and status file:
:mod:`csp.run_dir`); the manager reads its status, metrics and output from there. The
manager is owned by the app, not by a browser session, so a reloaded page sees the run in
progress.

The trainer never outlives the app: it is started with ``CSP_PARENT_PID`` (see
:mod:`train.lifecycle`) and cancels itself within about a second of the app ending, even by
SIGKILL. An app restarted while a run is still alive (e.g. one started by an earlier app that
is stopping) re-attaches to it through its status file: it shows it, can cancel it, and refuses
a second run beside it.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from csp.run_dir import RunDir, TrainerStatus, pid_alive
from train.lifecycle import PARENT_PID_ENV

RunState = Literal["idle", "running", "completed", "failed", "cancelled"]
LOG_LINES = 40


def tail(path: Path, max_lines: int = LOG_LINES, max_chars: int = 4000) -> str:
    """The last ``max_lines`` lines (at most ``max_chars`` characters) of a text file, '' if
    missing; carriage returns (progress bars) start new lines."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 4 * max_chars))
            data = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    lines = [line for line in data.replace("\r", "\n").split("\n") if line.strip()]
    return "\n".join(lines[-max_lines:])[-max_chars:]


@dataclass(frozen=True)
class RunStatus:
    """Snapshot of the current (or last) run.

    Attributes:
        state: idle (no run yet), running, completed, failed, cancelled.
        run_dir: the run directory, None when idle.
        epochs: planned number of epochs.
        history: metrics records so far.
        returncode: the process exit code once it ended (None for a run this app did not
            start, or one still running).
        log_tail: the last lines of the process output.
        problem: why the metrics or status could not be read, if so.
        error: the trainer's recorded reason for failing or being cancelled.
        request: the Train-tab request that started the run (None if unknown).
    """

    state: RunState
    run_dir: Path | None = None
    epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    returncode: int | None = None
    log_tail: str = ""
    problem: str = ""
    error: str = ""
    request: dict[str, Any] | None = None

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
        """The run's best checkpoint once the run ended (completed, or cancelled or failed
        after saving one), else None."""
        if self.state in ("idle", "running") or self.run_dir is None:
            return None
        return RunDir(self.run_dir).best_checkpoint()


def _ended_state(record: TrainerStatus | None, returncode: int | None, cancelled: bool) -> RunState:
    """The state of a run whose process is gone: what the trainer recorded, else the exit."""
    if record is not None and record.ended:
        return record.state
    if cancelled:
        return "cancelled"
    return "completed" if returncode == 0 else "failed"


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
        self._run: RunDir | None = None
        self._epochs = 0
        self._cancelled = False

    def attach(self, runs_dir: Path) -> RunStatus:
        """Follow the newest run under ``runs_dir`` (a live one first) if none is followed yet:
        after a restart the app shows, and can cancel, the run an earlier app left."""
        with self._lock:
            if self._run is None:
                found = _newest_run(Path(runs_dir))
                if found is not None:
                    run, record = found
                    self._run, self._epochs = run, record.epochs
        return self.status()

    def start(
        self, command: Sequence[str], run_dir: Path, epochs: int, request: dict | None = None
    ) -> RunStatus:
        """Start ``command`` (argv list) writing to ``run_dir``; ``request`` (JSON-able) is kept
        in the run directory to show the run's settings again later.

        Raises:
            RuntimeError: if a run is still in progress (this app's, or one it re-attached to).
            FileExistsError: if ``run_dir`` already holds a run.
        """
        with self._lock:
            if self._live():
                raise RuntimeError(
                    f"a training run is already in progress ({self._run.root}); "
                    "wait for it or cancel it first"
                )
            run = RunDir(run_dir)
            if run.holds_run:
                raise FileExistsError(f"{run.root} already holds a run")
            run.root.mkdir(parents=True, exist_ok=True)
            if request is not None:
                run.write_request(request)
            env = {**os.environ, **self.env, PARENT_PID_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
            with open(run.log_file, "wb") as log:
                self._process = subprocess.Popen(
                    list(command),
                    cwd=self.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, cancelled as a whole
                )
            self._run, self._epochs, self._cancelled = run, int(epochs), False
            # Reap the child as soon as it exits, whether or not anyone polls (no zombie).
            threading.Thread(target=self._process.wait, daemon=True).start()
        return self.status()

    def _live(self) -> bool:
        """A run is in progress (call with the lock held)."""
        if self._process is not None:
            return self._process.poll() is None
        if self._run is None:
            return False
        try:
            record = self._run.read_status()
        except ValueError:
            return False
        return record is not None and record.alive()

    def status(self) -> RunStatus:
        """Current state, progress and output of the run."""
        with self._lock:
            process, run, epochs, cancelled = self._process, self._run, self._epochs, self._cancelled
        if run is None:
            return RunStatus("idle")
        problem = ""
        try:
            record = run.read_status()
        except ValueError as err:
            record, problem = None, str(err)
        returncode = process.poll() if process is not None else None
        error = record.error if record is not None else ""
        alive = returncode is None if process is not None else record is not None and record.alive()
        state: RunState = "running" if alive else _ended_state(record, returncode, cancelled)
        if not alive and process is None and not cancelled and not (record is not None and record.ended):
            error = "the trainer process ended without recording its end (killed?)"
        try:
            history = run.read_metrics()
        except ValueError as err:
            history, problem = [], str(err)
        return RunStatus(
            state=state,
            run_dir=run.root,
            epochs=epochs or (record.epochs if record is not None else 0),
            history=history,
            returncode=returncode,
            log_tail=tail(run.log_file),
            problem=problem,
            error=error,
            request=run.read_request(),
        )

    def cancel(self, timeout: float = 10.0) -> RunStatus:
        """Stop the run in progress (SIGTERM to its process group, SIGKILL after ``timeout`` s).

        Cancelling when nothing runs is a no-op.
        """
        with self._lock:
            process, run = self._process, self._run
            running = self._live()
            if running:
                self._cancelled = True
        if running and process is not None:
            _stop(process, timeout)  # outside the lock: status() of other sessions stays responsive
        elif running and run is not None:
            record = run.read_status()
            if record is not None:
                _stop_foreign(record, timeout)
        return self.status()

    def close(self) -> None:
        """Stop a run in progress that this app started (call at app exit)."""
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            self.cancel(timeout=5.0)


def _newest_run(runs_dir: Path) -> tuple[RunDir, TrainerStatus] | None:
    """The run under ``runs_dir`` that is alive, else the one whose status was written last."""
    found: list[tuple[RunDir, TrainerStatus]] = []
    for path in runs_dir.glob("*") if runs_dir.is_dir() else ():
        run = RunDir(path)
        try:
            record = run.read_status()
        except ValueError:
            continue
        if record is not None:
            found.append((run, record))
    if not found:
        return None
    return max(found, key=lambda item: (item[1].alive(), item[1].updated))


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


def _stop_foreign(record: TrainerStatus, timeout: float) -> None:
    """Stop a trainer this process did not start (its process group when it leads one, as a
    trainer started by the app does)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not pid_alive(record.pid, record.pid_start):
            return
        try:
            if os.getpgid(record.pid) == record.pid:
                os.killpg(record.pid, sig)
            else:
                os.kill(record.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_alive(record.pid, record.pid_start):
            time.sleep(0.05)
