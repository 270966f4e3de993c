"""Connect the user's terminal to a remote shell (a kept container, an SSH host)."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import sys
import termios
import tty
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def raw_terminal() -> Iterator[None]:
    """Put stdin in raw mode for the session (when it is a terminal), and restore it."""
    fd = sys.stdin.fileno()
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def size() -> tuple[int, int]:
    """(columns, rows) of the user's terminal."""
    columns, rows = shutil.get_terminal_size((80, 24))
    return columns, rows


def pump(remote_fileno: int, receive: Callable[[], bytes], send: Callable[[bytes], None]) -> None:
    """Copy stdin to the remote side and the remote side to stdout, until it closes."""
    stdin = sys.stdin.fileno()
    stdout = sys.stdout.fileno()
    with raw_terminal():
        while True:
            ready, _, _ = select.select([remote_fileno, stdin], [], [])
            if remote_fileno in ready:
                data = receive()
                if not data:
                    return
                os.write(stdout, data)
            if stdin in ready:
                data = os.read(stdin, 4096)
                if not data:
                    return
                send(data)
