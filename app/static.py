"""Files the browser loads, all served by this app (never a CDN or a tile server).

Leaflet's JS/CSS come from the installed PyPI package ``django-js-lib-leaflet`` (module
``js_lib_leaflet``); the Blue Marble basemap and the Natural Earth country outlines come from
``assets/basemap``. :func:`register_static_paths` lets Gradio serve both folders under
``/gradio_api/file=<absolute path>``; :func:`file_url` builds those URLs.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from csp.hub import ASSETS_DIR

_CHECKOUT = Path(__file__).resolve().parent.parent
# The checkout root; for an installed package (no app.py beside app/), the current directory,
# so the Train tab's runs/ never land in site-packages.
REPO_ROOT = _CHECKOUT if (_CHECKOUT / "app.py").is_file() else Path.cwd()
BASEMAP_DIR = ASSETS_DIR / "basemap"
DEFAULT_MODEL_DIR = ASSETS_DIR / "default"
_LEAFLET_PACKAGE = "js_lib_leaflet"


def file_url(path: Path) -> str:
    """URL under which Gradio serves ``path`` (which must lie in a registered static folder)."""
    return f"/gradio_api/file={path.resolve()}"


@dataclass(frozen=True)
class StaticAssets:
    """Locations of the files the map page loads.

    Attributes:
        leaflet_dir: folder holding ``leaflet.js``, ``leaflet.css`` and ``images/``.
        blue_marble: equirectangular Blue Marble mosaic (5400 x 2700 px, lon -180..180).
        countries: Natural Earth 1:110m country outlines (GeoJSON, EPSG:4326).
    """

    leaflet_dir: Path
    blue_marble: Path
    countries: Path

    @classmethod
    def locate(cls, basemap_dir: Path = BASEMAP_DIR) -> StaticAssets:
        """Find the installed Leaflet package and the basemap files.

        Raises:
            FileNotFoundError: naming the missing package or file.
        """
        spec = importlib.util.find_spec(_LEAFLET_PACKAGE)
        if spec is None or spec.origin is None:
            raise FileNotFoundError(
                "Leaflet is served from the PyPI package django-js-lib-leaflet "
                f"(module {_LEAFLET_PACKAGE}), which is not installed: "
                "pip install -r requirements.txt"
            )
        assets = cls(
            leaflet_dir=Path(spec.origin).parent / "static" / _LEAFLET_PACKAGE,
            blue_marble=basemap_dir / "blue_marble_5400x2700.jpg",
            countries=basemap_dir / "naturalearth_110m_countries.geojson",
        )
        for path in (assets.leaflet_js, assets.leaflet_css, assets.blue_marble, assets.countries):
            if not path.is_file():
                raise FileNotFoundError(f"map asset not found: {path}")
        return assets

    @property
    def leaflet_js(self) -> Path:
        return self.leaflet_dir / "leaflet.js"

    @property
    def leaflet_css(self) -> Path:
        return self.leaflet_dir / "leaflet.css"

    @property
    def directories(self) -> list[Path]:
        """Folders Gradio must serve (see :func:`register_static_paths`)."""
        return sorted({self.leaflet_dir, self.blue_marble.parent, self.countries.parent})


def register_static_paths(assets: StaticAssets) -> None:
    """Allow Gradio to serve the map assets (call before ``Blocks.launch``)."""
    import gradio as gr

    gr.set_static_paths([str(d) for d in assets.directories])
