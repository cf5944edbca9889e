"""Training presets of the Train tab -> a ``python -m train finetune`` command line.

Objectives:

* ``sup-only``: the location encoder trained from scratch on the labels (preset ``sup-only``,
  with the chosen position encoding);
* ``csp-finetune``: start from the loaded model's CSP pre-trained encoder (``--init-from``);
  the encoding is the pre-trained one;
* ``csp-linear-probe``: the same, but only the class head is trained (encoder frozen).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from csp.datasets import read_csv
from csp.encodings import list_encodings

OBJECTIVES = {
    "sup-only": "Sup. only: train from scratch",
    "csp-finetune": "CSP: fine-tune the pre-trained encoder",
    "csp-linear-probe": "CSP: linear probe (frozen pre-trained encoder)",
}
ENCODINGS = tuple(list_encodings())  # the registry is the one list
LABEL_FRACTIONS = (0.05, 0.1, 0.2, 1.0)
MAX_EPOCHS = 100


@dataclass(frozen=True)
class TrainRequest:
    """One fine-tuning run asked for in the UI.

    Attributes:
        objective: a key of ``OBJECTIVES``.
        encoding: position encoding (used by ``sup-only``).
        label_fraction: fraction of the training labels used, in (0, 1].
        epochs: number of epochs, 1..``MAX_EPOCHS``.
        csv: observations CSV (lat, lon, label); None for the bundled species data.
        init_from: pre-trained CSP checkpoint (required by the CSP objectives).
    """

    objective: str
    encoding: str
    label_fraction: float
    epochs: int
    csv: Path | None = None
    init_from: Path | None = None

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; choose one of {list(OBJECTIVES)}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {self.encoding!r}; choose one of {list(ENCODINGS)}")
        if not (math.isfinite(self.label_fraction) and 0.0 < self.label_fraction <= 1.0):
            raise ValueError(f"label fraction must be in (0, 1], got {self.label_fraction}")
        if int(self.epochs) != self.epochs or not 1 <= self.epochs <= MAX_EPOCHS:
            raise ValueError(f"epochs must be a whole number in [1, {MAX_EPOCHS}], got {self.epochs}")
        if self.objective != "sup-only" and self.init_from is None:
            raise ValueError(
                f"{OBJECTIVES[self.objective]!r} needs a CSP pre-trained encoder, and the loaded "
                "model has none (no csp/ checkpoint in its directory); choose 'Sup. only'"
            )

    def command(self, python: str, run_dir: Path) -> list[str]:
        """The argv of the trainer writing to ``run_dir``."""
        argv = [python, "-m", "train", "finetune", "--out", str(run_dir), "--no-progress"]
        argv += ["--epochs", str(int(self.epochs)), "--label-fraction", repr(float(self.label_fraction))]
        if self.objective == "sup-only":
            argv += ["--preset", "sup-only", "--encoding", self.encoding]
        else:
            argv += ["--preset", "finetune", "--init-from", str(self.init_from)]
            if self.objective == "csp-linear-probe":
                argv += ["--set", "freeze_encoder=true"]
        if self.csv is not None:
            argv += ["--csv", str(self.csv)]
        return argv


def check_observations_csv(path: Path) -> str:
    """Read an uploaded observations CSV now, so errors show before a run starts.

    Returns a one-line summary ("N observations of C classes").

    Raises:
        ValueError / FileNotFoundError: from :func:`csp.datasets.read_csv` (file and line
            named), or if there is no label column or fewer than two classes.
    """
    records = read_csv(path)
    if records.labels is None or not records.class_names:
        raise ValueError(f"{Path(path).name}: needs a label column (label, species or class)")
    if len(records.class_names) < 2:
        raise ValueError(f"{Path(path).name}: needs at least two classes to train a prior")
    return f"{len(records)} observations of {len(records.class_names)} classes"
