"""The offline Leaflet map (rendered with folium) and the layers Python draws on it.

The map page is a complete HTML document rendered once per app (:func:`render_map_page`) and
shown inside an ``<iframe srcdoc>`` by a ``gr.HTML`` component (:class:`app.tabs.common.MapView`):

* basemap: the Blue Marble mosaic as a Leaflet image overlay in plate carrée (the map has
  ``crs=EPSG4326`` and no tiles), and the country outlines, both loaded from the app's own
  static files (not inlined: the browser caches them across map redraws);
* a click places a marker and posts ``{type: "csp-map-click", lat, lon}`` (longitude wrapped
  into [-180, 180)) to the Gradio page, which triggers the component's ``select`` event;
* Python draws by updating the component (:class:`app.tabs.common.MapView`): its value is the
  marker (:meth:`Marker.to_props`), its ``heat`` prop a heat-map (an RGBA PNG data URI
  spanning the globe, :meth:`HeatLayer.to_props`) with its legend, its ``opacity`` prop the
  heat-map's opacity. The page forwards them to the iframe with ``postMessage``, so the map
  keeps its zoom and position. The component is the one place a map's state lives.

Leaflet's JS/CSS are served from the installed ``django-js-lib-leaflet`` package
(:mod:`app.static`); nothing is fetched from outside the app.
"""

from __future__ import annotations

from dataclasses import dataclass
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

    def to_props(self) -> dict[str, Any]:
        """JSON value of the map component (:class:`app.tabs.common.MapView`)."""
        return {"lat": self.lat, "lon": self.lon, "label": self.label}

    @classmethod
    def from_props(cls, props: Any) -> Marker | None:
        """Inverse of :meth:`to_props`; ``None``, ``""`` or ``{}`` (no marker) give None."""
        if not isinstance(props, dict) or not props:
            return None
        return cls(float(props["lon"]), float(props["lat"]), str(props.get("label", "")))


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

    def to_props(self) -> dict[str, Any]:
        """JSON ``heat`` prop of the map component (the opacity is a prop of its own, so that
        moving the opacity slider does not send the image again)."""
        legend = {"title": self.legend.title, "low": self.legend.low, "high": self.legend.high}
        return {"url": self.image_uri, "legend": legend | {"colors": list(RAMP_HEX)}}


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
  if (!frame.contentWindow) return;
  const heat = props.heat ? Object.assign({opacity: props.opacity}, props.heat) : null;
  const marker = props.value && typeof props.value === 'object' ? props.value : null;
  frame.contentWindow.postMessage({type: '__LAYERS__', layers: {marker: marker, heat: heat}}, '*');
};
// The prop names are written unquoted: Gradio reads a quoted name in this script as an event.
watch(Object.keys({value: 0, heat: 0, opacity: 0}), send);
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
"""Script of the map component (Gradio's ``js_on_load``): hosts the page, forwards clicks as
``select`` events and the component's value/props as layers."""
