"""Load test: many concurrent ``gradio_client`` users sending mixed requests to one app.

    python bench/load_test.py                          # starts `python app.py` (shipped model)
    python bench/load_test.py --users 20 --requests 50 --json load.json
    python bench/load_test.py --url http://127.0.0.1:7860/ --pid 1234   # an app already running

Each user is its own ``Client`` (its own session) and sends ``--requests`` requests, drawn from
a seeded mix of the app's named endpoints (``app/ui.py``):

* map click: ``/prior`` at a random place (the handler a map click runs);
* range heat-map: ``/range`` of a random class (1 degree grid, PNG overlay);
* photo classification: ``/classify`` of a real photo (uploaded each time) at a random place;
* where: ``/where`` of a real photo (image -> location map, 2 degree grid).

Every answer is checked (no exception, no "⚠️" message, the expected table); a single failure
makes the exit status 1, as does a run stopped by ``--max-minutes``. Latency is the client's
round trip (upload + queue + handler + download), reported as p50/p95/max per request type.
Memory of the app process (VmRSS / VmHWM from ``/proc/<pid>/status``; psutil's RSS where
there is no /proc) is reported when the app is ready, after one warm-up request of each type,
half-way through the requests, and at the end, plus the largest RSS sampled during the run.
Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_app import CHEETAH, REPO, percentiles, random_places, start_app  # noqa: E402

from app.static import DEFAULT_MODEL_DIR  # noqa: E402

PHOTOS = [
    CHEETAH,
    *sorted((REPO / "tests/fixtures/photos/landmarks").glob("*.jpg")),
    *sorted((REPO / "tests/fixtures/photos/cities").glob("*.*")),
]
CONNECT_TIMEOUT_S = 120.0
MIX = {"map click (/prior)": 0.4, "range (/range)": 0.25, "classify (/classify)": 0.25, "where (/where)": 0.1}


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory of process ``pid`` in MiB: ``rss`` now and ``peak`` (high-water mark).

    Read from ``/proc/<pid>/status`` (VmRSS, VmHWM); without /proc, psutil's RSS (no peak).
    """
    status = Path(f"/proc/{pid}/status")
    if status.is_file():
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        return {
            "rss": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
            "peak": round(int(fields["VmHWM"].split()[0]) / 1024, 1),
        }
    import psutil

    return {"rss": round(psutil.Process(pid).memory_info().rss / 2**20, 1)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Outcome:
    """What the users observed: latencies per request type and the failures, thread-safe."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {kind: [] for kind in MIX})
    errors: list[str] = field(default_factory=list)
    done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, seconds: float, error: str | None) -> None:
        with self.lock:
            self.done += 1
            if error is None:
                self.latencies[kind].append(seconds)
            else:
                self.errors.append(f"{kind}: {error}")


def request_senders(
    client, classes: list[str], places: np.ndarray
) -> dict[str, Callable[[np.random.Generator], str | None]]:
    """Request type -> a function sending one request (classes, ``(N, 2)`` (lon, lat) degree
    places and photos drawn with the given generator); it returns None if the answer is right,
    else what is wrong with it."""
    from gradio_client import handle_file

    def place(rng: np.random.Generator) -> str:
        lon, lat = places[int(rng.integers(len(places)))]
        return f"{lat:.5f}, {lon:.5f}"

    def photo(rng: np.random.Generator) -> dict:
        return handle_file(str(PHOTOS[int(rng.integers(len(PHOTOS)))]))

    def prior(rng: np.random.Generator) -> str | None:
        message, _, table = client.predict(place(rng), 10, api_name="/prior")
        return None if "(lat, lon)" in message and len(table["data"]) == 10 else message

    def range_(rng: np.random.Generator) -> str | None:
        name = classes[int(rng.integers(len(classes)))]
        summary = client.predict(name, 0.1, 0.75, api_name="/range")
        return None if summary.startswith("**") and "million km²" in summary else summary

    def classify(rng: np.random.Generator) -> str | None:
        message, image_only, geo_aware, _ = client.predict(photo(rng), place(rng), api_name="/classify")
        ok = message.startswith("Re-ranked by the location prior") and len(geo_aware["data"]) == 5
        return None if ok and len(image_only["data"]) == 5 else message

    def where(rng: np.random.Generator) -> str | None:
        message, places = client.predict(photo(rng), 5, api_name="/where")
        return None if message.startswith("Most likely around") and len(places["data"]) == 5 else message

    return dict(zip(MIX, (prior, range_, classify, where), strict=True))


def run_user(
    url: str, user: int, n: int, classes: list[str], places: np.ndarray, outcome: Outcome, deadline: float
) -> None:
    """One user: its own client, ``n`` requests of a seeded mix, until ``deadline``
    (``time.monotonic()`` seconds)."""
    from gradio_client import Client

    rng = np.random.default_rng(1000 + user)
    # A generous timeout: on a loaded machine fetching the app's config can take a while.
    client = Client(url, verbose=False, httpx_kwargs={"timeout": CONNECT_TIMEOUT_S})
    senders = request_senders(client, classes, places)
    kinds = rng.choice(list(MIX), size=n, p=list(MIX.values()))
    for kind in kinds:
        if time.monotonic() > deadline:
            return
        started = time.perf_counter()
        try:
            problem = senders[kind](rng)
        except Exception as err:  # any failure of the request counts, whatever it is
            problem = f"{type(err).__name__}: {err}"
        outcome.record(kind, time.perf_counter() - started, problem)


def sample_memory(pid: int, outcome: Outcome, stop: threading.Event, samples: list) -> None:
    """Every 0.5 s: (requests done, RSS MiB) of the app, until ``stop`` is set."""
    while not stop.wait(0.5):
        samples.append((outcome.done, memory_mb(pid)["rss"]))


def warm_up(url: str) -> tuple[list[str], np.ndarray]:
    """One request of each type (each checked); returns the class names and the ``(1000, 2)``
    (lon, lat) degree places the users draw from.

    Raises:
        SystemExit: naming the request types whose answer was wrong.
    """
    from gradio_client import Client

    warm = Client(url, verbose=False)
    # The search lists at most 100 names per query and none for an empty one: ask by vowel.
    classes = sorted({name for q in "aeiou" for name in warm.predict(q, 100, api_name="/search_classes")})
    places = random_places(1000)
    rng = np.random.default_rng(0)
    senders = request_senders(warm, classes, places)
    problems = {kind: problem for kind, send in senders.items() if (problem := send(rng)) is not None}
    if problems:
        raise SystemExit(f"warm-up failed: {problems}")
    return classes, places


def load_test(url: str, pid: int | None, users: int, n: int, max_seconds: float) -> dict:
    """Warm up, then ``users`` concurrent users of ``n`` requests each; the report as a dict."""
    report: dict = {"memory_mb": {}}
    if pid is not None:
        report["memory_mb"]["ready"] = memory_mb(pid)
    classes, places = warm_up(url)
    if pid is not None:
        report["memory_mb"]["after_warm_up"] = memory_mb(pid)

    outcome, samples, stop = Outcome(), [], threading.Event()
    sampler = None
    if pid is not None:
        sampler = threading.Thread(target=sample_memory, args=(pid, outcome, stop, samples), daemon=True)
        sampler.start()
    started = time.perf_counter()
    deadline = time.monotonic() + max_seconds
    pool = ThreadPoolExecutor(max_workers=users)
    futures = [pool.submit(run_user, url, u, n, classes, places, outcome, deadline) for u in range(users)]
    _, pending = wait(futures, timeout=max_seconds + 60)  # a request still hanging after that is lost
    pool.shutdown(wait=False, cancel_futures=True)
    for future in futures:
        if future not in pending and future.exception() is not None:
            outcome.errors.append(f"user crashed: {future.exception()!r}")
    wall = time.perf_counter() - started
    stop.set()
    if sampler is not None:
        sampler.join()
        report["memory_mb"]["after_run"] = memory_mb(pid)
        half = [rss for done, rss in samples if done <= users * n // 2]
        report["memory_mb"]["half_way_rss"] = half[-1] if half else None
        report["memory_mb"]["max_sampled_rss"] = max((rss for _, rss in samples), default=None)

    planned = users * n
    report.update(
        users=users,
        requests_per_user=n,
        requests_planned=planned,
        requests_done=outcome.done,
        stopped_by_time_limit=bool(pending) or outcome.done < planned,
        errors=len(outcome.errors),
        first_errors=outcome.errors[:10],
        wall_s=round(wall, 1),
        throughput_per_s=round(outcome.done / wall, 2),
        latency={kind: percentiles(s) for kind, s in outcome.latencies.items() if s},
    )
    return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="an app already running on this machine (127.0.0.1)")
    parser.add_argument("--pid", type=int, help="with --url: the app's process id, for its memory")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_MODEL_DIR, help="model directory")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per request (app's --threads)")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--requests", type=int, default=50, help="requests per user")
    parser.add_argument("--max-minutes", type=float, default=10.0, help="stop sending after this long")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    if args.url and urllib.parse.urlsplit(args.url).hostname not in ("127.0.0.1", "localhost"):
        parser.error("--url must be a local app (127.0.0.1)")

    report: dict = {
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "load_average_at_start": os.getloadavg(),
        "mix": MIX,
    }
    process = None
    with tempfile.TemporaryDirectory() as scratch:
        try:
            url, pid = args.url, args.pid
            if url is None:
                port = free_port()
                process, startup = start_app(args.checkpoint, port, args.threads, Path(scratch) / "app.log")
                url, pid = f"http://127.0.0.1:{port}/", process.pid
                report["startup_s"] = round(startup, 2)
            report |= load_test(url, pid, args.users, args.requests, 60 * args.max_minutes)
        finally:
            if process is not None:
                process.send_signal(signal.SIGTERM)
                report["app_exit_code"] = process.wait(60)

    print(json.dumps(report, indent=2, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return 0 if report["errors"] == 0 and not report["stopped_by_time_limit"] else 1


if __name__ == "__main__":
    sys.exit(main())
