"""Devices, mixed precision, seeding and ``torchrun`` multi-process setup."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor


def select_device(name: str = "auto") -> torch.device:
    """``auto``: the local CUDA device (``LOCAL_RANK`` under torchrun), else MPS, else CPU."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} requested but CUDA is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA GPUs that support it, fp16 on older ones; nothing on CPU/MPS."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def needs_grad_scaler(device: torch.device, amp: bool) -> bool:
    """fp16 autocast needs loss scaling; bf16 and fp32 do not."""
    return amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_gather(self, tensor: Tensor) -> Tensor:
        """Concatenate ``tensor`` from all processes along dim 0, keeping gradients."""
        if not self.enabled:
            return tensor
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(tensor), dim=0)

    def mean(self, tensor: Tensor) -> Tensor:
        """Average a tensor over processes (no gradient)."""
        if not self.enabled:
            return tensor
        tensor = tensor.detach().clone()
        dist.all_reduce(tensor)
        return tensor / self.world_size


def init_distributed(device: torch.device) -> Distributed:
    """Join the ``torchrun`` process group if ``WORLD_SIZE`` > 1 (NCCL on CUDA, else gloo)."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size <= 1:
        return Distributed()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size())


@contextlib.contextmanager
def distributed_session(device: torch.device) -> Iterator[Distributed]:
    """Initialise the process group for the duration of a run and tear it down after."""
    session = init_distributed(device)
    try:
        yield session
    finally:
        if session.enabled and dist.is_initialized():
            dist.destroy_process_group()
