"""Which engine aib-local talks to (DOCKER_HOST, DOCKER_CONTEXT, the config's current
context), and the sparse copy that brings a remote engine's disk image back."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from engine.docker_host import LOCAL_SOCKET, resolve
from engine.errors import UsageError
from engine.ext4 import _Frames, _write_sparse
from engine.targets.base import TargetError


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


def multiplexed(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


@pytest.mark.needs("tar", "tar")
@pytest.mark.parametrize("sparse", [True, False])
def test_a_disk_image_streamed_as_a_sparse_tar_comes_back_whole_with_its_holes(tmp_path: Path, sparse: bool) -> None:
    disk = tmp_path / "disk"
    with disk.open("wb") as out:
        out.seek(1 << 20)
        out.write(b"A" * 5000)
        out.seek(50 << 20)
        out.write(bytes(range(256)) * 300)
        out.truncate(200 << 20)
    archive = subprocess.run(
        ["tar", *(["--sparse"] if sparse else []), "-cf", "-", "-C", str(tmp_path), "disk"],
        check=True,
        capture_output=True,
    ).stdout
    # As the engine sends it: frames of odd sizes, a stderr frame among them, read in odd pieces.
    stream = io.BytesIO(
        b"".join(
            multiplexed(2, b"warning") + multiplexed(1, archive[i : i + 7001])
            if i == 7001
            else multiplexed(1, archive[i : i + 7001])
            for i in range(0, len(archive), 7001)
        )
    )
    errors: list[bytes] = []
    copy = tmp_path / "copy"
    with tarfile.open(fileobj=_Frames(lambda n: stream.read(min(n, 5000)), errors), mode="r|") as archive_in:
        member = archive_in.next()
        assert member is not None
        _write_sparse(archive_in.fileobj, member, str(copy))
    assert copy.read_bytes() == disk.read_bytes()
    assert errors == [b"warning"]
    if sparse:
        assert copy.stat().st_blocks * 512 < 1 << 20  # 200 MiB long, a few KiB written


def test_a_stream_that_ends_early_is_an_error(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.write_bytes(b"B" * 100_000)
    archive = subprocess.run(["tar", "-cf", "-", "-C", str(tmp_path), "disk"], check=True, capture_output=True).stdout
    with (
        pytest.raises(TargetError, match="ended early"),
        tarfile.open(fileobj=_Frames(io.BytesIO(multiplexed(1, archive[:20_000])).read, []), mode="r|") as stream,
    ):
        member = stream.next()
        assert member is not None
        _write_sparse(stream.fileobj, member, str(tmp_path / "copy"))
