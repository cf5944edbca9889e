"""CSP: Contrastive Spatial Pre-training for geo-aware vision.

Locations are ``(lon, lat)`` in degrees, shape ``(..., 2)``, everywhere in this package.

``csp.from_pretrained("default" | PATH)`` loads a trained model as a
:class:`csp.predictor.Predictor` and ``csp.save_pretrained(model, DIR)`` writes one (see
:mod:`csp.hub`). They are imported on first use, so ``import csp`` stays fast (no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {"from_pretrained": "csp.hub", "save_pretrained": "csp.hub", "Predictor": "csp.predictor"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'csp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
