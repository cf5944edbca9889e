"""The run directory of one training run: the one home of its layout and of its status file.

Layout (every name below is spelled only in this module)::

    config.yaml        the resolved configuration, written when the run starts
    metrics.jsonl      one JSON object per epoch (epoch, step, loss, loss terms, validation, lr,
                       seconds), appended and fsynced as each epoch ends
    status.json        :class:`TrainerStatus`: state, epoch, epochs, pid (and error): for UIs to poll
    stdout.log         the trainer's output, when the app started it
    request.json       the app's Train-tab request (shown again after a page reload)
    checkpoints/       epoch-NNNN/ (csp checkpoint + train_state.pt), ``last`` and ``best`` links
    tensorboard/       TensorBoard events (only if TensorBoard is installed)

States of ``status.json``: ``running`` while the trainer works, then exactly one of
``completed``, ``failed`` (with the error), ``cancelled`` (SIGTERM/SIGINT, or the app that
started it went away). A trainer killed with SIGKILL cannot write its end, so a reader checks
:meth:`TrainerStatus.alive` before believing ``running``.

The trainer (``train/``) writes run directories; the app and :mod:`csp.hub` read them. This
module imports neither torch nor the trainer, so readers use it cheaply.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from csp._io import write_json_atomic, write_text_atomic

RunState = Literal["running", "completed", "failed", "cancelled"]
RUN_STATES: tuple[str, ...] = get_args(RunState)
ENDED_STATES = ("completed", "failed", "cancelled")
TRAIN_STATE = "train_state.pt"  # optimizer, schedule, RNG streams: inside each epoch-NNNN/


def process_start_ticks(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), or None when
    it cannot be read. With the pid it identifies a process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether process ``pid`` exists (and, where ``start_ticks`` is given and readable, is the
    same process that recorded it). A zombie counts as ended."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): existence is all we know
    if stat[stat.rindex(")") + 2 :].split()[0] == "Z":
        return False
    return start_ticks is None or process_start_ticks(pid) == start_ticks


@dataclass(frozen=True)
class TrainerStatus:
    """The content of ``status.json``.

    Attributes:
        state: running / completed / failed / cancelled.
        epoch: epochs completed when written (the epoch in progress is ``epoch + 1``).
        epochs: planned number of epochs.
        pid: the trainer's process id.
        pid_start: the trainer's start time in clock ticks (None where unknown), to tell the
            trainer from a later process that reuses its pid.
        error: why the run failed or was cancelled ("" otherwise).
        best_score: best validation score so far (None before the first validation).
        updated: Unix time of the write, seconds.
    """

    state: RunState
    epoch: int
    epochs: int
    pid: int
    pid_start: int | None = None
    error: str = ""
    best_score: float | None = None
    updated: float = 0.0

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES

    def alive(self) -> bool:
        """A ``running`` status whose trainer process still exists."""
        return self.state == "running" and pid_alive(self.pid, self.pid_start)

    @classmethod
    def from_json(cls, record: Any, where: str) -> TrainerStatus:
        if not isinstance(record, dict) or record.get("state") not in RUN_STATES:
            raise ValueError(f"{where}: not a run status (state must be one of {list(RUN_STATES)})")
        try:
            return cls(
                state=record["state"],
                epoch=int(record["epoch"]),
                epochs=int(record["epochs"]),
                pid=int(record["pid"]),
                pid_start=None if record.get("pid_start") is None else int(record["pid_start"]),
                error=str(record.get("error") or ""),
                best_score=None if record.get("best_score") is None else float(record["best_score"]),
                updated=float(record.get("updated", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{where}: bad run status field ({err})") from None


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


class RunDir:
    """The files of one run (see the module docstring).

    Args:
        root: the run directory (``runtime.out_dir`` / ``--out``).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.metrics = self.root / "metrics.jsonl"
        self.status_file = self.root / "status.json"
        self.log_file = self.root / "stdout.log"
        self.request = self.root / "request.json"
        self.checkpoints = self.root / "checkpoints"
        self.tensorboard = self.root / "tensorboard"
        self.last = self.checkpoints / "last"
        self.best = self.checkpoints / "best"

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def epoch_dir(self, epoch: int) -> Path:
        """Where the checkpoint after ``epoch`` completed epochs is written."""
        return self.checkpoints / f"epoch-{epoch:04d}"

    @property
    def holds_run(self) -> bool:
        """A run has started here (its metrics log exists): a new run must not reuse it."""
        return self.metrics.exists()

    # --- the trainer's side ---------------------------------------------------------------

    def prepare(self, config: dict[str, Any], resume: bool) -> None:
        """Create the directory and write ``config.yaml``.

        Raises:
            FileExistsError: it already holds a run and ``resume`` is False.
        """
        if not resume and self.holds_run:
            raise FileExistsError(
                f"run directory {self.root} already holds a run; pass --resume to continue it "
                "or choose another --out"
            )
        import yaml  # only the trainer writes the configuration

        self.checkpoints.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.config, yaml.safe_dump(config, sort_keys=False))

    def write_status(self, state: RunState, epoch: int, epochs: int, **extra: Any) -> TrainerStatus:
        """Atomically replace ``status.json``; ``extra``: ``error``, ``best_score``."""
        pid = os.getpid()
        start = process_start_ticks(pid)
        status = TrainerStatus(state, epoch, epochs, pid, start, updated=time.time(), **extra)
        write_json_atomic(self.status_file, asdict(status))
        return status

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one epoch's record to ``metrics.jsonl`` (fsynced)."""
        with open(self.metrics, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def truncate_metrics(self, epochs_done: int) -> None:
        """Drop log lines of epochs after the resumed checkpoint (they will be redone), and a
        line torn by a crash mid-write."""
        if not self.metrics.exists():
            return
        kept = []
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("epoch", 0) <= epochs_done:
                    kept.append(line)
            except json.JSONDecodeError:
                continue
        write_text_atomic(self.metrics, "".join(line + "\n" for line in kept))

    def prune(self) -> None:
        """Remove epoch directories no link points to, and staging directories left behind by a
        process killed while writing a checkpoint (one writer per run, so none is live here)."""
        keep = {p.resolve() for p in (self.last, self.best) if p.exists()}
        for path in [*self.checkpoints.glob("epoch-*"), *self.checkpoints.glob(".epoch-*")]:
            if path.resolve() not in keep and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)

    # --- the readers' side ------------------------------------------------------------------

    def read_status(self) -> TrainerStatus | None:
        """``status.json``, or None before the trainer wrote it.

        Raises:
            ValueError: the file is not a run status (file named).
        """
        try:
            text = self.status_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.status_file}: not JSON ({err.msg})") from None
        return TrainerStatus.from_json(record, str(self.status_file))

    def read_metrics(self) -> list[dict[str, Any]]:
        """See :func:`read_metrics`."""
        return read_metrics(self.metrics)

    def completed(self) -> bool:
        """The trainer finished this run (``status.json`` says ``completed``)."""
        try:
            status = self.read_status()
        except ValueError:
            return False
        return status is not None and status.state == "completed"

    def epochs_logged(self) -> int:
        """Number of epoch records in ``metrics.jsonl``."""
        return len(self.read_metrics())

    def best_checkpoint(self) -> Path | None:
        """``checkpoints/best`` if it exists (a cancelled run's best epoch so far included)."""
        return self.best if self.best.is_dir() else None

    def checkpoint_links(self) -> tuple[Path, Path]:
        """The run's named checkpoints in order of preference: ``best``, then ``last``."""
        return self.best, self.last

    def write_request(self, request: dict[str, Any]) -> None:
        write_json_atomic(self.request, request, indent=1)

    def read_request(self) -> dict[str, Any] | None:
        """``request.json`` as written by :meth:`write_request`, None if absent or unreadable."""
        try:
            record = json.loads(self.request.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return record if isinstance(record, dict) else None
