"""Photo tab: image-only vs geo-aware classification at the photo's EXIF GPS position, a map
click or a typed location.

The location lives in one place, the map (:class:`app.tabs.common.MapView`): its marker is
(lon, lat) floats, set from the EXIF GPS, a click or the typed box, and read back as floats
by the classification; the location box only shows it ("lat, lon") or takes a typed one.
"""

from __future__ import annotations

import gradio as gr

from app.handlers import (
    GEO_COLUMNS,
    MOVED_COLUMNS,
    MOVED_NOTE,
    SCORE_COLUMNS,
    ClassificationView,
    Handlers,
    click_to_lonlat,
    format_location,
)
from app.maps import Marker
from app.tabs.common import ONE_MODEL_JOB, empty, refuse
from app.tabs.mapview import MapView
from csp.captive import MODES


def _empty_tables() -> tuple:
    return empty(SCORE_COLUMNS), empty(GEO_COLUMNS), empty(MOVED_COLUMNS)


def build(handlers: Handlers, map_page: str) -> None:
    """Lay out the Photo tab and wire its events (API: ``/photo_location``, ``/classify``)."""
    with gr.Row():
        with gr.Column(scale=2):
            # No file_types filter: Gradio refuses other files with a bare "Error" badge; the
            # photo reader refuses them with a message that stays on the page.
            photo = gr.File(
                label="Photo (JPEG, PNG, WebP or HEIC)",
                type="filepath",
                elem_id="photo",
            )
            preview = gr.Image(label="As classified", interactive=False, height=220, type="pil")
            location_box = gr.Textbox(
                label="Location (lat, lon): from EXIF GPS, a map click, or typed",
                elem_id="photo-location",
            )
            gps_message = gr.Markdown(label="GPS message", elem_id="photo-gps")
            mode = gr.Radio(
                list(MODES),
                value="auto",
                label="Where the animal lives: wild (apply the location prior), captive (zoo, "
                "park: keep the image ranking) or auto (captive when flagged)",
                elem_id="photo-mode",
            )
        with gr.Column(scale=3):
            map_photo = MapView(map_page, frame_height=360, elem_id="photo-map")
    classify_message = gr.Markdown(label="Classification message", elem_id="classify-message")
    with gr.Row():
        image_only = gr.Dataframe(
            empty(SCORE_COLUMNS), label="Image only: top 5", interactive=False, elem_id="image-only"
        )
        geo_aware = gr.Dataframe(
            empty(GEO_COLUMNS), label="Geo-aware: top 5", interactive=False, elem_id="geo-aware"
        )
    moved = gr.Dataframe(
        empty(MOVED_COLUMNS), label="Classes the location moved", interactive=False, elem_id="moved"
    )
    gr.Markdown(MOVED_NOTE)

    def shown(view: ClassificationView) -> tuple:
        return view.message, view.image_only, view.geo_aware, view.moved, MapView.show(view.marker)

    def photo_location(path: str | None) -> tuple:
        """EXIF GPS of a photo -> ('lat, lon' or '', message, the photo as it will be classified)."""
        try:
            found = handlers.photo_location(path)
        except ValueError as err:
            return "", refuse("photo", err), None, MapView.show(None)
        return found.location_text, found.message, found.image, MapView.show(found.marker)

    def classify(path: str | None, location: str, mode: str = "auto") -> tuple:
        """Image-only vs geo-aware top-5 at a 'lat, lon' location (empty: image-only); mode
        wild / captive / auto (default: captive when the photo is flagged as possibly captive)."""
        try:
            return shown(handlers.classify(path, location, mode=mode))
        except ValueError as err:
            return refuse("classify", err), *_empty_tables(), MapView.show(None)

    def classify_on_map(path: str | None, marker: Marker | None, mode: str) -> tuple:
        lonlat = None if marker is None else (marker.lon, marker.lat)
        try:
            return shown(handlers.classify_at(path, lonlat, mode=mode))
        except ValueError as err:
            return refuse("classify", err), *_empty_tables(), MapView.show(marker)

    def classify_at_click(path: str | None, mode: str, evt: gr.EventData) -> tuple:
        try:
            lon, lat = click_to_lonlat(evt.lat, evt.lon)
        except ValueError as err:
            return "", refuse("map click", err), *_empty_tables(), MapView.show(None)
        text = format_location(lon, lat)
        try:
            return text, *shown(handlers.classify_at(path, (lon, lat), mode=mode))
        except ValueError as err:
            return text, refuse("classify", err), *_empty_tables(), MapView.show(Marker(lon, lat))

    def cleared() -> tuple:
        return "", "", None, "", *_empty_tables(), MapView.show(None)

    classify_outputs = [classify_message, image_only, geo_aware, moved, map_photo]
    on_map = [photo, map_photo, mode]
    photo.upload(
        photo_location, photo, [location_box, gps_message, preview, map_photo], api_name="photo_location"
    ).then(classify_on_map, on_map, classify_outputs, api_visibility="private", **ONE_MODEL_JOB)
    location_box.submit(
        classify, [photo, location_box, mode], classify_outputs, api_name="classify", **ONE_MODEL_JOB
    )
    mode.change(classify_on_map, on_map, classify_outputs, api_visibility="private", **ONE_MODEL_JOB)
    map_photo.select(
        classify_at_click,
        [photo, mode],
        [location_box, *classify_outputs],
        api_visibility="private",
        **ONE_MODEL_JOB,
    )
    photo.clear(
        cleared,
        None,
        [location_box, gps_message, preview, *classify_outputs],
        api_visibility="private",
    )
