"""Which Docker engine to talk to, resolved as the docker CLI resolves it.

`DOCKER_HOST` (with `DOCKER_TLS_VERIFY` / `DOCKER_CERT_PATH`) wins; otherwise the context
named by `DOCKER_CONTEXT`, else the config's `currentContext` (`docker context use`),
read from `DOCKER_CONFIG` or ~/.docker. No context, or "default": the local Docker
socket, and when there is none, Podman's (`podman system service`, the root one or the
user's own), which serves the same API. Pure: reading a few small files, without
importing the docker SDK.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UsageError

LOCAL_SOCKET = "unix:///var/run/docker.sock"
PODMAN_ROOT_SOCKET = "unix:///run/podman/podman.sock"


@dataclass(frozen=True)
class Endpoint:
    host: str
    context: str | None = None  # the context it came from, None for DOCKER_HOST / the default
    tls_dir: Path | None = None  # ca.pem, cert.pem, key.pem of the context
    skip_tls_verify: bool = False
    # Taken because nothing named an engine: the local Docker socket, or Podman's when
    # there is no Docker socket (connect() tries the others when it does not answer).
    implicit: bool = False

    @property
    def over_ssh(self) -> bool:
        return self.host.startswith("ssh://")

    def describe(self) -> str:
        return f"{self.host} (docker context {self.context})" if self.context else self.host


def podman_sockets() -> list[str]:
    """Where `podman system service` listens by default: root's socket, and this user's
    (rootless Podman) under XDG_RUNTIME_DIR."""
    found = [PODMAN_ROOT_SOCKET] if os.geteuid() == 0 else []
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}"
    return [*found, f"unix://{runtime}/podman/podman.sock"]


def local_sockets() -> list[str]:
    """The sockets an engine on this machine answers at, when nothing names one: Docker's
    first, then Podman's; those that exist (Docker's alone when none does)."""
    present = [host for host in (LOCAL_SOCKET, *podman_sockets()) if Path(host.removeprefix("unix://")).is_socket()]
    return present or [LOCAL_SOCKET]


def config_dir() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def context_name() -> str | None:
    """The context the CLI would use, when DOCKER_HOST does not name the engine."""
    if os.environ.get("DOCKER_HOST"):
        return None
    name = os.environ.get("DOCKER_CONTEXT")
    if not name:
        try:
            name = json.loads((config_dir() / "config.json").read_text()).get("currentContext")
        except (OSError, ValueError, AttributeError):
            name = None
    return None if not name or name == "default" else str(name)


def resolve() -> Endpoint:
    """The engine to use (UsageError for a context that does not exist or cannot be read)."""
    host = os.environ.get("DOCKER_HOST")
    if host:
        return Endpoint(host)
    name = context_name()
    if name is None:
        return Endpoint(local_sockets()[0], implicit=True)
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config_dir() / "contexts" / "meta" / digest / "meta.json"
    try:
        docker = json.loads(meta.read_text())["Endpoints"]["docker"]
        found = str(docker["Host"])
    except FileNotFoundError:
        raise UsageError(
            f"docker context {name!r} does not exist (no {meta})",
            hint="docker context ls lists the contexts; unset DOCKER_CONTEXT or `docker context use default`",
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"cannot read docker context {name!r} from {meta}: {exc}") from None
    tls = config_dir() / "contexts" / "tls" / digest / "docker"
    return Endpoint(
        found,
        context=name,
        tls_dir=tls if tls.is_dir() else None,
        skip_tls_verify=bool(docker.get("SkipTLSVerify")),
    )
