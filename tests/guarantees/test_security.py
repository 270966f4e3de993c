"""Guarantee 7: secrets and SAS signatures never reach the screen, the JSON events, the
logs or the store; containers run unprivileged with only the mounts the build needs; the
store's files follow the user's umask and are never world-writable. (Unknown and changed
SSH host keys are refused by default: tests/integration/test_build_ssh.py.)"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from engine.images import engine_about, engine_is_local
from tests.support import (
    Running,
    base_url,
    build_ids,
    http_server,
    managed_image,
    managed_image_id,
    store_problems,
    template,
)

pytestmark = pytest.mark.docker

SECRET = "s3cr3t-value-4711"
SAS_SIG = "SASsignatureXYZ%2Bq"
SCRIPT = b'#!/bin/sh\necho "script sees $API_TOKEN"\n'


class ScriptHandler(BaseHTTPRequestHandler):
    def log_message(self, *_args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(SCRIPT)))
        self.end_headers()
        self.wfile.write(SCRIPT)


@pytest.fixture
def sas_url() -> Iterator[str]:
    with http_server(ThreadingHTTPServer(("127.0.0.1", 0), ScriptHandler)) as httpd:
        yield f"{base_url(httpd)}/script.sh?sv=2022-11-02&sr=b&sp=r&sig={SAS_SIG}"


def every_text(store: Path) -> Iterator[tuple[Path, str]]:
    for path in store.rglob("*"):
        if path.is_file() and path.suffix != ".vhd":
            yield path, path.read_bytes().decode("utf-8", "replace")


@pytest.mark.parametrize("output", ["text", "json"])
def test_secrets_and_sas_signatures_appear_nowhere(
    output: str, cli: Any, write_template: Any, store: Path, sas_url: str, base_image: str
) -> None:
    steps: list[dict[str, Any]] = [
        {
            "type": "Shell",
            "name": "downloaded",
            "scriptUri": sas_url,
            "sha256Checksum": hashlib.sha256(SCRIPT).hexdigest(),
        },
        {"type": "Shell", "name": "echoes", "inline": ['echo "token is $API_TOKEN"', 'echo "$API_TOKEN" >&2']},
        {"type": "Shell", "name": "fails", "inline": ['echo "failing with $API_TOKEN"', "exit 3"]},
    ]
    distribute = [
        {
            "type": "ManagedImage",
            "imageId": managed_image_id("secret"),
            "location": "westeurope",
            "runOutputName": "img",
        }
    ]
    path = write_template(template("secret", steps, distribute=distribute))
    result = cli(
        "build",
        str(path),
        "--network",
        "none",
        "--output",
        output,
        "--secret",
        f"API_TOKEN={SECRET}",
    )

    assert result.code == 1, result.output  # the last step fails, with the secret in its output
    assert "script sees ***" in result.stdout and "token is ***" in result.stdout
    assert "script.sh?***" in result.output
    if output == "json":
        events = [json.loads(line) for line in result.stdout.splitlines()]
        assert any(e.get("line") == "failing with ***" for e in events)
    shown = [cli("show", f"{r}") for r in (managed_image_id("secret"),)]
    builds = cli("list", "--type", "builds")
    logs = cli("logs", build_ids(store)[0])
    for text in [result.stdout, result.stderr, builds.output, logs.output, *(s.output for s in shown)]:
        assert SECRET not in text and SAS_SIG not in text
    for file, text in every_text(store):
        assert SECRET not in text, file
        assert SAS_SIG not in text, file


def _unprivileged(container: Any) -> None:
    host = container.attrs["HostConfig"]
    assert host["Privileged"] is False
    assert not host.get("CapAdd")
    assert not host.get("Devices")
    assert host["NetworkMode"] == "none"


def test_build_containers_run_unprivileged_with_only_the_mounts_they_need(
    store: Path, write_template: Any, docker_client: Any, base_image: str
) -> None:
    # From inside, as root: no cgroup outside the container's own can be made (on v1 the
    # controllers; on v2 the namespace's root is the container's own subtree).
    # Each controller whose cgroup could be made is named (and the step fails); sudo's own
    # errors show in the output.
    probe = (
        "made=; for c in memory pids cpu; do [ -d /sys/fs/cgroup/$c ] || continue; "
        'mkdir /sys/fs/cgroup/$c/aib-probe 2>/dev/null && made="$made $c"; done; '
        '[ -z "$made" ] || { echo "MADE A CGROUP:$made"; exit 1; }'
    )
    step = {"type": "Shell", "name": "step", "inline": ["echo step", f"sudo sh -c '{probe}'", "echo PROBED"]}
    path = write_template(template("sec", [step], distribute=[managed_image("sec")]))
    wait = {"AIB_LOCAL_FAILPOINTS": "phase:customize=wait:3"}
    running = Running(["build", str(path), "--network", "none"], store, wait)
    running.wait_for("failpoint phase:customize reached")
    (build_id,) = build_ids(store)
    target = docker_client.containers.get(f"aib-local-{build_id}")
    code, output = running.finish()
    assert code == 0, output
    assert "PROBED" in output and "MADE A CGROUP" not in output, output

    _unprivileged(target)
    # systemd as PID 1: on cgroup v1 the host's hierarchy read-only; on v2 no mount at all,
    # but a private cgroup namespace whose own subtree is writable (writable-cgroups).
    mounts = [(m["Destination"], m["RW"]) for m in target.attrs["Mounts"]]
    if engine_about(docker_client).kind == "Podman":
        # Its systemd mode mounts them itself (in the private cgroup namespace aib-local asks
        # for, which its API does not report back): the step's probe is what shows it.
        assert mounts == []
    elif docker_client.info().get("CgroupVersion") == "2":
        assert mounts == []
        assert target.attrs["HostConfig"]["CgroupnsMode"] == "private"
        assert target.attrs["HostConfig"].get("SecurityOpt") in (None, [], ["writable-cgroups=true"])
    else:
        assert mounts in ([], [("/sys/fs/cgroup", False)])
        assert not target.attrs["HostConfig"].get("SecurityOpt")
    assert set(target.attrs["HostConfig"].get("Tmpfs") or {}) <= {"/run", "/run/lock"}


def test_the_vhd_helper_runs_unprivileged_with_only_the_output_folder(
    store: Path, write_template: Any, docker_client: Any, base_image: str
) -> None:
    step = {"type": "Shell", "name": "step", "inline": ["echo step"]}
    path = write_template(template("sec-vhd", [step], distribute=[{"type": "VHD", "runOutputName": "disk"}]))
    running = Running(["build", str(path), "--network", "none"], store, {"AIB_LOCAL_FAILPOINTS": "vhd:unpacked=wait:3"})
    running.wait_for("failpoint vhd:unpacked reached")
    (build_id,) = build_ids(store)
    (helper,) = [
        c
        for c in docker_client.containers.list(filters={"label": f"io.aib-local.build-id={build_id}"})
        if c.labels.get("io.aib-local.template") == "vhd-helper"
    ]
    code, output = running.finish()
    assert code == 0, output

    _unprivileged(helper)
    if not engine_is_local(docker_client):  # a remote engine sees none of this machine's folders
        assert helper.attrs["Mounts"] == []  # the VHD's file system comes back over the exec's stream
        return
    (mount,) = helper.attrs["Mounts"]
    assert mount["Type"] == "bind"
    assert mount["Source"] == str(store / "artifacts" / build_id)
    assert mount["Destination"] == "/out"


@pytest.mark.parametrize(("umask", "record_mode"), [(0o000, 0o664), (0o022, 0o644), (0o077, 0o600)])
def test_store_files_follow_the_umask_and_are_never_world_writable(
    umask: int, record_mode: int, store: Path, write_template: Any, base_image: str
) -> None:
    step = {"type": "Shell", "name": "step", "inline": ["echo step"]}
    distribute = [{"type": "VHD", "runOutputName": "disk"}]
    path = write_template(template("modes", [step], distribute=distribute))
    before = os.umask(umask)
    try:
        running = Running(["build", str(path), "--network", "none"], store)
    finally:
        os.umask(before)
    code, output = running.finish()
    assert code == 0, output

    for file in [store, *store.rglob("*")]:
        mode = stat.S_IMODE(file.stat().st_mode)
        assert not mode & stat.S_IWOTH, f"{file} is world-writable ({oct(mode)})"
        assert not mode & ~(0o777 & ~umask), f"{file} has bits the umask removes ({oct(mode)})"
    records = [p for p in store.rglob("*.json") if "inflight" not in p.parts]
    assert records
    assert {stat.S_IMODE(p.stat().st_mode) for p in records} == {record_mode}
    (vhd,) = store.rglob("*.vhd")
    assert stat.S_IMODE(vhd.stat().st_mode) == record_mode
    assert store_problems(store) == []
