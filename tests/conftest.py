"""Shared fixtures: a real Docker engine, the local base image, a store, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = "debian:12"
NO_SUDO_IMAGE = "aib-local-test/nosudo:12"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
LABEL_TOOL = "io.aib-local.tool=aib-local"


def _unavailable(reason: str) -> None:
    if os.environ.get("AIB_LOCAL_REQUIRE_DOCKER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client() -> Any:
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # no engine: skipped locally, a failure in CI
        _unavailable(f"no Docker engine: {exc}")
    return client


@pytest.fixture(scope="session")
def base_image(docker_client: Any) -> str:
    import docker.errors

    try:
        docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        _unavailable(f"no {BASE_IMAGE} image: run fixtures/images/build-image.sh {BASE_IMAGE}")
    return BASE_IMAGE


@pytest.fixture(scope="session")
def no_sudo_image(docker_client: Any, base_image: str) -> str:
    """The base image with sudo purged: builds must fall back to root + pass-through sudo."""
    import docker.errors

    try:
        docker_client.images.get(NO_SUDO_IMAGE)
        return NO_SUDO_IMAGE
    except docker.errors.ImageNotFound:
        pass
    container = docker_client.containers.run(
        base_image,
        ["sh", "-c", "rm -rf /usr/bin/sudo /etc/sudoers /etc/sudoers.d"],
        detach=True,
        network_mode="none",
    )
    try:
        assert container.wait(timeout=120)["StatusCode"] == 0
        repository, tag = NO_SUDO_IMAGE.split(":")
        container.commit(repository=repository, tag=tag, conf={"Cmd": ["/bin/bash"]})
    finally:
        container.remove(force=True)
    return NO_SUDO_IMAGE


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def cli(store: Path) -> Any:
    """Run the real console entry point (python -m engine) against a private store."""

    def run(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> Result:
        full_env = {**os.environ, "AIB_LOCAL_STORE": str(store), **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "engine", *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            stdin=subprocess.DEVNULL,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def write_template(tmp_path: Path) -> Any:
    """Write a template (a dict) as JSON into the test's folder; returns its path."""

    def write(template: dict[str, Any], name: str = "template.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(template, indent=2))
        return path

    return write


def template(
    name: str,
    customize: list[dict[str, Any]],
    *,
    source: dict[str, Any] | None = None,
    distribute: list[dict[str, Any]] | None = None,
    **properties: Any,
) -> dict[str, Any]:
    """A Linux image template built on Debian 12, for tests."""
    return {
        "type": "Microsoft.VirtualMachineImages/imageTemplates",
        "apiVersion": "2024-02-01",
        "name": name,
        "location": "westeurope",
        "identity": {"type": "None"},
        "properties": {
            "source": source
            or {
                "type": "PlatformImage",
                "publisher": "Debian",
                "offer": "debian-12",
                "sku": "12",
                "version": "latest",
            },
            "customize": customize,
            "distribute": distribute if distribute is not None else [],
            **properties,
        },
    }


def managed_image_id(name: str) -> str:
    return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/tests/providers/Microsoft.Compute/images/{name}"


@pytest.fixture
def leftovers(docker_client: Any) -> Iterator[Any]:
    """Yields a function listing aib-local containers started since the test began."""
    before = {c.id for c in docker_client.containers.list(all=True, filters={"label": LABEL_TOOL})}

    def new() -> list[Any]:
        return [c for c in docker_client.containers.list(all=True, filters={"label": LABEL_TOOL}) if c.id not in before]

    yield new
    for container in new():
        container.remove(force=True)


SSHD_IMAGE = "aib-local/sshd:12"
SSHD_SETUP = r"""
set -e
id builder >/dev/null 2>&1 || useradd -m -s /bin/bash builder
echo 'builder ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/builder
echo 'builder:pass-for-aib-local-tests' | chpasswd
install -d -m 700 -o builder -g builder /home/builder/.ssh
install -m 600 -o builder -g builder /keys/authorized_keys /home/builder/.ssh/authorized_keys
[ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -A >/dev/null
mkdir -p /run/sshd
exec /usr/sbin/sshd -D -e -p "$PORT" -o ListenAddress=127.0.0.1 -o PasswordAuthentication=yes
"""


@dataclass
class Sshd:
    """A real sshd in a container (host network, 127.0.0.1:port, restarts always)."""

    container: Any
    port: int
    key_file: Path
    known_hosts: Path
    user: str = "builder"

    @property
    def target(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def cli_args(self) -> list[str]:
        return ["--target", self.target, "--ssh-key", str(self.key_file), "--known-hosts", str(self.known_hosts)]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_sshd(port: int, within: float = 60) -> str:
    """Poll until sshd answers with its banner; returns the banner."""
    import socket

    from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

    @retry(retry=retry_if_exception_type(OSError), stop=stop_after_delay(within), wait=wait_fixed(0.2), reraise=True)
    def banner() -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            data = sock.recv(64)
            if not data.startswith(b"SSH-"):
                raise OSError("no banner yet")
            return data.decode()

    return banner()


@pytest.fixture(scope="session")
def sshd_image(docker_client: Any) -> str:
    import docker.errors

    try:
        docker_client.images.get(SSHD_IMAGE)
    except docker.errors.ImageNotFound:
        _unavailable(f"no {SSHD_IMAGE} image: run fixtures/images/build-image.sh {SSHD_IMAGE}")
    return SSHD_IMAGE


def start_sshd(docker_client: Any, image: str, folder: Path) -> Sshd:
    import io
    import tarfile

    import paramiko

    folder.mkdir(parents=True, exist_ok=True)
    key = paramiko.RSAKey.generate(2048)
    key_file = folder / "id_rsa"
    key.write_private_key_file(str(key_file))
    port = _free_port()
    container = docker_client.containers.create(
        image,
        ["/bin/sh", "-c", SSHD_SETUP],
        environment={"PORT": str(port)},
        network_mode="host",
        restart_policy={"Name": "always"},
        labels={"io.aib-local.test": "sshd"},
    )
    public = f"{key.get_name()} {key.get_base64()} test\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("keys/authorized_keys")
        info.size = len(public)
        archive.addfile(info, io.BytesIO(public))
    container.put_archive("/", buffer.getvalue())
    container.start()
    wait_for_sshd(port)
    # known_hosts from the server's own host key, read inside the container.
    host_key = container.exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).output.decode().split()
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    return Sshd(container, port, key_file, known_hosts)


@pytest.fixture
def sshd(docker_client: Any, sshd_image: str, tmp_path: Path) -> Iterator[Sshd]:
    server = start_sshd(docker_client, sshd_image, tmp_path / "sshd")
    yield server
    server.container.remove(force=True)


PWSH_STAND_IN_IMAGE = "aib-local-test/pwsh-stand-in:12"


@pytest.fixture(scope="session")
def pwsh_stand_in_image(docker_client: Any, base_image: str) -> str:
    """debian:12 with fixtures/stand-ins/pwsh as /usr/local/bin/pwsh (NOT PowerShell)."""
    import io
    import tarfile

    stand_in = (ROOT / "fixtures" / "stand-ins" / "pwsh").read_bytes()
    container = docker_client.containers.create(base_image, ["true"], network_mode="none")
    try:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            info = tarfile.TarInfo("usr/local/bin/pwsh")
            info.size, info.mode = len(stand_in), 0o755
            archive.addfile(info, io.BytesIO(stand_in))
        container.put_archive("/", buffer.getvalue())
        repository, tag = PWSH_STAND_IN_IMAGE.split(":")
        container.commit(repository=repository, tag=tag, conf={"Cmd": ["/bin/bash"]})
    finally:
        container.remove(force=True)
    return PWSH_STAND_IN_IMAGE
