"""The offline Leaflet map (rendered with folium) and the layers Python draws on it.

The map page is a complete HTML document rendered once per app (:func:`render_map_page`) and
shown inside an ``<iframe srcdoc>`` by a ``gr.HTML`` component (:func:`map_component`):

* basemap: the Blue Marble mosaic as a Leaflet image overlay in plate carrée (the map has
  ``crs=EPSG4326`` and no tiles), and the country outlines, both loaded from the app's own
  static files (not inlined: the browser caches them across map redraws);
* a click places a marker and posts ``{type: "csp-map-click", lat, lon}`` (longitude wrapped
  into [-180, 180)) to the Gradio page, which triggers the component's ``select`` event;
* Python sends layers back by updating the component's ``layers`` prop
  (:meth:`MapLayers.to_props`): a marker and a heat-map (an RGBA PNG data URI spanning the
  globe) with its opacity and legend. The page forwards them to the iframe with
  ``postMessage``, so the map keeps its zoom and position.

Leaflet's JS/CSS are served from the installed ``django-js-lib-leaflet`` package
(:mod:`app.static`); nothing is fetched from outside the app.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import folium
from branca.element import Element, MacroElement
from jinja2 import Template

from app.raster import RAMP_HEX
from app.static import StaticAssets, file_url

WORLD_BOUNDS = [[-90.0, -180.0], [90.0, 180.0]]
CLICK_MESSAGE = "csp-map-click"
LAYERS_MESSAGE = "csp-map-layers"
READY_MESSAGE = "csp-map-ready"


@dataclass(frozen=True)
class Marker:
    """A point on the map: (lon, lat) in degrees and a tooltip."""

    lon: float
    lat: float
    label: str = ""


@dataclass(frozen=True)
class Legend:
    """Colour-ramp legend of a heat-map: a title and the texts at both ends of the ramp."""

    title: str
    low: str
    high: str


@dataclass(frozen=True)
class HeatLayer:
    """A global heat-map: a PNG data URI covering lon -180..180, lat -90..90 (north up).

    ``opacity`` in [0, 1] multiplies the image's own alpha.
    """

    image_uri: str
    legend: Legend
    opacity: float = 0.75


@dataclass(frozen=True)
class MapLayers:
    """What Python draws on a map: an optional marker and an optional heat-map."""

    marker: Marker | None = None
    heat: HeatLayer | None = None

    def to_props(self) -> dict[str, Any]:
        """JSON-serialisable value of the map component's ``layers`` prop."""
        heat = None
        if self.heat is not None:
            heat = {
                "url": self.heat.image_uri,
                "opacity": self.heat.opacity,
                "legend": {
                    "title": self.heat.legend.title,
                    "low": self.heat.legend.low,
                    "high": self.heat.legend.high,
                    "colors": list(RAMP_HEX),
                },
            }
        marker = None
        if self.marker is not None:
            marker = {"lat": self.marker.lat, "lon": self.marker.lon, "label": self.marker.label}
        return {"marker": marker, "heat": heat}

    @classmethod
    def from_props(cls, props: dict[str, Any] | None) -> MapLayers:
        """Inverse of :meth:`to_props` (``None`` or ``{}`` give empty layers)."""
        props = props or {}
        marker = props.get("marker")
        heat = props.get("heat")
        return cls(
            marker=Marker(marker["lon"], marker["lat"], marker.get("label", "")) if marker else None,
            heat=(
                HeatLayer(
                    heat["url"],
                    Legend(heat["legend"]["title"], heat["legend"]["low"], heat["legend"]["high"]),
                    float(heat["opacity"]),
                )
                if heat
                else None
            ),
        )

    def with_marker(self, marker: Marker | None) -> MapLayers:
        return replace(self, marker=marker)

    def with_heat(self, heat: HeatLayer | None) -> MapLayers:
        return replace(self, heat=heat)

    def with_opacity(self, opacity: float) -> MapLayers:
        if self.heat is None:
            return self
        return replace(self, heat=replace(self.heat, opacity=float(opacity)))


