"""SIGINT and SIGTERM: the first one stops the work, later ones cannot stop the cleanup.

The first signal raises KeyboardInterrupt in the main thread, wherever it is; the
pipeline's `finally` blocks then stop the in-target process, remove the target and the
partial files, and record the build as Canceled. A second Ctrl-C (or a SIGTERM sent by
an impatient supervisor) during that cleanup, or a first one during the cleanup of a
build that ended anyway (`held`), is acknowledged on stderr and otherwise ignored, so
it cannot leave a container or a partial file behind. The process exits
with 128 + the first signal's number: 130 for SIGINT, 143 for SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

_seen: list[int] = []  # the signals received, first first
_held: list[bool] = []  # non-empty while the main thread cleans up (see `held`)


def install() -> None:
    """Route SIGINT and SIGTERM through the handler (main thread only)."""
    _seen.clear()
    signal.signal(signal.SIGINT, _handle)
    signal.signal(signal.SIGTERM, _handle)


def received() -> int | None:
    """The first signal received, if any."""
    return _seen[0] if _seen else None


def exit_code(default: int = 130) -> int:
    """128 + the first signal's number (130 when none was seen, as for a plain Ctrl-C)."""
    return 128 + _seen[0] if _seen else default


@contextlib.contextmanager
def held() -> Iterator[None]:
    """A cleanup that no signal may break into: one that arrives meanwhile is only noted
    (and still decides the exit code). Only the main thread, where handlers run, holds."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _held.append(True)
    try:
        yield
    finally:
        _held.pop()


def _handle(signum: int, _frame: FrameType | None) -> None:
    _seen.append(signum)
    if len(_seen) == 1 and not _held:
        raise KeyboardInterrupt
    name = signal.Signals(signum).name
    try:
        again = " again" if len(_seen) > 1 else ""
        sys.stderr.write(f"\n{name} received{again}: still cleaning up, this takes a few seconds\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
