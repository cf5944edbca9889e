"""What the tabs share: the model-bound concurrency group, upload types, refusals (the map
component is :class:`app.tabs.mapview.MapView`)."""

from __future__ import annotations

import logging

import gradio as gr
import pandas as pd

from app.handlers import refusal

LOG = logging.getLogger("app")
MODEL_CONCURRENCY = "model"  # image encoder / global grids: one at a time on 2 cores
ONE_MODEL_JOB = {"concurrency_id": MODEL_CONCURRENCY, "concurrency_limit": 1}
"""Keyword arguments of every event that runs the model."""


def empty(columns: list[str]) -> pd.DataFrame:
    """A table with ``columns`` and no rows (what a table shows before and after a refusal)."""
    return pd.DataFrame(columns=columns)


def refuse(action: str, err: Exception) -> str:
    """Log a refused input as one line (no traceback) and return its message for the page."""
    LOG.warning("refused %s: %s", action, err)
    return refusal(err)


def refuse_loudly(action: str, err: Exception) -> gr.Error:
    """:func:`refuse` for events whose message is a Gradio error toast (raise the result)."""
    LOG.warning("refused %s: %s", action, err)
    return gr.Error(str(err), print_exception=False)