class _Bridge(MacroElement):
    """In-page script: basemap, country outlines, click -> parent message, layers -> map."""

    _template = Template(
        """
{% macro script(this, kwargs) %}
(function () {
  var map = {{ this._parent.get_name() }};
  window.cspMap = map;
  var marker = null, heat = null, legend = null;
  // Basemap: the Blue Marble mosaic is plate carree, so it spans the EPSG:4326 map exactly.
  L.imageOverlay({{ this.basemap_url|tojson }}, {{ this.bounds|tojson }},
                 {interactive: false, className: 'csp-basemap'}).addTo(map);
  fetch({{ this.countries_url|tojson }})
    .then(function (r) { return r.json(); })
    .then(function (data) {
      L.geoJSON(data, {interactive: false,
                       style: {color: '#f2efe6', weight: 0.7, opacity: 0.7, fill: false}}).addTo(map);
      window.cspCountriesLoaded = true;
    });

  function setMarker(m) {
    if (!m) { if (marker) { map.removeLayer(marker); marker = null; } return; }
    var ll = L.latLng(m.lat, m.lon);
    if (!marker) {
      marker = L.circleMarker(ll, {radius: 7, color: '#ffffff', weight: 2,
                                   fillColor: '#e0301e', fillOpacity: 1}).addTo(map);
    } else { marker.setLatLng(ll); }
    marker.unbindTooltip();
    if (m.label) { marker.bindTooltip(m.label); }
    if (!map.getBounds().contains(ll)) { map.panTo(ll); }
  }

  function setLegend(spec) {
    if (legend) { map.removeControl(legend); legend = null; }
    if (!spec) { return; }
    legend = L.control({position: 'bottomright'});
    legend.onAdd = function () {
      var box = L.DomUtil.create('div', 'csp-legend');
      var title = L.DomUtil.create('div', 'csp-legend-title', box);
      title.textContent = spec.title;
      var ramp = L.DomUtil.create('div', 'csp-legend-ramp', box);
      ramp.style.background = 'linear-gradient(to right,' + spec.colors.join(',') + ')';
      var ends = L.DomUtil.create('div', 'csp-legend-ends', box);
      var low = L.DomUtil.create('span', '', ends), high = L.DomUtil.create('span', '', ends);
      low.textContent = spec.low; high.textContent = spec.high;
      return box;
    };
    legend.addTo(map);
  }

  function setHeat(h) {
    if (!h) {
      if (heat) { map.removeLayer(heat); heat = null; }
      setLegend(null);
      return;
    }
    if (heat && heat._url === h.url) { heat.setOpacity(h.opacity); }
    else {
      if (heat) { map.removeLayer(heat); }
      heat = L.imageOverlay(h.url, {{ this.bounds|tojson }},
                            {opacity: h.opacity, className: 'csp-heat'}).addTo(map);
    }
    setLegend(h.legend);
  }

  window.cspApplyLayers = function (layers) {
    layers = layers || {};
    setHeat(layers.heat || null);
    setMarker(layers.marker || null);
    window.cspLayersApplied = (window.cspLayersApplied || 0) + 1;
  };
  window.cspMarkerLatLng = function () {
    return marker ? [marker.getLatLng().lat, marker.getLatLng().lng] : null;
  };

  map.on('click', function (e) {
    var ll = e.latlng.wrap();
    setMarker({lat: ll.lat, lon: ll.lng, label: ''});
    window.parent.postMessage({type: '{{ this.click }}', lat: ll.lat, lon: ll.lng}, '*');
  });
  window.addEventListener('message', function (ev) {
    if (ev.source !== window.parent || !ev.data || ev.data.type !== '{{ this.layers }}') return;
    window.cspApplyLayers(ev.data.layers);
  });
  window.parent.postMessage({type: '{{ this.ready }}'}, '*');
})();
{% endmacro %}
"""
    )

    def __init__(self, basemap_url: str, countries_url: str) -> None:
        super().__init__()
        self._name = "CspBridge"
        self.basemap_url = basemap_url
        self.countries_url = countries_url
        self.bounds = WORLD_BOUNDS
        self.click, self.layers, self.ready = CLICK_MESSAGE, LAYERS_MESSAGE, READY_MESSAGE


