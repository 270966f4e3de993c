"""systemd on the build machine: as a build container's PID 1, so that the container
behaves like the build VM, and the signs of a reboot on any Linux target.

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

import re
import time
from collections.abc import Callable
from pathlib import Path

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
# "offline": systemctl asked before the manager answers on its bus (early in the boot).
STARTING = ("initializing", "starting", "offline", "")


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
        failed = [line.split()[0] for line in out.splitlines() if re.match(r"^\S+\.\w+\s", line)]
    return state, failed
