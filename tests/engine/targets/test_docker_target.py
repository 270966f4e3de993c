"""What only the Docker target does (the shared contract is in test_contract.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from engine.targets.docker import DockerTarget

pytestmark = pytest.mark.docker


@pytest.fixture
def target(docker_client: Any, base_image: str) -> Iterator[DockerTarget]:
    target = DockerTarget(docker_client, base_image, build_id="target-test", template="t", network="none")
    target.start()
    yield target
    target.remove()


def test_labels_name_the_build(target: DockerTarget, docker_client: Any) -> None:
    assert target.container is not None
    labels = docker_client.api.inspect_container(target.container.id)["Config"]["Labels"]
    assert labels["io.aib-local.build-id"] == "target-test"
    assert labels["io.aib-local.tool"] == "aib-local"


def test_a_halted_container_is_stopped_and_committed_with_what_its_steps_wrote(
    target: DockerTarget, docker_client: Any, base_image: str
) -> None:
    """The capture of an image-only build: the container is killed (systemd and every
    process with it), then committed without a pause; the image has what was written."""
    from engine.targets.base import Command

    assert target.machine is not None  # systemd is PID 1: a pause would freeze its services
    assert target.run(Command(["/bin/sh", "-c", "echo kept > /var/tmp/marker"], as_root=True), lambda *_: None, 30) == 0
    target.halt()
    assert target.container is not None
    assert docker_client.api.inspect_container(target.container.id)["State"]["Running"] is False
    image_id = target.commit("aib-local-test/halted", "target-test", base_image)
    try:
        out = docker_client.containers.run(
            image_id, ["cat", "/var/tmp/marker"], entrypoint=[], remove=True, network_mode="none"
        )
        assert out.decode().strip() == "kept"
    finally:
        docker_client.images.remove(image_id, force=True)
