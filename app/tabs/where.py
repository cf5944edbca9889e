""" "Where could this be?" tab: p(location | image) over the globe and its top places."""

from __future__ import annotations

import gradio as gr

from app.handlers import PLACE_COLUMNS, Handlers
from app.tabs.common import ONE_MODEL_JOB, empty, refuse
from app.tabs.mapview import MapView

SATELLITE_NOTE = (
    "The shipped default was pre-trained (CSP, self-supervised) on **satellite imagery**: "
    "chips of the NASA Blue Marble mosaic paired with their locations. It matches what a "
    "place looks like from space (land cover, climate, season), so an aerial or satellite "
    "view gives the most meaningful map; a ground-level photo is outside what it was "
    "trained on."
)


def build(handlers: Handlers, map_page: str) -> None:
    """Lay out the tab and wire its events (API: ``/where``)."""
    gr.Markdown(SATELLITE_NOTE)
    with gr.Row():
        with gr.Column(scale=1):
            where_photo = gr.File(  # no file_types filter: see app.tabs.photo
                label="Image (JPEG, PNG, WebP or HEIC)",
                type="filepath",
                elem_id="where-photo",
            )
            n_places = gr.Slider(1, 10, value=5, step=1, label="Places to list")
            where_message = gr.Markdown(label="Where message", elem_id="where-message")
            places = gr.Dataframe(
                empty(PLACE_COLUMNS), label="Top places", interactive=False, elem_id="places"
            )
        with gr.Column(scale=2):
            map_where = MapView(map_page, elem_id="where-map")

    def where(path: str | None, n_places: float) -> tuple:
        """Where could this photo be: message and top places (the map shows the heat-map)."""
        try:
            view = handlers.where(path, int(n_places))
        except ValueError as err:
            return refuse("where", err), empty(PLACE_COLUMNS), MapView.show(None, None)
        return view.message, view.places, MapView.show(view.photo_marker, view.heat)

    outputs = [where_message, places, map_where]
    where_photo.upload(where, [where_photo, n_places], outputs, api_name="where", **ONE_MODEL_JOB)
    n_places.release(where, [where_photo, n_places], outputs, api_visibility="private", **ONE_MODEL_JOB)
    where_photo.clear(
        lambda: ("", empty(PLACE_COLUMNS), MapView.show(None, None)), None, outputs, api_visibility="private"
    )
