"""The Docker target: a container started from the source image, through the Docker SDK.

Docker SDK errors of the container are caught here (those of images and helper
containers in engine.images); each is re-raised as one of the project's errors with a
hint. The engine is the one engine.images.connect names (DOCKER_HOST with its TLS
variables, or the docker context in use), so a remote engine serves as well as the
local one.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import select
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# isort: split
from engine import _docker_import  # noqa: F401 - hides paramiko from docker-py; before `import docker`

# isort: split
import docker
import docker.errors
from docker.models.containers import Container

from engine import failpoints
from engine.errors import EnvironmentProblem, UsageError
from engine.frames import STDERR, FrameSplitter
from engine.images import (
    KEEPALIVE,
    archive,
    close_socket,
    commit,
    connect,
    container_defaults,
    engine_about,
    labels,
    reason,
    require_answer,
)
from engine.polling import poll
from engine.targets import posix, reboot, runner, systemd, terminal, vm_layer
from engine.targets.base import (
    Command,
    CommandTimeout,
    KeptStates,
    OpenRequest,
    OutputSink,
    Rebooted,
    Target,
    TargetError,
)
from engine.targets.docker_states import DockerStates, keep_container, put_back_tmp
from engine.targets.docker_systemd import SystemdContainer
from engine.targets.endpoint import TARGET_SPECS
from engine.vmsizes import vm_limits

BUILD_USER = "packer"
# A step whose output has been quiet this long has the engine pinged, which must answer
# within ENGINE_ANSWERS: a paused or hung dockerd ends the build, named, instead of
# leaving it waiting on a stream that will never move.
QUIET_CHECK = 15.0
ENGINE_ANSWERS = 10.0
# Gives the image an AIB-like build user: with sudo, a non-root user with passwordless
# sudo; without sudo, root and a pass-through `sudo` so that AIB scripts run unchanged.
PREPARE_USER = r"""
set -e
mkdir -p /tmp && chmod 1777 /tmp
# sudo looks the host name up; a container without a network has no entry for it.
h=$(cat /proc/sys/kernel/hostname)
grep -qs "[[:space:]]$h\$" /etc/hosts || echo "127.0.1.1 $h" >> /etc/hosts 2>/dev/null || true
if command -v sudo >/dev/null 2>&1 && [ -d /etc/sudoers.d ]; then
  if ! id -u {user} >/dev/null 2>&1; then
    if command -v useradd >/dev/null 2>&1; then useradd -m -s /bin/sh {user}
    else adduser -D -s /bin/sh {user}; fi
  fi
  echo '{user} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/zz-aib-local
  chmod 0440 /etc/sudoers.d/zz-aib-local
  echo "user {user} $(id -u {user}) $(id -g {user})"
else
  cat > /usr/local/bin/sudo <<'EOF'
#!/bin/sh
# aib-local pass-through sudo: this image has no sudo and the build runs as root.
while [ $# -gt 0 ]; do
  case "$1" in
    -u|-g|-C|-h|-p|-r|-t|-U) shift 2 ;;
    --) shift; break ;;
    -*) shift ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || exit 0
exec "$@"
EOF
  chmod 0755 /usr/local/bin/sudo
  echo "root 0 0"
fi
"""
REMOVE_USER = r"""
if [ -f /etc/sudoers.d/zz-aib-local ]; then
  rm -f /etc/sudoers.d/zz-aib-local
  if command -v userdel >/dev/null 2>&1; then userdel -r {user} 2>/dev/null || userdel {user}
  else deluser --remove-home {user} 2>/dev/null || true; fi
