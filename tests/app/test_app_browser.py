"""The app in a real browser: Debian's Chromium driven by Playwright (never `playwright install`).

Clicks a known place on the offline map, uploads a photo with EXIF GPS, and fails if the page
asks anything of a host other than the app's own.
"""

from __future__ import annotations

import shutil
import urllib.parse
from pathlib import Path

import pytest
from conftest import write_gps_photo
from PIL import Image

from app.photos import save_with_gps
from app.screenshots import CHROMIUM as SCREENSHOT_CHROMIUM
from app.screenshots import CHROMIUM_ARGS

CHROMIUM = Path(SCREENSHOT_CHROMIUM)
TEXT = "textarea, input"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists() or shutil.which("chromium") is None, reason="needs /usr/bin/chromium"
    ),
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::Warning:gradio.queueing"),
]


@pytest.fixture(scope="module")
def browser_page(app_server):
    """A page on the app with every request recorded; checks none left localhost."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    requests: list[str] = []
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.on("request", lambda request: requests.append(request.url))
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(app_server, wait_until="domcontentloaded")
        yield page
        browser.close()
    outside = [
        url
        for url in requests
        if not url.startswith(("data:", "blob:", "about:"))
        and urllib.parse.urlparse(url).hostname not in ("127.0.0.1", "localhost")
    ]
    assert requests and not outside, f"requests left localhost: {outside[:10]}"
    assert not errors, errors


def _map_frame(page, elem_id: str):
    page.wait_for_selector(f"#{elem_id} iframe.csp-map-frame", state="attached", timeout=60_000)
    frame = page.locator(f"#{elem_id} iframe.csp-map-frame").element_handle().content_frame()
    frame.wait_for_function("window.cspMap && window.cspCountriesLoaded", timeout=30_000)
    return frame


def _value(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").locator(TEXT).first.input_value()


def _table_rows(page, elem_id: str) -> int:
    """Data rows of a Gradio dataframe (its grid counts the header row too)."""
    return int(page.locator(f"#{elem_id} [role=grid]").get_attribute("aria-rowcount")) - 1


def _cell(page, elem_id: str, row: int, col: int) -> str:
    return page.locator(f"#{elem_id} [data-testid='cell-{row}-{col}']").inner_text().strip()


def test_click_a_known_place_lists_its_prior(browser_page):
    page = browser_page
    frame = _map_frame(page, "prior-map")
    box = page.locator("#prior-map iframe.csp-map-frame").bounding_box()
    x, y = frame.evaluate(
        "(() => { const p = cspMap.latLngToContainerPoint([0.5, 20.5]); return [p.x, p.y]; })()"
    )
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.wait_for_function(
        "() => (document.querySelector('#prior-country textarea, #prior-country input') || {}).value",
        timeout=15_000,
    )
    lat, lon = (float(v) for v in _value(page, "prior-location").split(","))
    assert lat == pytest.approx(0.5, abs=0.3) and lon == pytest.approx(20.5, abs=0.3)
    assert _value(page, "prior-country") == "Dem. Rep. Congo"
    page.wait_for_function("() => document.querySelector('#prior-table').innerText.includes('Loxodonta')")
    assert _table_rows(page, "prior-table") == 6  # k=10, capped at the 6 classes of the model
    assert _cell(page, "prior-table", 0, 1) == "Loxodonta africana"
    assert _cell(page, "prior-table", 0, 3) == "yes"  # an expert-range prior
    assert frame.evaluate("cspMarkerLatLng()") == pytest.approx([lat, lon], abs=1e-4)


def test_upload_a_photo_with_gps_places_the_marker_and_ranks_by_location(browser_page, tmp_path_factory):
    page = browser_page
    photo = write_gps_photo(tmp_path_factory.mktemp("browser") / "nairobi.jpg", lon=36.82, lat=-1.29)
    page.get_by_role("tab", name="Photo: geo-aware classification").click()
    frame = _map_frame(page, "photo-map")
    page.set_input_files("#photo input[type=file]", str(photo))
    page.wait_for_function(
        "() => (document.querySelector('#photo-location textarea, #photo-location input') || {}).value",
        timeout=30_000,
    )
    assert _value(page, "photo-location") == "-1.29000, 36.82000"
    page.wait_for_function(
        "() => document.querySelector(\"#geo-aware [data-testid='cell-4-1']\")", timeout=30_000
    )
    frame.wait_for_function("cspMarkerLatLng() !== null", timeout=15_000)
    assert frame.evaluate("cspMarkerLatLng()") == pytest.approx([-1.29, 36.82], abs=1e-6)
    assert _table_rows(page, "geo-aware") == 5 and _table_rows(page, "image-only") == 5
    assert "cat" in _cell(page, "geo-aware", 0, 1)
    assert "Re-ranked by the location prior" in page.locator("#classify-message").inner_text()
    assert "Kenya" in page.locator("#classify-message").inner_text()


def test_the_photo_marker_goes_with_the_photo(browser_page, tmp_path_factory):
    """Clearing a photo with GPS, then uploading one without, leaves no marker behind."""
    page = browser_page
    folder = tmp_path_factory.mktemp("browser-marker")
    with_gps = write_gps_photo(folder / "nairobi.jpg", lon=36.82, lat=-1.29)
    without_gps = folder / "no_gps.png"
    Image.open(with_gps).save(without_gps)
    page.get_by_role("tab", name="Photo: geo-aware classification").click()
    frame = _map_frame(page, "photo-map")
    if page.locator("#photo input[type=file]").count() == 0:  # a photo from an earlier test
        _clear_photo(page)
    page.set_input_files("#photo input[type=file]", str(with_gps))
    frame.wait_for_function("cspMarkerLatLng() !== null", timeout=30_000)
    page.wait_for_function(
        "() => document.querySelector('#classify-message').innerText.includes('Re-ranked')", timeout=30_000
    )
    _clear_photo(page)
    frame.wait_for_function("cspMarkerLatLng() === null", timeout=15_000)
    assert _value(page, "photo-location") == "" and _table_rows(page, "geo-aware") == 0
    page.set_input_files("#photo input[type=file]", str(without_gps))
    page.wait_for_function(
        "() => document.querySelector('#classify-message').innerText.includes('No location')", timeout=30_000
    )
    assert "No GPS position" in page.locator("#photo-gps").inner_text()
    assert frame.evaluate("cspMarkerLatLng()") is None and _value(page, "photo-location") == ""


def test_heic_photos_are_read_and_a_refused_file_keeps_its_message(browser_page, tmp_path_factory):
    page = browser_page
    folder = tmp_path_factory.mktemp("browser-formats")
    cat = Image.open(write_gps_photo(folder / "source.jpg", lon=151.21, lat=-33.87))
    heic = save_with_gps(cat, folder / "IMG_0001.HEIC", lon=151.21, lat=-33.87, format="HEIF")
    gif = folder / "animation.gif"
    cat.save(gif, format="GIF")
    page.get_by_role("tab", name="Photo: geo-aware classification").click()
    frame = _map_frame(page, "photo-map")
    if page.locator("#photo input[type=file]").count() == 0:
        _clear_photo(page)
    page.set_input_files("#photo input[type=file]", str(heic))
    frame.wait_for_function("cspMarkerLatLng() !== null", timeout=30_000)
    assert frame.evaluate("cspMarkerLatLng()") == pytest.approx([-33.87, 151.21], abs=1e-6)
    page.wait_for_function(
        "() => document.querySelector('#classify-message').innerText.includes('Australia')", timeout=30_000
    )
    _clear_photo(page)
    page.set_input_files("#photo input[type=file]", str(gif))
    refused = "animation.gif is a GIF image; upload a JPEG, PNG, WebP or HEIC photo"
    page.wait_for_function(
        f"() => document.querySelector('#photo-gps').innerText.includes({refused!r})", timeout=30_000
    )
    page.wait_for_timeout(2000)  # a toast would be gone by now; the message stays
    assert refused in page.locator("#photo-gps").inner_text()
    assert refused in page.locator("#classify-message").inner_text()
    assert frame.evaluate("cspMarkerLatLng()") is None


def _clear_photo(page) -> None:
    page.locator("#photo button[aria-label='Clear']").first.click()
    page.wait_for_selector("#photo input[type=file]", state="attached", timeout=15_000)


def test_exported_files_belong_to_the_species_shown(browser_page):
    page = browser_page
    page.get_by_role("tab", name="Map: location prior").click()
    _pick_class(page, "Ursus arctos")
    page.get_by_role("button", name="Export range: PNG + GeoJSON").click()
    page.wait_for_function(
        "() => document.querySelector('#range-png') && document.querySelector('#range-png')"
        ".innerText.includes('Ursus_arctos')",
        timeout=30_000,
    )
    _pick_class(page, "Elephas maximus")
    page.wait_for_function(
        "() => document.querySelector('#range-summary').innerText.includes('Elephas maximus')", timeout=30_000
    )
    page.wait_for_function("() => !document.querySelector('#range-png')?.innerText.includes('Ursus')")
    assert not page.locator("#range-png").is_visible() and not page.locator("#range-geojson").is_visible()


def _pick_class(page, name: str) -> None:
    picker = page.locator("#range-class input")
    picker.click()
    picker.fill(name)
    page.wait_for_timeout(300)
    page.get_by_role("option", name=name).first.click()


def test_species_search_by_common_name_and_no_match(browser_page):
    page = browser_page
    page.get_by_role("tab", name="Map: location prior").click()
    search = page.locator("#species-search").locator(TEXT).first
    search.fill("koala")
    page.wait_for_function(
        "() => document.querySelector('#range-summary').innerText.includes('Phascolarctos cinereus')",
        timeout=30_000,
    )  # the only match is picked and its range drawn
    assert "1 species match 'koala'" in page.locator("#species-search-message").inner_text()
    search.fill("xyzzy")
    page.wait_for_function(
        "() => document.querySelector('#species-search-message').innerText.includes('No species matches')",
        timeout=30_000,
    )
    assert page.locator("#species-search-message").is_visible()
