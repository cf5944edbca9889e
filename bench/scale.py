"""Training cost per pair and peak memory as the data grows: pre-training streamed from a float16
feature store on disk at N pairs, and fine-tuning at C classes (all classes, or sampled).

Each measurement runs in a fresh process (so its peak RSS is its own) and times a fixed number
of steps on random indices across the whole store (not an epoch), against the step's own
matrix-product ceiling (:mod:`ceiling`); medians of the steps, load average printed.

    python bench/scale.py --pairs 1e5 1e6 1e7 --classes 4402 50000 --dir /work/cache/scale
    python bench/scale.py --pairs 1e5 --keep     # keep the synthetic stores (default: removed)

A store of N pairs of 1,280-d float16 features takes N x 2,560 bytes on disk (1e7: 25.6 GB); the
script refuses an N whose store does not fit in the free disk space.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import task_step  # noqa: E402
from ceiling import against_ceiling, conditions  # noqa: E402

from csp.features import FeatureStore, write_store  # noqa: E402
from csp.models import LocationEncoder  # noqa: E402
from csp.samplers import sample_sphere  # noqa: E402
from train.batches import BatchRows  # noqa: E402
from train.config import FinetuneConfig, PretrainConfig, load_config  # noqa: E402
from train.engine import TrainingState  # noqa: E402
from train.finetune import PresenceObjective  # noqa: E402
from train.pretrain import PretrainTask  # noqa: E402
from train.runtime import Distributed  # noqa: E402

FEATURE_DIM = 1280
BLOCK = 65_536  # rows per block written
ENCODER = "synthetic-1280"


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class MemoryWatch:
    """Peak anonymous memory (sampled) and peak RSS (the kernel's high-water mark ``VmHWM``,
    which also counts the store's file pages this process touched), in MiB."""

    def __init__(self) -> None:
        self.peak_anon_kib = _status_kib("RssAnon")

    def sample(self) -> None:
        self.peak_anon_kib = max(self.peak_anon_kib, _status_kib("RssAnon"))

    def report(self) -> dict[str, float]:
        self.sample()
        return {
            "peak_rss_mib": _status_kib("VmHWM") / 1024,
            "peak_anon_mib": self.peak_anon_kib / 1024,
            "file_pages_mib": _status_kib("RssFile") / 1024,
        }


def make_store(directory: Path, n: int) -> FeatureStore:
    """A synthetic store of ``n`` uniform locations and 1,280-d float16 features, written in
    blocks (never whole in memory); every block's bytes differ (a per-block row shift)."""
    if (directory / "manifest.json").exists():
        return FeatureStore.open(directory)
    need = n * FEATURE_DIM * 2 * 1.05 + n * 60
    free = shutil.disk_usage(directory.parent).free
    if need > free:
        raise SystemExit(f"a store of {n:,} pairs needs {need / 1e9:.1f} GB, {free / 1e9:.1f} GB free")
    rng = np.random.default_rng(0)
    base = rng.standard_normal((BLOCK, FEATURE_DIM), dtype=np.float32).astype(np.float16)
    lonlat = sample_sphere(n, generator=torch.Generator().manual_seed(0)).numpy()

    def blocks():
        for i, start in enumerate(range(0, n, BLOCK)):
            shift = (i * 7919) % BLOCK  # the base block's rows, rotated: two views, no copy
            for part in (base[shift:], base[:shift]):
                take = min(len(part), n - start)
                if take > 0:
                    yield part[:take]
                start += take

    return write_store(directory, lonlat, blocks(), ENCODER)


def pretrain_worker(store_dir: str, steps: int) -> dict:
    """Streamed CSP-MC-BLD steps on random indices across the whole store."""
    watch = MemoryWatch()
    config = load_config(
        PretrainConfig, "csp-mc-bld", ["runtime.progress=false", "runtime.device=cpu", "val_fraction=0"]
    )
    store = FeatureStore.open(store_dir)
    features, lonlat = store.tensors(random_access=True)
    task = PretrainTask(config, lonlat, features, torch.device("cpu"), Distributed(), stream=True)
    result = against_ceiling(task_step(config, task, after=watch.sample), steps)
    batch = config.optim.batch_size
    return {"n": len(store), "batch": batch, **_rates(result, batch), **watch.report()}


def finetune_worker(classes: int, sampled: int, steps: int, observations: int = 1_000_000) -> dict:
    """Presence-only steps at ``classes`` classes (``sampled`` > 0: sampled negative classes)."""
    watch = MemoryWatch()
    config = load_config(FinetuneConfig, "sup-only", ["runtime.progress=false", "runtime.device=cpu"])
    generator = torch.Generator().manual_seed(0)
    columns = {
        "lonlat": sample_sphere(observations, generator=generator),
        "labels": torch.randint(0, classes, (observations,), generator=generator),
    }
    device = torch.device("cpu")
    model = LocationEncoder(replace(config.model, num_classes=classes))
    rows = BatchRows(columns, device, stream=True)
    objective = PresenceObjective(model, rows, None, Distributed(), sampled_classes=sampled)
    training = TrainingState(model, config.optim, config.runtime, device)
    batch = config.optim.batch_size

    def step() -> None:
        indices = torch.randint(0, observations, (batch,), generator=generator)
        loss, _ = objective(indices, generator)
        training.step(loss)
        watch.sample()

    result = against_ceiling(step, steps)
    return {"classes": classes, "sampled": sampled, "batch": batch, **_rates(result, batch), **watch.report()}


def _rates(result, batch: int) -> dict[str, float]:
    return {
        "step_ms": result.step_seconds * 1e3,
        "pairs_per_s": batch / result.step_seconds,
        "us_per_pair": result.step_seconds / batch * 1e6,
        "ceiling_ratio": result.ratio,
    }


def _run(args: list[str]) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--worker", *args], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", nargs="*", type=float, default=[1e5, 1e6])
    parser.add_argument("--classes", nargs="*", type=int, default=[4402, 50_000])
    parser.add_argument("--sampled", type=int, default=1024, help="sampled classes (0: off)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dir", type=Path, default=Path("/work/cache/scale"))
    parser.add_argument("--keep", action="store_true", help="keep the synthetic stores")
    parser.add_argument("--worker", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        kind, *rest = args.worker
        if kind == "pretrain":
            out = pretrain_worker(rest[0], int(rest[1]))
        else:
            out = finetune_worker(int(rest[0]), int(rest[1]), int(rest[2]))
        print(json.dumps(out))
        return
    print(conditions())
    print(f"memory available: {_meminfo_gib('MemAvailable'):.1f} GiB of {_meminfo_gib('MemTotal'):.1f} GiB")
    args.dir.mkdir(parents=True, exist_ok=True)
    print(f"\n# pre-training streamed from a float16 store, {FEATURE_DIM}-d, {args.steps} steps, random rows")
    print(
        "      N pairs | store GB | write s | pairs/s | us/pair | step/ceiling | peak RSS MiB | peak anon MiB"
    )
    for n in (int(x) for x in args.pairs):
        directory = args.dir / f"store-{n}"
        started = time.perf_counter()
        store = make_store(directory, n)
        written = time.perf_counter() - started
        del store
        r = _run(["pretrain", str(directory), str(args.steps)])
        print(
            f"{n:>13,} | {n * FEATURE_DIM * 2 / 1e9:8.2f} | {written:7.0f} | {r['pairs_per_s']:7,.0f} | "
            f"{r['us_per_pair']:7.1f} | {r['ceiling_ratio']:12.2f} | {r['peak_rss_mib']:12,.0f} | "
            f"{r['peak_anon_mib']:13,.0f}",
            flush=True,
        )
        if not args.keep:
            shutil.rmtree(directory)
    print(f"\n# fine-tuning, presence-only loss, 1e6 observations streamed, {args.steps} steps")
    print(" classes | sampled | pairs/s | us/pair | step/ceiling | peak RSS MiB")
    for c in args.classes:
        for sampled in sorted({0, args.sampled}):
            r = _run(["finetune", str(c), str(sampled), str(args.steps)])
            print(
                f"{c:>8,} | {sampled or 'all':>7} | {r['pairs_per_s']:7,.0f} | {r['us_per_pair']:7.1f} | "
                f"{r['ceiling_ratio']:12.2f} | {r['peak_rss_mib']:12,.0f}",
                flush=True,
            )
    print("\n" + conditions())


def _meminfo_gib(field: str) -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    return 0.0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    main()
