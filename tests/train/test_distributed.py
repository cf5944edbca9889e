"""Two CPU processes on the gloo backend give the same model as one process (same global batch)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from csp.checkpoint import load_checkpoint
from tests.ddp_worker import config_for
from tests.synthetic import pairs
from train.pretrain import run_pretrain

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(ROOT / "tests" / "ddp_worker.py"),
        str(tmp_path / "ddp"),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    single = run_pretrain(config_for(str(tmp_path / "single")), pairs=pairs(768))
    ddp_model, _ = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last")
    one_model, _ = load_checkpoint(single.last_dir)
    for (key, a), (_, b) in zip(ddp_model.state_dict().items(), one_model.state_dict().items(), strict=True):
        # Summation order differs between the all-reduce and one process: float32 round-off only.
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=key)
    log = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(log) == 2  # rank 0 alone writes the log
