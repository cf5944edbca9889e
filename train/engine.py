"""The training loop shared by pre-training and fine-tuning.

A :class:`Task` owns its data as tensors on the device and an ``objective`` module whose
``forward(indices, random_lonlat)`` returns the loss of one batch; batches are index tensors
drawn on the device (:class:`csp.samplers.BatchIndexSampler`), so the hot loop has no
per-sample Python and no host synchronisation (the loss is read back once per epoch).

Run directory::

    config.yaml        the full configuration
    metrics.jsonl      one JSON line per epoch (epoch, loss, loss terms, validation, lr, seconds)
    status.json        state (running / finished / failed), epoch, epochs: for UIs to poll
    checkpoints/       epoch-NNNN/ (csp checkpoint + train_state.pt), last -> and best -> links

Resume (``resume=True``) restores model, optimizer, schedule, RNG streams and epoch from
``checkpoints/last``: an interrupted run resumed ends with the same weights as one that was not.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml
from torch import Tensor, nn
from tqdm.auto import tqdm

from csp.checkpoint import CheckpointMeta, load_checkpoint, point_link, save_checkpoint
from csp.samplers import BatchIndexSampler, sample_sphere
from train.config import OptimConfig, RuntimeConfig, to_dict
from train.runtime import (
    Distributed,
    autocast,
    distributed_session,
    needs_grad_scaler,
    seed_everything,
    select_device,
)

TRAIN_STATE = "train_state.pt"


class Task(Protocol):
    """What the loop needs from a training task."""

    model: nn.Module  # what is checkpointed
    objective: nn.Module  # forward(indices (b,), random_lonlat (b, K, 2)) -> (loss, terms)
    num_items: int
    num_random_locations: int

    def validate(self) -> dict[str, float]:
        """Validation metrics; ``score`` (higher is better) selects the best checkpoint."""

    def checkpoint_meta(self, metrics: dict[str, Any]) -> CheckpointMeta:
        """Metadata stored with each checkpoint."""


@dataclass
class FitResult:
    best_dir: Path
    last_dir: Path
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]


def _write_json_atomic(path: Path, record: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(record))
    os.replace(temporary, path)


class RunDirectory:
    """Files of one run (see module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.metrics = self.root / "metrics.jsonl"
        self.status = self.root / "status.json"
        self.last = self.checkpoints / "last"
        self.best = self.checkpoints / "best"

    def prepare(self, config: dict[str, Any], resume: bool) -> None:
        if self.root.exists() and not resume and self.metrics.exists():
            raise FileExistsError(
                f"run directory {self.root} already holds a run; pass --resume to continue it "
                "or choose another --out"
            )
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        (self.root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def set_status(self, state: str, epoch: int, epochs: int, **extra: Any) -> None:
        record = {"state": state, "epoch": epoch, "epochs": epochs, "pid": os.getpid(), **extra}
        _write_json_atomic(self.status, record)

    def log(self, record: dict[str, Any]) -> None:
        """Append one epoch's record to ``metrics.jsonl`` (and TensorBoard, if installed)."""
        with open(self.metrics, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        writer = self._tensorboard()
        if writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, int | float):
                    writer.add_scalar(key, value, record["epoch"])
            writer.flush()

    def _tensorboard(self) -> Any:
        if not hasattr(self, "_writer"):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # TensorBoard is optional
                self._writer = None
            else:
                self._writer = SummaryWriter(str(self.root / "tensorboard"))
        return self._writer

    def truncate_log(self, epochs_done: int) -> None:
        """Drop log lines of epochs after the resumed checkpoint (they will be redone), and a
        line torn by a crash mid-write."""
        if not self.metrics.exists():
            return
        kept = []
        for line in self.metrics.read_text().splitlines():
            try:
                if json.loads(line).get("epoch", 0) <= epochs_done:
                    kept.append(line)
            except json.JSONDecodeError:
                continue
        self.metrics.write_text("".join(line + "\n" for line in kept))

    def prune(self) -> None:
        """Remove epoch directories no link points to, and staging directories left behind by a
        process killed while writing a checkpoint (one writer per run, so none is live here)."""
        keep = {p.resolve() for p in (self.last, self.best) if p.exists()}
        for path in [*self.checkpoints.glob("epoch-*"), *self.checkpoints.glob(".epoch-*")]:
            if path.resolve() not in keep and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def _make_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    device_type = params[0].device.type if params else "cpu"
    # The fused kernel (one call for all parameters) exists for CPU and CUDA tensors.
    fused = device_type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay, fused=fused)


def fit(
    task: Task,
    optim: OptimConfig,
    runtime: RuntimeConfig,
    run: RunDirectory,
    device: torch.device,
    session: Distributed,
    config: dict[str, Any],
    resume: bool = False,
) -> FitResult:
    """Train ``task`` for ``optim.epochs`` epochs; returns the best and last checkpoints."""
    if session.is_main:
        run.prepare(config, resume)
    session.barrier()
    model = task.model.to(device)
    training = TrainingState(model, optim, runtime, device)
    if resume and run.last.exists():
        training.restore(run.last)
    if resume and session.is_main:
        run.truncate_log(training.epoch)
    if session.enabled:
        # Every process was seeded alike (identical initial weights); give each its own
        # dropout stream so the SimCSE views of the global batch are independent.
        torch.manual_seed(runtime.seed * 7919 + training.epoch * 104729 + session.rank)
    state = training.counters
    objective: nn.Module = task.objective
    if session.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        objective = nn.parallel.DistributedDataParallel(objective, device_ids=device_ids)
    sampler = BatchIndexSampler(
        task.num_items,
        optim.batch_size,
        seed=runtime.seed,
        rank=session.rank,
        world_size=session.world_size,
        device=device,
    )
    local = optim.batch_size // session.world_size
    history: list[dict[str, Any]] = []
    show = runtime.progress and session.is_main
    epochs_bar = tqdm(total=optim.epochs, initial=state["epoch"], desc="epochs", disable=not show)
    for epoch in range(state["epoch"], optim.epochs):
        if optim.patience and state["stale"] >= optim.patience:
            break  # an early-stopped run that is resumed stays stopped
        if session.is_main:
            run.set_status("running", epoch, optim.epochs)
        started = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        term_sums: dict[str, Tensor] = {}
        steps = 0
        steps_bar = tqdm(total=len(sampler), desc=f"epoch {epoch + 1}", leave=False, disable=not show)
        for indices in sampler.epoch(epoch):
            random_lonlat = sample_sphere(
                (optim.batch_size, max(task.num_random_locations, 1)),
                generator=training.negatives,
                device=device,
            )[session.rank * local : (session.rank + 1) * local]
            with autocast(device, runtime.amp):
                loss, terms = objective(indices, random_lonlat)
            training.step(loss)
            loss_sum += loss.detach()
            for name, value in terms.items():
                term_sums[name] = term_sums.get(name, 0) + value
            steps += 1
            steps_bar.update()
        steps_bar.close()
        lr = training.optimizer.param_groups[0]["lr"]  # the rate this epoch trained with
        training.schedule.step()
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": (epoch + 1) * len(sampler),
            "loss": float(session.mean(loss_sum / max(steps, 1))),
            **{k: float(session.mean(v / max(steps, 1))) for k, v in term_sums.items()},
            "lr": lr,
        }
        train_seconds = time.perf_counter() - started
        record |= {"seconds": train_seconds, "pairs_per_second": steps * optim.batch_size / train_seconds}
        validation = task.validate()
        record |= {f"val_{k}": v for k, v in validation.items()}
        improved = validation["score"] > state["best_score"]
        if improved:
            state["best_score"], state["stale"] = validation["score"], 0
        else:
            state["stale"] += 1
        state["epoch"] = epoch + 1
        history.append(record)
        if session.is_main:
            run.log(record)
            last_epoch = epoch + 1 == optim.epochs
            if improved or last_epoch or (epoch + 1) % runtime.checkpoint_every == 0:
                _save(run, task, training, record, improved)
        epochs_bar.update()
        epochs_bar.set_postfix(loss=f"{record['loss']:.4f}", score=f"{validation['score']:.3f}")
        session.barrier()
    epochs_bar.close()
    if session.is_main:
        if not run.last.exists() or _epoch_of(run.last) < state["epoch"]:
            record = history[-1] if history else {"epoch": state["epoch"]}
            _save(run, task, training, record, False)
        run.set_status("finished", state["epoch"], optim.epochs, best_score=state["best_score"])
    session.barrier()
    best_meta = json.loads((run.best / "model.json").read_text()) if run.best.exists() else {}
    return FitResult(run.best, run.last, best_meta.get("metrics", {}), history)


