"""The Docker engine on this machine, as the local image store and the helpers' host.

Whatever the build target, images live here: source images of container builds,
checkpoints, committed managed images and gallery versions, and the helper containers
that write VHDs. Every container aib-local starts carries its labels, so that a build
that died is cleaned up by label. The engine is the one `DOCKER_HOST` (and the TLS
variables) or the docker context in use names (engine.docker_host). Docker SDK errors
are translated here (and in the Docker target) into the project's own, each with a hint.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

# isort: split
from engine import _docker_import  # noqa: F401 - hides paramiko from docker-py; before `import docker`

# isort: split
import docker
import docker.errors
import docker.tls
import docker.utils
import requests

from engine.docker_host import LOCAL_SOCKET, Endpoint, resolve
from engine.errors import EngineSilent, EnvironmentProblem
from engine.process import alive, identity
from engine.targets.base import TargetError

Client = docker.DockerClient  # the engine connection, as other modules name it
LABEL_TOOL = "io.aib-local.tool"
TOOL = "aib-local"
LABEL_BUILD = "io.aib-local.build-id"
LABEL_TEMPLATE = "io.aib-local.template"
# HOST:PID:START of the aib-local process that started the container: `clean` leaves
# the containers of live builds alone.
LABEL_OWNER = "io.aib-local.owner"
# Keeps the container alive without depending on anything but sh and sleep.
KEEPALIVE = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]


# One client per engine for the whole process (a build, --watch, --parallel builds), so
# that its connections are reused and none is left open per build; its connection pool
# is shared by the threads of --parallel builds, as requests' pools are made to be.
_CLIENTS: dict[tuple[str, ...], docker.DockerClient] = {}
_CLIENTS_LOCK = threading.Lock()


def connect() -> docker.DockerClient:
    """A client for the engine the environment names: DOCKER_HOST (and the TLS
    variables), else the docker context in use (engine.docker_host); checked to answer."""
    endpoint = resolve()
    key = (repr(endpoint), *(os.environ.get(name, "") for name in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")))
    try:
        socket_path = endpoint.host.removeprefix("unix://")
        if endpoint.host.startswith("unix://") and not Path(socket_path).is_socket():
            # Said before docker-py tries it: a failed connect there leaves its socket open.
            raise docker.errors.DockerException(f"{socket_path} is not there")
        with _CLIENTS_LOCK:
            client = _CLIENTS.get(key)
            if client is None:
                if endpoint.context is None:
                    client = engine_client(timeout=120, **docker.utils.kwargs_from_env())
                else:
                    client = engine_client(base_url=endpoint.host, tls=_context_tls(endpoint), timeout=120)
                _CLIENTS[key] = client
        client.ping()
    except docker.errors.DockerException as exc:
        with _CLIENTS_LOCK:
            dropped = _CLIENTS.pop(key, None)
        if dropped is not None:
            dropped.close()
        where = endpoint.describe() if endpoint.host != LOCAL_SOCKET else f"the local socket ({LOCAL_SOCKET})"
        raise EnvironmentProblem(
            f"no Docker engine answers at {where}: {reason(exc)}",
            hint="start one (sudo systemctl start docker, or fixtures/ensure-docker.sh), or set DOCKER_HOST; "
            "aib-local doctor checks all a build needs",
        ) from None
    return client


def close_socket(sock: Any) -> None:
    """Close what `exec_start(socket=True)` gave, wholly: the socket, the file object over
    it (a socket is only closed once no file object holds it) and the response behind it."""
    raw = getattr(sock, "_sock", sock)
    for part in (getattr(sock, "_response", None), sock, raw):
        if part is not None:
            with contextlib.suppress(OSError, AttributeError):
                part.close()


class _EngineApi(docker.APIClient):  # type: ignore[misc]
    """docker-py's API client, verifying a TLS engine against its own CA even when
    REQUESTS_CA_BUNDLE is set.

    requests lets that variable replace the session's CA file for every request, so a
    client given the engine's ca.pem fails with "unable to get local issuer certificate"
    on machines that set it (docker/docker-py#2433, still open).
    """

    def __init__(self, **settings: Any) -> None:
        try:  # asks the engine its API version: a refused connect must not leave the session open
            super().__init__(**settings)
        except BaseException:
            self.close()
            raise

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and isinstance(self.verify, str):
            settings["verify"] = self.verify
        return settings


def engine_client(**settings: Any) -> docker.DockerClient:
    """A DockerClient (the keywords of docker.DockerClient) whose TLS trusts the engine's CA."""
    client = docker.DockerClient.__new__(docker.DockerClient)
    client.api = _EngineApi(**settings)
    return client


def _context_tls(endpoint: Endpoint) -> docker.tls.TLSConfig | bool:
    folder = endpoint.tls_dir
    if folder is None or not endpoint.host.startswith("tcp://"):
        return False
    ca, cert, key = (folder / name for name in ("ca.pem", "cert.pem", "key.pem"))
    return docker.tls.TLSConfig(
        client_cert=(str(cert), str(key)) if cert.exists() and key.exists() else None,
        ca_cert=str(ca) if ca.exists() else None,
        verify=not endpoint.skip_tls_verify,
    )


def require_answer(client: docker.DockerClient, within: float, left: str) -> None:
    """The engine answers a ping within `within` seconds, or EngineSilent, saying that
    `left` (what the build has in it) stays for `clean` once it answers again."""
    try:
        answer = client.api.get(f"{client.api.base_url}/_ping", timeout=within)
        answer.close()
        answer.raise_for_status()
    except requests.RequestException as exc:
        raise EngineSilent(
            f"the Docker engine at {client.api.base_url} stopped answering during the step: no answer to a "
            f"ping within {within:.0f}s ({type(exc).__name__}), a fault of the engine, not of the step",
            hint=f"once the engine answers again (a paused dockerd: kill -CONT it), aib-local clean removes {left}",
        ) from None


def engine_is_local(client: docker.DockerClient) -> bool:
    """Whether the engine is reached through a socket on this machine, so that it sees
    this machine's files (bind mounts). tcp:// and ssh:// engines are taken as remote."""
    return str(client.api.base_url).startswith("http+docker://local")


# Faults of particular engines, told apart by their message: what they are, and what fixes them.
KNOWN_ENGINE_FAULTS = (
    (
        re.compile(r"chmod .*: via /proc/self/fd/\d+: no such file or directory"),
        "a fault of this Docker engine, not of the build: its copy into containers needs fchmodat2, which Linux "
        "kernels before 6.6 lack (moby/go-archive#103; Debian's Docker 28.5 on a 6.1 kernel has it); run the engine "
        "on a newer kernel, or another Docker build",
    ),
)


def reason(exc: Exception) -> str:
    text = str(getattr(exc, "explanation", None) or exc)
    first = text.splitlines()[0][:300] if text else type(exc).__name__
    for pattern, explained in KNOWN_ENGINE_FAULTS:
        if pattern.search(text):
            return f"{first} ({explained})"
    return first


def ensure_image(client: docker.DockerClient, ref: str, make_hint: str) -> str:
    """The image ID for `ref`: local, else pulled; EnvironmentProblem with `make_hint`."""
    try:
        return str(client.images.get(ref).id)
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.DockerException as exc:
        raise EnvironmentProblem(f"cannot inspect image {ref}: {reason(exc)}") from None
    try:
        return str(client.images.pull(ref).id)
    except docker.errors.DockerException as exc:
        raise EnvironmentProblem(
            f"image {ref} is not present locally and could not be pulled ({reason(exc)})",
            hint=make_hint,
        ) from None


# fixtures/images/build-image.sh labels the images it makes with its recipe's number.
RECIPE_LABEL = "aib-local.fixture-recipe"
FIXTURE_RECIPE = 3  # the script's RECIPE (tests/engine/test_images_recipe.py keeps them equal)


def older_recipe(client: docker.DockerClient, image_id: str) -> int | None:
    """The recipe number of a fixture image made by an older recipe; None otherwise."""
    try:
        made_by = (image_config(client, image_id).get("Labels") or {}).get(RECIPE_LABEL)
    except TargetError:
        return None
    if made_by is None or not str(made_by).isdigit():
        return None
    return int(made_by) if int(made_by) < FIXTURE_RECIPE else None


def commit_config(client: docker.DockerClient, base_image: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The config to commit a container of `base_image` with: the base image's own
    entrypoint, command, environment, working directory and user, not the container's."""
    config = image_config(client, base_image)
    # The engine merges the container's labels into the image and cannot drop a key, so
    # ours are blanked: containers run from the image later are not taken for build
    # containers (those are found by label *value*).
    blanked = {LABEL_TOOL: "", LABEL_BUILD: "", LABEL_TEMPLATE: "", LABEL_OWNER: ""}
    return {
        "Cmd": config.get("Cmd"),
        # [] and not null: null would keep the container's own (the build's keep-alive loop).
        "Entrypoint": config.get("Entrypoint") or [],
        "Labels": {**(config.get("Labels") or {}), **blanked, **(labels or {})},
        "Env": config.get("Env"),
        "WorkingDir": config.get("WorkingDir") or "",
        "User": config.get("User") or "",
    }


def image_config(client: docker.DockerClient, image_id: str) -> dict[str, Any]:
    try:
        config: dict[str, Any] = client.api.inspect_image(image_id).get("Config") or {}
    except docker.errors.DockerException as exc:
        raise TargetError(f"cannot inspect image {image_id}: {reason(exc)}") from None
    return config


def import_filesystem(client: docker.DockerClient, stream: Iterator[bytes], repository: str, tag: str) -> str:
    """A local image made from a root filesystem tar stream (an SSH host's, say)."""
    try:
        client.api.import_image(
            src=stream, repository=repository, tag=tag, changes=['CMD ["/bin/sh"]'], stream_src=True
        )
        return str(client.images.get(f"{repository}:{tag}").id)
    except docker.errors.DockerException as exc:
        raise TargetError(f"cannot import the filesystem as {repository}:{tag}: {reason(exc)}") from None


def remove_images(images: list[str]) -> list[str]:
    """Remove local images by reference (checkpoints: untagged, layers go with their last user)."""
    if not images:
        return []
    client = connect()
    removed = []
    for image in images:
        try:
            client.images.remove(image)
            removed.append(image)
        except docker.errors.ImageNotFound:
            continue
        except docker.errors.DockerException as exc:
            raise TargetError(f"cannot remove image {image}: {reason(exc)}") from None
    return removed


def labels(build_id: str, template: str) -> dict[str, str]:
    """The labels of every container a build starts."""
    return {LABEL_TOOL: TOOL, LABEL_BUILD: build_id, LABEL_TEMPLATE: template, LABEL_OWNER: identity()}


def remove_labelled(
    client: docker.DockerClient,
    build_id: str | None = None,
    keep: Collection[str] = (),
    *,
    ended: Collection[str] = (),
    among: Collection[str] | None = None,
) -> tuple[list[str], list[str]]:
    """Remove the containers aib-local started (all, or one build's), but those in `keep`,
    those of builds not `among` the given ones (when given), and those whose build is
    still running: (names removed, names of running builds' containers left).

    A build is running while the process that started it lives, unless it is among
    `ended` (builds known to be over, such as the kept targets of finished builds of a
    process that goes on with other builds)."""
    label = f"{LABEL_BUILD}={build_id}" if build_id else f"{LABEL_TOOL}={TOOL}"
    removed, live = [], []
    try:
        for container in client.containers.list(all=True, filters={"label": label}):
            labels = container.labels or {}
            if container.name in keep or (among is not None and labels.get(LABEL_BUILD) not in among):
                continue
            owner = labels.get(LABEL_OWNER, "")
            if owner and alive(owner) is not False and labels.get(LABEL_BUILD) not in ended:
                live.append(str(container.name))
                continue
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
            removed.append(str(container.name))
    except docker.errors.DockerException as exc:
        raise TargetError(f"cannot remove containers labelled {label}: {reason(exc)}") from None
    return removed, live
