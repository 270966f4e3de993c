"""Which engine aib-local talks to (DOCKER_HOST, DOCKER_CONTEXT, the config's current
context), and the sparse copy that brings a remote engine's disk image back."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import docker_host
from engine.docker_host import LOCAL_SOCKET, resolve
from engine.errors import UsageError


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "docker"
    folder.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    for name in ("DOCKER_HOST", "DOCKER_CONTEXT"):
        monkeypatch.delenv(name, raising=False)
    return folder


def add_context(config: Path, name: str, host: str, *, tls: bool = False) -> None:
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    endpoint = {"Host": host, "SkipTLSVerify": False}
    (meta / "meta.json").write_text(json.dumps({"Name": name, "Endpoints": {"docker": endpoint}}))
    if tls:
        certs = config / "contexts" / "tls" / digest / "docker"
        certs.mkdir(parents=True)
        for file in ("ca.pem", "cert.pem", "key.pem"):
            (certs / file).write_text("x")


@pytest.fixture
def sockets(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    """Where Docker's, root Podman's and this user's Podman socket would be, none there yet;
    `bind(path)` makes one."""
    places = {"docker": tmp_path / "docker.sock", "podman": tmp_path / "root" / "podman.sock"}
    places["user"] = tmp_path / "xdg" / "podman" / "podman.sock"
    monkeypatch.setattr(docker_host, "LOCAL_SOCKET", f"unix://{places['docker']}")
    monkeypatch.setattr(docker_host, "PODMAN_ROOT_SOCKET", f"unix://{places['podman']}")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    yield places
    for bound in _BOUND:
        bound.close()
    _BOUND.clear()


_BOUND: list[socket.socket] = []


def bind(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    made = socket.socket(socket.AF_UNIX)
    made.bind(str(path))
    _BOUND.append(made)


def test_without_anything_set_the_local_socket(config: Path) -> None:
    assert resolve().host == LOCAL_SOCKET and resolve().context is None


def test_with_no_docker_socket_podmans_is_taken(sockets: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve().host == f"unix://{sockets['docker']}"  # none there: Docker's, for its error
    bind(sockets["user"])
    assert resolve().host == f"unix://{sockets['user']}" and resolve().implicit
    bind(sockets["podman"])
    monkeypatch.setattr(docker_host.os, "geteuid", lambda: 0)
    assert resolve().host == f"unix://{sockets['podman']}"  # root's first, for root
    monkeypatch.setattr(docker_host.os, "geteuid", lambda: 1000)
    assert resolve().host == f"unix://{sockets['user']}"  # a user's own, for a user
    bind(sockets["docker"])
    assert resolve().host == f"unix://{sockets['docker']}"  # Docker's wins when it is there
    assert docker_host.local_sockets()[1:] == [f"unix://{sockets['user']}"]  # then tried in turn


def test_a_named_engine_is_never_swapped_for_a_local_socket(
    sockets: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    bind(sockets["podman"])
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    assert resolve().host == "tcp://127.0.0.1:1" and not resolve().implicit


def test_the_current_context_of_the_config_then_docker_context_then_docker_host(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_context(config, "build-host", "tcp://10.0.0.5:2376", tls=True)
    add_context(config, "other", "ssh://builder@10.0.0.6")
    (config / "config.json").write_text(json.dumps({"currentContext": "build-host"}))
    endpoint = resolve()
    assert (endpoint.host, endpoint.context) == ("tcp://10.0.0.5:2376", "build-host")
    assert endpoint.tls_dir is not None and (endpoint.tls_dir / "ca.pem").exists()
    assert "docker context build-host" in endpoint.describe()

    monkeypatch.setenv("DOCKER_CONTEXT", "other")
    assert resolve().host == "ssh://builder@10.0.0.6" and resolve().over_ssh and resolve().tls_dir is None

    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")  # as the docker CLI: DOCKER_HOST wins
    assert resolve().host == "tcp://127.0.0.1:2375" and resolve().context is None


def test_the_default_context_is_the_local_socket(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONTEXT", "default")
    assert resolve().host == LOCAL_SOCKET


def test_a_context_that_does_not_exist_is_a_usage_error(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONTEXT", "gone")
    with pytest.raises(UsageError) as raised:
        resolve()
    assert raised.value.exit_code == 2
    assert "docker context 'gone' does not exist" in str(raised.value)
    assert "docker context ls" in (raised.value.hint or "")


def test_a_damaged_context_says_which_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    add_context(config, "broken", "tcp://x:1")
    meta = next((config / "contexts" / "meta").glob("*/meta.json"))
    meta.write_text("{not json")
    monkeypatch.setenv("DOCKER_CONTEXT", "broken")
    with pytest.raises(UsageError, match="cannot read docker context 'broken'"):
        resolve()
