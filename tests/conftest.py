"""Shared fixtures: a real Docker engine, the local base image, a store, the CLI."""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    BASE_IMAGE,
    NO_SUDO_IMAGE,
    PWSH_STAND_IN_IMAGE,
    ROOT,
    SSHD_IMAGE,
    Result,
    Sshd,
    start_sshd,
    unavailable,
)

ENGINE_MARKERS = ("docker", "ssh", "vm", "cgroupv2", "podman", "browser")


# The two modules that boot QEMU under TCG take most of a full run. Run first, with
# `-n 2` and the module-by-module distribution of pyproject.toml (`--dist loadscope
# --no-loadscope-reorder`), each gets a worker of its own from the start, and the other
# tests fill in behind the shorter one. Alone in one process, the order changes nothing.
LONG_MODULES = ("tests/integration/test_vm.py", "tests/integration/test_cgroup_v2.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::", 1)[0]
        return LONG_MODULES.index(module) if module in LONG_MODULES else len(LONG_MODULES)

    items.sort(key=rank)  # stable: the order within each module is kept


@pytest.fixture(autouse=True)
def _collect_garbage(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used an engine, sshd, VM or browser, what it left unreachable is
    collected now, so that a socket it left open is reported against it (as a warning),
    not against whichever later test happens to run the collector."""
    yield
    if any(request.node.get_closest_marker(name) for name in ENGINE_MARKERS):
        gc.collect()


@pytest.fixture(autouse=True)
def _needs(request: pytest.FixtureRequest) -> None:
    """@pytest.mark.needs(COMMAND, PACKAGE): without COMMAND on the PATH the test cannot run
    (skipped locally, failed in CI: tests.support.unavailable)."""
    for marker in request.node.iter_markers("needs"):
        command, package = marker.args
        if shutil.which(command) is None:
            unavailable(f"needs {command} (apt-get install {package})")


@pytest.fixture(scope="session")
def docker_client() -> Any:
    from engine.errors import EnvironmentProblem
    from engine.images import connect

    try:  # the engine's own client: DOCKER_HOST and its TLS settings, as a build reads them
        return connect()
    except EnvironmentProblem as exc:  # no engine: skipped locally, a failure in CI
        unavailable(f"no Docker engine: {exc}")


@pytest.fixture(scope="session")
def base_image(docker_client: Any) -> str:
    import docker.errors

    try:
        docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        unavailable(f"no {BASE_IMAGE} image: run fixtures/images/build-image.sh {BASE_IMAGE}")
    return BASE_IMAGE


@pytest.fixture(scope="session")
def no_sudo_image(docker_client: Any, base_image: str) -> str:
    """The base image with sudo purged: builds must fall back to root + pass-through sudo.
    Tagged with the base image's ID, so that a new base image makes a new one."""
    import docker.errors

    name = f"{NO_SUDO_IMAGE.split(':')[0]}:{docker_client.images.get(base_image).id.split(':')[-1][:12]}"
    try:
        docker_client.images.get(name)
        return name
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
        repository, tag = name.split(":")
        container.commit(repository=repository, tag=tag, conf={"Cmd": ["/bin/bash"]})
    finally:
        container.remove(force=True)
    return name


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    """A private store; the step cache's images its builds kept are removed at the end."""
    root = tmp_path / "store"
    yield root
    if (root / "step-cache").is_dir():
        drop_kept_images(root)


def drop_kept_images(root: Path) -> None:
    """Remove the images the step cache of the store at `root` kept (only that store's)."""
    from engine.images import connect
    from engine.targets.docker import DockerStates

    states = DockerStates(connect(), root)
    for key in states.present():
        states.remove(key)


@pytest.fixture
def cli(store: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run the console entry point in this process against a private store: as the
    installed command would (arguments, environment, exit code, both streams), without
    a new interpreter per call. Signal handlers and the umask are put back after."""
    from engine.cli import main

    def run(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> Result:
        out, err = io.StringIO(), io.StringIO()
        handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        umask = os.umask(0o022)
        os.umask(umask)
        with monkeypatch.context() as patch:
            patch.setenv("AIB_LOCAL_STORE", str(store))
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            patch.setattr(sys, "stdin", io.StringIO())
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    main(list(args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            finally:
                for signum, handler in handlers.items():
                    signal.signal(signum, handler)
                os.umask(umask)
        return Result(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture
def write_template(tmp_path: Path) -> Any:
    """Write a template (a dict) as JSON into the test's folder; returns its path."""

    def write(template: dict[str, Any], name: str = "template.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(template, indent=2))
        return path

    return write


@pytest.fixture
def leftovers(docker_client: Any, store: Path) -> Iterator[Any]:
    """Yields a function listing the containers of the builds this test started (those its
    own store knows, found by their build-id label); removes them at the end. Containers
    of other builds on this machine are never counted or touched."""
    from engine.images import LABEL_BUILD

    def mine() -> list[Any]:
        folder = store / "builds"
        ids = [p.name for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
        return [
            container
            for build_id in ids
            for container in docker_client.containers.list(all=True, filters={"label": f"{LABEL_BUILD}={build_id}"})
        ]

    yield mine
    for container in mine():
        container.remove(force=True)


@pytest.fixture(scope="session")
def sshd_image(docker_client: Any) -> str:
    import docker.errors

    try:
        docker_client.images.get(SSHD_IMAGE)
    except docker.errors.ImageNotFound:
        unavailable(f"no {SSHD_IMAGE} image: run fixtures/images/build-image.sh {SSHD_IMAGE}")
    return SSHD_IMAGE


@pytest.fixture
def sshd(docker_client: Any, sshd_image: str, tmp_path: Path) -> Iterator[Sshd]:
    server = start_sshd(docker_client, sshd_image, tmp_path / "sshd")
    yield server
    server.container.remove(force=True)


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


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium (Debian's chromium package), for the HTML report."""
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        unavailable("no chromium: apt-get install chromium")
    return str(found)
