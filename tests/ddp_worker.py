"""Worker for the two-process DDP test: ``torchrun --nproc_per_node 2 tests/ddp_worker.py OUT``.

Pre-trains on the generated pairs with the same settings as the single-process reference in
``tests/train/test_distributed.py``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.synthetic import pairs  # noqa: E402
from train.config import PretrainConfig, load_config  # noqa: E402
from train.pretrain import run_pretrain  # noqa: E402

DDP_OVERRIDES = [
    "model.encoding_kwargs={frequency_num: 8}",
    "model.hidden_dim=64",
    "model.embed_dim=32",
    "model.dropout=0.0",  # dropout masks differ between processes; everything else must match
    "optim.epochs=2",
    "optim.batch_size=128",
    "optim.lr=0.003",
    "runtime.progress=false",
    "runtime.device=cpu",
]


def config_for(out_dir: str) -> PretrainConfig:
    return load_config(PretrainConfig, "csp-mc-bld", [*DDP_OVERRIDES, f"runtime.out_dir={out_dir}"])


if __name__ == "__main__":
    run_pretrain(config_for(sys.argv[1]), pairs=pairs(768))
