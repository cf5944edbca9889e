"""The Gradio interface: a header naming the served model and four tabs (:mod:`app.tabs`).

Every action is a named API endpoint (``gradio_client``): ``/prior``, ``/search_classes``,
``/range``, ``/range_export``, ``/photo_location``, ``/classify``, ``/where``,
``/train_start``, ``/train_status``, ``/train_cancel``, ``/train_load``. Map clicks and map
redraws are private events that call the same handlers. Nothing here keeps module-level
state: everything is created inside :func:`build_app` and reached through closures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import gradio as gr

from app.countries import CountryLookup
from app.handlers import Handlers
from app.maps import render_map_page
from app.model import ModelSlot
from app.scratch import make_scratch
from app.static import REPO_ROOT, StaticAssets, register_static_paths
from app.tabs import map as map_tab
from app.tabs import photo as photo_tab
from app.tabs import train as train_tab
from app.tabs import where as where_tab
from app.train_handlers import TrainingHandlers
from app.training import TrainingManager, app_training_manager
from csp.predictor import Predictor

MODEL_LINE_REFRESH_S = 10.0
"""How often an open page re-reads which model is served (another session may load one)."""
CSS = """
#prior-map, #photo-map, #where-map { border-radius: 8px; overflow: hidden; }
.csp-train-progress progress { width: 70%; height: 14px; vertical-align: middle; }
"""


def build_app(
    predictor: Predictor,
    *,
    model_dir: Path | None = None,
    work_dir: Path | None = None,
    runs_dir: Path | None = None,
    training: TrainingManager | None = None,
    assets: StaticAssets | None = None,
    python: str = sys.executable,
) -> gr.Blocks:
    """Assemble the app around ``predictor``.

    Args:
        predictor: the model to serve.
        model_dir: the directory it came from (species link, CSP checkpoint for fine-tuning).
        work_dir: scratch folder for exported files; a temporary one removed at exit if None.
        runs_dir: parent folder of training runs (default ``<repo>/runs/app``).
        training: the trainer-process manager (default: one running in the repository root
            with one CPU thread, so the app stays responsive). Its owner must ``close()`` it.
        assets: map assets (default: :meth:`StaticAssets.locate`).
        python: interpreter used for ``python -m train``.

    Returns:
        the Blocks, with its queue configured; call ``.launch()`` on it.
    """
    assets = assets or StaticAssets.locate()
    register_static_paths(assets)
    if work_dir is None:
        work_dir = make_scratch()  # locked like the server's, removed at exit
    slot = ModelSlot(predictor, model_dir)
    handlers = Handlers(slot, CountryLookup(assets.countries), assets.blue_marble, Path(work_dir))
    if training is None:
        training = app_training_manager(REPO_ROOT)
    trainer = TrainingHandlers(training, slot, runs_dir or REPO_ROOT / "runs" / "app", python)
    map_page = render_map_page(assets)

    # delete_cache: every hour, drop uploaded photos (they carry GPS) older than an hour.
    with gr.Blocks(title="CSP: geo-aware vision", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# CSP: where is it likely, and what is it?\n"
            "Location priors and geo-aware classification with a Contrastive Spatial "
            "Pre-training (CSP) location encoder. Everything runs on this server, offline."
        )
        model_line = gr.Markdown(handlers.model_line(), label="Model", elem_id="model-line")
        with gr.Tab("Map: location prior", id="map"):
            map_parts = map_tab.build(handlers, map_page)
        with gr.Tab("Photo: geo-aware classification", id="photo"):
            photo_tab.build(handlers, map_page)
        with gr.Tab("Where could this be?", id="where"):
            where_tab.build(handlers, map_page)
        with gr.Tab("Train", id="train"):
            train_tab.build(
                demo, trainer, model_line, map_parts.range_class, handlers.model_line, handlers.class_choices
            )
        # Every page names the model served now: on load, and again while it stays open
        # (a trained prior loaded by any session is served to all of them).
        refresh = gr.Timer(MODEL_LINE_REFRESH_S)
        gr.on([demo.load, refresh.tick], handlers.model_line, None, model_line, api_visibility="private")

    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo
