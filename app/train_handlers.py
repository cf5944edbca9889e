"""Train tab actions: start a fine-tuning run from a preset, follow it, cancel it, and serve
its checkpoint (pure Python; the process itself is managed by :mod:`app.training`)."""

from __future__ import annotations

import html
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from app.model import ModelSlot
from app.presets import OBJECTIVES, TrainRequest, check_observations_csv
from app.training import RunStatus, TrainingManager

CURVE_COLUMNS = ["epoch", "loss"]


def empty_curve() -> pd.DataFrame:
    """A loss curve with no points yet (numeric columns, so the plot's axes are numeric)."""
    return pd.DataFrame({"epoch": pd.Series(dtype="int64"), "loss": pd.Series(dtype="float64")})


_STATE_TEXT = {
    "idle": "No training run yet.",
    "running": "Training…",
    "completed": "Finished.",
    "failed": "Failed.",
    "cancelled": "Cancelled.",
}


@dataclass(frozen=True)
class TrainingView:
    """What the Train tab shows: a status line, an epoch bar (HTML), the loss curve
    (``CURVE_COLUMNS``), the last lines of the trainer's output, whether a checkpoint can be
    loaded, and the settings of the run (``request``, to fill the form after a reload; None
    when idle or unknown)."""

    state: str
    message: str
    progress_html: str
    curve: pd.DataFrame
    log_tail: str
    can_load: bool
    request: TrainRequest | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"


def _progress_html(status: RunStatus) -> str:
    label = f"epoch {status.epoch} / {status.epochs}" if status.epochs else "no run"
    percent = round(100 * status.progress)
    return (
        f'<div class="csp-train-progress"><progress max="100" value="{percent}" '
        f'aria-label="training progress"></progress> <span>{html.escape(label)} ({percent}%)</span></div>'
    )


def view_of(status: RunStatus, note: str = "") -> TrainingView:
    """Format a :class:`RunStatus` for the tab (``note`` is prepended to the message)."""
    curve = pd.DataFrame(
        [
            [int(r["epoch"]), float(r["loss"])]
            for r in status.history
            if isinstance(r.get("epoch"), int | float) and isinstance(r.get("loss"), int | float)
        ],
        columns=CURVE_COLUMNS,
    ).astype({"epoch": "int64", "loss": "float64"})  # numeric even when empty: a numeric plot axis
    request = request_of(status)
    if not note and request is not None:
        note = describe(request) + "."
    parts = [note] if note else []
    parts.append(_STATE_TEXT[status.state])
    if status.run_dir is not None:
        parts.append(f"Run directory: `{status.run_dir}`.")
    if status.history:
        last = status.history[-1]
        parts.append(f"Last epoch {status.epoch}: loss {float(last.get('loss', float('nan'))):.4f}.")
    if status.error:
        parts.append(f"Reason: {status.error}.")
    if status.state == "failed" and status.returncode is not None:
        parts.append(f"The trainer exited with code {status.returncode}; see its output below.")
    if status.state == "completed" and status.best_checkpoint is None:
        parts.append("The run wrote no best checkpoint.")
    if status.best_checkpoint is not None:
        parts.append(
            "Checkpoint ready: press **Load trained prior**."
            if status.state == "completed"
            else f"Its best checkpoint so far (after epoch {status.epoch} or earlier) can be loaded."
        )
    if status.problem:
        parts.append(f"Progress unreadable: {status.problem}")
    return TrainingView(
        state=status.state,
        message=" ".join(parts),
        progress_html=_progress_html(status),
        curve=curve,
        log_tail=status.log_tail,
        can_load=status.best_checkpoint is not None,
        request=request_of(status),
    )


def request_of(status: RunStatus) -> TrainRequest | None:
    """The Train-tab request recorded with the run, None if absent or no longer valid."""
    if status.request is None:
        return None
    record = dict(status.request)
    try:
        for key in ("csv", "init_from"):
            record[key] = None if record.get(key) is None else Path(record[key])
        return TrainRequest(**record)
    except (TypeError, ValueError):
        return None


def request_record(request: TrainRequest) -> dict[str, Any]:
    """``request`` as JSON-able values (paths as strings), the inverse of :func:`request_of`."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(request).items()}


def describe(request: TrainRequest) -> str:
    """One line naming a run's settings (shown with its status)."""
    note = f"{OBJECTIVES[request.objective]}, {request.epochs} epoch(s)"
    note += f", label fraction {request.label_fraction:g}"
    return note + (f", on {request.csv.name}" if request.csv is not None else "")


class TrainingHandlers:
    """Start/follow/cancel one fine-tuning run and load its result into ``slot``.

    Args:
        manager: runs the trainer process.
        slot: the served model (its CSP checkpoint seeds the CSP objectives).
        runs_dir: parent of the run directories.
        python: interpreter that runs ``-m train``.
    """

    def __init__(self, manager: TrainingManager, slot: ModelSlot, runs_dir: Path, python: str) -> None:
        self.manager = manager
        self.slot = slot
        self.runs_dir = Path(runs_dir)
        self.python = python
        self.manager.attach(self.runs_dir)  # a run left by an earlier app, if any

    def start(
        self,
        objective: str,
        encoding: str,
        label_fraction: float,
        epochs: int,
        csv_path: str | None = None,
    ) -> TrainingView:
        """Validate the preset (and the uploaded CSV, if any) and start the trainer.

        Raises:
            ValueError: bad preset or CSV (message names the problem).
            RuntimeError: a run is already in progress.
        """
        csv = Path(csv_path) if csv_path else None
        request = TrainRequest(
            objective=objective,
            encoding=encoding,
            label_fraction=float(label_fraction),
            epochs=int(epochs),
            csv=csv,
            init_from=self.slot.csp_checkpoint,
        )
        summary = f": {check_observations_csv(csv)}" if csv is not None else ""
        run_dir = self.runs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{objective}"
        command = request.command(self.python, run_dir)
        status = self.manager.start(command, run_dir, request.epochs, request=request_record(request))
        return view_of(status, note=f"{describe(request)}{summary}.")

    def status(self) -> TrainingView:
        return view_of(self.manager.status())

    def cancel(self) -> TrainingView:
        return view_of(self.manager.cancel())

    def load_trained(self) -> str:
        """Serve the ended run's best checkpoint (a cancelled run's too); returns a message.

        Raises:
            ValueError: no finished run with a checkpoint, or an unreadable checkpoint.
        """
        checkpoint = self.manager.status().best_checkpoint
        if checkpoint is None:
            raise ValueError("no finished training run with a checkpoint to load")
        predictor = self.slot.load_prior(checkpoint)
        return (
            f"Now serving the prior trained in `{checkpoint.parent.parent}` "
            f"({len(predictor.class_names)} classes) in every tab."
        )
