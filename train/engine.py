"""The training loop shared by pre-training and fine-tuning.

A :class:`Task` owns its data and an ``objective`` module whose ``forward(indices, generator)``
returns the loss of one batch: it reads the batch's rows (:class:`train.batches.BatchRows`) and
draws its own negative locations from ``generator``. Batches are host index tensors
(:class:`csp.samplers.BatchIndexSampler`), so the hot loop has no per-sample Python and no
host synchronisation (the loss is read back once per epoch).

The run directory's layout and its status states are defined in :mod:`csp.run_dir`;
a run ends ``completed``, ``failed`` (an exception, recorded with its message) or ``cancelled``
(SIGTERM/SIGINT, or the parent process that asked for it went away, see
:func:`train.runtime.cancel_on_signals`).

Resume (``resume=True``) restores model, optimizer, schedule, RNG streams and epoch from
the run's last checkpoint: an interrupted run resumed ends with the same weights as one that was not.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from csp.checkpoint import CheckpointMeta, load_checkpoint, point_link, read_meta, save_checkpoint
from csp.run_dir import TRAIN_STATE, RunDir
from csp.samplers import BatchIndexSampler
from train.config import OptimConfig, RuntimeConfig, to_dict
from train.lifecycle import RunCancelled, cancel_on_signals
from train.runtime import (
    Distributed,
    autocast,
    distributed_session,
    needs_grad_scaler,
    seed_everything,
    select_device,
)


class Task(Protocol):
    """What the loop needs from a training task."""

    model: nn.Module  # what is checkpointed
    objective: nn.Module  # forward(indices (b,) host int64, generator) -> (loss, terms)
    num_items: int

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


class MetricsLog:
    """Appends epoch records to the run's metrics log and, if installed, to TensorBoard."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self._writer: Any = None
        self._tried = False

    def log(self, record: dict[str, Any]) -> None:
        self.run.append_metrics(record)
        writer = self._tensorboard()
        if writer is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, int | float):
                    writer.add_scalar(key, value, record["epoch"])
            writer.flush()

    def _tensorboard(self) -> Any:
        if not self._tried:
            self._tried = True
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # TensorBoard is optional
                return None
            self._writer = SummaryWriter(str(self.run.tensorboard))
        return self._writer


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
    run: RunDir,
    device: torch.device,
    session: Distributed,
    training: TrainingState,
    resume: bool = False,
) -> FitResult:
    """Train ``task`` for ``optim.epochs`` epochs; returns the best and last checkpoints.

    ``training`` holds the optimizer state and counters (restored from ``checkpoints/last``
    here when resuming); the caller has prepared ``run``.
    """
    model = training.model
    if resume and run.last.exists():
        training.restore(run.last)
    if resume and session.is_main:
        run.truncate_metrics(training.epoch)
    metrics_log = MetricsLog(run)
    if session.enabled:
        # Every process was seeded alike (identical initial weights); give each its own
        # dropout stream so the SimCSE views of the global batch are independent.
        torch.manual_seed(runtime.seed * 7919 + training.epoch * 104729 + session.rank)
    state = training.counters
    objective: nn.Module = task.objective
    if session.enabled:
        # No device_ids: DDP would move the host indices to the GPU, and a streamed task
        # gathers its rows on the host (the module lives on one device, which DDP allows).
        objective = nn.parallel.DistributedDataParallel(objective)
    sampler = BatchIndexSampler(
        task.num_items,
        optim.batch_size,
        seed=runtime.seed,
        rank=session.rank,
        world_size=session.world_size,
    )
    history: list[dict[str, Any]] = []
    show = runtime.progress and session.is_main
    epochs_bar = tqdm(total=optim.epochs, initial=state["epoch"], desc="epochs", disable=not show)
    for epoch in range(state["epoch"], optim.epochs):
        if optim.patience and state["stale"] >= optim.patience:
            break  # an early-stopped run that is resumed stays stopped
        if session.is_main:
            run.write_status("running", epoch, optim.epochs, best_score=_finite(state["best_score"]))
        started = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        term_sums: dict[str, Tensor] = {}
        steps = 0
        steps_bar = tqdm(total=len(sampler), desc=f"epoch {epoch + 1}", leave=False, disable=not show)
        for indices in sampler.epoch(epoch):
            with autocast(device, runtime.amp):
                loss, terms = objective(indices, training.negatives)
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
            metrics_log.log(record)
            if not show:  # no progress bars: one line per epoch for logs (the app's output box)
                print(_epoch_line(record, optim.epochs, validation["score"]), flush=True)
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
        run.write_status("completed", state["epoch"], optim.epochs, best_score=_finite(state["best_score"]))
    session.barrier()
    best_metrics = read_meta(run.best).metrics if run.best.exists() else {}
    return FitResult(run.best, run.last, best_metrics, history)


def run_task(
    config: Any, make_task: Callable[[torch.device, Distributed], Task], resume: bool = False
) -> FitResult:
    """Seed, choose the device, join ``torchrun``'s process group if any, build the task, fit.

    ``config`` is a pre-training or fine-tuning config (it has ``optim`` and ``runtime``). The
    run's end is recorded in its status file: completed, failed (with the error) or cancelled
    (SIGTERM/SIGINT, or the parent named by ``CSP_PARENT_PID`` ended).
    """
    seed_everything(config.runtime.seed)
    device = select_device(config.runtime.device)
    run = RunDir(config.runtime.out_dir)
    epochs = config.optim.epochs
    with distributed_session(device) as session, cancel_on_signals():
        if session.is_main:
            run.prepare(to_dict(config), resume)  # refuses to overwrite another run: no status
            run.write_status("running", 0, epochs)
        session.barrier()
        training: TrainingState | None = None
        with _record_end(run, session, epochs, lambda: training):
            task = make_task(device, session)
            training = TrainingState(task.model.to(device), config.optim, config.runtime, device)
            return fit(task, config.optim, config.runtime, run, device, session, training, resume)


@contextlib.contextmanager
def _record_end(
    run: RunDir, session: Distributed, epochs: int, training: Callable[[], TrainingState | None]
) -> Iterator[None]:
    """Record ``failed`` (with the error) or ``cancelled`` as the run's status if the body raises."""
    try:
        yield
    except BaseException as err:
        if session.is_main:
            state = training()
            done, best = (state.epoch, _finite(state.counters["best_score"])) if state else (0, None)
            cancelled = isinstance(err, RunCancelled | KeyboardInterrupt)
            error = str(err) if cancelled else f"{type(err).__name__}: {err}"
            run.write_status(
                "cancelled" if cancelled else "failed", done, epochs, error=error, best_score=best
            )
        raise


def _epoch_line(record: dict[str, Any], epochs: int, score: float) -> str:
    return (
        f"epoch {record['epoch']}/{epochs}: loss {record['loss']:.4f}, validation score {score:.4f}, "
        f"{record['seconds']:.1f} s"
    )


def _finite(score: float) -> float | None:
    return score if math.isfinite(score) else None


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


def _save(run: RunDir, task: Task, training: TrainingState, record: dict[str, Any], improved: bool) -> None:
    train_state = training.state_dict()
    directory = run.epoch_dir(training.epoch)
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
