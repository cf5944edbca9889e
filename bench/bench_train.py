"""Throughput of the location encoders, the CSP-MC-BLD pre-training step, the trainer end to end,
and the evaluation passes, on this machine. Not a test: prints figures, no constants.

Every speed figure is set against a ceiling measured in the same run on the same shapes
(:mod:`ceiling`: the step's own matrix products timed alone) and printed as a ratio; times are
medians of repeats, and the load average is printed because the machine may be shared.

    python bench/bench_train.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ceiling import Ceiling, against_ceiling, conditions, large_matmul_gflops  # noqa: E402
from timing import median_seconds  # noqa: E402

from csp.encodings import list_encodings  # noqa: E402
from csp.metrics import evaluate_prior  # noqa: E402
from csp.models import LocationEncoder, LocationEncoderConfig  # noqa: E402
from csp.samplers import sample_sphere  # noqa: E402
from train.config import PretrainConfig, load_config  # noqa: E402
from train.engine import TrainingState  # noqa: E402
from train.pretrain import PretrainTask, run_pretrain  # noqa: E402
from train.runtime import Distributed  # noqa: E402

BATCH = 1024
FEATURE_DIM = 2048


def bench_encodings(batch: int, repeats: int) -> None:
    print(f"\n# encoding + network, batch {batch}, eval mode (points/second, median of {repeats})")
    lonlat = sample_sphere(batch, generator=torch.Generator().manual_seed(0))
    for name in list_encodings():
        encoder = LocationEncoder(LocationEncoderConfig(encoding=name)).eval()
        with torch.inference_mode():
            seconds = median_seconds(lambda e=encoder: e.embed(lonlat), repeats)
        print(f"{name:>20}: {batch / seconds:12,.0f}  (D = {encoder.position_encoding.output_dim})")


def bench_config(overrides: list[str] = ()) -> PretrainConfig:
    return load_config(
        PretrainConfig, "csp-mc-bld", ["runtime.progress=false", "runtime.device=cpu", *overrides]
    )


def synthetic_pairs(n: int, dim: int = FEATURE_DIM) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random locations ``(n, 2)`` degrees and features ``(n, dim)`` (seeded)."""
    generator = torch.Generator().manual_seed(0)
    return sample_sphere(n, generator=generator), torch.randn(n, dim, generator=generator)


def task_step(
    config: PretrainConfig, task: PretrainTask, after: Callable[[], None] | None = None
) -> Callable[[], None]:
    """One optimisation step of ``task``'s own objective and the trainer's optimizer on a batch of
    ``config.optim.batch_size`` random indices (``after``: called at the end of each step)."""
    training = TrainingState(task.model, config.optim, config.runtime, torch.device("cpu"))
    generator = torch.Generator().manual_seed(1)
    batch = config.optim.batch_size

    def step() -> None:
        indices = torch.randint(0, task.num_items, (batch,), generator=generator)
        loss, _ = task.objective(indices, generator)
        training.step(loss)
        if after is not None:
            after()

    return step


def trainer_step(config: PretrainConfig, num_pairs: int) -> Callable[[], None]:
    """:func:`task_step` on ``num_pairs`` synthetic pairs held in memory."""
    task = PretrainTask(config, *synthetic_pairs(num_pairs), torch.device("cpu"), Distributed())
    return task_step(config, task)


def bench_step(step: Callable[[], None], repeats: int) -> Ceiling:
    """The trainer step against its matmul ceiling, printed."""
    result = against_ceiling(step, repeats)
    print(
        f"\n# one CSP-MC-BLD trainer step (grid 32 scales, 256-d, batch {BATCH:,}, "
        f"{FEATURE_DIM:,}-d features, L=1, SimCSE), median of {repeats}"
    )
    print(
        f"step: {result.step_seconds * 1000:.1f} ms -> {BATCH / result.step_seconds:,.0f} pairs/s, "
        f"{result.flop / result.step_seconds / 1e9:.0f} GFLOP/s"
    )
    print(
        f"its {result.calls} matrix products alone: {result.seconds * 1000:.1f} ms "
        f"({result.flop / 1e9:.2f} GFLOP at {result.gflops:.0f} GFLOP/s) -> ceiling "
        f"{BATCH / result.seconds:,.0f} pairs/s"
    )
    print(f"step / ceiling: {result.ratio:.2f}")
    return result


def bench_trainer(num_pairs: int, epochs: int) -> float:
    """Median epoch rate (pairs/s) of a whole ``run_pretrain`` on synthetic pairs."""
    with tempfile.TemporaryDirectory() as out:
        config = bench_config([f"runtime.out_dir={out}", f"optim.epochs={epochs}", "val_fraction=0.0"])
        started = time.perf_counter()
        result = run_pretrain(config, pairs=synthetic_pairs(num_pairs))
        wall = time.perf_counter() - started
    rates = [r["pairs_per_second"] for r in result.history]
    rate = statistics.median(rates)
    print(f"\n# trainer end to end: {num_pairs:,} pairs x {epochs} epochs, CSP-MC-BLD, CPU")
    print(
        f"median epoch: {rate:,.0f} pairs/s (epochs: {', '.join(f'{r:,.0f}' for r in rates)}); "
        f"wall {wall:.1f} s incl. set-up and checkpoints"
    )
    return rate


def bench_evaluation(points: int, classes: int, repeats: int) -> None:
    """``evaluate_prior`` location-only, then with image probabilities (geo-aware: the
    :mod:`csp.fusion` rule, float64), each against its own matrix products."""
    config = LocationEncoderConfig(encoding_kwargs={"frequency_num": 32}, num_classes=classes)
    encoder = LocationEncoder(config).eval()
    generator = torch.Generator().manual_seed(0)
    lonlat = sample_sphere(points, generator=generator)
    labels = torch.randint(0, classes, (points,), generator=generator)
    probs = torch.softmax(torch.randn(points, classes, generator=generator), 1)
    for name, image_probs in (("location-only", None), ("geo-aware (csp.fusion)", probs)):
        result = against_ceiling(lambda p=image_probs: evaluate_prior(encoder, lonlat, labels, p), repeats)
        print(
            f"{name} evaluation, {points:,} points x {classes:,} classes: {result.step_seconds:.3f} s "
            f"(its matrix products alone: {result.seconds:.3f} s, {result.flop / 1e9:.2f} GFLOP at "
            f"{result.gflops:.0f} GFLOP/s; ratio {result.ratio:.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller runs")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    print(conditions())
    bench_encodings(65_536, repeats)
    step = trainer_step(bench_config(), 4 * BATCH)
    before = bench_step(step, repeats * 3)
    rate = bench_trainer(20_480 if args.quick else 61_440, 3)
    after = against_ceiling(step, repeats * 3)
    ceiling = statistics.median([before.seconds, after.seconds])
    print(
        f"step ceiling measured again after the trainer: {BATCH / after.seconds:,.0f} pairs/s "
        f"(before: {BATCH / before.seconds:,.0f}); trainer epoch rate / mean ceiling: "
        f"{rate * ceiling / BATCH:.2f}"
    )
    large = large_matmul_gflops(repeats)
    print(f"one large matmul (2048^3, float32) alone: {large:.0f} GFLOP/s")
    print(f"\n# evaluation, median of {repeats}")
    bench_evaluation(10_000, 62, repeats)
    bench_evaluation(2_000, 8_142, repeats)
    print("\n" + conditions())


if __name__ == "__main__":
    main()
