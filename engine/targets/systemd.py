"""systemd as a build container's PID 1, so that the container behaves like the build VM.

What the Docker target needs for it: the container settings (no --privileged, no added
capabilities: /run and /run/lock on tmpfs, the cgroup filesystem read-only on cgroup v1,
a private cgroup namespace on v2), the wait for the boot to finish, and a reboot that can
be told from a power-off. systemd in a container exits when the machine is asked to
reboot, with the same status as a power-off or a `docker stop`; a drop-in for
systemd-reboot.service makes it exit with REBOOT_EXIT instead, so the target knows to
start it again. The drop-in lives in /etc (a container's /run is empty at every start)
and is taken out again before capture.
"""

from __future__ import annotations

import contextlib
import io
import re
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from engine.images import reason
from engine.targets.base import TargetError

INIT_PATHS = ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")
REBOOT_EXIT = 82
DROPIN_DIR = "/etc/systemd/system/systemd-reboot.service.d"
DROPIN_NAME = "zz-aib-local-reboot.conf"
DROPIN = f"""[Unit]
# aib-local: a reboot ends the container with status {REBOOT_EXIT} (a power-off with 0), so
# that aib-local starts it again. Taken out of the image before capture.
SuccessAction=exit-force
SuccessActionExitStatus={REBOOT_EXIT}
"""
REMOVE_DROPIN = f"rm -rf {DROPIN_DIR}/{DROPIN_NAME}; rmdir {DROPIN_DIR} 2>/dev/null || true"
NO_SYSTEMD = (
    "the image has no systemd: a keep-alive process is the container's PID 1 (no services, and a "
    "reboot restarts the container); a marketplace image boots systemd"
)
BOOT_TIMEOUT = 120.0  # seconds for systemd to finish booting
SHUTDOWN_TIMEOUT = 120.0  # seconds for a reboot to take the container down (systemd stops every unit)
REBOOT_WAIT = 1200.0  # AIB's build VM: 20 minutes for the machine to come back
UP = ("running", "degraded")
STARTING = ("initializing", "starting", "")


GOING_DOWN = (
    "systemctl is-system-running; busctl get-property org.freedesktop.login1 /org/freedesktop/login1 "
    "org.freedesktop.login1.Manager PreparingForShutdown 2>/dev/null"
)
REBOOT_WORDS = re.compile(rb"\b(reboot|shutdown|init\s+6|telinit\s+6|kexec)\b")


def may_reboot(script: bytes) -> bool:
    """Whether a script may reboot the machine (then the target looks whether it does)."""
    return REBOOT_WORDS.search(script) is not None


def cgroup_version() -> int:
    """The host's cgroup version (the Docker engine shares it): 2 for the unified hierarchy."""
    return 2 if Path("/sys/fs/cgroup/cgroup.controllers").exists() else 1


