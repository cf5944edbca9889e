"""Train tab: fine-tune a location prior in a separate process, follow it, cancel it, load it."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from app.presets import ENCODINGS, LABEL_FRACTIONS, MAX_EPOCHS, OBJECTIVES
from app.tabs.common import refuse, refuse_loudly
from app.train_handlers import TrainingHandlers, TrainingView, empty_curve

INTRO = (
    "Fine-tune a location prior with the bundled trainer (`python -m train finetune`), in a "
    "separate process. One run at a time; the run keeps going if you reload the page. Runs "
    "are written under `runs/app/`."
)
UPLOADED = "uploaded CSV"


def _form() -> tuple[gr.Radio, gr.Dropdown, gr.Radio, gr.Slider, gr.Radio, gr.File]:
    """The run's settings: objective, encoding, label fraction, epochs, data source, CSV."""
    objective = gr.Radio(
        [(label, key) for key, label in OBJECTIVES.items()],
        value="sup-only",
        label="Objective",
        elem_id="train-objective",
    )
    encoding = gr.Dropdown(
        list(ENCODINGS),
        value="sphereC+",
        label="Position encoding (Sup. only)",
        elem_id="train-encoding",
    )
    label_fraction = gr.Radio(
        list(LABEL_FRACTIONS), value=1.0, label="Label fraction (few-shot)", elem_id="train-fraction"
    )
    epochs = gr.Slider(1, MAX_EPOCHS, value=5, step=1, label="Epochs", elem_id="train-epochs")
    data = gr.Radio(
        ["bundled species data", UPLOADED],
        value="bundled species data",
        label="Data",
        elem_id="train-data",
    )
    csv_file = gr.File(
        label="Observations CSV (lat, lon, label)",
        file_types=[".csv"],
        height=110,
        type="filepath",
        elem_id="train-csv",
    )
    return objective, encoding, label_fraction, epochs, data, csv_file


def build(
    demo: gr.Blocks,
    trainer: TrainingHandlers,
    model_line: gr.Markdown,
    range_class: gr.Dropdown,
    model_line_text: Callable[[], str],
    class_choices: Callable[[], list[tuple[str, str]]],
) -> None:
    """Lay out the Train tab and wire its events (API: ``/train_start``, ``/train_status``,
    ``/train_cancel``, ``/train_load``). Loading a trained prior also updates ``model_line``
    (``model_line_text()``) and the Map tab's ``range_class`` picker (``class_choices()``); a
    page loaded in ``demo`` re-attaches to a run in progress."""
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column():
            objective, encoding, label_fraction, epochs, data, csv_file = _form()
            with gr.Row():
                start_button = gr.Button("Start training", variant="primary")
                cancel_button = gr.Button("Cancel", variant="stop")
                refresh_button = gr.Button("Refresh")
                load_button = gr.Button("Load trained prior")
        with gr.Column():
            train_message = gr.Markdown(label="Training status", elem_id="train-message")
            train_progress = gr.HTML(label="Epoch progress", js_on_load=None, elem_id="train-progress")
            loss_curve = gr.LinePlot(
                empty_curve(), x="epoch", y="loss", title="Training loss", y_axis_format=".3~f", height=260
            )
            train_log = gr.Textbox(
                label="Trainer output", lines=8, max_lines=8, autoscroll=True, elem_id="train-log"
            )
    timer = gr.Timer(1.0, active=False)

    def outputs(view: TrainingView) -> tuple:
        return view.message, view.progress_html, view.curve, view.log_tail

    def train_start(
        objective: str, encoding: str, label_fraction: float, epochs: float, data: str, csv: str | None
    ) -> tuple:
        """Start fine-tuning in a separate process -> (status, epoch bar, loss curve, log).

        A bad preset or CSV, or a run already in progress, is an error with the reason."""
        try:
            if data == UPLOADED and not csv:
                raise ValueError("upload a CSV with lat, lon and label columns, or use the bundled data")
            view = trainer.start(
                objective, encoding, label_fraction, int(epochs), csv if data == UPLOADED else None
            )
        except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
            raise refuse_loudly("training start", err) from None
        return outputs(view)

    def train_status() -> tuple:
        """Status of the current or last training run."""
        return outputs(trainer.status())

    def train_cancel() -> tuple:
        """Cancel the training run in progress."""
        return outputs(trainer.cancel())

    def train_load() -> tuple:
        """Serve the finished run's checkpoint in every tab -> (message, model line)."""
        try:
            message = trainer.load_trained()
        except ValueError as err:
            return refuse("training load", err), model_line_text()
        return message, model_line_text()

    def train_form() -> tuple:
        """Private, on page load: the form shows the settings of the current (or last) run, so
        a reload during a run does not fall back to the defaults."""
        request = trainer.status().request
        if request is None:
            return (gr.update(),) * 5
        source = UPLOADED if request.csv is not None else "bundled species data"
        return request.objective, request.encoding, request.label_fraction, request.epochs, source

    def train_poll() -> tuple:
        """Private: status and the refresh timer from one snapshot (on while a run is going)."""
        view = trainer.status()
        return (*outputs(view), gr.Timer(active=view.running))

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
        lambda: gr.Dropdown(choices=class_choices(), value=None), None, range_class, api_visibility="private"
    )
    demo.load(train_poll, None, poll_outputs, api_visibility="private")
    demo.load(train_form, None, [objective, encoding, label_fraction, epochs, data], api_visibility="private")
