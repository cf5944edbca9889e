"""How a training process ends: cancellation by signal, and never outliving the app.

The app starts the trainer with ``CSP_PARENT_PID`` set to its own pid; :func:`cancel_on_signals`
then watches that parent and cancels the run within about a second of the parent ending, even
when the parent was killed with SIGKILL (which no cleanup handler in the parent can catch).
Torch-free, so the CLI and the app import it cheaply.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

PARENT_PID_ENV = "CSP_PARENT_PID"
"""Environment variable naming the process a trainer must not outlive (set by the app)."""
PARENT_POLL_S = 1.0
PARENT_GRACE_S = 10.0


class RunCancelled(Exception):
    """The run was asked to stop (SIGTERM/SIGINT, or its parent process ended)."""


def _parent_gone(parent: int) -> bool:
    """The parent that started us has ended (we were re-parented, or it no longer exists)."""
    if os.getppid() != parent:
        return True
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def _watch_parent(parent: int, stop: threading.Event, reason: list[str]) -> None:
    """Poll the parent; once it is gone, SIGTERM ourselves (the main thread raises
    :class:`RunCancelled` and records it), and exit hard if that has not ended us after
    ``PARENT_GRACE_S`` (the main thread is stuck in native code)."""
    while not stop.wait(PARENT_POLL_S):
        if _parent_gone(parent):
            reason.append(f"the parent process {parent} that started this run ended")
            os.kill(os.getpid(), signal.SIGTERM)
            if not stop.wait(PARENT_GRACE_S):
                os._exit(143)
            return


@contextlib.contextmanager
def cancel_on_signals() -> Iterator[None]:
    """For the duration of a run: SIGTERM and SIGINT raise :class:`RunCancelled` in the main
    thread, and if ``CSP_PARENT_PID`` names a parent, a watchdog cancels the run within about
    a second of that parent ending (even when it was killed with SIGKILL).

    Outside the main thread (signals cannot be handled there) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    reason: list[str] = []

    def cancel(signum: int, _frame: object) -> None:
        raise RunCancelled(reason[0] if reason else f"stopped by {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, cancel) for sig in (signal.SIGTERM, signal.SIGINT)}
    stop = threading.Event()
    parent = os.environ.get(PARENT_PID_ENV)
    if parent and parent.isdigit():
        watchdog = threading.Thread(target=_watch_parent, args=(int(parent), stop, reason), daemon=True)
        watchdog.start()
    try:
        yield
    finally:
        stop.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
