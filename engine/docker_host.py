"""Which Docker engine to talk to, resolved as the docker CLI resolves it.

`DOCKER_HOST` (with `DOCKER_TLS_VERIFY` / `DOCKER_CERT_PATH`) wins; otherwise the context
named by `DOCKER_CONTEXT`, else the config's `currentContext` (`docker context use`),
read from `DOCKER_CONFIG` or ~/.docker. No context, or "default": the local socket. Pure:
reading a few small files, without importing the docker SDK.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UsageError

LOCAL_SOCKET = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class Endpoint:
    host: str
    context: str | None = None  # the context it came from, None for DOCKER_HOST / the default
    tls_dir: Path | None = None  # ca.pem, cert.pem, key.pem of the context
    skip_tls_verify: bool = False

    @property
    def over_ssh(self) -> bool:
        return self.host.startswith("ssh://")

    def describe(self) -> str:
        return f"{self.host} (docker context {self.context})" if self.context else self.host


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
        return Endpoint(LOCAL_SOCKET)
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
