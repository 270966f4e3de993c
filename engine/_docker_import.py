"""Import the docker SDK without paramiko when nothing needs it.

docker-py imports paramiko (and with it cryptography, ~0.1 s) at import time, only for
`DOCKER_HOST=ssh://...`. When the engine is not reached over SSH, paramiko is hidden
while docker is imported, then made importable again for aib-local's own SSH target.
"""

from __future__ import annotations

import os
import sys

if "paramiko" not in sys.modules and not os.environ.get("DOCKER_HOST", "").startswith("ssh://"):
    sys.modules["paramiko"] = None  # type: ignore[assignment]
    try:
        import docker  # noqa: F401
    finally:
        del sys.modules["paramiko"]
