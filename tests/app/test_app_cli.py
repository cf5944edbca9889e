"""``python app.py``: flags and start-up errors (the server itself is exercised elsewhere)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app.cli import MAX_FILE_SIZE, build_parser, main
from app.static import DEFAULT_MODEL_DIR

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_local_and_explicit():
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.share) == ("127.0.0.1", 7860, False)
    assert args.checkpoint == DEFAULT_MODEL_DIR and args.max_file_size == MAX_FILE_SIZE and args.threads == 1
    args = build_parser().parse_args(["--checkpoint", "m", "--host", "0.0.0.0", "--port", "8000", "--share"])
    assert (args.checkpoint, args.host, args.port, args.share) == (Path("m"), "0.0.0.0", 8000, True)


def test_a_directory_without_a_prior_is_refused(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path)]) == 2
    assert f"{tmp_path} is not a model directory (no prior/ inside)" in capsys.readouterr().err


def test_help_runs_without_starting_anything():
    done = subprocess.run(
        [sys.executable, "app.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    for flag in ("--checkpoint", "--host", "--port", "--share"):
        assert flag in done.stdout
