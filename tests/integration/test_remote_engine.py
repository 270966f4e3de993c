"""Builds through a Docker engine on another "host": a second, real dockerd started here
with its own data root, reached over tcp:// with TLS (DOCKER_HOST and the TLS variables,
and a docker context). Nothing it does shares a path with the client's store: the VHD
must come back over the API, and everything else must live on that engine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from engine.images import LABEL_BUILD
from tests.remote_engine import Forwarder, RemoteEngine, copy_image, start_engine
from tests.support import (
    SIGNALS,
    SUBSCRIPTION,
    Running,
    build_ids,
    images_named,
    make_gallery,
    managed_image_id,
    template,
    unavailable,
)

pytestmark = pytest.mark.docker

GIB = 1 << 30


@pytest.fixture(scope="module")
def remote(docker_client: Any, base_image: str) -> Iterator[RemoteEngine]:
    if os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("openssl") is None:
        unavailable("a second engine needs root, dockerd and openssl (bash .ci/run installs them)")
    engine = start_engine()
    try:
        copy_image(docker_client, engine.client(), base_image)
        yield engine
    finally:
        engine.stop()


def remote_containers(remote: RemoteEngine, store: Path) -> list[str]:
    client = remote.client()
    return [
        container.name
        for build_id in build_ids(store)
        for container in client.containers.list(all=True, filters={"label": f"{LABEL_BUILD}={build_id}"})
    ]


def output_of(cli: Any, name: str, output: str, env: dict[str, str]) -> dict[str, Any]:
    base = (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/aib-local/providers"
        f"/Microsoft.VirtualMachineImages/imageTemplates/{name}/runOutputs/{output}"
    )
    shown = cli("show", base, env=env)
    assert shown.code == 0, shown.output
    return dict(json.loads(shown.stdout)["properties"])


def test_every_distribution_through_a_tls_engine_and_a_docker_context(
    cli: Any, write_template: Any, docker_client: Any, remote: RemoteEngine, store: Path, tmp_path: Path
) -> None:
    definition = make_gallery(cli)
    image_id = managed_image_id("remote-all")
    path = write_template(
        template(
            "remote-all",
            [{"type": "Shell", "name": "mark", "inline": ["echo built-remotely | sudo tee /etc/marker"]}],
            distribute=[
                {"type": "VHD", "runOutputName": "disk"},
                {"type": "ManagedImage", "runOutputName": "image", "imageId": image_id, "location": "westeurope"},
                {
                    "type": "SharedImage",
                    "runOutputName": "gallery",
                    "galleryImageId": definition,
                    "targetRegions": [{"name": "westeurope"}],
                },
            ],
            vmProfile={"osDiskSizeGB": 2},
        )
    )
    result = cli("build", str(path), "--network", "none", env=remote.env)
    assert result.code == 0, result.output
    assert "the disk image came back from the remote engine" in result.output

    # The VHD came back to this machine: whole, fixed, sparse, the customizer's file inside.
    disk = Path(urlsplit(output_of(cli, "remote-all", "disk", remote.env)["artifactUri"]).path)
    assert disk.is_relative_to(store)
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-f", "vpc", "--output", "json", str(disk)], check=True, capture_output=True, text=True
        ).stdout
    )
    assert info["virtual-size"] == 2 * GIB and disk.stat().st_size == 2 * GIB + 512
    assert disk.stat().st_blocks * 512 < GIB  # the holes stayed holes on the way back
    cat = subprocess.run(
        ["debugfs", "-R", "cat /etc/marker", f"{disk}?offset={1 << 20}"], check=True, capture_output=True, text=True
    )
    assert cat.stdout.strip() == "built-remotely"
    assert not list(store.rglob("*.partial"))

    # The managed image and the gallery version live on the remote engine, not on this one.
    (build_id,) = build_ids(store)
    client = remote.client()
    assert images_named(client, build_id) and not images_named(docker_client, build_id)
    version = json.loads(
        cli(
            "sig",
            "image-version",
            "show",
            "-g",
            "rg",
            "-r",
            "gal",
            "-i",
            "debian",
            "--gallery-image-version",
            "latest",
            env=remote.env,
        ).stdout
    )
    assert client.images.get(version["aibLocal"]["dockerImage"])
    assert remote_containers(remote, store) == []

    # A docker context names the same engine: the next build, from the managed image, uses it.
    config = tmp_path / "docker-config"
    certs = remote.certs
    subprocess.run(
        [
            "docker",
            "--config",
            str(config),
            "context",
            "create",
            "aib-remote",
            "--docker",
            f"host={remote.host},ca={certs / 'ca.pem'},cert={certs / 'cert.pem'},key={certs / 'key.pem'}",
        ],
        check=True,
        capture_output=True,
    )
    chained = write_template(
        template(
            "from-remote-image",
            [{"type": "Shell", "inline": ["cat /etc/marker"]}],
            source={"type": "ManagedImage", "imageId": image_id},
        ),
        "chained.json",
    )
    result = cli(
        "build", str(chained), "--network", "none", env={"DOCKER_CONFIG": str(config), "DOCKER_CONTEXT": "aib-remote"}
    )
    assert result.code == 0, result.output
    assert "built-remotely" in result.stdout

    # A context that does not exist is a usage error, with the command that lists them.
    missing = cli("build", str(chained), env={"DOCKER_CONFIG": str(config), "DOCKER_CONTEXT": "nowhere"})
    assert missing.code == 2, missing.output
    assert "docker context 'nowhere' does not exist" in missing.stderr and "docker context ls" in missing.stderr


@pytest.mark.parametrize(
    ("point", "wait_for"),
    [
        (None, "remote-step-running"),  # a running customizer
        ("vhd:fetching=wait:120", "failpoint vhd:fetching reached"),  # the disk on its way back
    ],
)
def test_an_interrupt_through_the_remote_engine_leaves_nothing(
    point: str | None, wait_for: str, write_template: Any, remote: RemoteEngine, store: Path
) -> None:
    inline = ["echo remote-step-running", "true" if point else "sleep 300"]
    steps = [{"type": "Shell", "name": "long", "inline": inline}]
    path = write_template(template("remote-int", steps, distribute=[{"type": "VHD", "runOutputName": "disk"}]))
    env = {**remote.env, **({"AIB_LOCAL_FAILPOINTS": point} if point else {})}
    running = Running(["build", str(path), "--network", "none"], store, env)
    running.wait_for(wait_for)
    signum, expected = SIGNALS["SIGINT"]
    running.send(signum)
    code, output = running.finish()
    assert code == expected, output
    assert running.seconds_since_signal() < 10
    assert remote_containers(remote, store) == []  # the build container and the disk helper
    assert not list(store.rglob("*.partial")) and not list(store.rglob("*.vhd"))


def test_clean_through_the_remote_engine_removes_what_a_killed_build_left(
    cli: Any, write_template: Any, remote: RemoteEngine, store: Path
) -> None:
    path = write_template(template("remote-crash", [{"type": "Shell", "inline": ["true"]}]))
    running = Running(
        ["build", str(path), "--network", "none"], store, {**remote.env, "AIB_LOCAL_FAILPOINTS": "phase:customize=kill"}
    )
    code, output = running.finish()
    assert code == -9, output
    assert remote_containers(remote, store), "the killed build left its container on the remote engine"
    cleaned = cli("clean", env=remote.env)
    assert cleaned.code == 0, cleaned.output
    assert remote_containers(remote, store) == []


def test_an_engine_that_goes_away_mid_step_is_named_as_the_fault_and_clean_removes_what_was_left(
    cli: Any, write_template: Any, docker_client: Any, base_image: str, store: Path
) -> None:
    """dockerd stopped (SIGTERM) during a step: the build ends at once with exit 3, naming
    the engine, never as an internal error; once the engine is back, clean removes the container."""
    if os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("openssl") is None:
        unavailable("a second engine needs root, dockerd and openssl (bash .ci/run installs them)")
    engine = start_engine()  # its own: this test stops it
    try:
        copy_image(docker_client, engine.client(), base_image)
        path = write_template(template("gone", [{"type": "Shell", "name": "long", "inline": ["sleep 60"]}]))
        running = Running(["build", str(path), "--network", "none"], store, engine.env)
        running.wait_for("==> customize[0] long")
        engine.process.send_signal(signal.SIGTERM)
        code, output = running.finish()
        assert code == 3, output
        assert "the Docker engine failed during customize" in output and "a fault of the engine" in output
        assert "internal error" not in output and "Traceback" not in output
        engine.process.wait(timeout=60)  # its shutdown ends before it starts again
        restarted = start_engine(engine.folder)
        (build_id,) = build_ids(store)
        assert restarted.client().containers.list(all=True, filters={"label": f"{LABEL_BUILD}={build_id}"})
        cleaned = cli("clean", env=restarted.env)
        assert cleaned.code == 0, cleaned.output
        assert remote_containers(restarted, store) == []
        restarted.stop()
    finally:
        engine.stop()


def test_an_engine_that_stops_answering_mid_step_ends_the_build_in_bounded_time_naming_it(
    cli: Any, write_template: Any, docker_client: Any, base_image: str, store: Path
) -> None:
    """dockerd paused (SIGSTOP) during a quiet step: the build does not wait on a stream that
    will never move; it ends with exit 3 within the engine check's bound, naming the engine
    and what to do, asks nothing more of it, and clean removes the container once it answers."""
    if os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("openssl") is None:
        unavailable("a second engine needs root, dockerd and openssl (bash .ci/run installs them)")
    from engine.targets.docker import ENGINE_ANSWERS, QUIET_CHECK

    engine = start_engine()  # its own: this test pauses it
    try:
        copy_image(docker_client, engine.client(), base_image)
        steps = [{"type": "Shell", "name": "quiet", "inline": ["echo STEP-STARTED", "sleep 600"]}]
        running = Running(
            ["build", str(write_template(template("paused", steps))), "--network", "none"], store, engine.env
        )
        running.wait_for("STEP-STARTED")
        engine.process.send_signal(signal.SIGSTOP)
        try:
            code, output = running.finish(within=QUIET_CHECK + ENGINE_ANSWERS + 30)
        finally:
            engine.process.send_signal(signal.SIGCONT)
            if running.proc.poll() is None:  # it did not end within the bound: the test fails, nothing is left
                running.proc.kill()
        assert code == 3, output
        assert "stopped answering during the step" in output and "kill -CONT" in output, output
        assert "aib-local clean removes it once it does" in output, output
        assert "internal error" not in output and "Traceback" not in output
        cleaned = cli("clean", env=engine.env)
        assert cleaned.code == 0, cleaned.output
        assert remote_containers(engine, store) == []
    finally:
        engine.stop()


def test_a_connection_to_the_engine_that_drops_mid_step_is_named_as_the_fault(
    cli: Any, write_template: Any, remote: RemoteEngine, store: Path
) -> None:
    """The network path to a remote engine cut during a step (the engine running on): the
    build ends at once with exit 3, naming the engine as the fault, never as an internal
    error; over a path that works again, clean removes the container it left."""
    path = Forwarder(remote.port)
    try:
        steps = [{"type": "Shell", "name": "long", "inline": ["echo STEP-STARTED", "sleep 60"]}]
        running = Running(
            ["build", str(write_template(template("dropped", steps))), "--network", "none"], store, path.env(remote)
        )
        running.wait_for("STEP-STARTED")
        path.cut()
        code, output = running.finish(within=60)
    finally:
        path.cut()
    assert code == 3, output
    assert "the Docker engine" in output and "a fault of the engine" in output, output
    assert "internal error" not in output and "Traceback" not in output
    assert remote_containers(remote, store), "the build's container is still on the engine"
    again = Forwarder(remote.port)
    try:
        cleaned = cli("clean", env=again.env(remote))
    finally:
        again.cut()
    assert cleaned.code == 0, cleaned.output
    assert remote_containers(remote, store) == []
