"""The Docker target against the real engine: exec, timeouts, files, restart, export."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest

from engine.targets.base import Command, CommandTimeout, TargetError
from engine.targets.docker import DockerTarget

pytestmark = pytest.mark.docker


@pytest.fixture
def target(docker_client: Any, base_image: str) -> Iterator[DockerTarget]:
    target = DockerTarget(docker_client, base_image, build_id="target-test", template="t", network="none")
    target.start()
    yield target
    target.remove()


def run(
    target: DockerTarget, script: str, timeout: float = 30, as_root: bool = False
) -> tuple[int, list[tuple[str, str]]]:
    lines: list[tuple[str, str]] = []
    code = target.run(
        Command(["/bin/sh", "-c", script], as_root=as_root), lambda stream, line: lines.append((stream, line)), timeout
    )
    return code, lines


def test_exit_codes_and_streams(target: DockerTarget) -> None:
    code, lines = run(target, "echo out; echo err >&2; printf 'no newline'; exit 42")
    assert code == 42
    assert ("stdout", "out") in lines and ("stderr", "err") in lines and ("stdout", "no newline") in lines


def test_output_order_is_kept(target: DockerTarget) -> None:
    _, lines = run(target, "i=0; while [ $i -lt 500 ]; do echo line$i; i=$((i+1)); done")
    assert [line for _, line in lines] == [f"line{i}" for i in range(500)]


def test_build_user_has_sudo_and_root_is_root(target: DockerTarget) -> None:
    assert target.build_user == "packer"
    assert run(target, "id -un")[1] == [("stdout", "packer")]
    assert run(target, "sudo -n id -u")[1] == [("stdout", "0")]
    assert run(target, "id -u", as_root=True)[1] == [("stdout", "0")]


def test_timeout_kills_the_process_tree_inside_the_container(target: DockerTarget) -> None:
    with pytest.raises(CommandTimeout):
        run(target, "sleep 301 & sleep 302; echo NEVER", timeout=1.5)
    # No process of the killed step is left in the container.
    _, lines = run(target, "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '", as_root=True)
    text = " ".join(line for _, line in lines)
    assert "sleep 301" not in text and "sleep 302" not in text


def test_put_writes_files_owned_by_the_build_user(target: DockerTarget) -> None:
    target.put(b"payload", "/tmp/file.txt", mode=0o640)
    assert run(target, "stat -c '%U %a' /tmp/file.txt; cat /tmp/file.txt")[1] == [
        ("stdout", "packer 640"),
        ("stdout", "payload"),
    ]


def test_put_into_a_missing_directory_is_a_clear_error(target: DockerTarget) -> None:
    with pytest.raises(TargetError, match="the directory /no/such does not exist"):
        target.put(b"x", "/no/such/file")


def test_restart_keeps_the_filesystem(target: DockerTarget) -> None:
    target.put(b"kept", "/tmp/marker")
    before = run(target, "cat /proc/1/stat | cut -d' ' -f22")[1]
    target.restart(timeout=30)
    assert run(target, "cat /tmp/marker")[1] == [("stdout", "kept")]
    assert run(target, "cat /proc/1/stat | cut -d' ' -f22")[1] != before  # a new PID 1


def test_export_is_a_tar_of_the_root_filesystem(target: DockerTarget) -> None:
    target.put(b"exported", "/tmp/exported.txt")
    data = b"".join(target.export())
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        names = set(archive.getnames())
        member = archive.extractfile("tmp/exported.txt")
        assert member is not None and member.read() == b"exported"
    assert "etc/os-release" in names


def test_labels_name_the_build(target: DockerTarget, docker_client: Any) -> None:
    assert target.container is not None
    labels = docker_client.api.inspect_container(target.container.id)["Config"]["Labels"]
    assert labels["io.aib-local.build-id"] == "target-test"
    assert labels["io.aib-local.tool"] == "aib-local"
