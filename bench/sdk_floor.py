"""The floor a naive implementation reaches: the docker SDK, one exec per step.

Usage: python bench/sdk_floor.py IMAGE STEPS [FILE_MB] [--vhd]  (prints nothing; exit 0 on success)
"""

from __future__ import annotations

import io
import os
import sys
import tarfile

import docker


def main() -> int:
    image, steps = sys.argv[1], int(sys.argv[2])
    file_mb = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    client = docker.from_env()
    container = client.containers.run(image, ["sleep", "infinity"], detach=True, network_mode="none")
    try:
        for index in range(steps):
            code, _ = container.exec_run(["/bin/sh", "-e", "-c", f"echo step {index}"], user="root")
            if code != 0:
                return 1
        if file_mb:
            data = os.urandom(file_mb << 20)
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as archive:
                info = tarfile.TarInfo("payload.bin")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            container.put_archive("/tmp", buffer.getvalue())
        container.commit(repository="aib-local-bench/sdk-floor", tag="latest")
    finally:
        container.remove(force=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
