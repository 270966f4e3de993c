"""Import the docker SDK without paramiko when nothing needs it.

docker-py imports paramiko (and with it cryptography, ~0.1 s) at import time, only for
an engine reached over SSH (`DOCKER_HOST=ssh://...` or such a docker context). When the
engine is not reached over SSH, paramiko is hidden while docker is imported, then made
importable again for aib-local's own SSH target.
"""

from __future__ import annotations

import sys

from engine.docker_host import resolve
from engine.errors import UsageError


def _over_ssh() -> bool:
    try:
        return resolve().over_ssh
    except UsageError:
        return False  # reported when the engine is connected to


if "paramiko" not in sys.modules and not _over_ssh():
    sys.modules["paramiko"] = None  # type: ignore[assignment]
    try:
        import docker  # noqa: F401
    finally:
        del sys.modules["paramiko"]
