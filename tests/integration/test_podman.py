"""Container builds on a real Podman engine (Debian's podman, its Docker API served by
`podman system service`, rootful): found without being named, a default build with
systemd, a reboot and all three distributions, and the container suites run against it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    BASE_IMAGE,
    PID1_STARTED,
    ROOT,
    SYSTEMD_UP,
    all_three,
    assert_all_three_made,
    assert_suites_pass,
    managed_image_id,
    template,
    unavailable,
)

pytestmark = pytest.mark.podman

INTERRUPTS = "tests/guarantees/test_interrupts.py::"
# The container suites, as on this machine's Docker engine; of the interrupt guarantees, a
# signal in a step and while a VHD is written, and parallel builds.
SUITES = [
    "tests/engine/targets/test_contract.py",
    "tests/integration/test_systemd.py",
    "tests/integration/test_distribute_docker.py",
    "tests/integration/test_step_cache.py",
    "tests/guarantees/test_security.py::test_build_containers_run_unprivileged_with_only_the_mounts_they_need",
    "tests/guarantees/test_security.py::test_the_vhd_helper_runs_unprivileged_with_only_the_output_folder",
    f"{INTERRUPTS}test_a_signal_in_any_phase_cleans_up_and_exits_128_plus_signal[customizer-SIGINT]",
    f"{INTERRUPTS}test_a_signal_in_any_phase_cleans_up_and_exits_128_plus_signal[vhd-writing-SIGTERM]",
    f"{INTERRUPTS}test_ctrl_c_stops_parallel_builds_and_their_targets",
]


def _run(command: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        unavailable(f"{' '.join(command)} failed (exit {done.returncode}): {(done.stderr or done.stdout)[-800:]}")
    return done.stdout.strip()


@pytest.fixture(scope="module")
def podman() -> Iterator[dict[str, str]]:
    """The environment that names the Podman engine, with the base image in it."""
    if os.geteuid() != 0:
        unavailable("the Podman tests start the root Podman service: run them as root (bash .ci/run does)")
    host = _run([str(ROOT / "fixtures" / "ensure-podman.sh")]).splitlines()[-1]
    env = {"DOCKER_HOST": host}
    # the same recipe's image, copied from the Docker engine when it has it
    _run(
        [str(ROOT / "fixtures" / "images" / "build-image.sh"), BASE_IMAGE],
        env={**os.environ, **env, "FROM_ENGINE": "unix:///var/run/docker.sock"},
        timeout=1200,
    )
    yield env


def podman_client(env: dict[str, str]) -> Any:
    import docker

    return docker.DockerClient(base_url=env["DOCKER_HOST"])


def test_podmans_socket_is_used_when_no_docker_socket_answers(
    podman: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine import docker_host, images

    dead = tmp_path / "docker.sock"  # bound and never listened on: a Docker socket whose engine is gone
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(dead))
        monkeypatch.delenv("DOCKER_HOST", raising=False)
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-config"))
        monkeypatch.setattr(docker_host, "LOCAL_SOCKET", f"unix://{dead}")
        monkeypatch.setattr(docker_host, "PODMAN_ROOT_SOCKET", podman["DOCKER_HOST"])
        client = images.connect()
        about = images.engine_about(client)
    assert about.kind == "Podman"
    assert about.where == podman["DOCKER_HOST"]
    assert about.describe().startswith("Podman 4.")


def test_a_default_build_boots_systemd_reboots_and_distributes_all_three(
    podman: dict[str, str], cli: Any, write_template: Any, store: Path
) -> None:
    steps = [
        {
            "type": "Shell",
            "name": "systemd",
            "inline": [
                *SYSTEMD_UP,
                f"{PID1_STARTED} > /var/tmp/boot-before",
            ],
        },
        {"type": "Shell", "name": "reboot", "inline": ["sudo reboot"]},
        {
            "type": "Shell",
            "name": "after-reboot",
            "inline": [
                f'test "$({PID1_STARTED})" != "$(cat /var/tmp/boot-before)"',
                'test "$(cat /proc/1/comm)" = systemd',
                "echo built-on-podman | sudo tee /etc/marker",
            ],
        },
    ]
    path = write_template(template("podman", steps, distribute=all_three(cli, "podman")))
    result = cli("build", str(path), env=podman, timeout=600)
    assert result.code == 0, result.output
    assert "engine: Podman 4." in result.output and podman["DOCKER_HOST"] in result.output
    assert "systemd is the container's PID 1" in result.output
    assert "reboot: rebooted" in result.output, result.output
    assert "after-reboot: ok" in result.output, result.output
    image = assert_all_three_made(cli, store, "podman", podman)
    client = podman_client(podman)
    try:
        # Committed with the base image's own config, which Podman takes only as Dockerfile
        # instructions: not the build's systemd entrypoint, nor its labels.
        config = client.api.inspect_image(image)["Config"]
        base = client.api.inspect_image(BASE_IMAGE)["Config"]
        assert not config.get("Entrypoint") and config.get("Cmd") == base.get("Cmd")
        assert not (config.get("Labels") or {}).get("io.aib-local.build-id")
        marker = client.containers.run(image, ["cat", "/etc/marker"], remove=True, network_mode="none")
        assert marker.strip() == b"built-on-podman"
    finally:
        client.close()


def test_the_container_suites_pass_against_it(podman: dict[str, str], tmp_path: Path) -> None:
    """The target contract, systemd, distribution, the step cache, the security guarantee
    and interrupts: the same tests as on this machine's Docker engine, pointed at Podman."""
    assert_suites_pass(SUITES, podman, tmp_path / "suites")


