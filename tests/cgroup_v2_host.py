"""A real cgroup v2 Docker engine for the tests, in a local VM, and a rootless Podman beside it.

This machine's engine runs on cgroup v1; most users' run on cgroup v2. The fixture disk
boots with the unified hierarchy, so aib-local itself builds a "docker host" disk from it
(fixtures/templates/docker-host: Docker 28 from Debian, and Debian's Podman for a lingering
user whose systemd user manager is delegated a cgroup subtree), with this machine's base
image loaded into both, once per machine and per recipe, kept beside the fixture disk. The
tests boot it as a VM (the booted machine is saved for the next runs, as builds save
theirs), give its Docker TLS certificates made here and a forwarded port, and forward the
rootless Podman's port when a test asks for it."""

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.catalogue import disks_folder
from engine.images import RECIPE_LABEL
from engine.targets.base import Command, OpenRequest, Target
from engine.targets.registry import lookup
from tests.remote_engine import CERTS, _free_port, tls_client
from tests.support import BASE_IMAGE, ROOT, SUBSCRIPTION

RECIPE = ROOT / "fixtures" / "templates" / "docker-host"
IMAGE_ID = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/fixtures/providers/Microsoft.Compute/images/docker-host"
ENGINE_PORT = 2376
LOCAL_ENGINE = "unix:///var/run/docker.sock"  # this machine's engine, which has the base image
TLS_FILES = ("ca.pem", "server-cert.pem", "server-key.pem")
ROOTLESS_PORT = 2377  # the rootless Podman of the guest's user aib-rootless (install-podman.sh)
# The base image goes in at the disk's build, so that each run's engines have it at once.
LOAD_BASE_IMAGE = [
    "sudo docker load -i /tmp/base-image.tar",
    "sudo -u aib-rootless sh -c 'cd && XDG_RUNTIME_DIR=/run/user/$(id -u) podman load -q -i /tmp/base-image.tar'",
    "sudo rm /tmp/base-image.tar",
]
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
    """The docker host disk for the recipe as it is now, with the base image of this
    machine's engine loaded into its Docker and its rootless Podman: made by an aib-local VM
    build when missing (several minutes under TCG), then kept in the disks folder."""
    import docker

    local = docker.DockerClient(base_url=LOCAL_ENGINE)
    try:
        image = local.images.get(BASE_IMAGE)
    except docker.errors.DockerException as exc:
        local.close()
        raise HostUnavailable(
            f"the docker host disk carries this machine's {BASE_IMAGE}, which {LOCAL_ENGINE} does not give ({exc}): "
            f"fixtures/images/build-image.sh {BASE_IMAGE}"
        ) from None
    made_by = (image.labels or {}).get(RECIPE_LABEL, "1")
    digest = hashlib.sha256(f"{BASE_IMAGE} recipe {made_by}\0".encode())
    for path in sorted(RECIPE.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    disk = disks_folder() / f"docker-host-{digest.hexdigest()[:12]}.qcow2"
    with contextlib.closing(local):
        if disk.is_file():
            return disk
        staged = work / "recipe"
        shutil.copytree(RECIPE, staged)
        with (staged / "base-image.tar").open("wb") as tar:
            for chunk in image.save(named=True):
                tar.write(chunk)
    recipe = json.loads((staged / "template.json").read_text())
    recipe["properties"]["customize"] += [
        {"type": "File", "name": "base-image", "sourceUri": "base-image.tar", "destination": "/tmp/base-image.tar"},
        {"type": "Shell", "name": "load-base-image", "inline": LOAD_BASE_IMAGE},
    ]
    (staged / "template.json").write_text(json.dumps(recipe))
    store = work / "store"
    command = [sys.executable, "-m", "engine", "build", str(staged / "template.json"), "--target", "vm"]
    build = subprocess.run(
        [*command, "--store", str(store), "--no-cache"],  # built once: nothing to keep for a rebuild
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
        _forward(vm, engine.port, ENGINE_PORT, engine.client, "the docker host's engine")
        _load_base_image(engine.env, "the v2 engine")
    except BaseException:
        with contextlib.suppress(Exception):
            engine.stop()
        raise
    return engine


def rootless_podman(engine: V2Engine) -> dict[str, str]:
    """The environment that names the guest's rootless Podman (user aib-rootless, whose
    systemd user manager holds a delegated cgroup v2 subtree), its port forwarded to
    127.0.0.1 and the base image loaded into it."""
    import docker

    port = _free_port()
    env = {"DOCKER_HOST": f"tcp://127.0.0.1:{port}"}

    def client() -> Any:
        return docker.DockerClient(base_url=env["DOCKER_HOST"])

    _forward(engine.vm, port, ROOTLESS_PORT, client, "the docker host's rootless Podman")
    _load_base_image(env, "the rootless Podman")
    return env


def _forward(vm: Target, port: int, guest_port: int, client: Callable[[], Any], what: str) -> None:
    """Forward 127.0.0.1:`port` to the guest's `guest_port`, and wait until the engine there answers."""
    monitor = vm.machine.monitor  # type: ignore[attr-defined]
    monitor.command("human-monitor-command", **{"command-line": f"hostfwd_add n0 tcp:127.0.0.1:{port}-:{guest_port}"})
    end = time.monotonic() + 120
    while True:
        try:
            with contextlib.closing(client()) as answering:
                answering.ping()
            return
        except Exception as exc:  # not up yet: TLS, connection, API errors alike
            if time.monotonic() > end:
                raise HostUnavailable(f"{what} does not answer on port {port}: {exc}") from None
            time.sleep(1)


def _load_base_image(env: dict[str, str], what: str) -> None:
    """build-image.sh, pointed at the engine `env` names, copying the image from this machine's engine."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("DOCKER_")}
    load = subprocess.run(
        [str(ROOT / "fixtures" / "images" / "build-image.sh"), BASE_IMAGE],
        env={**clean, **env, "FROM_ENGINE": LOCAL_ENGINE},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if load.returncode != 0:
        raise HostUnavailable(f"build-image.sh could not load {BASE_IMAGE} into {what}:\n{load.stdout}{load.stderr}")
