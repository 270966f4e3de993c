"""A VM-like layer for a container image without systemd (registry images are minimized):
systemd, dbus and sudo installed once with the image's own package manager, committed
under its own tag keyed by the base image's ID, and used by every later build of it."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

# isort: split
from engine import _docker_import  # noqa: F401 - hides paramiko from docker-py; before `import docker`

# isort: split
import docker
import docker.errors
import requests

from engine.images import commit, container_defaults, reason

REPOSITORY = "aib-local/vm-layer"
LABEL_OF = "io.aib-local.vm-layer-of"
INSTALL = r"""
set -e
if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends systemd systemd-sysv dbus sudo procps iproute2 ca-certificates
elif command -v dnf >/dev/null 2>&1; then
  dnf install -y systemd dbus sudo procps-ng iproute
elif command -v yum >/dev/null 2>&1; then
  yum install -y systemd dbus sudo procps-ng iproute
elif command -v zypper >/dev/null 2>&1; then
  zypper --non-interactive install systemd dbus-1 sudo procps iproute2
else
  echo "no package manager found (apt-get, dnf, yum or zypper)"
  exit 64
fi
: > /etc/machine-id
"""
# Package-manager lines worth showing as progress (the rest goes unsaid).
PROGRESS = ("Setting up systemd", "Setting up dbus", "Setting up sudo", "Installing", "Err:", "E: ", "Error")


def tag_for(image_id: str) -> str:
    return f"{REPOSITORY}:{image_id.rsplit(':', maxsplit=1)[-1][:12]}"


def ensure(
    client: docker.DockerClient,
    image_id: str,
    network: str,
    report: Callable[[str], None],
    within: float,
    labels: dict[str, str],
) -> str | None:
    """The ID of the VM-like layer of `image_id`, made now if there is none yet; None
    (said through `report`) when it cannot be made: no network, no package manager, a
    failed install, or no time left."""
    tag = tag_for(image_id)
    try:
        found = str(client.images.get(tag).id)
        report(f"the image has no systemd: using its VM-like layer {tag} (made once, kept)")
        return found
    except docker.errors.ImageNotFound:
        pass
    if network == "none":
        report(
            "the image has no systemd, and its VM-like layer needs the network to install it "
            "(--network none): building with a keep-alive PID 1 instead; build once with a network to make it"
        )
        return None
    report(f"the image has no systemd: installing systemd, dbus and sudo once with its package manager, as {tag}")
    started = time.monotonic()
    container = client.containers.run(
        image_id,
        ["/bin/sh", "-c", INSTALL],
        entrypoint=[],
        detach=True,
        network_mode=network,
        user="root",
        labels=labels,  # the build's: a crash leaves nothing that the sweep cannot find
        **container_defaults(client),
    )
    try:
        tail: list[str] = []

        def pump() -> None:
            with contextlib.suppress(docker.errors.DockerException, requests.exceptions.RequestException):
                for raw in container.logs(stream=True, follow=True):
                    for line in raw.decode(errors="replace").splitlines():
                        tail[:] = [*tail[-4:], line]
                        if line.startswith(PROGRESS):
                            report(f"vm-layer | {line}")

        reader = threading.Thread(target=pump, name="vm-layer-log", daemon=True)
        reader.start()
        try:
            code = int(container.wait(timeout=max(1.0, within)).get("StatusCode", 1))
        except requests.exceptions.RequestException:
            report(f"the VM-like layer took longer than {within:.0f}s: building with a keep-alive PID 1")
            return None
        reader.join(5)
        if code != 0:
            report(
                f"could not make the VM-like layer (exit {code}: {' / '.join(tail)}): "
                "building with a keep-alive PID 1 instead"
            )
            return None
        repository, _, version = tag.partition(":")
        made = commit(client, container, repository, version, image_id, {LABEL_OF: image_id})
        report(f"made the VM-like layer {tag} in {time.monotonic() - started:.0f}s")
        return made
    except docker.errors.DockerException as exc:
        report(f"could not make the VM-like layer ({reason(exc)}): building with a keep-alive PID 1 instead")
        return None
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True)
