"""Train tab actions: start a fine-tuning run from a preset, follow it, cancel it, and serve
its checkpoint (pure Python; the process itself is managed by :mod:`app.training`)."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path

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
    "finished": "Finished.",
    "failed": "Failed.",
    "cancelled": "Cancelled.",
}


@dataclass(frozen=True)
class TrainingView:
    """What the Train tab shows: a status line, an epoch bar (HTML), the loss curve
    (``CURVE_COLUMNS``), the end of the trainer's output, and whether a checkpoint can be
    loaded."""

    state: str
    message: str
    progress_html: str
    curve: pd.DataFrame
    log_tail: str
    can_load: bool

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
    parts = [note] if note else []
    parts.append(_STATE_TEXT[status.state])
    if status.run_dir is not None:
        parts.append(f"Run directory: `{status.run_dir}`.")
    if status.history:
        last = status.history[-1]
        parts.append(f"Last epoch {status.epoch}: loss {float(last.get('loss', float('nan'))):.4f}.")
    if status.state == "failed":
        parts.append(f"The trainer exited with code {status.returncode}; see its output below.")
    if status.state == "finished":
        parts.append(
            "Checkpoint ready: press **Load trained prior**."
            if status.best_checkpoint
            else "The run wrote no `checkpoints/best`."
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
    )


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
        self._description = ""  # what the current/last run is, shown with its status

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
        note = f"{OBJECTIVES[objective]}, {int(epochs)} epoch(s), label fraction {float(label_fraction):g}"
        if csv is not None:
            note += f", on {csv.name}: {check_observations_csv(csv)}"
        run_dir = self.runs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{objective}"
        status = self.manager.start(request.command(self.python, run_dir), run_dir, request.epochs)
        self._description = f"{note}."
        return view_of(status, note=self._description)

    def status(self) -> TrainingView:
        return view_of(self.manager.status(), note=self._description)

    def cancel(self) -> TrainingView:
        return view_of(self.manager.cancel(), note=self._description)

    def load_trained(self) -> str:
        """Serve the finished run's best checkpoint; returns a message.

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