ROOTLESS_USER = "aib-local-rootless"


@pytest.fixture(scope="module")
def rootless(podman: dict[str, str]) -> dict[str, str]:
    """The environment that names a user's rootless Podman (the user made when missing),
    with the base image in it."""
    script = str(ROOT / "fixtures" / "ensure-podman.sh")
    env = {"DOCKER_HOST": _run([script, "--rootless", ROOTLESS_USER]).splitlines()[-1]}
    _run(
        [str(ROOT / "fixtures" / "images" / "build-image.sh"), BASE_IMAGE],
        env={**os.environ, **env, "FROM_ENGINE": "unix:///var/run/docker.sock"},
        timeout=1200,
    )
    return env


def test_rootless_podman_builds_and_says_what_it_cannot_give(
    rootless: dict[str, str], cli: Any, write_template: Any, store: Path
) -> None:
    """On cgroup v1 (this machine) rootless Podman cannot give systemd a cgroup subtree:
    `--init auto` builds with the keep-alive PID 1 and says why, `--init systemd` refuses;
    the build user, sudo, files, and the managed image work as under root."""
    client = podman_client(rootless)
    try:
        v1 = str(client.info().get("CgroupVersion")) == "1"
    finally:
        client.close()
    steps = [
        {"type": "Shell", "name": "users", "inline": ['test "$(id -un)" = packer', 'test "$(sudo id -u)" = 0']},
        {"type": "Shell", "name": "mark", "inline": ["echo rootless | sudo tee /etc/marker"]},
    ]
    distribute = [
        {"type": "ManagedImage", "runOutputName": "image", "imageId": managed_image_id("rl"), "location": "westeurope"}
    ]
    path = write_template(template("rootless", steps, distribute=distribute))
    result = cli("build", str(path), "--network", "none", env=rootless, timeout=600)
    assert result.code == 0, result.output
    assert "rootless) at " + rootless["DOCKER_HOST"] in result.output
    blocker = "systemd cannot be PID 1 on this engine: rootless Podman on cgroup v1"
    if v1:
        assert blocker in result.output and "no container limits" in result.output
        refused = cli("build", str(path), "--network", "none", "--init", "systemd", env=rootless, timeout=600)
        assert refused.code != 0 and "rootless Podman on cgroup v1" in refused.output, refused.output
    else:
        assert "systemd is the container's PID 1" in result.output
    assert json.loads(cli("show", managed_image_id("rl"), env=rootless).stdout)["aibLocal"]["dockerImage"]
