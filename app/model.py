"""The predictor the app serves, and swapping in a newly trained location prior.

The app holds one :class:`ModelSlot`; handlers read ``slot.predictor`` once per request, and
:meth:`ModelSlot.load_prior` replaces it atomically (a plain reference swap), so a request in
flight finishes on the model it started with.
"""

from __future__ import annotations

import threading
from pathlib import Path

from csp.predictor import CSP_DIR, LINK_FILE, Predictor


class ModelSlot:
    """The current predictor and the model directory it was loaded from.

    Args:
        predictor: the model served at start.
        model_dir: its directory (``prior/``, optional ``csp/`` and species link), or None
            for a predictor built in memory.
    """

    def __init__(self, predictor: Predictor, model_dir: Path | None = None) -> None:
        self._predictor = predictor
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.prior_source: Path | None = self.model_dir
        self._lock = threading.Lock()

    @property
    def predictor(self) -> Predictor:
        return self._predictor

    @property
    def csp_checkpoint(self) -> Path | None:
        """The pre-trained CSP checkpoint of the model directory (for fine-tuning), if any."""
        if self.model_dir is None or not (self.model_dir / CSP_DIR).is_dir():
            return None
        return self.model_dir / CSP_DIR

    def load_prior(self, checkpoint_dir: Path) -> Predictor:
        """Serve the location prior in ``checkpoint_dir`` (a fine-tuned LocationEncoder).

        The image encoder, the pre-trained CSP model (image -> location) and the species link
        file of the current model directory are kept; the link is re-resolved against the new
        class names, so only classes present in the new prior are re-weighted.

        Raises:
            CheckpointError: if the directory is not a location-prior checkpoint.
        """
        with self._lock:
            link_file = self.model_dir / LINK_FILE if self.model_dir is not None else None
            self._predictor = self._predictor.with_prior(checkpoint_dir, link_file)
            self.prior_source = Path(checkpoint_dir)
            return self._predictor
