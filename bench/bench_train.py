"""Throughput of the location encoders, the CSP-MC-BLD pre-training step, the trainer end to end,
and the evaluation passes, on this machine. Not a test: prints figures (medians of repeats).

    python bench/bench_train.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import median_seconds  # noqa: E402

from csp.encodings import list_encodings  # noqa: E402
from csp.losses import CSPLossConfig, PretrainBatch, csp_loss  # noqa: E402
from csp.metrics import evaluate_prior  # noqa: E402
from csp.models import LocationEncoder, LocationEncoderConfig, LocationImageEncoder  # noqa: E402
from csp.samplers import sample_sphere  # noqa: E402
from train.config import PretrainConfig, load_config  # noqa: E402
from train.pretrain import run_pretrain  # noqa: E402

FLOP_PER_PAIR = 8.4e6  # CSP-MC-BLD bench configuration, forward + backward (issue #2)


def bench_encodings(batch: int, repeats: int) -> None:
    print(f"\n# encoding + network, batch {batch}, eval mode (points/second, median of {repeats})")
    lonlat = sample_sphere(batch, generator=torch.Generator().manual_seed(0))
    for name in list_encodings():
        encoder = LocationEncoder(LocationEncoderConfig(encoding=name)).eval()
        with torch.inference_mode():
            seconds = median_seconds(lambda e=encoder: e.embed(lonlat), repeats)
        print(f"{name:>20}: {batch / seconds:12,.0f}  (D = {encoder.position_encoding.output_dim})")


def bench_config() -> PretrainConfig:
    return load_config(PretrainConfig, "csp-mc-bld", ["runtime.progress=false", "runtime.device=cpu"])


def matmul_gflops(repeats: int) -> float:
    """This CPU's float32 matrix-multiply rate (2048^3), the compute ceiling of a step."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    return 2 * 2048**3 / median_seconds(lambda: a @ b, repeats) / 1e9


def bench_step(repeats: int) -> float:
    config = bench_config()
    model = LocationImageEncoder(config.model, image_dim=2048, objective="mc")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    lonlat = sample_sphere(1024, generator=generator)
    batch = PretrainBatch(lonlat, torch.randn(1024, 2048, generator=generator))
    loss_config = CSPLossConfig(**{**config.loss.to_dict(), "num_random_locations": 1})

    def step() -> None:
        negatives = sample_sphere((1024, 1), generator=generator)
        loss, _ = csp_loss(model, batch, loss_config, negatives)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = median_seconds(step, repeats, warmup=3)
    print("\n# one CSP-MC-BLD step (grid 32 scales, 256-d, batch 1024, 2048-d features, L=1, SimCSE)")
    print(
        f"step: {seconds * 1000:.1f} ms  ->  {1024 / seconds:,.0f} pairs/s "
        f"({1024 / seconds * FLOP_PER_PAIR / 1e9:.0f} GFLOP/s)"
    )
    return seconds


def bench_trainer(num_pairs: int, epochs: int) -> float:
    generator = torch.Generator().manual_seed(0)
    lonlat = sample_sphere(num_pairs, generator=generator)
    features = torch.randn(num_pairs, 2048, generator=generator)
    with tempfile.TemporaryDirectory() as out:
        config = load_config(
            PretrainConfig,
            "csp-mc-bld",
            [
                "runtime.progress=false",
                "runtime.device=cpu",
                f"runtime.out_dir={out}",
                f"optim.epochs={epochs}",
                "val_fraction=0.0",
            ],
        )
        started = time.perf_counter()
        result = run_pretrain(config, pairs=(lonlat, features))
        wall = time.perf_counter() - started
    rates = [r["pairs_per_second"] for r in result.history]
    rate = statistics.median(rates)
    print(f"\n# trainer end to end: {num_pairs:,} pairs x {epochs} epochs, CSP-MC-BLD, CPU")
    print(
        f"median epoch: {rate:,.0f} pairs/s (epochs: {', '.join(f'{r:,.0f}' for r in rates)}); "
        f"wall {wall:.1f} s incl. set-up and checkpoints"
    )
    return rate


def bench_evaluation(points: int, classes: int, repeats: int) -> float:
    config = LocationEncoderConfig(encoding_kwargs={"frequency_num": 32}, num_classes=classes)
    encoder = LocationEncoder(config).eval()
    generator = torch.Generator().manual_seed(0)
    lonlat = sample_sphere(points, generator=generator)
    labels = torch.randint(0, classes, (points,), generator=generator)
    probs = torch.softmax(torch.randn(points, classes, generator=generator), 1)
    seconds = median_seconds(lambda: evaluate_prior(encoder, lonlat, labels, probs), repeats)
    print(f"geo-aware evaluation, {points:,} points x {classes:,} classes: {seconds:.3f} s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller runs")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_encodings(65_536, repeats)
    step = bench_step(repeats * 3)
    rate = bench_trainer(20_480 if args.quick else 61_440, 3)
    gflops = matmul_gflops(repeats)
    measured_ceiling = gflops * 1e9 / FLOP_PER_PAIR
    print(
        f"\nmatmul {gflops:.0f} GFLOP/s -> ceiling {measured_ceiling:,.0f} pairs/s on this CPU; "
        f"trainer / that ceiling: {rate / measured_ceiling:.2f}"
    )
    ceiling = 14_000  # the estimate, from 110-125 GFLOP/s
    print(
        f"step rate / ceiling ({ceiling:,} pairs/s): {1024 / step / ceiling:.2f}; "
        f"trainer rate / ceiling: {rate / ceiling:.2f}; trainer / reference (4,450): {rate / 4450:.2f}x"
    )
    print("\n# evaluation (targets: 0.08 s and 0.15 s; reference code: 7.8 s and 7.6 s)")
    bench_evaluation(10_000, 62, repeats)
    bench_evaluation(2_000, 8_142, repeats)


if __name__ == "__main__":
    main()