def container_settings(init: str, version: int) -> dict[str, object]:
    """docker-py `create` keywords that run `init` (systemd) as PID 1, unprivileged."""
    settings: dict[str, object] = {
        "entrypoint": [init],
        "command": [],
        "init": False,  # systemd must be PID 1 itself
        "tmpfs": {"/run": "rw,mode=755", "/run/lock": "rw,mode=1777"},
        # No container=docker: systemd finds Docker by itself, and Docker would copy the
        # variable into every image committed from the container.
        "stop_signal": "SIGRTMIN+3",  # systemd's "halt": docker stop shuts it down cleanly
    }
    if version == 1:
        settings["volumes"] = {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"}}
    else:
        settings["cgroupns"] = "private"
    return settings


def wait_until_up(ask: Callable[[list[str]], tuple[int, str]], within: float) -> tuple[str, list[str]]:
    """Poll `systemctl is-system-running` until the boot is over; the state and, when it
    is degraded, the failed units. TimeoutError after `within` seconds."""
    end = time.monotonic() + within
    state = ""
    while True:
        _code, out = ask(["systemctl", "is-system-running"])
        words = out.split()
        state = words[-1] if words and "bus" not in out else ""
        if state in UP:
            break
        if state not in STARTING:
            break  # maintenance, stopping, offline: report it
        if time.monotonic() > end:
            raise TimeoutError(f"systemd did not finish booting within {within:.0f}s (state {state or 'unknown'})")
        time.sleep(0.05)
    failed: list[str] = []
    if state != "running":
        _code, out = ask(["systemctl", "list-units", "--failed", "--plain", "--no-legend", "--no-pager"])
        failed = [line.split()[0] for line in out.splitlines() if line.strip()]
    return state, failed


class SystemdContainer:
    """A container whose PID 1 is systemd: created, booted, told apart from a power-off
    when it goes down, and booted again after a reboot."""

    def __init__(self, client: docker.DockerClient, container: Container, init: str) -> None:
        self.client = client
        self.container = container
        self.init = init
        self.note = f"systemd is the container's PID 1, as on the build VM (cgroup v{cgroup_version()})"
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
        cls, client: docker.DockerClient, image: str, name: str, settings: dict[str, Any], *, required: bool
    ) -> SystemdContainer | None:
        """The container, started with systemd as PID 1; None when the image has none (a
        TargetError instead when it is `required`)."""
        version = cgroup_version()
        container = client.containers.create(image, **settings, **container_settings(INIT_PATHS[0], version))
        found = next((path for path in INIT_PATHS if _exists(client, container, path)), "")
        if found != INIT_PATHS[0]:
            container.remove(force=True)
        if found and found != INIT_PATHS[0]:
            container = client.containers.create(image, **settings, **container_settings(found, version))
        if not found:
            if required:
                raise TargetError(f"--init systemd: {image} has no systemd ({' or '.join(INIT_PATHS)})")
            return None
        container.put_archive(DROPIN_DIR.rsplit("/", 1)[0], _archive(DROPIN_DIR.rsplit("/", 1)[1], DROPIN_NAME, DROPIN))
        container.start()
        return cls(client, container, found)

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
        """Whether the machine is shutting down (or already down). logind may hold a reboot
        back for a few seconds (delay inhibitors such as unattended-upgrades'), so its
        PreparingForShutdown says it before systemd's state does."""
        try:
            out = self.ask(["/bin/sh", "-c", GOING_DOWN])[1]
        except docker.errors.DockerException:
            return not self.state().get("Running")
        return "stopping" in out or "b true" in out

    def rebooted(self, timeout: float | None) -> bool:
        """The step runner ended: if systemd is shutting the machine down, wait for it; after
        a reboot, start the container again and wait for the boot (True). Up to 20 minutes,
        never past `timeout`. False when the machine did not reboot."""
        now = time.monotonic()
        end = now + min(REBOOT_WAIT, timeout if timeout is not None else REBOOT_WAIT)
        down_by = min(end, now + SHUTDOWN_TIMEOUT)
        calm_until = now + 3  # the runner lost while systemd keeps running: not a shutdown
        while (state := self.state()).get("Running"):
            if time.monotonic() > down_by:
                return False
            if time.monotonic() > calm_until and not self.going_down():
                return False
            time.sleep(0.1)
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
        while (state := self.state()).get("Running"):
            if time.monotonic() > end:
                raise TargetError(f"Timeout waiting for machine to restart: {name} did not go down")
            time.sleep(0.1)
        if state.get("ExitCode") != REBOOT_EXIT:
            raise TargetError(f"{name} went down instead of rebooting (exit status {state.get('ExitCode')})")
        report(f"waiting for {name} to come back up")
        self.boot_again(end)
        report(f"{name} is back up ({self.last_boot})" + "".join(f"; warning: {w}" for w in self.degraded()))


def _exists(client: docker.DockerClient, container: Container, path: str) -> bool:
    try:
        client.api.get_archive(container.id, path)[0].close()
    except docker.errors.NotFound:
        return False
    return True


def _archive(folder: str, name: str, text: str) -> bytes:
    """A tar of folder/name holding `text`, for put_archive."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        entry = tarfile.TarInfo(folder)
        entry.type, entry.mode = tarfile.DIRTYPE, 0o755
        archive.addfile(entry)
        data = text.encode()
        entry = tarfile.TarInfo(f"{folder}/{name}")
        entry.size, entry.mode, entry.mtime = len(data), 0o644, int(time.time())
        archive.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()
