"""Soak test: mixed load against one ``python app.py`` for a long time; does its memory plateau?

    nice -n 10 python bench/soak.py                        # 20 minutes, 20 users, shipped model
    nice -n 10 python bench/soak.py --minutes 30 --users 8 --json runs/soak.json
    python bench/soak.py --url http://127.0.0.1:7860/ --pid 1234   # an app already running

The users are :mod:`load_test`'s (each its own ``gradio_client`` session, the same seeded mix of
``/prior``, ``/range``, ``/classify``, ``/where`` requests, every answer checked), but they keep
sending until the time is up. The app's resident memory (VmRSS) is sampled every
``--sample-s`` seconds. Verdict: the median RSS of the last minute against the median RSS of
the minute at half time; it plateaus if that growth is at most ``--max-growth`` (10 %). Exit
status 1 on any failed request or on growth above the limit. Only 127.0.0.1 is used.

The figures depend on the machine's load: the load average at start and end is reported with
them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_app import percentiles, start_app  # noqa: E402
from load_test import MIX, Outcome, free_port, memory_mb, run_user, warm_up  # noqa: E402

from app.static import DEFAULT_MODEL_DIR  # noqa: E402

UNLIMITED = 10**6  # requests per user: the clock ends the run


def _sample(pid: int, outcome: Outcome, stop: threading.Event, every_s: float, samples: list) -> None:
    """Every ``every_s`` seconds: (seconds since start, requests done, RSS MiB), until ``stop``."""
    started = time.monotonic()
    while not stop.wait(every_s):
        samples.append((round(time.monotonic() - started, 1), outcome.done, memory_mb(pid)["rss"]))


def plateau(samples: list[tuple[float, int, float]], window_s: float = 60.0) -> dict[str, float]:
    """RSS growth over the second half of the run: the median RSS (MiB) of the last ``window_s``
    seconds against that of the ``window_s`` seconds centred on half time."""
    end = samples[-1][0]
    half = [rss for t, _, rss in samples if abs(t - end / 2) <= window_s / 2]
    last = [rss for t, _, rss in samples if t >= end - window_s]
    half_mb, last_mb = float(np.median(half)), float(np.median(last))
    return {"half_time_mb": half_mb, "end_mb": last_mb, "growth": round((last_mb - half_mb) / half_mb, 4)}


def soak(url: str, pid: int, users: int, seconds: float, every_s: float) -> dict:
    """Warm up, then ``users`` users sending until ``seconds`` have passed; the report."""
    report: dict = {"memory_mb": {"ready": memory_mb(pid)}}
    classes, places = warm_up(url)
    report["memory_mb"]["after_warm_up"] = memory_mb(pid)
    outcome, samples, stop = Outcome(), [], threading.Event()
    sampler = threading.Thread(target=_sample, args=(pid, outcome, stop, every_s, samples), daemon=True)
    sampler.start()
    started = time.perf_counter()
    deadline = time.monotonic() + seconds
    pool = ThreadPoolExecutor(max_workers=users)
    futures = [
        pool.submit(run_user, url, u, UNLIMITED, classes, places, outcome, deadline) for u in range(users)
    ]
    _, pending = wait(futures, timeout=seconds + 120)
    pool.shutdown(wait=False, cancel_futures=True)
    for future in futures:
        if future not in pending and future.exception() is not None:
            outcome.errors.append(f"user crashed: {future.exception()!r}")
    stop.set()
    sampler.join()
    wall = time.perf_counter() - started
    report["memory_mb"] |= {"end": memory_mb(pid), "max_sampled_rss": max(rss for *_, rss in samples)}
    report |= {
        "users": users,
        "seconds": round(wall, 1),
        "requests_done": outcome.done,
        "hung_users": len(pending),
        "errors": len(outcome.errors),
        "first_errors": outcome.errors[:10],
        "throughput_per_s": round(outcome.done / wall, 2),
        "latency": {kind: percentiles(s) for kind, s in outcome.latencies.items() if s},
        "plateau": plateau(samples),
        "rss_by_minute": {int(t // 60): rss for t, _, rss in samples},  # the last sample of each
        "samples": samples,
    }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="an app already running on this machine (127.0.0.1)")
    parser.add_argument("--pid", type=int, help="with --url: the app's process id (required)")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_MODEL_DIR, help="model directory")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per request (app's --threads)")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=20.0, help="how long the users send")
    parser.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling period, seconds")
    parser.add_argument("--max-growth", type=float, default=0.10, help="allowed RSS growth, second half")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    local = args.url is None or urllib.parse.urlsplit(args.url).hostname in ("127.0.0.1", "localhost")
    if args.url and (args.pid is None or not local):
        parser.error("--url must be a local app (127.0.0.1) and needs --pid")

    report: dict = {"cpu_count": os.cpu_count(), "load_average_at_start": os.getloadavg(), "mix": MIX}
    process = None
    with tempfile.TemporaryDirectory() as scratch:
        try:
            url, pid = args.url, args.pid
            if url is None:
                port = free_port()
                log = Path(scratch) / "app.log"
                process, startup = start_app(args.checkpoint, port, args.threads, log, ready_timeout_s=900)
                url, pid = f"http://127.0.0.1:{port}/", process.pid
                report["startup_s"] = round(startup, 2)
            report |= soak(url, pid, args.users, 60 * args.minutes, args.sample_s)
        finally:
            if process is not None:
                process.send_signal(signal.SIGTERM)
                report["app_exit_code"] = process.wait(60)
    report["load_average_at_end"] = os.getloadavg()
    report["plateaus"] = report["plateau"]["growth"] <= args.max_growth
    summary = {k: v for k, v in report.items() if k != "samples"}
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return 0 if report["errors"] == 0 and report["plateaus"] and not report["hung_users"] else 1


if __name__ == "__main__":
    sys.exit(main())
