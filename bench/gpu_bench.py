"""GPU figures for bench/gpu_check.sh: pre-training and fine-tuning throughput (float32 and bf16
autocast, in memory and streamed from float16 host rows), evaluation times, peak GPU memory, and
whether a training step issues a host synchronisation. ``--nccl`` (under ``torchrun``) checks
DDP and the gradient-carrying all-gather on the NCCL backend.

    python bench/gpu_bench.py --out runs/gpu_check/gpu_bench.json
    python bench/gpu_bench.py --device cpu --quick      # dry run of the same code paths on a CPU
    torchrun --standalone --nproc_per_node 1 bench/gpu_bench.py --nccl

Times are medians of repeats with the device synchronised around each timed call.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ceiling import against_ceiling, conditions  # noqa: E402

from csp.metrics import evaluate_prior  # noqa: E402
from csp.models import LocationEncoder, LocationEncoderConfig  # noqa: E402
from csp.samplers import sample_sphere  # noqa: E402
from train.batches import BatchRows  # noqa: E402
from train.config import FinetuneConfig, PretrainConfig, load_config  # noqa: E402
from train.engine import TrainingState  # noqa: E402
from train.finetune import PresenceObjective  # noqa: E402
from train.pretrain import PretrainTask  # noqa: E402
from train.runtime import Distributed, autocast  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_rate(fn: Callable[[], object], items: int, device: torch.device, repeats: int) -> float:
    """Items per second: median over ``repeats`` of ``fn()`` timed with the device drained."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return items / statistics.median(times)


def _peak_mib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def training_step(
    objective: torch.nn.Module,
    training: TrainingState,
    batches: torch.Tensor,
    amp: bool,
    device: torch.device,
) -> Callable[[], None]:
    """One optimisation step per call, cycling through the host index rows of ``batches``."""
    negatives = torch.Generator(device=device).manual_seed(1)
    counter = iter(range(10**9))

    def step() -> None:
        with autocast(device, amp):
            loss, _ = objective(batches[next(counter) % len(batches)], negatives)
        training.step(loss)

    return step


def no_sync_check(step: Callable[[], object], device: torch.device) -> str:
    """``ok`` if a few steps run under ``set_sync_debug_mode("error")``, else the error."""
    if device.type != "cuda":
        return "not checked (no CUDA device)"
    step()
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            step()
        return "ok"
    except RuntimeError as error:
        return f"synchronises: {str(error).splitlines()[0]}"
    finally:
        torch.cuda.set_sync_debug_mode("default")


