"""A Docker container whose PID 1 is systemd (engine/targets/systemd.py says how and why)."""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# isort: split
from engine import _docker_import  # noqa: F401 - hides paramiko from docker-py; before `import docker`

# isort: split
import docker
import docker.errors
from docker.models.containers import Container

from engine.images import archive, engine_about, reason
from engine.polling import poll
from engine.targets.base import TargetError
from engine.targets.reboot import GOING_DOWN, REBOOT_WAIT, going_down_verdict, watch_going_down
from engine.targets.systemd import (
    BOOT_TIMEOUT,
    DROPIN,
    DROPIN_DIR,
    DROPIN_NAME,
    INIT_PATHS,
    NO_INIT,
    REBOOT_EXIT,
    SHUTDOWN_TIMEOUT,
    UP,
    CgroupSetup,
    cgroup_setup,
    container_settings,
    wait_until_up,
)


def engine_cgroup(client: docker.DockerClient) -> CgroupSetup:
    """How systemd containers get their cgroups on this engine: by the cgroup version the
    engine says its host has, its kind (Docker or Podman), API version, and whether it
    runs rootless (images.engine_about, asked once per client)."""
    about = engine_about(client)
    return cgroup_setup(about.cgroup_version, about.api, about.kind, about.version, about.rootless)


class SystemdContainer:
    """A container whose PID 1 is systemd: created, booted, told apart from a power-off
    when it goes down, and booted again after a reboot."""

    def __init__(
        self, client: docker.DockerClient, container: Container, init: str, cgroup: CgroupSetup | None = None
    ) -> None:
        self.client = client
        self.container = container
        self.init = init
        setup = cgroup or engine_cgroup(client)
        self.note = f"systemd is the container's PID 1, as on the build VM; it is given {setup.grants}"
        self.last_boot = ""
        self.failed: list[str] = []

    def degraded(self) -> list[str]:
        """A warning for the last boot when units failed in it."""
        if not self.failed:
            return []
        return [
            f"systemd booted degraded: {', '.join(self.failed)} failed "
            f"(systemctl status {self.failed[0]} in the machine says why)"
        ]

    @classmethod
    def create(
        cls,
        client: docker.DockerClient,
        image: str,
        settings: dict[str, Any],
        *,
        required: bool,
        setup: CgroupSetup | None = None,
    ) -> SystemdContainer | None:
        """The container, started with systemd as PID 1; None when the image has none or
        the engine cannot run it (a TargetError instead when it is `required`)."""
        setup = setup or engine_cgroup(client)
        if setup.blocked:
            if required:
                raise TargetError(f"--init systemd: systemd cannot be PID 1 on this engine: {setup.blocked}")
            return None
        if image.startswith("sha256:") and lacks_systemd(image):  # an earlier build's verdict: no probe
            if required:
                raise TargetError(f"--init systemd: {image} has no systemd ({' or '.join(INIT_PATHS)})")
            return None
        dropin = _archive(DROPIN_DIR.rsplit("/", 1)[1], DROPIN_NAME, DROPIN)
        for path in INIT_PATHS:
            container = client.containers.create(image, **settings, **container_settings(path, setup))
            try:
                # No /etc/systemd/system (a 404): no systemd. Then a start that cannot find
                # `path`: systemd is elsewhere. Two calls a build needs anyway, no probe.
                container.put_archive(DROPIN_DIR.rsplit("/", 1)[0], dropin)
                container.start()
                return cls(client, container, path, setup)
            except docker.errors.NotFound:
                container.remove(force=True)
                break
            except docker.errors.APIError as exc:
                container.remove(force=True)
                if path not in str(exc):
                    raise TargetError(f"cannot start systemd in a container of {image}: {reason(exc)}") from None
            except BaseException:  # the engine gone, an interrupt: leave no container behind
                with contextlib.suppress(docker.errors.DockerException):
                    container.remove(force=True)
                raise
        if image.startswith("sha256:"):
            remember_without_systemd(image)
        if required:
            raise TargetError(f"--init systemd: {image} has no systemd ({' or '.join(INIT_PATHS)})")
        return None

    @classmethod
    def boot_up(
        cls,
        client: docker.DockerClient,
        image: str,
        settings: dict[str, Any],
        init: str,
        make_layer: Callable[[], str | None],
    ) -> tuple[SystemdContainer | None, str]:
        """`create`, and for an image without systemd under --init auto, its VM-like layer
        (`make_layer`: its image ID, or None when it cannot be made). Without a machine,
        also why: a warning when the engine is what stops systemd, else ""."""
        setup = engine_cgroup(client)
        if setup.blocked and init == "auto":
            return None, f"{NO_INIT} systemd cannot be PID 1 on this engine: {setup.blocked}"
        machine = cls.create(client, image, settings, required=init == "systemd", setup=setup)
        if machine is None and init == "auto":
            layer = make_layer()
            if layer is not None:
                machine = cls.create(client, layer, settings, required=False, setup=setup)
        return machine, ""

    def ask(self, argv: list[str]) -> tuple[int, str]:
        """A short command as root, outside the step runner: its exit code and output."""
        api = self.client.api
        exec_id = api.exec_create(self.container.id, argv, user="root")["Id"]
        out = api.exec_start(exec_id)
        return int(api.exec_inspect(exec_id).get("ExitCode") or 0), out.decode(errors="replace")

    def state(self) -> dict[str, Any]:
        try:
            return dict(self.client.api.inspect_container(self.container.id).get("State") or {})
        except docker.errors.DockerException:
            return {}

    def stopped(self) -> dict[str, Any] | None:
        """The container's state once it no longer runs (None while it does)."""
        state = self.state()
        return None if state.get("Running") else state

    def await_boot(self, within: float, what: str) -> str:
        """Wait for systemd to finish booting; what to say of it (a degraded boot names its
        failed units)."""
        started = time.monotonic()
        try:
            state, failed = wait_until_up(self.ask, within)
        except TimeoutError as exc:
            raise TargetError(f"{self.container.name}: {exc}") from None
        except docker.errors.DockerException as exc:
            raise TargetError(f"{self.container.name} did not boot: {reason(exc)}") from None
        if state not in UP:
            raise TargetError(f"systemd in {self.container.name} did not come up: it is {state} (failed: {failed})")
        self.failed = failed
        self.last_boot = f"systemd {what} in {time.monotonic() - started:.1f}s: {state}"
        return self.last_boot

    def going_down(self) -> bool:
        """After a step that may have asked for a reboot: whether the machine is shutting
        down, or already down (reboot.watch_going_down, through the engine)."""

        return watch_going_down(self._going_down_answer)

    def _up_and_calm(self) -> bool:
        """One look: whether systemd says the machine is up with no shutdown asked for. Not
        "does not say it is going down": late in a shutdown systemd's bus no longer
        answers at all, for as long as the last units take to stop."""
        out = self._going_down_answer()
        return out is not None and going_down_verdict(out) is False

    def _going_down_answer(self) -> str | None:
        """GOING_DOWN's output; None once the container no longer runs."""
        try:
            return str(self.ask(["/bin/sh", "-c", GOING_DOWN])[1])
        except docker.errors.DockerException:
            return None if not self.state().get("Running") else ""

    def rebooted(self, timeout: float | None) -> bool:
        """The step runner ended: if systemd is shutting the machine down, wait for it; after
        a reboot, start the container again and wait for the boot (True). Up to 20 minutes,
        never past `timeout`. False when the machine did not reboot."""
        now = time.monotonic()
        end = now + min(REBOOT_WAIT, timeout if timeout is not None else REBOOT_WAIT)
        calm_until = now + 3  # the runner lost while systemd keeps running: not a shutdown

        def down_or_calm() -> dict[str, Any] | None:
            state = self.state()
            if not state.get("Running") or (time.monotonic() > calm_until and self._up_and_calm()):
                return state
            return None

        state = poll(down_or_calm, within=min(end, now + SHUTDOWN_TIMEOUT) - now, every=0.1)
        if state is None or state.get("Running"):
            return False
        if state.get("ExitCode") != REBOOT_EXIT or state.get("OOMKilled"):
            return False
        self.boot_again(end)
        return True

    def boot_again(self, end: float) -> None:
        try:
            self.container.start()
        except docker.errors.DockerException as exc:
            raise TargetError(f"{self.container.name} rebooted and could not start again: {reason(exc)}") from None
        self.await_boot(max(1.0, min(BOOT_TIMEOUT, end - time.monotonic())), "booted again")

    def reboot(self, timeout: float, report: Callable[[str], None]) -> None:
        """A real reboot (`systemctl reboot`), waited for within `timeout`."""
        end = time.monotonic() + timeout
        name = self.container.name
        report(f"rebooting {name}: systemctl reboot")
        with contextlib.suppress(docker.errors.DockerException):
            self.client.api.exec_start(self.client.api.exec_create(self.container.id, ["systemctl", "reboot"])["Id"])
        report(f"waiting for {name} to go down")
        state = poll(
            lambda: None if (now := self.state()).get("Running") else now, within=end - time.monotonic(), every=0.1
        )
        if state is None:
            raise TargetError(f"Timeout waiting for machine to restart: {name} did not go down")
        if state.get("ExitCode") != REBOOT_EXIT:
            raise TargetError(f"{name} went down instead of rebooting (exit status {state.get('ExitCode')})")
        report(f"waiting for {name} to come back up")
        self.boot_again(end)
        report(f"{name} is back up ({self.last_boot})" + "".join(f"; warning: {w}" for w in self.degraded()))


