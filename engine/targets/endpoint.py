"""Where an SSH target is and how to reach it: parsed without importing paramiko."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UsageError

TARGET_PATTERN = re.compile(r"^ssh://(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]]+\]|[^:/@]+)(?::(?P<port>\d+))?/?$")


TARGET_SPECS = "docker, vm or ssh://USER@HOST[:PORT]"  # what --target takes


@dataclass(frozen=True)
class SshEndpoint:
    user: str
    host: str
    port: int = 22

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def parse_target(text: str) -> SshEndpoint:
    """`ssh://USER@HOST[:PORT]` (USER defaults to the local user name)."""
    match = TARGET_PATTERN.match(text)
    if not match:
        raise UsageError(f"--target {text!r}: expected {TARGET_SPECS}")
    port = int(match["port"] or 22)
    if not 0 < port < 65536:
        raise UsageError(f"--target {text!r}: port {port} is out of range")
    user = match["user"] or os.environ.get("USER") or "root"
    return SshEndpoint(user, match["host"].strip("[]"), port)


@dataclass
class SshOptions:
    """How to reach and trust the host."""

    key_file: Path | None = None
    known_hosts: Path | None = None
    insecure_accept_host_key: bool = False
    password_env: str | None = None
    start_command: str | None = None
    stop_command: str | None = None
    connect_timeout: float = 30.0
    # Seconds between SSH keepalives (0: none). A VM behind QEMU's user network needs them:
    # its reboot drops the connection without a word, and only traffic finds that out.
    keepalive: int = 0
