"""Benchmark the app: start-up time and p50/p95 latency of its main actions.

    python bench/bench_app.py                          # starts `python app.py` itself
    python bench/bench_app.py --url http://127.0.0.1:7860/   # an app already running
    python bench/bench_app.py --checkpoint DIR --n 50 --json out.json

Measured through ``gradio_client`` (round trip: HTTP + queue + handler), for

* map click: ``/prior`` at random places (the handler a click runs), target <= 50 ms server time;
* global range heat-map: ``/range`` of a class (1 degree grid, PNG overlay), target <= 0.5 s;
* photo classification: ``/classify`` of a 256 px photo at random places, target <= 200 ms;

plus a trivial endpoint (``/search_classes``) whose round trip is the client's own overhead;
and, with ``--server-time`` (default on when the bench starts the app), the same handlers
called in this process on the same model, which is the server's own compute time.
Start-up: from launching ``python app.py`` to its first HTTP 200.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.photos import save_with_gps  # noqa: E402
from app.static import DEFAULT_MODEL_DIR  # noqa: E402

CHEETAH = Path(importlib.util.find_spec("gradio").origin).parent / "media_assets/images/cheetah1.jpg"


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50/p95/max in milliseconds."""
    ms = np.asarray(seconds) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "max_ms": round(float(ms.max()), 1),
        "n": int(ms.size),
    }


def timed(call: Callable[[int], object], n: int, warmup: int = 2) -> dict[str, float]:
    """Time ``call(i)`` for i in 0..n-1 after ``warmup`` untimed calls."""
    for i in range(warmup):
        call(i)
    samples = []
    for i in range(n):
        started = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


def start_app(
    checkpoint: Path, port: int, threads: int, log: Path, ready_timeout_s: float = 120.0
) -> tuple[subprocess.Popen, float]:
    """Launch ``python app.py`` and wait (up to ``ready_timeout_s``) for HTTP 200; returns the
    process and seconds taken."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "app.py"),
            *("--checkpoint", str(checkpoint), "--port", str(port), "--threads", str(threads)),
        ],
        cwd=REPO,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
        stdout=open(log, "w"),  # the child holds it until it exits
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return process, time.perf_counter() - started
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"app exited with {process.returncode}; see {log}") from None
            if time.perf_counter() - started > ready_timeout_s:
                process.terminate()
                raise SystemExit(f"app not ready after {ready_timeout_s:g} s; see {log}") from None
            time.sleep(0.1)


def random_places(n: int, seed: int = 0) -> np.ndarray:
    """(n, 2) (lon, lat) degrees, uniform on the sphere."""
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    return np.column_stack([rng.uniform(-180, 180, n), lat])


def bench_client(url: str, photo: Path, classes: list[str], n: int) -> dict[str, dict]:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    places = random_places(n + 2)
    text = [f"{lat:.5f}, {lon:.5f}" for lon, lat in places]
    upload = handle_file(str(photo))
    return {
        "client overhead (/search_classes)": timed(
            lambda i: client.predict("a", 1, api_name="/search_classes"), n
        ),
        "map click (/prior)": timed(lambda i: client.predict(text[i], 10, api_name="/prior"), n),
        "range heat-map (/range)": timed(
            lambda i: client.predict(classes[i % len(classes)], 0.1, 0.75, api_name="/range"), n
        ),
        "photo classification (/classify)": timed(
            lambda i: client.predict(upload, text[i], api_name="/classify"), n
        ),
    }


def bench_handlers(
    checkpoint: Path, photo: Path, classes: list[str], n: int, threads: int
) -> dict[str, dict]:
    """The same actions called in-process (same torch threads): the server's compute time."""
    import torch

    from app.countries import CountryLookup
    from app.handlers import Handlers
    from app.model import ModelSlot
    from app.static import StaticAssets
    from csp.predictor import Predictor

    torch.set_num_threads(threads)
    assets = StaticAssets.locate()
    predictor = Predictor.from_directory(checkpoint)
    with tempfile.TemporaryDirectory() as work:
        handlers = Handlers(
            ModelSlot(predictor, checkpoint), CountryLookup(assets.countries), assets.blue_marble, Path(work)
        )
        places = random_places(n + 2, seed=1)
        text = [f"{lat:.5f}, {lon:.5f}" for lon, lat in places]
        return {
            "map click (/prior)": timed(lambda i: handlers.prior_at(*places[i], k=10), n),
            "range heat-map (/range)": timed(lambda i: handlers.range_view(classes[i % len(classes)]), n),
            "photo classification (/classify)": timed(lambda i: handlers.classify(str(photo), text[i]), n),
        }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="benchmark an app already running at this URL")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_MODEL_DIR, help="model directory")
    parser.add_argument("--port", type=int, default=7870, help="port for the app the bench starts")
    parser.add_argument("--n", type=int, default=30, help="timed calls per action")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (app's --threads)")
    parser.add_argument("--server-time", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    results: dict[str, object] = {
        "n": args.n,
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "load_average_at_start": os.getloadavg(),
    }
    process = None
    with tempfile.TemporaryDirectory() as scratch:
        photo = save_with_gps(Image.open(CHEETAH), Path(scratch) / "cheetah.jpg", lon=35.1, lat=-1.5)
        try:
            url = args.url
            if url is None:
                process, startup = start_app(
                    args.checkpoint, args.port, args.threads, Path(scratch) / "app.log"
                )
                url = f"http://127.0.0.1:{args.port}/"
                results["startup_s"] = round(startup, 2)
            from gradio_client import Client

            classes = Client(url, verbose=False).predict("a", 20, api_name="/search_classes")
            results["client_round_trip"] = bench_client(url, photo, classes, args.n)
        finally:
            if process is not None:
                process.terminate()
                process.wait(30)
        if args.server_time if args.server_time is not None else args.url is None:
            results["server_compute"] = bench_handlers(args.checkpoint, photo, classes, args.n, args.threads)

    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
