"""Map tab: the location prior at a clicked or typed place, and a class's predicted range."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app.handlers import LABEL_NOTE, PRIOR_COLUMNS, Handlers, PriorView, click_to_lonlat
from app.tabs.common import ONE_MODEL_JOB, empty, refuse, refuse_loudly
from app.tabs.mapview import MapView

INTRO = (
    "Click the map, or type a location, to list the classes the prior expects there. Priors "
    "marked *expert range* rest partly on pseudo-presences sampled inside native ranges, not "
    "only on observations."
)


@dataclass(frozen=True)
class MapTab:
    """Components other tabs update (the class picker, after a new prior is loaded)."""

    range_class: gr.Dropdown


def build(handlers: Handlers, map_page: str) -> MapTab:
    """Lay out the Map tab and wire its events (API: ``/prior``, ``/search_classes``,
    ``/range``, ``/range_export``)."""
    with gr.Row():
        with gr.Column(scale=3):
            map_prior = MapView(map_page, elem_id="prior-map")
            gr.Markdown(f"{INTRO}\n\n{LABEL_NOTE}")
        with gr.Column(scale=2):
            _prior_section(handlers, map_prior)
    return MapTab(_range_section(handlers, map_prior))


def _prior_section(handlers: Handlers, map_prior: MapView) -> None:
    """The location box, the prior's top-k table at the clicked or typed place."""
    location = gr.Textbox(
        label="Location (lat, lon)",
        placeholder="48.8566, 2.3522  or  48°51'N 2°21'E, then Enter",
        elem_id="prior-location",
    )
    top_k = gr.Slider(3, 25, value=10, step=1, label="Classes to list")
    prior_message = gr.Markdown(label="Location", elem_id="prior-message")
    country = gr.Textbox(label="Country", interactive=False, elem_id="prior-country")
    prior_table = gr.Dataframe(
        empty(PRIOR_COLUMNS),
        label="Location prior: p(species | observation here), %",
        interactive=False,
        elem_id="prior-table",
    )

    def shown(view: PriorView) -> tuple:
        return view.message, view.country_text, view.table, MapView.show(view.marker)

    def prior_from_text(text: str, k: float) -> tuple:
        """Location prior at a typed 'lat, lon' -> (message, country, top-k table)."""
        try:
            return shown(handlers.prior_at_text(text, int(k)))
        except ValueError as err:
            return refuse("prior", err), "", empty(PRIOR_COLUMNS), MapView.show(None)

    def prior_from_click(k: float, evt: gr.EventData) -> tuple:
        try:
            view = handlers.prior_at(*click_to_lonlat(evt.lat, evt.lon), int(k))
        except ValueError as err:
            return "", refuse("map click", err), "", empty(PRIOR_COLUMNS), MapView.show(None)
        return view.location_text, *shown(view)

    outputs = [prior_message, country, prior_table, map_prior]
    map_prior.select(prior_from_click, top_k, [location, *outputs], api_visibility="private")
    location.submit(prior_from_text, [location, top_k], outputs, api_name="prior")
    top_k.release(prior_from_text, [location, top_k], outputs, api_visibility="private")


def _range_section(handlers: Handlers, map_prior: MapView) -> gr.Dropdown:
    """Species search, the class picker, the range heat-map and its export; returns the picker."""
    with gr.Row():
        with gr.Column(scale=2):
            search = gr.Textbox(
                label="Find a species: scientific or common name",
                placeholder="e.g. lion, koala, bald eagle, Panthera",
                elem_id="species-search",
            )
            search_message = gr.Markdown(elem_id="species-search-message")
            range_class = gr.Dropdown(
                choices=handlers.class_choices(),
                value=None,
                filterable=True,
                allow_custom_value=True,  # validated by the handler; classes change on reload
                label="Predicted range of a class (pick, or type to filter)",
                elem_id="range-class",
            )
            range_summary = gr.Markdown(label="Range summary", elem_id="range-summary")
        with gr.Column(scale=1):
            threshold = gr.Slider(0.0, 0.95, value=0.1, step=0.05, label="Range-score threshold (hide below)")
            opacity = gr.Slider(0.0, 1.0, value=0.75, step=0.05, label="Heat-map opacity")
        with gr.Column(scale=1):
            export_button = gr.Button("Export range: PNG + GeoJSON")
            range_png = gr.File(label="Range (PNG)", interactive=False, visible=False, elem_id="range-png")
            range_geojson = gr.File(
                label="Range (GeoJSON polygons)", interactive=False, visible=False, elem_id="range-geojson"
            )

    def find_species(query: str) -> tuple:
        found = handlers.find_species(query)
        only = found.choices[0][1] if len(found.choices) == 1 else None
        return found.message, gr.Dropdown(choices=found.choices, value=only)

    def show_range(class_name: str | None, threshold: float, opacity: float) -> tuple:
        """Predicted range of a class -> summary (the map shows the heat-map)."""
        try:
            view = handlers.range_view(class_name or "", threshold, opacity)
        except ValueError as err:
            return refuse("range", err), MapView.show(heat=None)
        return view.summary, MapView.show(heat=view.heat)

    def export_range(class_name: str | None, threshold: float) -> tuple[str, str]:
        """Range of a class as PNG over the basemap and as GeoJSON polygons (range score >= threshold)."""
        try:
            png, geojson = handlers.export_range(class_name or "", threshold)
        except ValueError as err:
            raise refuse_loudly("range export", err) from None
        return str(png), str(geojson)

    def search_classes(query: str, limit: int = 20) -> list[str]:
        """Class names of the location prior matching `query` by scientific or common name."""
        return handlers.search_classes(query, limit)

    gr.api(search_classes, api_name="search_classes")
    search.change(
        find_species,
        search,
        [search_message, range_class],
        api_visibility="private",
        trigger_mode="always_last",
    )
    inputs, outputs = [range_class, threshold, opacity], [range_summary, map_prior]
    range_class.change(show_range, inputs, outputs, api_name="range", **ONE_MODEL_JOB)
    threshold.release(show_range, inputs, outputs, api_visibility="private", **ONE_MODEL_JOB)
    opacity.release(MapView.show_opacity, opacity, map_prior, api_visibility="private")
    # Files exported for another class or threshold are not this range's: take them away.
    gr.on(
        [range_class.change, threshold.release],
        lambda: (gr.File(value=None, visible=False), gr.File(value=None, visible=False)),
        None,
        [range_png, range_geojson],
        api_visibility="private",
    )
    export_button.click(
        export_range, inputs[:2], [range_png, range_geojson], api_name="range_export", **ONE_MODEL_JOB
    ).success(
        lambda: (gr.File(visible=True), gr.File(visible=True)),
        None,
        [range_png, range_geojson],
        api_visibility="private",
    )
    return range_class