_PAGE_CSS = """
<style>
html body .leaflet-container { background: #0b1a2b; cursor: crosshair; }
.csp-heat { image-rendering: pixelated; }
.csp-legend { background: rgba(255,255,255,0.9); padding: 6px 8px; border-radius: 4px;
              font: 12px/1.3 system-ui, sans-serif; min-width: 160px; }
.csp-legend-title { font-weight: 600; margin-bottom: 3px; }
.csp-legend-ramp { height: 10px; border-radius: 2px; }
.csp-legend-ends { display: flex; justify-content: space-between; }
</style>
"""


def render_map_page(assets: StaticAssets) -> str:
    """The complete, offline map page (HTML) for an iframe ``srcdoc``.

    URLs are absolute paths on the app's own server (``/gradio_api/file=...``), which an
    ``about:srcdoc`` document resolves against the embedding page.
    """
    fmap = folium.Map(
        location=[20, 0],
        zoom_start=1,
        tiles=None,
        crs="EPSG4326",
        min_zoom=0,
        max_zoom=7,
        zoom_snap=0.1,
        max_bounds=True,
        world_copy_jump=False,
        control_scale=True,
    )
    # Only Leaflet itself: folium's defaults would add jQuery, Bootstrap, Font Awesome from CDNs.
    fmap.default_js = [("leaflet", file_url(assets.leaflet_js))]
    fmap.default_css = [("leaflet_css", file_url(assets.leaflet_css))]
    fmap.get_root().header.add_child(Element(_PAGE_CSS), name="csp_css")
    fmap.add_child(_Bridge(file_url(assets.blue_marble), file_url(assets.countries)))
    fmap.fit_bounds([[-60, -180], [85, 180]])
    return fmap.get_root().render()


MAP_JS = (
    """
const host = element.querySelector('.csp-map-host');
const frame = document.createElement('iframe');
frame.className = 'csp-map-frame';
frame.title = 'map: click to choose a location';
frame.style.cssText = 'width:100%;height:' + (props.frame_height || 460) + 'px;border:0;display:block';
frame.srcdoc = props.map_html;
host.appendChild(frame);
const send = () => {
  if (frame.contentWindow) {
    frame.contentWindow.postMessage({type: '__LAYERS__', layers: props.layers || {}}, '*');
  }
};
watch('layers', send);
window.addEventListener('message', (ev) => {
  if (ev.source !== frame.contentWindow || !ev.data) return;
  if (ev.data.type === '__READY__') send();
  if (ev.data.type === '__CLICK__') {
    trigger('select', {lat: ev.data.lat, lon: ev.data.lon,
                       index: [ev.data.lat, ev.data.lon], value: [ev.data.lat, ev.data.lon]});
  }
});
""".replace("__LAYERS__", LAYERS_MESSAGE)
    .replace("__READY__", READY_MESSAGE)
    .replace("__CLICK__", CLICK_MESSAGE)
)


def map_component(map_html: str, elem_id: str, height: int = 460, **kwargs: Any):
    """A ``gr.HTML`` showing ``map_html`` in an iframe; ``select`` fires on map clicks.

    The click's ``gr.EventData`` has ``lat`` and ``lon`` (degrees, lon wrapped); return
    ``gr.HTML(layers=MapLayers(...).to_props())`` from an event to redraw the layers.
    """
    import gradio as gr

    return gr.HTML(
        value="",
        html_template='<div class="csp-map-host"></div>',
        js_on_load=MAP_JS,
        apply_default_css=False,
        elem_id=elem_id,
        map_html=map_html,
        layers=MapLayers().to_props(),
        frame_height=height,
        **kwargs,
    )