def _archive(folder: str, name: str, text: str) -> bytes:
    """A tar of folder/name holding `text`, for put_archive."""
    directory = tarfile.TarInfo(folder)
    directory.type, directory.mode = tarfile.DIRTYPE, 0o755
    data = text.encode()
    entry = tarfile.TarInfo(f"{folder}/{name}")
    entry.size, entry.mode, entry.mtime = len(data), 0o644, int(time.time())
    return archive([(directory, None), (entry, data)])


# Images found to have no systemd, by image ID (a content digest: a changed image is a new
# ID, so a verdict never goes stale); later builds of them skip the probe's two engine calls.
VERDICTS_KEPT = 500


def _verdicts() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "aib-local" / "images-without-systemd.json"


def _known() -> list[str]:
    try:
        found = json.loads(_verdicts().read_text())
    except (OSError, ValueError):
        return []
    return [str(item) for item in found] if isinstance(found, list) else []


def lacks_systemd(image_id: str) -> bool:
    return image_id in _known()


def remember_without_systemd(image_id: str) -> None:
    others = [item for item in _known() if item != image_id]
    known = [*others[-(VERDICTS_KEPT - 1) :], image_id]
    path = _verdicts()
    with contextlib.suppress(OSError):  # a cache: a build goes on without it
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{os.getpid()}")
        staged.write_text(json.dumps(known))
        staged.replace(path)
