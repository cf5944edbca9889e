"""The compute ceiling of a training step, measured on this machine for the step's own shapes.

A step's dense work is its matrix products. :func:`record_matmuls` runs the step once under a
``TorchDispatchMode`` that sees every ``mm``/``addmm``/``bmm``/``baddbmm`` call below autograd
(forward and backward), and keeps a copy of each call's arguments with their shapes and strides
(so transposed operands stay transposed). :func:`against_ceiling` then times each recorded
call alone, right after the step in every repeat, and sums them: the time the step would take
if it did nothing but its matrix products at the rate this CPU reaches for those exact shapes.
``ceiling / step time`` is the fraction of that ceiling the step reaches.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from timing import median_seconds
from torch.utils._python_dispatch import TorchDispatchMode

_MATMULS = {
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten.baddbmm.default,
    # Under inference mode these are not decomposed into the ops above.
    torch.ops.aten.linear.default,
    torch.ops.aten.matmul.default,
}


def _copy(value: Any) -> Any:
    """A tensor copy with the same shape, strides and dtype (other values unchanged)."""
    if isinstance(value, torch.Tensor):
        out = torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device=value.device)
        return out.copy_(value.detach())
    return value


@dataclass
class MatmulCall:
    """One recorded matrix product: the op, copies of its arguments, and its FLOPs."""

    op: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    flop: float

    def __call__(self) -> None:
        self.op(*self.args, **self.kwargs)

    def describe(self) -> str:
        shapes = " x ".join(str(tuple(a.shape)) for a in self.args if isinstance(a, torch.Tensor))
        return f"{self.op.__name__.split('.')[0]} {shapes}"


def _flop(op: Any, args: tuple[Any, ...], out: torch.Tensor) -> float:
    """2 m n k (per batch for bmm) from the output shape and the inner dimension."""
    first = args[1] if op in (torch.ops.aten.addmm.default, torch.ops.aten.baddbmm.default) else args[0]
    return 2.0 * out.numel() * first.shape[-1]  # linear(x, W): x's last dimension is k too


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[MatmulCall] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in _MATMULS:
            self.calls.append(
                MatmulCall(func, tuple(_copy(a) for a in args), {k: _copy(v) for k, v in kwargs.items()},
                           _flop(func, args, out))
            )
        return out


def record_matmuls(step: Callable[[], object]) -> list[MatmulCall]:
    """Run ``step()`` once and return the matrix products it issued (forward and backward)."""
    recorder = _Recorder()
    with recorder:
        step()
    return recorder.calls


@dataclass
class Ceiling:
    """A step against its ceiling, medians over interleaved repeats.

    ``step_seconds``: the step; ``seconds``: its matrix products alone; ``ratio``: the median
    of the per-repeat ratios ``seconds / step_seconds`` (each repeat times the step and then
    its matrix products back to back, so a change of machine load hits both alike).
    """

    step_seconds: float
    seconds: float
    ratio: float
    flop: float
    calls: int

    @property
    def gflops(self) -> float:
        """Rate of the matrix products alone."""
        return self.flop / self.seconds / 1e9


def _sync() -> None:
    """Wait for queued GPU work, so that wall time measures it (nothing to do on a CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _timed(fn: Callable[[], object]) -> float:
    _sync()
    start = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - start


def against_ceiling(step: Callable[[], object], repeats: int, warmup: int = 3) -> Ceiling:
    """Time ``step()`` and, right after it in each repeat, each of its matrix products alone."""
    calls = record_matmuls(step)
    for _ in range(warmup):
        step()
        for call in calls:
            call()
    steps, ceilings = [], []
    for _ in range(repeats):
        steps.append(_timed(step))
        ceilings.append(sum(_timed(call) for call in calls))
    ratios = [c / s for c, s in zip(ceilings, steps, strict=True)]
    return Ceiling(
        statistics.median(steps),
        statistics.median(ceilings),
        statistics.median(ratios),
        sum(c.flop for c in calls),
        len(calls),
    )


def large_matmul_gflops(repeats: int, size: int = 2048) -> float:
    """float32 rate of one ``size``-cubed matrix product: the CPU's best case."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size**3 / median_seconds(lambda: a @ b, repeats) / 1e9


def conditions() -> str:
    """One line: torch, threads, CPU count, and the 1/5/15-minute load averages."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {load} (shared machine: figures are noisy; ratios are measured in this run)"
    )
