"""The app's scratch folder (uploads and exported files) and the removal of dead servers' ones.

Uploads hold users' photos, with their GPS tags, so a folder must not outlive its server. A
server that exits normally removes its folder (``atexit``); one killed with SIGKILL cannot, so
every server holds an exclusive ``flock`` on a lock file inside its folder for its whole life
(the kernel releases it when the process dies, however it dies), and a starting server removes
every folder whose lock it can take: the owner is gone.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; folders of killed servers stay (none are removed)
    fcntl = None  # type: ignore[assignment]

SCRATCH_PREFIX = "csp-app-"
LOCK_FILE = ".owner.lock"
UNLOCKED_GRACE_S = 3600.0
"""A folder without a lock file (made by an app before locks, or one being created this
instant) is removed only once it is this old, seconds."""
LOCKING_GRACE_S = 5.0
"""A lock file younger than this may not be locked yet by its (starting) server, seconds."""

_held: list[int] = []  # lock file descriptors of this process's folders, open until exit


def _lock(folder: Path) -> int | None:
    """An exclusive lock on ``folder``'s lock file (fd), or None if another process holds it."""
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def make_scratch(parent: Path | None = None) -> Path:
    """A new private scratch folder, locked by this process and removed when it exits."""
    folder = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=parent))
    if fcntl is not None:
        fd = _lock(folder)
        if fd is not None:
            _held.append(fd)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def remove_stale_scratch(parent: Path | None = None) -> list[Path]:
    """Remove the scratch folders under ``parent`` (default: the system temporary folder) whose
    server is gone; returns them. A live server's folder is never touched."""
    if fcntl is None:
        return []
    parent = Path(parent or tempfile.gettempdir())
    removed = []
    for folder in parent.glob(f"{SCRATCH_PREFIX}*"):
        if not folder.is_dir() or folder.is_symlink():
            continue
        try:
            if (folder / LOCK_FILE).is_file():
                if time.time() - (folder / LOCK_FILE).stat().st_mtime < LOCKING_GRACE_S:
                    continue
                fd = _lock(folder)
                if fd is None:
                    continue  # its server is alive
                os.close(fd)
            elif time.time() - folder.stat().st_mtime < UNLOCKED_GRACE_S:
                continue
        except OSError:
            continue  # not ours to inspect (another user's), or gone meanwhile
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed
