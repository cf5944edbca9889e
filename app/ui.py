"""The Gradio interface: four tabs wired to :mod:`app.handlers` and :mod:`app.train_handlers`.

Every action is a named API endpoint (``gradio_client``): ``/prior``, ``/search_classes``,
``/range``, ``/range_export``, ``/photo_location``, ``/classify``, ``/where``,
``/train_start``, ``/train_status``, ``/train_cancel``, ``/train_load``. Map clicks and map
redraws are private events that call the same handlers. Nothing here keeps module-level
state: everything is created inside :func:`build_app` and reached through closures.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from app.countries import CountryLookup
from app.handlers import (
    GEO_COLUMNS,
    MOVED_COLUMNS,
    PLACE_COLUMNS,
    PRIOR_COLUMNS,
    SCORE_COLUMNS,
    Handlers,
    PriorView,
    click_to_lonlat,
    format_location,
)
from app.maps import MapLayers, map_component, render_map_page
from app.model import ModelSlot
from app.presets import ENCODINGS, LABEL_FRACTIONS, MAX_EPOCHS, OBJECTIVES
from app.static import REPO_ROOT, StaticAssets, register_static_paths
from app.train_handlers import TrainingHandlers, TrainingView, empty_curve
from app.training import TrainingManager, app_training_manager
from csp.predictor import Predictor

CHOSEN_LOCATION = "Location chosen on the map or typed (not read from the photo)."
MODEL_CONCURRENCY = "model"  # image encoder / global grids: one at a time on 2 cores
ONE_MODEL_JOB = {"concurrency_id": MODEL_CONCURRENCY, "concurrency_limit": 1}
SATELLITE_NOTE = (
    "The shipped default was pre-trained (CSP, self-supervised) on **satellite imagery**: "
    "chips of the NASA Blue Marble mosaic paired with their locations. It matches what a "
    "place looks like from space (land cover, climate, season), so an aerial or satellite "
    "view gives the most meaningful map; a ground-level photo is outside what it was "
    "trained on."
)
CSS = """
#prior-map, #photo-map, #where-map { border-radius: 8px; overflow: hidden; }
.csp-train-progress progress { width: 70%; height: 14px; vertical-align: middle; }
"""


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=columns)


def _push_layers(layers: dict[str, Any]) -> gr.HTML:
    """Private event: send layers (``MapLayers.to_props``) to a map component."""
    return gr.HTML(layers=layers)


def model_summary(slot: ModelSlot) -> str:
    """One line on the served model (shown at the top of the page)."""
    predictor = slot.predictor
    source = f"`{slot.prior_source}`" if slot.prior_source is not None else "(in memory)"
    parts = [
        f"**Model** {source}: location prior over {len(predictor.class_names):,} classes",
        f"{len(predictor.expert_range_species)} resting partly on expert ranges",
        "geo-aware photo classification " + ("on" if predictor.has_image_encoder else "off"),
        "image → location " + ("on" if predictor.has_image_to_location else "off"),
    ]
    return "; ".join(parts) + "."


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
        work_dir = Path(tempfile.mkdtemp(prefix="csp-app-"))
        atexit.register(shutil.rmtree, work_dir, ignore_errors=True)
    slot = ModelSlot(predictor, model_dir)
    handlers = Handlers(slot, CountryLookup(assets.countries), assets.blue_marble, Path(work_dir))
    if training is None:
        training = app_training_manager(REPO_ROOT)
    trainer = TrainingHandlers(training, slot, runs_dir or REPO_ROOT / "runs" / "app", python)
    map_page = render_map_page(assets)

    # --- adapters: handler results -> component values; user errors -> messages ----------

    def prior_result(view: PriorView, layers: dict) -> tuple:
        keep = MapLayers.from_props(layers).with_marker(view.layers.marker)
        message = f"**{view.location_text}** (lat, lon): {view.country or 'open water'}"
        return message, view.country or "open water", view.table, keep.to_props()

    def prior_from_text(text: str, k: float, layers: dict) -> tuple:
        """Location prior at a typed 'lat, lon' -> (message, country, top-k table)."""
        try:
            return prior_result(handlers.prior_at_text(text, int(k)), layers)
        except ValueError as err:
            return f"⚠️ {err}", "", _empty(PRIOR_COLUMNS), layers

    def prior_from_click(k: float, layers: dict, evt: gr.EventData) -> tuple:
        try:
            lon, lat = click_to_lonlat(evt.lat, evt.lon)
            view = handlers.prior_at(lon, lat, int(k))
        except ValueError as err:
            return "", f"⚠️ {err}", "", _empty(PRIOR_COLUMNS), layers
        return view.location_text, *prior_result(view, layers)

    def show_range(class_name: str | None, threshold: float, opacity: float, layers: dict) -> tuple:
        """Predicted range of a class -> summary (the map shows the heat-map)."""
        try:
            view = handlers.range_view(class_name or "", threshold, opacity)
        except ValueError as err:
            return f"⚠️ {err}", layers
        return view.summary, MapLayers.from_props(layers).with_heat(view.heat).to_props()

    def set_opacity(opacity: float, layers: dict) -> dict:
        return MapLayers.from_props(layers).with_opacity(opacity).to_props()

    def export_range(class_name: str | None, threshold: float) -> tuple[str, str]:
        """Range of a class as PNG over the basemap and as GeoJSON polygons (prior >= threshold)."""
        try:
            png, geojson = handlers.export_range(class_name or "", threshold)
        except ValueError as err:
            raise gr.Error(str(err)) from None
        return str(png), str(geojson)

    def search_classes(query: str, limit: int = 20) -> list[str]:
        """Class names of the location prior containing `query` (case-insensitive)."""
        return handlers.search_classes(query, limit)

    def photo_location(path: str | None) -> tuple:
        """EXIF GPS of a photo -> ('lat, lon' or '', message, the photo as it will be classified)."""
        try:
            found = handlers.photo_location(path)
        except ValueError as err:
            return "", f"⚠️ {err}", None
        return found.location_text, found.message, found.image

    def classify(path: str | None, location: str, layers: dict) -> tuple:
        """Image-only vs geo-aware top-5 at a 'lat, lon' location (empty: image-only)."""
        empty = (_empty(SCORE_COLUMNS), _empty(GEO_COLUMNS), _empty(MOVED_COLUMNS))
        if not path:
            return "Upload a photo first.", *empty, layers
        try:
            view = handlers.classify(path, location)
        except ValueError as err:
            return f"⚠️ {err}", *empty, MapLayers.from_props(layers).with_marker(None).to_props()
        new_layers = MapLayers.from_props(layers).with_marker(view.marker).to_props()
        return view.message, view.image_only, view.geo_aware, view.moved, new_layers

    def classify_at_typed(path: str | None, location: str, layers: dict) -> tuple:
        return CHOSEN_LOCATION, *classify(path, location, layers)

    def classify_from_click(path: str | None, layers: dict, evt: gr.EventData) -> tuple:
        try:
            lon, lat = click_to_lonlat(evt.lat, evt.lon)
        except ValueError as err:
            empty = (_empty(SCORE_COLUMNS), _empty(GEO_COLUMNS), _empty(MOVED_COLUMNS))
            return "", CHOSEN_LOCATION, f"⚠️ {err}", *empty, layers
        text = format_location(lon, lat)
        return text, CHOSEN_LOCATION, *classify(path, text, layers)

    def where(path: str | None, n_places: float, layers: dict) -> tuple:
        """Where could this photo be: message and top places (the map shows the heat-map)."""
        if not path:
            return "Upload a photo first.", _empty(PLACE_COLUMNS), layers
        try:
            view = handlers.where(path, int(n_places))
        except ValueError as err:
            return f"⚠️ {err}", _empty(PLACE_COLUMNS), MapLayers().to_props()
        return view.message, view.places, MapLayers(view.photo_marker, view.heat).to_props()

    def train_outputs(view: TrainingView) -> tuple:
        return view.message, view.progress_html, view.curve, view.log_tail

    def train_start(
        objective: str, encoding: str, label_fraction: float, epochs: float, data: str, csv: str | None
    ) -> tuple:
        """Start fine-tuning in a separate process -> (status, epoch bar, loss curve, log).

        A bad preset or CSV, or a run already in progress, is an error with the reason."""
        try:
            if data == "uploaded CSV" and not csv:
                raise ValueError("upload a CSV with lat, lon and label columns, or use the bundled data")
            view = trainer.start(
                objective, encoding, label_fraction, int(epochs), csv if data == "uploaded CSV" else None
            )
        except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
            raise gr.Error(str(err)) from None
        return train_outputs(view)

    def train_status() -> tuple:
        """Status of the current or last training run."""
        return train_outputs(trainer.status())

    def train_cancel() -> tuple:
        """Cancel the training run in progress."""
        return train_outputs(trainer.cancel())

    def train_load() -> tuple:
        """Serve the finished run's checkpoint in every tab -> (message, model line)."""
        try:
            message = trainer.load_trained()
        except ValueError as err:
            return f"⚠️ {err}", model_summary(slot)
        return message, model_summary(slot)

    def train_poll() -> tuple:
        """Private: status and the refresh timer from one snapshot (on while a run is going)."""
        view = trainer.status()
        return (*train_outputs(view), gr.Timer(active=view.running))

    def refreshed_class_picker() -> gr.Dropdown:
        return gr.Dropdown(choices=handlers.class_choices(), value=None)

    # --- layout and events ----------------------------------------------------------------

    # delete_cache: every hour, drop uploaded photos (they carry GPS) older than an hour.
    with gr.Blocks(
        title="CSP: geo-aware vision", analytics_enabled=False, delete_cache=(3600, 3600)
    ) as demo:
        gr.Markdown(
            "# CSP: where is it likely, and what is it?\n"
            "Location priors and geo-aware classification with a Contrastive Spatial "
            "Pre-training (CSP) location encoder. Everything runs on this server, offline."
        )
        model_line = gr.Markdown(model_summary(slot), label="Model", elem_id="model-line")

        with gr.Tab("Map: location prior", id="map"):
            layers_map = gr.State(MapLayers().to_props())
            with gr.Row():
                with gr.Column(scale=3):
                    map_prior = map_component(map_page, "prior-map")
                    gr.Markdown(
                        "Click the map, or type a location, to list the classes the prior "
                        "expects there. Priors marked *expert range* rest partly on "
                        "pseudo-presences sampled inside native ranges, not only on observations."
                    )
                with gr.Column(scale=2):
                    location = gr.Textbox(
                        label="Location (lat, lon)",
                        placeholder="48.8566, 2.3522  or  48°51'N 2°21'E, then Enter",
                        elem_id="prior-location",
                    )
                    top_k = gr.Slider(3, 25, value=10, step=1, label="Classes to list")
                    prior_message = gr.Markdown(label="Location", elem_id="prior-message")
                    country = gr.Textbox(label="Country", interactive=False, elem_id="prior-country")
                    prior_table = gr.Dataframe(
                        _empty(PRIOR_COLUMNS),
                        label="Location prior (probability of being observed here)",
                        interactive=False,
                        elem_id="prior-table",
                    )
            with gr.Row():
                with gr.Column(scale=2):
                    range_class = gr.Dropdown(
                        choices=handlers.class_choices(),
                        value=None,
                        filterable=True,
                        allow_custom_value=True,  # validated by the handler; classes change on reload
                        label="Predicted range of a class (type to search)",
                        elem_id="range-class",
                    )
                    range_summary = gr.Markdown(label="Range summary", elem_id="range-summary")
                with gr.Column(scale=1):
                    threshold = gr.Slider(0.0, 0.95, value=0.1, step=0.05, label="Threshold (hide below)")
                    opacity = gr.Slider(0.0, 1.0, value=0.75, step=0.05, label="Heat-map opacity")
                with gr.Column(scale=1):
                    export_button = gr.Button("Export range: PNG + GeoJSON")
                    range_png = gr.File(
                        label="Range (PNG)", interactive=False, visible=False, elem_id="range-png"
                    )
                    range_geojson = gr.File(
                        label="Range (GeoJSON polygons)",
                        interactive=False,
                        visible=False,
                        elem_id="range-geojson",
                    )

        with gr.Tab("Photo: geo-aware classification", id="photo"):
            layers_photo = gr.State(MapLayers().to_props())
            with gr.Row():
                with gr.Column(scale=2):
                    photo = gr.File(
                        label="Photo (JPEG, PNG or WebP)",
                        file_types=[".jpg", ".jpeg", ".png", ".webp"],
                        type="filepath",
                        elem_id="photo",
                    )
                    preview = gr.Image(label="As classified", interactive=False, height=220, type="pil")
                    photo_location_box = gr.Textbox(
                        label="Location (lat, lon): from EXIF GPS, a map click, or typed",
                        elem_id="photo-location",
                    )
                    gps_message = gr.Markdown(label="GPS message", elem_id="photo-gps")
                with gr.Column(scale=3):
                    map_photo = map_component(map_page, "photo-map", height=360)
            classify_message = gr.Markdown(label="Classification message", elem_id="classify-message")
            with gr.Row():
                image_only = gr.Dataframe(
                    _empty(SCORE_COLUMNS), label="Image only: top 5", interactive=False, elem_id="image-only"
                )
                geo_aware = gr.Dataframe(
                    _empty(GEO_COLUMNS), label="Geo-aware: top 5", interactive=False, elem_id="geo-aware"
                )
            moved = gr.Dataframe(
                _empty(MOVED_COLUMNS),
                label="Classes the location moved",
                interactive=False,
                elem_id="moved",
            )

        with gr.Tab("Where could this be?", id="where"):
            layers_where = gr.State(MapLayers().to_props())
            gr.Markdown(SATELLITE_NOTE)
            with gr.Row():
                with gr.Column(scale=1):
                    where_photo = gr.File(
                        label="Image (JPEG, PNG or WebP)",
                        file_types=[".jpg", ".jpeg", ".png", ".webp"],
                        type="filepath",
                        elem_id="where-photo",
                    )
                    n_places = gr.Slider(1, 10, value=5, step=1, label="Places to list")
                    where_message = gr.Markdown(label="Where message", elem_id="where-message")
                    places = gr.Dataframe(
                        _empty(PLACE_COLUMNS), label="Top places", interactive=False, elem_id="places"
                    )
                with gr.Column(scale=2):
                    map_where = map_component(map_page, "where-map")

        with gr.Tab("Train", id="train"):
            gr.Markdown(
                "Fine-tune a location prior with the bundled trainer (`python -m train "
                "finetune`), in a separate process. One run at a time; the run keeps going "
                "if you reload the page. Runs are written under `runs/app/`."
            )
            with gr.Row():
                with gr.Column():
                    objective = gr.Radio(
                        [(label, key) for key, label in OBJECTIVES.items()],
                        value="sup-only",
                        label="Objective",
                    )
                    encoding = gr.Dropdown(
                        list(ENCODINGS), value="sphereC+", label="Position encoding (Sup. only)"
                    )
                    label_fraction = gr.Radio(
                        list(LABEL_FRACTIONS), value=1.0, label="Label fraction (few-shot)"
                    )
                    epochs = gr.Slider(1, MAX_EPOCHS, value=5, step=1, label="Epochs", elem_id="train-epochs")
                    data = gr.Radio(
                        ["bundled species data", "uploaded CSV"], value="bundled species data", label="Data"
                    )
                    csv_file = gr.File(
                        label="Observations CSV (lat, lon, label)",
                        file_types=[".csv"],
                        height=110,
                        type="filepath",
                        elem_id="train-csv",
                    )
                    with gr.Row():
                        start_button = gr.Button("Start training", variant="primary")
                        cancel_button = gr.Button("Cancel", variant="stop")
                        refresh_button = gr.Button("Refresh")
                        load_button = gr.Button("Load trained prior")
                with gr.Column():
                    train_message = gr.Markdown(label="Training status", elem_id="train-message")
                    train_progress = gr.HTML(
                        label="Epoch progress", js_on_load=None, elem_id="train-progress"
                    )
                    loss_curve = gr.LinePlot(
                        empty_curve(),
                        x="epoch",
                        y="loss",
                        title="Training loss",
                        y_axis_format=".3~f",
                        height=260,
                    )
                    train_log = gr.Textbox(label="Trainer output", lines=8, max_lines=8, autoscroll=True)
            timer = gr.Timer(1.0, active=False)

        # Map tab
        map_prior.select(
            prior_from_click,
            [top_k, layers_map],
            [location, prior_message, country, prior_table, layers_map],
            api_visibility="private",
        )
        prior_outputs = [prior_message, country, prior_table, layers_map]
        location.submit(prior_from_text, [location, top_k, layers_map], prior_outputs, api_name="prior").then(
            _push_layers, layers_map, map_prior, api_visibility="private"
        )
        top_k.release(prior_from_text, [location, top_k, layers_map], prior_outputs, api_visibility="private")
        gr.api(search_classes, api_name="search_classes")
        range_inputs = [range_class, threshold, opacity, layers_map]
        range_class.change(
            show_range,
            range_inputs,
            [range_summary, layers_map],
            api_name="range",
            **ONE_MODEL_JOB,
        ).then(_push_layers, layers_map, map_prior, api_visibility="private")
        threshold.release(
            show_range,
            range_inputs,
            [range_summary, layers_map],
            api_visibility="private",
            **ONE_MODEL_JOB,
        ).then(_push_layers, layers_map, map_prior, api_visibility="private")
        opacity.release(set_opacity, [opacity, layers_map], layers_map, api_visibility="private").then(
            _push_layers, layers_map, map_prior, api_visibility="private"
        )
        export_button.click(
            export_range,
            [range_class, threshold],
            [range_png, range_geojson],
            api_name="range_export",
            **ONE_MODEL_JOB,
        ).success(
            lambda: (gr.File(visible=True), gr.File(visible=True)),
            None,
            [range_png, range_geojson],
            api_visibility="private",
        )

        # Photo tab
        classify_outputs = [classify_message, image_only, geo_aware, moved, layers_photo]
        photo.upload(
            photo_location, photo, [photo_location_box, gps_message, preview], api_name="photo_location"
        ).then(
            classify,
            [photo, photo_location_box, layers_photo],
            classify_outputs,
            api_name="classify",
            **ONE_MODEL_JOB,
        ).then(_push_layers, layers_photo, map_photo, api_visibility="private")
        photo_location_box.submit(
            classify_at_typed,
            [photo, photo_location_box, layers_photo],
            [gps_message, *classify_outputs],
            api_visibility="private",
            **ONE_MODEL_JOB,
        ).then(_push_layers, layers_photo, map_photo, api_visibility="private")
        map_photo.select(
            classify_from_click,
            [photo, layers_photo],
            [photo_location_box, gps_message, *classify_outputs],
            api_visibility="private",
            **ONE_MODEL_JOB,
        )
        photo.clear(
            lambda: ("", "", None, "", _empty(SCORE_COLUMNS), _empty(GEO_COLUMNS), _empty(MOVED_COLUMNS)),
            None,
            [photo_location_box, gps_message, preview, classify_message, image_only, geo_aware, moved],
            api_visibility="private",
        )

        # Where tab
        where_photo.upload(
            where,
            [where_photo, n_places, layers_where],
            [where_message, places, layers_where],
            api_name="where",
            **ONE_MODEL_JOB,
        ).then(_push_layers, layers_where, map_where, api_visibility="private")
        n_places.release(
            where,
            [where_photo, n_places, layers_where],
            [where_message, places, layers_where],
            api_visibility="private",
            **ONE_MODEL_JOB,
        ).then(_push_layers, layers_where, map_where, api_visibility="private")

        # Train tab
        train_view = [train_message, train_progress, loss_curve, train_log]
        poll_outputs = [*train_view, timer]
        start_button.click(
            train_start,
            [objective, encoding, label_fraction, epochs, data, csv_file],
            train_view,
            api_name="train_start",
        ).success(lambda: gr.Timer(active=True), None, timer, api_visibility="private")
        cancel_button.click(train_cancel, None, train_view, api_name="train_cancel").then(
            train_poll, None, poll_outputs, api_visibility="private"
        )
        refresh_button.click(train_status, None, train_view, api_name="train_status").then(
            train_poll, None, poll_outputs, api_visibility="private"
        )
        timer.tick(train_poll, None, poll_outputs, api_visibility="private")
        load_button.click(train_load, None, [train_message, model_line], api_name="train_load").then(
            refreshed_class_picker, None, range_class, api_visibility="private"
        )
        # A reloaded page re-attaches to a run in progress.
        demo.load(train_poll, None, poll_outputs, api_visibility="private")

    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo
