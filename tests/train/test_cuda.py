"""Training on a CUDA device: streamed = in memory, AMP steps finite, no host synchronisation in
a step. Skipped without a CUDA device (bench/gpu_check.sh runs them on a GPU)."""

import pytest
import torch

from csp.checkpoint import load_checkpoint
from csp.features import write_store
from tests.synthetic import pairs, small_pretrain_config
from train.engine import TrainingState
from train.pretrain import PretrainTask, run_pretrain
from train.runtime import Distributed, autocast

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

def _config(out, extra=()):
    return small_pretrain_config(out, "cuda", extra)


def test_streamed_training_on_cuda_matches_in_memory(tmp_path):
    lonlat, features = pairs(640)
    config = _config(tmp_path / "s", ["runtime.amp=false"])
    store = write_store(tmp_path / "store", lonlat.numpy(), features.numpy(), config.image_encoder)
    streamed = run_pretrain(_config(tmp_path / "s", ["runtime.amp=false", f"features={store.directory}"]))
    in_memory = run_pretrain(
        _config(tmp_path / "m", ["runtime.amp=false"]),
        pairs=(torch.from_numpy(store.lonlat), torch.from_numpy(store.features.astype("float32"))),
    )
    a, _ = load_checkpoint(streamed.last_dir)
    b, _ = load_checkpoint(in_memory.last_dir)
    for (key, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("stream", [False, True])
def test_an_amp_training_step_issues_no_host_synchronisation(stream):
    device = torch.device("cuda")
    config = _config("unused")
    lonlat, features = pairs(1024)
    task = PretrainTask(config, lonlat, features.half(), device, Distributed(), stream=stream)
    training = TrainingState(task.model, config.optim, config.runtime, device)
    generator = torch.Generator(device=device).manual_seed(0)
    order = torch.randperm(task.num_items)

    def step(i):
        with autocast(device, True):
            loss, _ = task.objective(order[i * 128 : (i + 1) * 128], generator)
        training.step(loss)
        return loss

    step(0)  # first-call set-up (allocations, kernels) may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = [step(i).detach() for i in range(1, 5)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(torch.stack(losses)).all()
