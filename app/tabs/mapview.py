"""The map component: the offline map of :mod:`app.maps` as a Gradio component.

A subclass of ``gr.HTML``. Defining a component class makes Gradio write a type stub
(``.pyi``) next to its source (a development aid of ``gradio cc``); an app must not write into
its own installation, so that writer is switched off while :class:`MapView` is defined.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import EllipsisType
from typing import Any

import gradio as gr
import gradio.component_meta as _component_meta

from app.maps import MAP_JS, HeatLayer, Marker


@contextmanager
def _no_type_stub() -> Iterator[None]:
    """Define component classes without Gradio writing a ``.pyi`` next to this file."""
    write_stub = _component_meta.create_or_modify_pyi
    _component_meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        yield
    finally:
        _component_meta.create_or_modify_pyi = write_stub


with _no_type_stub():

    class MapView(gr.HTML):
        """The offline map of :mod:`app.maps` in an iframe: the one place a map's state lives.

        Its value is the marker (:class:`app.maps.Marker` in Python, ``None`` for none): as an
        input it is the location chosen on this map, in (lon, lat) degrees. The ``heat`` prop is
        a :meth:`HeatLayer.to_props` dict (or None), ``opacity`` the heat-map's opacity. ``select``
        fires on a click; its ``gr.EventData`` has ``lat`` and ``lon`` (degrees, lon wrapped).
        Update it by returning :meth:`show` from an event. It is left out of the API (its value
        is not a parameter or a result of any endpoint).
        """

        def __init__(
            self,
            map_html: str = "",
            value: Marker | dict | None = None,
            *,
            frame_height: int = 460,
            heat: dict | None = None,
            opacity: float = 0.75,
            **kwargs: Any,
        ) -> None:
            super().__init__(
                value=value,
                html_template='<div class="csp-map-host"></div>',
                js_on_load=MAP_JS,
                apply_default_css=False,
                map_html=map_html,
                frame_height=frame_height,
                heat=heat,
                opacity=opacity,
                **kwargs,
            )

        def preprocess(self, payload: Any) -> Marker | None:  # type: ignore[override]
            return Marker.from_props(payload)

        def postprocess(self, value: Any) -> dict | None:  # type: ignore[override]
            return value.to_props() if isinstance(value, Marker) else value or None

        @property
        def skip_api(self) -> bool:
            return True

        @staticmethod
        def show(
            marker: Marker | None | EllipsisType = ..., heat: HeatLayer | None | EllipsisType = ...
        ) -> MapView:
            """An update of a map: the ``marker`` and/or the ``heat`` layer (with its opacity);
            what is not given (``...``) stays as it is. None removes it."""
            update: dict[str, Any] = {}
            if marker is not ...:
                update["value"] = marker
            if heat is not ...:
                update["heat"] = heat.to_props() if heat is not None else None
                if heat is not None:
                    update["opacity"] = heat.opacity
            return MapView(**update)

        @staticmethod
        def show_opacity(opacity: float) -> MapView:
            """An update of the heat-map's opacity only."""
            return MapView(opacity=float(opacity))
