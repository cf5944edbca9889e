"""Screenshots of each tab of a running app, for the README (``docs/screenshots/*.png``).

    python app.py &                       # the shipped default, http://127.0.0.1:7860
    python -m app.screenshots --url http://127.0.0.1:7860/ --out docs/screenshots [--train]

Drives Debian's Chromium through Playwright (never ``playwright install``). Inputs are real:
a map click and a species range on the Map tab; on the Photo tab, the cheetah photo shipped
in Gradio's package with EXIF GPS (Maasai Mara) written into it, then the same photo placed
in the Himalaya, then Gradio's lion photo with GPS at London Zoo (flagged: captive?); a Blue
Marble chip on the "Where" tab; and (with ``--train``) a short
fine-tuning run on the bundled data on the Train tab. Exits non-zero if the page requests
anything outside the app's host.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from app.photos import save_with_gps
from app.static import BASEMAP_DIR

CHROMIUM = "/usr/bin/chromium"
GRADIO_IMAGES = Path(importlib.util.find_spec("gradio").origin).parent / "media_assets" / "images"
CHEETAH = GRADIO_IMAGES / "cheetah1.jpg"
LION = GRADIO_IMAGES / "lion.jpg"
LONDON_ZOO = (-0.1534, 51.5353)
"""(lon, lat) of ZSL London Zoo, where the lion photo is "taken"."""
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def blue_marble_chip(lon: float, lat: float, size_deg: float, path: Path) -> Path:
    """Cut a square chip of the Blue Marble mosaic centred on (lon, lat) degrees (JPEG, 256 px)."""
    with Image.open(BASEMAP_DIR / "blue_marble_5400x2700.jpg") as mosaic:
        px_per_deg = mosaic.width / 360.0
        x, y = (lon + 180.0) * px_per_deg, (90.0 - lat) * px_per_deg
        half = size_deg * px_per_deg / 2
        chip = mosaic.crop((round(x - half), round(y - half), round(x + half), round(y + half)))
        chip.resize((256, 256), Image.Resampling.LANCZOS).save(path, quality=92)
    return path


def _map_frame(page, elem_id: str):
    page.wait_for_selector(f"#{elem_id} iframe.csp-map-frame", state="attached", timeout=60_000)
    frame = page.locator(f"#{elem_id} iframe.csp-map-frame").element_handle().content_frame()
    frame.wait_for_function("window.cspMap && window.cspCountriesLoaded", timeout=30_000)
    return frame


def _click_map(page, elem_id: str, lat: float, lon: float) -> None:
    frame = _map_frame(page, elem_id)
    box = page.locator(f"#{elem_id} iframe.csp-map-frame").bounding_box()
    x, y = frame.evaluate(
        f"(() => {{ const p = cspMap.latLngToContainerPoint([{lat}, {lon}]); return [p.x, p.y]; }})()"
    )
    page.mouse.click(box["x"] + x, box["y"] + y)


def take_screenshots(url: str, out: Path, species: str, train: bool) -> list[str]:
    """Save map.png, photo.png, photo_relocated.png, photo_captive.png, where.png and
    train.png into ``out``.

    Returns the URLs the page requested outside the app's host (should be empty).
    """
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    host = urllib.parse.urlparse(url).hostname
    requests: list[str] = []
    with tempfile.TemporaryDirectory() as scratch, sync_playwright() as playwright:
        photo = save_with_gps(Image.open(CHEETAH), Path(scratch) / "cheetah.jpg", lon=35.1, lat=-1.5)
        lion = save_with_gps(Image.open(LION), Path(scratch) / "lion.jpg", *LONDON_ZOO)
        chip = blue_marble_chip(lon=13.0, lat=24.0, size_deg=6.0, path=Path(scratch) / "sahara_chip.jpg")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
        context.on("request", lambda request: requests.append(request.url))
        page = context.new_page()
        page.goto(url, wait_until="domcontentloaded")

        _click_map(page, "prior-map", -1.29, 36.82)
        page.wait_for_function("() => document.querySelector('#prior-table').innerText.includes('1')")
        picker = page.locator("#range-class input")
        picker.click()
        picker.fill(species)
        page.wait_for_timeout(400)
        page.keyboard.press("ArrowDown")
        page.keyboard.press("Enter")
        _map_frame(page, "prior-map").wait_for_function("document.querySelector('.csp-heat')", timeout=30_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=out / "map.png", full_page=True)

        page.get_by_role("tab", name="Photo: geo-aware classification").click()
        _map_frame(page, "photo-map")
        page.set_input_files("#photo input[type=file]", str(photo))
        page.wait_for_function(
            "() => document.querySelector(\"#geo-aware [data-testid='cell-0-1']\")", timeout=60_000
        )
        page.wait_for_timeout(1000)
        page.screenshot(path=out / "photo.png", full_page=True)
        # The same photo placed in the Himalaya by typing a location: the ranks follow the prior.
        box = page.locator("#photo-location").locator("textarea, input").first
        box.fill("28.2, 84.0")
        box.press("Enter")
        page.wait_for_function(
            "() => document.querySelector('#classify-message').innerText.includes('28.20000')", timeout=60_000
        )
        page.wait_for_timeout(1000)
        page.screenshot(path=out / "photo_relocated.png", full_page=True)
        # A lion at London Zoo: flagged as possibly captive, the image ranking kept (auto mode).
        page.locator("#photo button[aria-label='Clear']").first.click()
        page.set_input_files("#photo input[type=file]", str(lion))
        page.wait_for_function(
            "() => document.querySelector('#classify-message').innerText.includes('captive?')", timeout=60_000
        )
        page.wait_for_timeout(1000)
        page.screenshot(path=out / "photo_captive.png", full_page=True)

        page.get_by_role("tab", name="Where could this be?").click()
        frame = _map_frame(page, "where-map")
        page.set_input_files("#where-photo input[type=file]", str(chip))
        frame.wait_for_function("document.querySelector('.csp-heat')", timeout=60_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=out / "where.png", full_page=True)

        page.get_by_role("tab", name="Train").click()
        if train:
            page.get_by_role("button", name="Start training").click()
            page.wait_for_function(
                "() => /Finished|Failed|Cancelled/.test(document.querySelector('#train-message').innerText)",
                timeout=600_000,
                polling=1000,
            )
        page.wait_for_timeout(1000)
        page.screenshot(path=out / "train.png", full_page=True)
        browser.close()
    return [
        u
        for u in requests
        if not u.startswith(("data:", "blob:", "about:")) and urllib.parse.urlparse(u).hostname != host
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.screenshots",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--species", default="Panthera leo", help="class whose range is shown")
    parser.add_argument("--train", action="store_true", help="run a short training for train.png")
    args = parser.parse_args(argv)
    outside = take_screenshots(args.url, args.out, args.species, args.train)
    for name in ("map", "photo", "photo_relocated", "photo_captive", "where", "train"):
        print(args.out / f"{name}.png")
    if outside:
        print(f"error: the page requested outside hosts: {outside[:10]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
