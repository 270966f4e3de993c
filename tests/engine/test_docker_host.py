"""Which engine aib-local talks to (DOCKER_HOST, DOCKER_CONTEXT, the config's current
context), and the sparse copy that brings a remote engine's disk image back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

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


def test_without_anything_set_the_local_socket(config: Path) -> None:
    assert resolve().host == LOCAL_SOCKET and resolve().context is None


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
