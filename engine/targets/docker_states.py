"""The step cache's kept states of containers (engine.step_cache): images of one
repository per store, tagged with their key, and how a container is kept as one.

A kept image holds what /tmp held, which a systemd boot (tmpfiles) empties: a second set
of hard links to its files (no data copied, and the image's layer stores each file once)
is kept beside it and moved back when a container starts from the image; neither the
running container nor the image it ends as keeps the folder.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

# isort: split
from engine import _docker_import  # noqa: F401 - hides paramiko from docker-py; before `import docker`

# isort: split
import docker
import docker.errors

from engine.images import reason, short_ref
from engine.targets.base import KeptStates, Target, TargetError
from engine.targets.posix import run_script

TMP_STASH = "/.aib-local-tmp"
# Hard links where /tmp is on the container's own filesystem; a copy where it is a tmpfs
# (Podman mounts one in its systemd mode).
STASH_TMP = (
    f'rm -rf {TMP_STASH}; if [ -n "$(ls -A /tmp)" ]; then mkdir -m 0700 {TMP_STASH} && '
    f"{{ cp -al /tmp/. {TMP_STASH}/ 2>/dev/null || {{ rm -rf {TMP_STASH} && mkdir -m 0700 {TMP_STASH} && "
    f"cp -a /tmp/. {TMP_STASH}/; }}; }}; fi"
)
UNSTASH_TMP = f"if [ -d {TMP_STASH} ]; then cp -a {TMP_STASH}/. /tmp/ && rm -rf {TMP_STASH}; fi"


class DockerStates(KeptStates):
    """Kept states of containers: images of one repository per store, tagged with their key."""

    kind = "docker"
    keep_after = 2.0  # a commit takes 0.1-1 s (more with a large diff)
    fidelity = (
        "a container started from a kept image boots afresh, as after a restart: a service started but not "
        "enabled is not running (what was in /tmp is put back)"
    )

    def __init__(self, client: docker.DockerClient, store: Path) -> None:
        self.client = client
        digest = hashlib.sha256(str(store.resolve()).encode()).hexdigest()[:12]
        self.repository = f"aib-local/cache/{digest}"

    def ref(self, key: str) -> str:
        return f"{self.repository}:{key}"

    def present(self) -> dict[str, float]:
        try:
            found = self.client.images.list(name=self.repository)
        except docker.errors.DockerException as exc:
            raise TargetError(f"cannot list the step cache's images: {reason(exc)}") from None
        present: dict[str, float] = {}
        for image in found:
            made = _epoch(str(image.attrs.get("Created", "")))
            for tag in image.tags:
                repository, _, key = short_ref(tag).rpartition(":")
                if repository == self.repository:
                    present[key] = made
        return present

    def remove(self, key: str) -> bool:
        try:
            self.client.images.remove(self.ref(key))
        except docker.errors.NotFound:  # Podman's 404 is not docker-py's ImageNotFound
            pass
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # a container (a build) runs from it
                return False
            raise TargetError(f"cannot remove {self.ref(key)}: {reason(exc)}") from None
        return True


def _epoch(stamp: str) -> float:
    try:
        return datetime.fromisoformat(stamp[:19]).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0


def keep_container(
    target: Target, client: docker.DockerClient, started_from: str, states: DockerStates, key: str, base_image: str
) -> int:
    """Commit the running container as KEY's state, /tmp put aside first; its size in bytes
    (what the image adds to `started_from`, the image the container started from)."""
    _quietly(target, STASH_TMP, "put /tmp aside")
    try:
        image_id = target.commit(states.repository, key, base_image)
    finally:
        _quietly(target, f"rm -rf {TMP_STASH}", "remove the links /tmp was put aside with")
    try:
        size = client.images.get(image_id).attrs.get("Size", 0) - client.images.get(started_from).attrs.get("Size", 0)
    except docker.errors.DockerException:
        size = 0
    return max(0, int(size))


def put_back_tmp(target: Target) -> None:
    """A container started from a kept image: what /tmp held, back in /tmp."""
    _quietly(target, UNSTASH_TMP, "put back what /tmp held")


def _quietly(target: Target, script: str, what: str) -> None:
    code, lines = run_script(target, script)
    if code != 0:
        raise TargetError(f"could not {what} in {target.name}: {' / '.join(lines[-3:]) or f'exit code {code}'}")
