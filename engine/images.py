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
import io
import json
import os
import re
import socket
import tarfile
import threading
import weakref
from collections.abc import Collection, Iterator
from dataclasses import dataclass
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

from engine.docker_host import Endpoint, local_sockets, resolve
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
    variables), else the docker context in use, else the local Docker socket or Podman's
    (engine.docker_host); checked to answer. When nothing names the engine and the first
    local socket does not answer, the others are tried."""
    endpoint = resolve()
    candidates = [endpoint]
    if endpoint.implicit:
        candidates += [Endpoint(host, implicit=True) for host in local_sockets() if host != endpoint.host]
    failures = []
    for candidate in candidates:
        try:
            return _connect(candidate)
        except docker.errors.DockerException as exc:
            where = candidate.describe() if not candidate.implicit else f"the local socket ({candidate.host})"
            failures.append(f"{where}: {reason(exc)}")
    raise EnvironmentProblem(
        "no Docker engine answers at " + "; nor at ".join(failures),
        hint="start one (sudo systemctl start docker, or fixtures/ensure-docker.sh; for Podman, "
        "systemctl start podman.socket, or fixtures/ensure-podman.sh), or set DOCKER_HOST; "
        "aib-local doctor checks all a build needs",
    )


def _connect(endpoint: Endpoint) -> docker.DockerClient:
    key = (repr(endpoint), *(os.environ.get(name, "") for name in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")))
    try:
        if endpoint.host.startswith("unix://"):
            # Said before docker-py tries it: a failed connect there leaves its socket open.
            _check_socket(endpoint.host.removeprefix("unix://"))
        with _CLIENTS_LOCK:
            client = _CLIENTS.get(key)
            if client is None:
                if endpoint.context is not None:
                    client = engine_client(base_url=endpoint.host, tls=_context_tls(endpoint), timeout=120)
                elif endpoint.implicit:
                    client = engine_client(base_url=endpoint.host, timeout=120)
                else:
                    client = engine_client(timeout=120, **docker.utils.kwargs_from_env())
                _CLIENTS[key] = client
                _WHERE[client] = endpoint
        client.ping()
    except docker.errors.DockerException:
        with _CLIENTS_LOCK:
            dropped = _CLIENTS.pop(key, None)
        if dropped is not None:
            dropped.close()
        raise
    return client


def _check_socket(path: str) -> None:
    """A DockerException unless something listens at the unix socket `path` (a socket file
    whose engine is gone refuses the connection)."""
    if not Path(path).is_socket():
        raise docker.errors.DockerException(f"{path} is not there")
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(10)
        try:
            probe.connect(path)
        except OSError as exc:
            raise docker.errors.DockerException(f"nothing listens at {path} ({exc.strerror or exc})") from None


# Podman's Docker API (4.x) gives a container oom_score_adj 0 when the request names none,
# and an unprivileged engine may not lower its own: systemd's user manager runs its services
# (podman.socket's too) at 200, so every container fails ("can't get final child's PID from
# pipe: EOF", containers/podman#19829). Rootless Podman's containers are asked for 200, a
# value it may always set there.
ROOTLESS_PODMAN_OOM_SCORE_ADJ = 200


@dataclass(frozen=True)
class EngineAbout:
    kind: str  # Docker | Podman
    version: str
    api: str
    where: str  # DOCKER_HOST's value, the context, or the socket
    rootless: bool = False
    cgroup_version: int = 1
    cpus: int = 0  # the engine's host, as it says (0: not said)
    memory: int = 0  # bytes

    @property
    def has_cgroups(self) -> bool:
        """Whether its containers get cgroups: a rootless engine on cgroup v1 gives them none,
        so no limits apply and nothing can freeze (pause) them."""
        return not (self.rootless and self.cgroup_version == 1)

    @property
    def container_defaults(self) -> dict[str, Any]:
        """docker-py `create` keywords every container aib-local starts on this engine needs:
        on rootless Podman, an oom_score_adj it may set (ROOTLESS_PODMAN_OOM_SCORE_ADJ)."""
        return {"oom_score_adj": ROOTLESS_PODMAN_OOM_SCORE_ADJ} if self.kind == "Podman" and self.rootless else {}

    def describe(self) -> str:
        mode = ", rootless" if self.rootless else ""
        return f"{self.kind} {self.version} (API {self.api}{mode}) at {self.where}"


# Per client, for as long as the client lives (a client no longer used takes its entries along).
_ABOUT: weakref.WeakKeyDictionary[docker.DockerClient, EngineAbout] = weakref.WeakKeyDictionary()
_WHERE: weakref.WeakKeyDictionary[docker.DockerClient, Endpoint] = weakref.WeakKeyDictionary()


def engine_about(client: docker.DockerClient) -> EngineAbout:
    """Which engine the client talks to (Docker or Podman, its version), asked once per
    client: Podman names itself among the version's components."""
    about = _ABOUT.get(client)
    if about is None:
        try:
            answer = client.version()
            info = client.info()
        except docker.errors.DockerException as exc:
            raise EnvironmentProblem(f"the container engine does not say what it is: {reason(exc)}") from None
        names = " ".join(str(part.get("Name", "")) for part in answer.get("Components") or [])
        endpoint = _WHERE.get(client)
        where = endpoint.describe() if endpoint is not None else str(client.api.base_url)
        kind = "Podman" if "podman" in names.lower() else "Docker"
        about = EngineAbout(
            kind,
            str(answer.get("Version", "?")),
            str(answer.get("ApiVersion", "?")),
            where,
            _rootless(client, kind, info),
            2 if str(info.get("CgroupVersion")) == "2" else 1,
            int(info.get("NCPU") or 0),
            int(info.get("MemTotal") or 0),
        )
        _ABOUT[client] = about
    return about