def run_task(
    config: Any, make_task: Callable[[torch.device, Distributed], Task], resume: bool = False
) -> FitResult:
    """Seed, choose the device, join ``torchrun``'s process group if any, build the task, fit.

    ``config`` is a pre-training or fine-tuning config (it has ``optim`` and ``runtime``).
    """
    seed_everything(config.runtime.seed)
    device = select_device(config.runtime.device)
    with distributed_session(device) as session:
        task = make_task(device, session)
        run = RunDirectory(config.runtime.out_dir)
        return fit(task, config.optim, config.runtime, run, device, session, to_dict(config), resume)


def _epoch_of(checkpoint: Path) -> int:
    return int(torch.load(checkpoint / TRAIN_STATE, weights_only=True)["epoch"])


class TrainingState:
    """Optimizer, schedule, loss scaler, RNG streams and counters: what a resume restores."""

    def __init__(
        self, model: nn.Module, optim: OptimConfig, runtime: RuntimeConfig, device: torch.device
    ) -> None:
        self.model = model
        self.device = device
        self.optimizer = _make_optimizer(model, optim)
        self.schedule = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=optim.lr_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(device, runtime.amp))
        self.negatives = torch.Generator(device=device).manual_seed(runtime.seed + 17)
        self.counters: dict[str, Any] = {"epoch": 0, "best_score": -math.inf, "stale": 0}

    @property
    def epoch(self) -> int:
        return self.counters["epoch"]

    def step(self, loss: Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {
            **self.counters,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "negatives_rng": self.negatives.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def restore(self, checkpoint: Path) -> None:
        """Load model weights and this state from a checkpoint written by :func:`_save`."""
        loaded, _ = load_checkpoint(checkpoint, map_location=self.device)
        self.model.load_state_dict(loaded.state_dict())
        saved = torch.load(checkpoint / TRAIN_STATE, map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        if saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        self.negatives.set_state(saved["negatives_rng"])
        torch.set_rng_state(saved["torch_rng"])
        if saved["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        self.counters = {k: saved[k] for k in ("epoch", "best_score", "stale")}


def _save(
    run: RunDirectory, task: Task, training: TrainingState, record: dict[str, Any], improved: bool
) -> None:
    train_state = training.state_dict()
    directory = run.checkpoints / f"epoch-{training.epoch:04d}"
    save_checkpoint(
        directory,
        training.model,
        task.checkpoint_meta(record),
        extra_files={TRAIN_STATE: lambda path: torch.save(train_state, path)},
    )
    point_link(run.last, directory)
    if improved:
        point_link(run.best, directory)
    run.prune()
