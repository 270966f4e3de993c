"""One contract, every target: the same assertions over Docker and a real sshd."""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.targets.base import Command, CommandTimeout, OpenRequest, Target, TargetError
from engine.targets.endpoint import SshOptions
from engine.targets.registry import attach, for_spec
from tests.support import start_sshd


@pytest.fixture(
    params=[
        pytest.param("docker", marks=pytest.mark.docker),  # systemd as PID 1 (the base image has it)
        pytest.param("docker-init-none", marks=pytest.mark.docker),  # a keep-alive PID 1
        pytest.param("ssh", marks=pytest.mark.ssh),
    ]
)
def target(request: Any, docker_client: Any, base_image: str, tmp_path: Path) -> Iterator[Target]:
    created: Target
    server = None
    # A build id of its own (the container is named after it): one that a broken run left
    # behind cannot block the next run.
    build_id = f"contract-test-{uuid.uuid4().hex[:8]}"
    if request.param.startswith("docker"):
        init = "none" if request.param == "docker-init-none" else "auto"
        opening = OpenRequest("docker", build_id, template="t", image=base_image, network="none", init=init)
        created = for_spec("docker").open(opening)
    else:
        image = request.getfixturevalue("sshd_image")
        server = start_sshd(docker_client, image, tmp_path / "sshd")
        options = SshOptions(key_file=server.key_file, known_hosts=server.known_hosts)
        created = for_spec(server.target).open(OpenRequest(server.target, build_id, ssh=options))
    created.start()
    yield created
    created.remove()
    if server is not None:
        server.container.remove(force=True)


def run(target: Target, script: str, timeout: float = 30, as_root: bool = False) -> tuple[int, list[tuple[str, str]]]:
    lines: list[tuple[str, str]] = []
    code = target.run(
        Command(["/bin/sh", "-c", script], as_root=as_root),
        lambda stream, line: lines.append((stream, line)),
        timeout,
    )
    return code, lines


def test_exit_codes_and_streams(target: Target) -> None:
    code, lines = run(target, "echo out; echo err >&2; printf 'no newline'; exit 42")
    assert code == 42
    assert ("stdout", "out") in lines and ("stderr", "err") in lines and ("stdout", "no newline") in lines


def test_output_order_is_kept(target: Target) -> None:
    _, lines = run(target, "i=0; while [ $i -lt 500 ]; do echo line$i; i=$((i+1)); done")
    assert [line for _, line in lines] == [f"line{i}" for i in range(500)]


def test_build_user_has_sudo_and_root_is_root(target: Target) -> None:
    assert target.build_user != "root"
    assert run(target, "id -un")[1] == [("stdout", target.build_user)]
    assert run(target, "sudo -n id -u")[1] == [("stdout", "0")]
    assert run(target, "id -u", as_root=True)[1] == [("stdout", "0")]


def test_environment_and_workdir(target: Target) -> None:
    lines: list[str] = []
    code = target.run(
        Command(["/bin/sh", "-c", 'echo "$GREETING from $(pwd)"'], env={"GREETING": "hello there"}, workdir="/tmp"),
        lambda _s, line: lines.append(line),
        30,
    )
    assert (code, lines) == (0, ["hello there from /tmp"])


def test_timeout_kills_the_process_tree_on_the_target(target: Target) -> None:
    with pytest.raises(CommandTimeout):
        run(target, "sleep 301 & sleep 302; echo NEVER", timeout=1.5)
    _, lines = run(target, "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '", as_root=True)
    text = " ".join(line for _, line in lines)
    assert "sleep 301" not in text and "sleep 302" not in text


def test_put_writes_files_owned_by_the_build_user(target: Target) -> None:
    target.put(b"payload", "/tmp/file.txt", mode=0o640)
    assert run(target, "stat -c '%U %a' /tmp/file.txt; cat /tmp/file.txt")[1] == [
        ("stdout", f"{target.build_user} 640"),
        ("stdout", "payload"),
    ]


def test_put_as_root(target: Target) -> None:
    target.put(b"rooted", "/etc/aib-local-test", mode=0o600, owner="root")
    assert run(target, "stat -c '%U %a' /etc/aib-local-test; cat /etc/aib-local-test", as_root=True)[1] == [
        ("stdout", "root 600"),
        ("stdout", "rooted"),
    ]


def test_put_into_a_missing_directory_is_a_clear_error(target: Target) -> None:
    with pytest.raises(TargetError, match="the directory /no/such does not exist"):
        target.put(b"x", "/no/such/file")


def test_export_is_a_tar_of_the_root_filesystem(target: Target) -> None:
    target.put(b"exported", "/var/tmp/exported.txt")
    data = b"".join(target.export())
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        names = {name.removeprefix("./") for name in archive.getnames()}
        member = archive.extractfile(next(n for n in archive.getnames() if n.endswith("var/tmp/exported.txt")))
        assert member is not None and member.read() == b"exported"
    assert "etc/os-release" in names
    assert not any(name.startswith("proc/") and name != "proc/" for name in names)


def test_restart_and_reconnect(target: Target) -> None:
    # /var/tmp: a booting systemd empties /tmp, on a VM as in a container.
    target.put(b"kept", "/var/tmp/marker")
    _, before = run(target, "cut -d' ' -f22 /proc/1/stat")
    phases: list[str] = []
    # An sshd container restarts when its PID 1 stops; a Docker target restarts its container.
    target.restart("kill 1", 60, phases.append)
    assert run(target, "cat /var/tmp/marker")[1] == [("stdout", "kept")]
    assert run(target, "cut -d' ' -f22 /proc/1/stat")[1] != before
    assert phases and ("back up" in phases[-1] or "running again" in phases[-1])


def test_a_kept_target_is_attached_again_from_its_info(target: Target) -> None:
    assert run(target, "echo kept > /tmp/kept-marker")[0] == 0
    again = attach(target.info(), target.build_id, within=10)
    try:
        assert again.kind == target.kind and again.os_type == target.os_type
        assert again.build_user == target.build_user
        assert run(again, "cat /tmp/kept-marker")[1] == [("stdout", "kept")]
    finally:
        again.remove()  # the fixture's own remove() after it is then a no-op
