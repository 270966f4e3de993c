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