def pretrain_figures(device: torch.device, batch: int, pairs: int, repeats: int) -> list[dict]:
    """CSP-MC-BLD steps (2,048-d features) for each (amp, stream) combination."""
    rows = []
    generator = torch.Generator().manual_seed(0)
    lonlat = sample_sphere(pairs, generator=generator)
    features = torch.randn(pairs, 2048, generator=generator).half()
    for amp in (False, True):
        for stream in (False, True):
            config = load_config(
                PretrainConfig,
                "csp-mc-bld",
                [f"optim.batch_size={batch}", f"runtime.amp={str(amp).lower()}", "val_fraction=0"],
            )
            _reset_peak(device)
            task = PretrainTask(config, lonlat, features, device, Distributed(), stream=stream)
            training = TrainingState(task.model, config.optim, config.runtime, device)
            batches = torch.randint(0, task.num_items, (64, batch), generator=generator)
            step = training_step(task.objective, training, batches, amp, device)

            rate = _median_rate(step, batch, device, repeats)
            ceiling = against_ceiling(step, repeats)
            rows.append({
                "task": "pretrain", "amp": amp, "stream": stream, "batch": batch,
                "pairs_per_s": rate, "step_per_ceiling": ceiling.ratio, "peak_gpu_mib": _peak_mib(device),
                "host_sync": no_sync_check(step, device),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def finetune_figures(device: torch.device, batch: int, repeats: int, class_counts: list[int]) -> list[dict]:
    """Presence-only steps at each class count, all classes and 1,024 sampled, with AMP."""
    rows = []
    config = load_config(FinetuneConfig, "sup-only", [f"optim.batch_size={batch}"])
    observations = 200_000
    generator = torch.Generator().manual_seed(0)
    for classes in class_counts:
        columns = {
            "lonlat": sample_sphere(observations, generator=generator),
            "labels": torch.randint(0, classes, (observations,), generator=generator),
        }
        for sampled in (0, 1024):
            _reset_peak(device)
            model = LocationEncoder(replace(config.model, num_classes=classes)).to(device)
            objective = PresenceObjective(
                model, BatchRows(columns, device, stream=True), None, Distributed(), sampled_classes=sampled
            )
            training = TrainingState(model, config.optim, config.runtime, device)
            batches = torch.randint(0, observations, (64, batch), generator=generator)
            step = training_step(objective, training, batches, True, device)

            rows.append({
                "task": "finetune", "classes": classes, "sampled": sampled, "batch": batch,
                "pairs_per_s": _median_rate(step, batch, device, repeats),
                "peak_gpu_mib": _peak_mib(device), "host_sync": no_sync_check(step, device),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def evaluation_figures(device: torch.device, repeats: int) -> list[dict]:
    rows = []
    for points, classes in ((10_000, 62), (2_000, 8_142)):
        config = LocationEncoderConfig(encoding_kwargs={"frequency_num": 32}, num_classes=classes)
        encoder = LocationEncoder(config).to(device).eval()
        generator = torch.Generator().manual_seed(0)
        lonlat = sample_sphere(points, generator=generator).to(device)
        labels = torch.randint(0, classes, (points,), generator=generator).to(device)
        probs = torch.softmax(torch.randn(points, classes, generator=generator), 1).to(device)
        inputs = (encoder, lonlat, labels, probs)
        rate = _median_rate(lambda inputs=inputs: evaluate_prior(*inputs), 1, device, repeats)
        rows.append({"task": "evaluate", "points": points, "classes": classes, "seconds": 1 / rate})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def nccl_check() -> dict:
    """Under torchrun: DDP (as the engine wraps it, host indices) and the all-gather with
    gradients that the in-batch terms use, on the NCCL backend, one process per GPU."""
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather

    rank = int(os.environ["LOCAL_RANK"])
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    dist.init_process_group("nccl")
    config = load_config(PretrainConfig, "csp-mc-bld", ["optim.batch_size=512", "val_fraction=0"])
    generator = torch.Generator().manual_seed(0)
    lonlat, features = sample_sphere(4096, generator=generator), torch.randn(4096, 2048, generator=generator)
    task = PretrainTask(config, lonlat, features.half(), device, Distributed(), stream=True)
    objective = torch.nn.parallel.DistributedDataParallel(task.objective)
    training = TrainingState(task.model, config.optim, config.runtime, device)
    negatives = torch.Generator(device=device).manual_seed(1)
    for i in range(5):
        with autocast(device, True):
            loss, _ = objective(torch.arange(i * 512, (i + 1) * 512), negatives)
        training.step(loss)
    x = torch.ones(3, 2, device=device, requires_grad=True)
    gathered = torch.cat(all_gather(x))
    gathered.sum().backward()
    result = {
        "task": "nccl", "backend": dist.get_backend(), "world_size": dist.get_world_size(),
        "loss_finite": bool(torch.isfinite(loss)), "gathered_rows": gathered.shape[0],
        "gather_grad": float(x.grad[0, 0]),
    }  # fmt: skip
    dist.destroy_process_group()
    return result


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small sizes (a CPU dry run)")
    parser.add_argument("--nccl", action="store_true", help="the NCCL check (under torchrun)")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    if args.nccl:
        figures = [nccl_check()]
        print(json.dumps(figures[0]))
    else:
        device = torch.device(args.device)
        print(conditions())
        if device.type == "cuda":
            print(torch.cuda.get_device_name(device), "bf16:", torch.cuda.is_bf16_supported())
        repeats = 3 if args.quick else 20
        batch = 256 if args.quick else 4096
        figures = pretrain_figures(device, batch, 4 * batch if args.quick else 262_144, repeats)
        figures += finetune_figures(device, batch, repeats, [62] if args.quick else [4402, 50_000])
        figures += evaluation_figures(device, repeats)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
