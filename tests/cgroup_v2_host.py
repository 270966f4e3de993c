"""A real cgroup v2 Docker engine for the tests, in a local VM.

This machine's engine runs on cgroup v1; most users' run on cgroup v2. The fixture disk
boots with the unified hierarchy, so aib-local itself builds a "docker host" disk from it
(fixtures/templates/docker-host: Docker 28 from Debian), once per machine and per recipe,
kept beside the fixture disk. The tests boot it as a VM (the booted machine is saved for
the next runs, as builds save theirs), give its engine TLS certificates made here and a
forwarded port, and load the base image into it with fixtures/images/build-image.sh.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.catalogue import disks_folder
from engine.targets.base import Command, OpenRequest, Target
from engine.targets.registry import lookup
from tests.remote_engine import CERTS, _free_port, tls_client
from tests.support import BASE_IMAGE, ROOT, SUBSCRIPTION

RECIPE = ROOT / "fixtures" / "templates" / "docker-host"
IMAGE_ID = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/fixtures/providers/Microsoft.Compute/images/docker-host"
ENGINE_PORT = 2376
TLS_FILES = ("ca.pem", "server-cert.pem", "server-key.pem")
TLS_FILES = ("ca.pem", "server-cert.pem", "server-key.pem")
BUILD_WITHIN = 1800  # seconds for aib-local to build the disk (a TCG boot, apt-get, dpkg)
DROPIN = """[Service]
ExecStart=
ExecStart=/usr/sbin/dockerd -H fd:// -H tcp://0.0.0.0:2376 --tlsverify --tlscacert=/etc/docker/tls/ca.pem \
--tlscert=/etc/docker/tls/server-cert.pem --tlskey=/etc/docker/tls/server-key.pem \
--containerd=/run/containerd/containerd.sock
"""


class HostUnavailable(RuntimeError):
    """The v2 engine could not be made or started (the message says which step)."""


def host_disk(work: Path) -> Path:
    """The docker host disk for the recipe as it is now: made by an aib-local VM build when
    missing (a few minutes under TCG), then kept in the disks folder."""
    digest = hashlib.sha256()
    for path in sorted(RECIPE.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    disk = disks_folder() / f"docker-host-{digest.hexdigest()[:12]}.qcow2"
    if disk.is_file():
        return disk
    store = work / "store"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "build",
            str(RECIPE / "template.json"),
            "--target",
            "vm",
            "--store",
            str(store),
        ],
        capture_output=True,
        text=True,
        timeout=BUILD_WITHIN,
        cwd=ROOT,
        check=False,
    )
    if build.returncode != 0:
        raise HostUnavailable(
            f"aib-local could not build the docker host disk:\n{(build.stdout + build.stderr)[-3000:]}"
        )
    shown = subprocess.run(
        [sys.executable, "-m", "engine", "show", IMAGE_ID, "--store", str(store)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    made = Path(json.loads(shown.stdout)["aibLocal"]["disk"])
    staging = disk.with_name(f".{disk.name}.{os.getpid()}")
    shutil.copyfile(made, staging)
    staging.replace(disk)
    shutil.rmtree(store, ignore_errors=True)
    return disk


@dataclass
class V2Engine:
    """The booted docker host: its VM, and its engine on 127.0.0.1:port with TLS."""

    vm: Target
    folder: Path
    port: int

    @property
    def certs(self) -> Path:
        return self.folder / "certs" / "client"

    @property
    def env(self) -> dict[str, str]:
        """What a user sets to point aib-local (and the docker CLI) at this engine."""
        return {
            "DOCKER_HOST": f"tcp://127.0.0.1:{self.port}",
            "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": str(self.certs),
        }

    def client(self) -> Any:
        return tls_client(self.port, self.certs)

    def run(self, script: str, timeout: float = 120) -> tuple[int, str]:
        """A command as root in the VM: its exit code and output."""
        lines: list[str] = []
        code = self.vm.run(
            Command(["/bin/sh", "-c", script], as_root=True), lambda _stream, line: lines.append(line), timeout
        )
        return code, "\n".join(lines)

    def stop(self) -> None:
        self.vm.remove()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_engine(disk: Path) -> V2Engine:
    """Boot the docker host disk and start its engine with TLS on a forwarded port."""
    folder = Path(tempfile.mkdtemp(prefix="aib-v2-", dir="/tmp"))
    certs = folder / "certs"
    certs.mkdir()
    subprocess.run(["sh", "-c", CERTS], cwd=certs, check=True)
    vm = lookup("vm").open(
        OpenRequest(
            spec="vm",
            build_id="cgroup-v2-engine",
            image=str(disk),
            vm_size="Standard_B2s",
            folder=str(folder),
            within=900,
            snapshots=str(disks_folder() / "docker-host-snapshots"),
        )
    )
    engine = V2Engine(vm, folder, _free_port())
    try:
        vm.start()
        files = {f"/etc/docker/tls/{name}": (certs / name).read_bytes() for name in TLS_FILES}
        files["/etc/systemd/system/docker.service.d/tls.conf"] = DROPIN.encode()
        script = ["set -e", "mkdir -p /etc/docker/tls /etc/systemd/system/docker.service.d"]
        script += [f"echo {base64.b64encode(data).decode()} | base64 -d > {path}" for path, data in files.items()]
        script += ["chmod 600 /etc/docker/tls/server-key.pem", "systemctl daemon-reload", "systemctl restart docker"]
        code, out = engine.run("\n".join(script), timeout=300)
        if code != 0:
            raise HostUnavailable(f"the docker host's engine did not restart with TLS (exit {code}): {out[-1500:]}")
        monitor = vm.machine.monitor  # type: ignore[attr-defined]
        monitor.command(
            "human-monitor-command", **{"command-line": f"hostfwd_add n0 tcp:127.0.0.1:{engine.port}-:{ENGINE_PORT}"}
        )
        end = time.monotonic() + 120
        while True:
            try:
                engine.client().ping()
                break
            except Exception as exc:  # not up yet: TLS, connection, API errors alike
                if time.monotonic() > end:
                    raise HostUnavailable(
                        f"the docker host's engine does not answer on port {engine.port}: {exc}"
                    ) from None
                time.sleep(1)
        load = subprocess.run(
            [str(ROOT / "fixtures" / "images" / "build-image.sh"), BASE_IMAGE],
            env={**os.environ, **engine.env, "FROM_ENGINE": "unix:///var/run/docker.sock"},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if load.returncode != 0:
            raise HostUnavailable(
                f"build-image.sh could not load {BASE_IMAGE} into the v2 engine:\n{load.stdout}{load.stderr}"
            )
    except BaseException:
        with contextlib.suppress(Exception):
            engine.stop()
        raise
    return engine
