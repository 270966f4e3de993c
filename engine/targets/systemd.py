"""systemd on the build machine: as a build container's PID 1, so that the container
behaves like the build VM (how a step's reboot is seen on any Linux target is in
engine.targets.reboot).

What the Docker target needs for it: the container settings (no --privileged, no added
capabilities: /run and /run/lock on tmpfs, and the cgroup filesystem as `cgroup_setup`
says per cgroup version and engine), the wait for the boot to finish, and a reboot that
can be told from a power-off. systemd in a container exits when the machine is asked to
reboot, with the same status as a power-off or a `docker stop`; a drop-in for
systemd-reboot.service makes it exit with REBOOT_EXIT instead, so the target knows to
start it again. The drop-in lives in /etc (a container's /run is empty at every start)
and is taken out again before capture.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.polling import poll

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
NO_INIT = (
    "a keep-alive process is the container's PID 1, not systemd as on the build VM: no services run, and a "
    "reboot restarts the container (--target vm boots a real machine);"
)
NO_SYSTEMD = (
    "the image has no systemd: a keep-alive process is the container's PID 1 (no services, and a "
    "reboot restarts the container); a marketplace image boots systemd"
)
BOOT_TIMEOUT = 120.0  # seconds for systemd to finish booting
SHUTDOWN_TIMEOUT = 120.0  # seconds for a reboot to take the container down (systemd stops every unit)
UP = ("running", "degraded")
# "offline": systemctl asked before the manager answers on its bus (early in the boot).
STARTING = ("initializing", "starting", "offline", "")


# Docker 28.0 (API 1.48) mounts a container's cgroup filesystem writable on request,
# without --privileged (moby/moby#48828).
WRITABLE_CGROUPS_API = (1, 48)


@dataclass(frozen=True)
class CgroupSetup:
    """How a systemd container gets its cgroup filesystem on one engine: the `create`
    keywords, what they grant (said in the build's notes and the README), or why systemd
    cannot run there (`blocked`)."""

    version: int
    options: dict[str, object] = field(default_factory=dict)
    grants: str = ""
    blocked: str = ""


def _api(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)


def cgroup_setup(
    version: int, api_version: str = "", engine: str = "Docker", engine_version: str = "", rootless: bool = False
) -> CgroupSetup:
    """The cgroup settings for systemd as PID 1 on an engine of this cgroup `version` and
    API version.

    cgroup v1: the host's hierarchy bind-mounted read-only (systemd only reads it there);
    under Podman a private cgroup namespace, since its systemd mode mounts the hierarchy
    writable itself.
    cgroup v2: systemd must create its own cgroups (init.scope, system.slice), which a
    read-only mount refuses ("Failed to create /init.scope control group"). A private
    cgroup namespace whose mount is writable gives it exactly its own subtree: the
    container's cgroup is the root it sees, the host's tree is out of sight, and the
    kernel's nsdelegate (systemd's default mount option) keeps the namespace root's own
    limits (memory.max, cpu.max, pids.max) out of its reach. Docker gives that from API
    1.48 on (security option writable-cgroups); Podman in its systemd mode, which it
    takes for a systemd entrypoint. Older Docker engines cannot give it unprivileged:
    the alternatives (the host's cgroup namespace with the whole tree, or a bind mount of
    a host subtree) let the container write cgroups outside its own, so they are refused.
    """
    if rootless and version == 1:
        return CgroupSetup(
            1,
            blocked=(
                f"rootless {engine} on cgroup v1: the kernel gives an unprivileged user no cgroup v1 subtree of its "
                'own, and systemd cannot create its cgroups there ("Failed to create /init.scope control group: '
                f'Permission denied"); run {engine} as root, or on a cgroup v2 machine'
            ),
        )
    if engine == "Podman" and version == 1:
        # Podman's systemd mode mounts the v1 controllers itself, writable, over any bind
        # mount: in the host's cgroup namespace that is the host's whole tree.
        return CgroupSetup(
            1,
            {"cgroupns": "private"},
            "its own cgroup v1 subtree in a private cgroup namespace (Podman's systemd mode): the controllers "
            "read-only, systemd's own hierarchy writable",
        )
    if version == 1:
        return CgroupSetup(
            1,
            {"volumes": {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"}}},
            "the host's cgroup v1 hierarchy, read-only",
        )
    grants = "its own cgroup subtree, writable, in a private cgroup namespace (cgroup v2)"
    if engine == "Podman":
        return CgroupSetup(2, {"cgroupns": "private"}, grants)
    if _api(api_version) >= WRITABLE_CGROUPS_API:
        return CgroupSetup(2, {"cgroupns": "private", "security_opt": ["writable-cgroups=true"]}, grants)
    named = f"Docker {engine_version}" if engine_version else "this Docker engine"
    return CgroupSetup(
        2,
        blocked=(
            f"{named} (API {api_version or 'unknown'}) mounts the cgroup filesystem read-only on cgroup v2, and "
            "systemd needs a writable cgroup subtree of its own; Docker 28.0 or newer gives one without privileges "
            "(writable-cgroups), as does Podman"
        ),
    )


def container_settings(init: str, setup: CgroupSetup) -> dict[str, object]:
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
    return settings | setup.options


# One exec for the whole wait: systemd answers the moment the boot is over, where a poll
# would find out up to a poll later. Bounded by coreutils' timeout; an older systemd
# (before 240) answers at once, and one without --wait, or an image without timeout, is
# asked the plain question, so the poll around it still ends the wait.
WAIT_FOR_BOOT = (
    "timeout {seconds} systemctl is-system-running --wait 2>&1 || {{ echo; systemctl is-system-running 2>&1; }}"
)
WAIT_SLICE = 20  # seconds one ask may block: a quiet exec longer than that looks like a hung engine
STATES = (*STARTING, *UP, "maintenance", "stopping", "unknown")


def wait_until_up(ask: Callable[[list[str]], tuple[int, str]], within: float) -> tuple[str, list[str]]:
    """Wait until systemd says the boot is over (WAIT_FOR_BOOT, asked again while its bus
    does not answer yet); the state and, when it is degraded, the failed units.
    TimeoutError after `within` seconds."""
    last = [""]
    deadline = time.monotonic() + within

    def settled() -> str | None:
        seconds = min(WAIT_SLICE, max(1, math.ceil(deadline - time.monotonic())))
        _code, out = ask(["/bin/sh", "-c", WAIT_FOR_BOOT.format(seconds=seconds)])
        answers = [line.strip() for line in out.splitlines() if line.strip() in STATES]
        last[0] = answers[-1] if answers and "bus" not in out else ""
        return None if last[0] in STARTING and last[0] not in UP else last[0]  # maintenance, stopping...: said

    state = poll(settled, within=within, every=0.05)
    if state is None:
        raise TimeoutError(f"systemd did not finish booting within {within:.0f}s (state {last[0] or 'unknown'})")
    failed: list[str] = []
    if state != "running":
        _code, out = ask(["systemctl", "list-units", "--failed", "--plain", "--no-legend", "--no-pager"])
        failed = [line.split()[0] for line in out.splitlines() if re.match(r"^\S+\.\w+\s", line)]
    return state, failed