def container_defaults(client: docker.DockerClient) -> dict[str, Any]:
    """EngineAbout.container_defaults of the engine `client` talks to."""
    return engine_about(client).container_defaults


def _rootless(client: docker.DockerClient, kind: str, info: dict[str, Any]) -> bool:
    """Whether the engine runs as an unprivileged user: Docker says so among its security
    options; Podman's Docker API does not, its own API (libpod) does."""
    if kind == "Docker":
        return "name=rootless" in (info.get("SecurityOptions") or [])
    try:
        answer = client.api.get(f"{client.api.base_url}/v4.0.0/libpod/info", timeout=30)
        with contextlib.closing(answer):
            return answer.ok and bool(answer.json().get("host", {}).get("security", {}).get("rootless"))
    except (requests.RequestException, ValueError, AttributeError):
        return False


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


def short_ref(ref: str) -> str:
    """An image's tag as Docker names it: Podman names local images with a registry
    (docker.io/aib-local/x:1 for aib-local/x:1, localhost/ for an imported one)."""
    for prefix in ("docker.io/library/", "docker.io/", "localhost/"):
        if ref.startswith(prefix):
            return ref.removeprefix(prefix)
    return ref


def archive(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A tar of `members` (each with its data, None for a directory) for put_archive, ending
    right after the two end-of-archive blocks: Podman's copier stops reading there, and the
    zero padding tarfile adds to a whole record then fails the copy now and then with
    "passing bulk input to subprocess: write |1: broken pipe" (containers/buildah#6573)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as made:
        for info, data in members:
            made.addfile(info, None if data is None else io.BytesIO(data))
        end = made.offset + 2 * tarfile.BLOCKSIZE
    return buffer.getvalue()[:end]


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
    (
        re.compile(r"container-init binary not found"),
        "a fault of this Podman's set-up, not of the build: Podman runs catatonit as a container's init, and it is "
        "not installed (apt-get install catatonit, or dnf install catatonit)",
    ),
    (
        re.compile(r"error setting rlimit type \d+: operation not permitted"),
        "a fault of this Podman's set-up, not of the build: its default limits for containers (1048576 open files) "
        "are above what it may set here, as where it lacks CAP_SYS_RESOURCE; give containers this machine's hard "
        "limits (default_ulimits in containers.conf; fixtures/ensure-podman.sh does)",
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
FIXTURE_RECIPE = 4  # the script's RECIPE (tests/engine/test_images_recipe.py keeps them equal)
# What each recipe gave the fixture images that the one before lacked.
RECIPE_ADDED = {
    3: "systemd and waagent, as on a marketplace image",
    4: "a root directory every user may enter (with 0700, as before, the build user cannot run a program under "
    "an engine that keeps the layer's own mode, such as rootless Podman)",
}


def recipe_changes(old: int) -> str:
    """What an image of recipe `old` lacks, of what later recipes added."""
    return "; ".join(added for number, added in sorted(RECIPE_ADDED.items()) if number > old)


def older_recipe(client: docker.DockerClient, image_id: str) -> int | None:
    """The recipe number of a fixture image made by an older recipe; None otherwise."""
    try:
        made_by = (image_config(client, image_id).get("Labels") or {}).get(RECIPE_LABEL)
    except TargetError:
        return None
    if made_by is None or not str(made_by).isdigit():
        return None
    return int(made_by) if int(made_by) < FIXTURE_RECIPE else None


def commit(
    client: docker.DockerClient,
    container: Any,
    repository: str,
    tag: str,
    base_image: str,
    labels: dict[str, str] | None = None,
    *,
    running: bool = True,
) -> str:
    """Commit `container` as `repository:tag` with `base_image`'s own entrypoint, command,
    environment, working directory and user, not the container's; its image id. A
    `running` container is paused for the commit where the engine can pause it.

    Docker takes the config in the request's body. Podman's Docker API ignores that body
    and takes Dockerfile instructions (`changes`) instead, which can set but not drop an
    environment variable: there the container's own (container=podman, TERM) stay."""
    conf = commit_config(client, base_image, labels)
    about = engine_about(client)
    changes = commit_changes(conf) if about.kind == "Podman" else None
    pause = running and about.has_cgroups
    image = container.commit(repository=repository, tag=tag, conf=conf, changes=changes, pause=pause)
    return str(image.id)


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


def commit_changes(conf: dict[str, Any]) -> list[str]:
    """The keys of `conf` (a commit's config: Entrypoint, Cmd, WorkingDir, User, Env,
    Labels) as the Dockerfile instructions a commit's `changes` take."""
    changes = []
    for key, instruction in (("Entrypoint", "ENTRYPOINT"), ("Cmd", "CMD")):
        if key in conf:
            changes.append(f"{instruction} {json.dumps(conf[key] or [])}")
    if "WorkingDir" in conf:
        changes.append(f"WORKDIR {conf['WorkingDir'] or '/'}")
    if "User" in conf:
        changes.append(f"USER {conf['User'] or 'root'}")
    changes += [f"ENV {variable}" for variable in conf.get("Env") or [] if "=" in variable]
    changes += [f"LABEL {json.dumps(key)}={json.dumps(value)}" for key, value in (conf.get("Labels") or {}).items()]
    return changes


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
        except docker.errors.NotFound:  # Podman's 404 is not docker-py's ImageNotFound
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