fi
if grep -q 'aib-local pass-through sudo' /usr/local/bin/sudo 2>/dev/null; then rm -f /usr/local/bin/sudo; fi
rm -f /tmp/.aib-local-* /tmp/aib-local-script-*
"""


class DockerTarget(Target):
    """A container from `image`, labelled with the build so that nothing is orphaned."""

    kind = "docker"

    def __init__(
        self,
        client: docker.DockerClient,
        image: str,
        *,
        build_id: str,
        template: str,
        vm_size: str = "",
        network: str | None = None,
        os_type: str = "Linux",
        init: str = "auto",
        progress: Callable[[str], None] | None = None,
        within: float = 3600.0,
    ) -> None:
        self.client = client
        self.image = image
        self.build_id = build_id
        self.template = template
        self.vm_size = vm_size
        self.network = network
        self.os_type = os_type
        self.init = init  # auto | systemd | none
        self.progress = progress or (lambda _message: None)
        self.within = within
        self.machine: SystemdContainer | None = None  # when systemd is the container's PID 1
        self.restored = False  # started from a kept state of the step cache
        self.halted = False  # killed for the capture (halt)
        self.container: Container | None = None
        self.build_user = "root"
        self._uid = 0
        self._gid = 0
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self._sessions: dict[str, runner.Session] = {}

    @property
    def name(self) -> str:
        return f"aib-local-{self.build_id}"

    def describe(self) -> str:
        return f"docker container {self.name} from {self.image}"

    def _network(self) -> str:
        if self.network:
            return self.network
        try:
            names = {n.name for n in self.client.networks.list()}
        except docker.errors.DockerException:
            names = set()
        return "bridge" if "bridge" in names else "host"

    def start(self) -> None:
        cpus, mem_gib, note = vm_limits(self.vm_size)
        host_cpus = os.cpu_count() or 1
        about = engine_about(self.client)
        self.notes.append(f"engine: {about.describe()}")
        cpus = min(cpus, about.cpus or host_cpus)
        mem = int(mem_gib * (1 << 30))
        if about.memory:
            mem = min(mem, about.memory)
        network = self._network()
        limits = (
            f"container limits {cpus:g} CPU, {mem / (1 << 30):.1f} GiB"
            if about.has_cgroups
            else "no container limits (a rootless engine on cgroup v1 cannot apply them)"
        )
        self.notes.append(f"vmSize {note}; {limits}; network {network}")
        settings: dict[str, Any] = {
            "name": self.name,
            "detach": True,
            "labels": labels(self.build_id, self.template),
            "network_mode": network,
            "nano_cpus": int(cpus * 1e9),
            "mem_limit": mem,
            "hostname": "aib-build" if network not in ("host",) else None,
            **container_defaults(self.client),
        }
        try:
            if self.init != "none" and self.os_type == "Linux":

                def layer() -> str | None:  # made only for an image without systemd
                    build = labels(self.build_id, self.template)
                    return vm_layer.ensure(self.client, self.image, network, self.progress, self.within, build)

                self.machine, blocked = SystemdContainer.boot_up(self.client, self.image, settings, self.init, layer)
                if blocked:
                    self.warnings.append(blocked)
                else:
                    self.notes.append(self.machine.note if self.machine else systemd.NO_SYSTEMD)
                self.container = self.machine.container if self.machine else None
            if self.container is None:
                self.container = self.client.containers.run(
                    self.image, entrypoint=KEEPALIVE, command=[], init=True, **settings
                )
        except docker.errors.ImageNotFound:
            raise EnvironmentProblem(f"image {self.image} disappeared before the build started") from None
        except docker.errors.DockerException as exc:
            raise TargetError(f"cannot start a container from {self.image}: {reason(exc)}") from None
        failpoints.hit("target:started")
        self._prepare_user()  # while systemd boots: the customizers wait for both
        if self.machine:
            self.notes.append(self.machine.await_boot(systemd.BOOT_TIMEOUT, "booted"))
            self.warnings += self.machine.degraded()
        if self.restored:
            put_back_tmp(self)

    def _prepare_user(self) -> None:
        code, lines = posix.run_script(self, PREPARE_USER.replace("{user}", BUILD_USER))
        if code != 0 or not lines or not lines[-1].startswith(("user ", "root ")):
            raise TargetError(f"could not prepare the build user in {self.image}: {' / '.join(lines[-5:])}")
        kind, *rest = lines[-1].split()
        if kind == "user":
            self.build_user, self._uid, self._gid = rest[0], int(rest[1]), int(rest[2])
            self.notes.append(f"customizers run as {self.build_user!r} with passwordless sudo, as in AIB")
        else:
            self.notes.append("the image has no sudo: customizers run as root with a pass-through 'sudo'")

    @classmethod
    def open(cls, request: OpenRequest) -> DockerTarget:
        client = connect()
        restored = DockerStates(client, Path(request.store)).ref(request.restore) if request.restore else ""
        target = cls(
            client,
            restored or request.image,
            build_id=request.build_id,
            template=request.template,
            vm_size=request.vm_size,
            network=request.network,
            os_type=request.os_type,
            init=request.init,
            progress=request.progress,
            within=request.within,
        )
        target.restored = bool(restored)
        return target

    @classmethod
    def kept_states(cls, store: Path) -> DockerStates:
        return DockerStates(connect(), store)

    def keep_state(self, states: KeptStates, key: str, base_image: str) -> int:
        assert isinstance(states, DockerStates)
        return keep_container(self, self.client, self.image, states, key, base_image)

    @classmethod
    def check_spec(cls, spec: str) -> None:
        if spec != cls.kind:
            raise UsageError(f"--target {spec!r}: expected {TARGET_SPECS}")

    @classmethod
    def attach(cls, info: dict[str, Any], build_id: str, *, within: float | None = None) -> DockerTarget:
        """The kept container of an earlier build, from its build record's target info."""
        client = connect()
        try:
            container = client.containers.get(info["name"])
        except docker.errors.NotFound:
            raise TargetError(
                f"the kept container {info['name']} no longer exists (removed by aib-local clean?)"
            ) from None
        except docker.errors.DockerException as exc:
            raise TargetError(f"cannot find container {info['name']}: {reason(exc)}") from None
        target = cls(
            client,
            info["image"],
            build_id=info.get("buildId", build_id),
            template=info.get("template", ""),
            os_type=info.get("osType", "Linux"),
        )
        target.container = container
        target.build_user, target._uid, target._gid = info["buildUser"], info["uid"], info["gid"]
        if info.get("systemd"):
            target.machine = SystemdContainer(client, container, str(info["systemd"]))
        if container.status != "running":
            try:
                container.start()
            except docker.errors.DockerException as exc:
                raise TargetError(f"cannot start the kept container {info['name']}: {reason(exc)}") from None
            if target.machine:
                target.machine.await_boot(min(systemd.BOOT_TIMEOUT, within or systemd.BOOT_TIMEOUT), "booted")
        return target

    def info(self) -> dict[str, Any]:
        """What `attach` needs to find this target again."""
        return {
            "kind": self.kind,
            "name": self.name,
            "image": self.image,
            "buildId": self.build_id,
            "template": self.template,
            "buildUser": self.build_user,
            "uid": self._uid,
            "gid": self._gid,
            "osType": self.os_type,
            "systemd": self.machine.init if self.machine else "",
        }

    def interactive_shell(self) -> int:
        """An interactive shell in the container, on the user's terminal; its exit code."""
        container = self._require()
        columns, rows = terminal.size()
        try:
            exec_id = self.client.api.exec_create(
                container.id,
                ["/bin/sh", "-c", "command -v bash >/dev/null && exec bash -l || exec sh -l"],
                user=self.build_user,
                tty=True,
                stdin=True,
                environment={"TERM": os.environ.get("TERM", "xterm")},
            )["Id"]
            sock = self.client.api.exec_start(exec_id, tty=True, socket=True)
            raw = getattr(sock, "_sock", sock)
            with contextlib.suppress(docker.errors.DockerException):
                self.client.api.exec_resize(exec_id, height=rows, width=columns)
            try:
                terminal.pump(raw.fileno(), lambda: _receive(raw), raw.sendall)
            finally:
                close_socket(sock)
            return int(self.client.api.exec_inspect(exec_id).get("ExitCode") or 0)
        except docker.errors.DockerException as exc:
            raise TargetError(f"cannot open a shell in {self.name}: {reason(exc)}") from None

    def _require(self) -> Container:
        if self.container is None:
            raise TargetError("the container is not running")
        return self.container

    def _session(self, user: str) -> runner.Session:
        """The step runner for `user`, started on first use."""
        session = self._sessions.get(user)
        if session is None:
            try:
                check = functools.partial(require_answer, self.client, ENGINE_ANSWERS, self.name)
                session = _DockerSession(self.client, self._require().id, user, check)
            except docker.errors.DockerException as exc:
                raise TargetError(f"cannot start the step runner in {self.name}: {reason(exc)}") from None
            self._sessions[user] = session
        return session

    def _close_sessions(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()

    def run(self, command: Command, sink: OutputSink, timeout: float | None) -> int:
        user = "root" if command.as_root else self.build_user
        line = posix.command_line(command)
        try:
            code = runner.run_step(
                self._session(user), uuid.uuid4().hex[:12], line, command.script, sink, timeout, self._kill
            )
            # `systemctl reboot` returns at once: a script may end before the machine goes down.
            if self.machine and command.script and reboot.may_reboot(command.script[1]) and self.machine.going_down():
                self._rebooted(timeout)
            return code
        except runner.StepTimedOut:
            raise CommandTimeout(f"timed out after {timeout:.0f}s; the process was killed in the container") from None
        except runner.RunnerGone as exc:
            gone_session = self._sessions.pop(user, None)
            if gone_session is not None:
                gone_session.close()
            if self.machine:
                self._rebooted(timeout)
            # The engine updates the state a moment after the stream ends.
            gone = poll(lambda: why_gone(self) or None, within=3, every=0.1)
            if gone:
                raise TargetError(f"the target went away during the step: {gone}") from None
            raise TargetError(f"lost the step runner in {self.name} ({exc})") from None

    def _rebooted(self, timeout: float | None) -> None:
        """Raise Rebooted once the machine is back, if it is rebooting (else return)."""
        if self.machine is not None and self.machine.rebooted(timeout):
            self._close_sessions()
            message = f"{self.name} rebooted during the step; {self.machine.last_boot}"
            raise Rebooted(message, " ".join(self.machine.degraded())) from None

    def _quiet_run(self, argv: list[str]) -> None:
        with contextlib.suppress(docker.errors.DockerException):
            self.client.api.exec_start(self.client.api.exec_create(self._require().id, argv, user="root")["Id"])

    def _kill(self, pidfile: str) -> None:
        self._quiet_run(posix.kill_tree(pidfile))

    def put(self, data: bytes, destination: str, *, mode: int = 0o644, owner: str | None = None) -> None:
        container = self._require()
        directory, _, name = destination.rpartition("/")
        directory = directory or "/"
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        info.mtime = int(time.time())
        if owner != "root":
            info.uid, info.gid = self._uid, self._gid
        try:
            if engine_about(self.client).kind == "Podman" and not self._is_directory(directory):
                # Podman's Docker API makes a missing directory where Docker answers 404.
                raise docker.errors.NotFound(directory)
            container.put_archive(directory, archive([(info, data)]))
        except docker.errors.NotFound:
            raise TargetError(f"cannot write {destination}: the directory {directory} does not exist") from None
        except docker.errors.DockerException as exc:
            raise TargetError(f"cannot write {destination}: {reason(exc)}") from None

    def _is_directory(self, path: str) -> bool:
        """Whether `path` is a directory in the container (the archive endpoint's stat)."""
        api = self.client.api
        answer = api.head(api._url("/containers/{0}/archive", self.name), params={"path": path})
        answer.close()
        if answer.status_code == 404:
            return False
        api._raise_for_status(answer)
        stat = answer.headers.get("X-Docker-Container-Path-Stat", "")
        return bool(json.loads(base64.b64decode(stat) or b"{}").get("isDir"))

    def restart(self, command: str, timeout: float, report: Callable[[str], None]) -> None:
        """Reboot: with systemd, a real `systemctl reboot`; else restart the container itself
        (the restart command does not apply to a container)."""
        container = self._require()
        if self.machine:
            self._close_sessions()
            self.machine.reboot(timeout, report)
            return
        report(f"restarting container {self.name} (a container restarts instead of running {command!r})")
        self._close_sessions()
        try:
            container.restart(timeout=max(1, int(min(timeout, 30))))
        except docker.errors.DockerException as exc:
            raise TargetError(f"cannot restart {self.name}: {reason(exc)}") from None

        def running() -> bool | None:
            container.reload()
            return True if container.status == "running" else None

        try:
            up = poll(running, within=timeout, every=0.2)
        except docker.errors.DockerException as exc:
            raise TargetError(f"{self.name} did not come back: {reason(exc)}") from None
        if up is None:
            raise TargetError(f"{self.name} did not come back within {timeout:.0f}s")
        report(f"container {self.name} is running again")

    def export(self) -> Iterator[bytes]:
        container = self._require()
        try:
            yield from container.export(chunk_size=1 << 20)
        except docker.errors.DockerException as exc:
            raise TargetError(f"cannot export the filesystem of {self.name}: {reason(exc)}") from None

    def prepare_capture(self) -> None:
        """Take the build user, its sudoers entry or the sudo shim back out of the image."""
        undo = REMOVE_USER.replace("{user}", BUILD_USER) + (systemd.REMOVE_DROPIN if self.machine else "")
        posix.run_script(self, undo, timeout=60)

    def commit(self, repository: str, tag: str, base_image: str) -> str:
        """Commit the container as `repository:tag`, with the source image's own config."""
        container = self._require()
        try:
            return commit(self.client, container, repository, tag, base_image, running=not self.halted)
        except docker.errors.DockerException as exc:
            raise TargetError(f"cannot commit {self.name}: {reason(exc)}") from None

    def halt(self) -> None:
        """Kill the container: its filesystem is what a paused commit would take, without
        the engine freezing and thawing every process for it."""
        container = self._require()
        self._close_sessions()
        try:
            container.kill()
        except docker.errors.DockerException as exc:
            raise TargetError(f"cannot stop {self.name}: {reason(exc)}") from None
        self.halted = True

    def stop(self) -> None:
        container = self._require()
        self._close_sessions()
        try:
            container.stop(timeout=10)
        except docker.errors.DockerException as exc:
            raise TargetError(f"cannot stop {self.name}: {reason(exc)}") from None

    def detach(self) -> None:
        self._close_sessions()

    def remove(self) -> None:
        self._close_sessions()
        if self.container is None:
            return
        try:
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            raise TargetError(f"cannot remove {self.name}: {reason(exc)}") from None
        self.container = None


def why_gone(target: DockerTarget) -> str:
    """Why the target's container is no longer running ('' while it runs)."""
    try:
        attrs = target.client.api.inspect_container(target._require().id)
    except docker.errors.NotFound:
        return f"the container {target.name} was removed (docker rm -f?)"
    except docker.errors.DockerException as exc:
        return f"the Docker engine does not answer about {target.name}: {reason(exc)}"
    state = attrs.get("State") or {}
    if state.get("Running") and not state.get("Restarting"):
        return ""
    code = state.get("ExitCode")
    how = (
        "killed by the kernel's out-of-memory killer (raise vmSize)"
        if state.get("OOMKilled")
        else (
            "killed (docker kill)"
            if code in (137, 143)
            else f"stopped (docker stop, or its main process ended; exit code {code})"
        )
    )
    return f"the container {target.name} was {how}"


def _receive(raw: Any) -> bytes:
    """What the socket has, including what a TLS socket holds already decrypted."""
    data = raw.recv(4096)
    buffered = getattr(raw, "pending", None)
    while data and buffered and buffered():
        data += raw.recv(buffered())
    return bytes(data)


class _DockerSession(runner.Session):
    """A runner started with `docker exec -i`, its multiplexed output read frame by frame."""

    def __init__(
        self, client: docker.DockerClient, container_id: str, user: str, check_engine: Callable[[], None]
    ) -> None:
        self.check_engine = check_engine  # called when the stream has been quiet for QUIET_CHECK seconds
        self.heard = time.monotonic()
        exec_id = client.api.exec_create(
            container_id, ["/bin/sh", "-c", runner.RUNNER], user=user, stdin=True, stdout=True, stderr=True
        )["Id"]
        self._socket_io = client.api.exec_start(exec_id, socket=True)
        self.raw = getattr(self._socket_io, "_sock", self._socket_io)
        self.frames = FrameSplitter()

    def send(self, data: bytes) -> None:
        try:
            self.raw.sendall(data)
        except OSError as exc:
            raise runner.RunnerGone(str(exc)) from None

    def poll(self, timeout: float) -> list[tuple[str, bytes]]:
        try:
            # A TLS socket (a tcp:// engine) may hold decrypted bytes select() cannot see.
            buffered = getattr(self.raw, "pending", None)
            if not (buffered and buffered()):
                ready, _, _ = select.select([self.raw], [], [], timeout)
                if not ready:
                    if time.monotonic() - self.heard > QUIET_CHECK:
                        self.check_engine()
                        self.heard = time.monotonic()
                    return []
            chunk = self.raw.recv(1 << 16)
            self.heard = time.monotonic()
        except (OSError, ValueError) as exc:  # ValueError: the socket was closed (by a cancel) under select
            raise runner.RunnerGone(str(exc)) from None
        if not chunk:
            raise runner.RunnerGone("the runner's stream closed")
        return [("stderr" if stream == STDERR else "stdout", piece) for stream, piece in self.frames.feed(chunk)]

    def close(self) -> None:
        close_socket(self._socket_io)
