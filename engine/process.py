"""Which process owns a build: HOST:PID:START, and whether that process still runs.

The pid's start time is part of the identity, so a reused pid is not mistaken for the
process that started a build. Containers carry it as a label and the journal keeps it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _start_time(pid: int) -> str:
    """The pid's start time in clock ticks since boot ('' where /proc is not there)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]


def identity(pid: int | None = None) -> str:
    """HOST:PID:START of a process (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def alive(owner: str) -> bool | None:
    """Whether the process `owner` names still runs; None when it is on another host."""
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname():
        return None
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        pass  # it exists, owned by somebody else
    return not start or _start_time(pid) == start


def pid_of(owner: str) -> str:
    """The pid an identity names ('?' if it names none)."""
    parts = owner.split(":")
    return parts[1] if len(parts) > 1 and parts[1] else "?"
