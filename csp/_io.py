"""Atomic file writes: the one home of "write to a temporary name, fsync, rename into place".

A reader (another process polling the file, or the next run after a crash) sees either the
previous complete file or the new complete file, never a torn one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def write_atomic(path: str | Path, write: Callable[[IO[Any]], None], binary: bool = False) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it to ``path``.

    The temporary file is unique per call (safe with several writer processes) and removed if
    ``write`` raises; the data is fsynced before the rename.
    """
    path = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    return write_atomic(path, lambda handle: handle.write(text))


def write_json_atomic(path: str | Path, obj: Any, **dumps: Any) -> Path:
    """Replace ``path`` with ``json.dumps(obj, **dumps)`` atomically."""
    return write_text_atomic(path, json.dumps(obj, **dumps))
