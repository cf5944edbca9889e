"""``python app.py``: serve the app on the shipped default model (or ``--checkpoint DIR``).

Offline by construction: no CDN, tiles or hub; Gradio analytics are off. Uploads and exported
files live in one temporary folder removed at exit, and folders left by servers that were
killed are removed at start (:mod:`app.scratch`); a training run still in progress is
stopped at exit, and ends by itself if the app is killed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.scratch import make_scratch, remove_stale_scratch
from app.static import DEFAULT_MODEL_DIR, REPO_ROOT

MAX_FILE_SIZE = "25mb"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
# Read when no flag is given, as Gradio itself and hosts such as Hugging Face Spaces do.
HOST_ENV = "GRADIO_SERVER_NAME"
PORT_ENV = "GRADIO_SERVER_PORT"


def _port(value: str | int) -> int:
    """A TCP port 1..65535 (argparse type; also applied to a ``$GRADIO_SERVER_PORT`` default)."""
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be an integer, got {value!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 1..65535, got {port}")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help="model directory with prior/ (and optional csp/, imagenet_species_link.csv)",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get(HOST_ENV) or DEFAULT_HOST,
        help=f"interface to listen on (default: ${HOST_ENV} if set, else {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=os.environ.get(PORT_ENV) or DEFAULT_PORT,
        help=f"port (default: ${PORT_ENV} if set, else {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--share", action="store_true", help="also open a public gradio.live link (needs internet)"
    )
    parser.add_argument("--device", default="cpu", help="torch device for the models")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads per request (default 1: steady latency on a small shared CPU; "
        "concurrent requests run on the other cores)",
    )
    parser.add_argument("--max-file-size", default=MAX_FILE_SIZE, help="upload size limit, e.g. 25mb")
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=REPO_ROOT / "runs" / "app",
        help="parent folder of the Train tab's run directories (default: runs/app of the checkout)",
    )
    return parser


def launch(
    demo: Any,
    host: str,
    port: int,
    *,
    share: bool = False,
    max_file_size: str = MAX_FILE_SIZE,
    prevent_thread_lock: bool = False,
) -> Any:
    """Launch ``demo`` with the app's settings (also used by tests and the benchmark)."""
    from app.ui import CSS

    return demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=max_file_size,
        show_error=False,
        css=CSS,
        prevent_thread_lock=prevent_thread_lock,
        quiet=prevent_thread_lock,
    )


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    if not (args.checkpoint / "prior").is_dir():
        print(
            f"error: {args.checkpoint} is not a model directory (no prior/ inside); "
            "rebuild the default with `python -m train build-default` or pass --checkpoint",
            file=sys.stderr,
        )
        return 2
    for stale in remove_stale_scratch():
        print(f"[app] removed the scratch folder of a server that is gone: {stale}", flush=True)
    scratch = make_scratch()
    # Gradio reads these when it is imported: uploads go to our scratch folder.
    os.environ["GRADIO_TEMP_DIR"] = str(scratch / "uploads")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run atexit cleanup on SIGTERM

    import torch

    from app.training import app_training_manager
    from app.ui import build_app
    from csp.checkpoint import CheckpointError
    from csp.predictor import Predictor

    torch.set_num_threads(max(1, args.threads))
    try:
        predictor = Predictor.from_directory(args.checkpoint, device=args.device)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    training = app_training_manager(REPO_ROOT)
    (scratch / "work").mkdir()
    demo = build_app(
        predictor,
        model_dir=args.checkpoint,
        work_dir=scratch / "work",
        runs_dir=args.runs_dir,
        training=training,
    )
    print(f"[app] model and interface ready in {time.perf_counter() - started:.1f} s", flush=True)
    launch(demo, args.host, args.port, share=args.share, max_file_size=args.max_file_size)
    return 0
