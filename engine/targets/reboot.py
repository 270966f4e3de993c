"""How a Linux machine's reboot is seen, on every target (a systemd container, an SSH
host, a VM): whether a step's script may reboot, and after such a step, whether the
machine is going down, from its own answers. One rule for every target, so that the step
that asked for a reboot is the one that ends `rebooted`: a reboot command returns before
systemd has the job (by seconds on a slow machine, as under TCG), so the answers are
watched until one decides.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from engine.polling import poll
from engine.targets.systemd import UP

REBOOT_WAIT = 1200.0  # AIB's build VM: 20 minutes for the machine to come back
GOING_DOWN = (
    "systemctl is-system-running; busctl get-property org.freedesktop.login1 /org/freedesktop/login1 "
    "org.freedesktop.login1.Manager PreparingForShutdown 2>/dev/null; "
    "systemctl list-jobs --no-legend --no-pager 2>/dev/null; cat /run/systemd/shutdown/scheduled 2>/dev/null"
)
# `shutdown -r now` has logind schedule the reboot for now: it is in logind's file until
# its timer fires and the job reaches systemd.
_SCHEDULED = re.compile(r"^MODE=(reboot|poweroff|halt|kexec)\b", re.MULTILINE)
_SHUTDOWN_JOB = re.compile(r"^\s*\d+\s+(shutdown|reboot|poweroff|halt|kexec)\.target\s", re.MULTILINE)


def says_going_down(out: str) -> bool:
    """Whether GOING_DOWN's answer says the machine is shutting down: systemd is stopping;
    or logind is preparing a shutdown (it may hold one back a few seconds for delay
    inhibitors, and says so before systemd's state does), or has one scheduled (as
    `shutdown -r now` asks); or a job for a shutdown target
    is queued (systemd says "starting", not "stopping", while the boot before it has not
    finished, as after a reboot moments ago)."""
    return (
        "stopping" in out
        or "b true" in out
        or _SHUTDOWN_JOB.search(out) is not None
        or _SCHEDULED.search(out) is not None
    )


# After a step that may have asked for a reboot, how long the machine's answers are
# watched for one that decides: going down, or up and staying up for SETTLE_STEADY
# seconds (a reboot reaches systemd after the command returned: by seconds on a slow
# engine, as a TCG VM's).
SETTLE_WITHIN = 20.0
SETTLE_STEADY = 3.0


def going_down_verdict(out: str) -> bool | None:
    """What GOING_DOWN's answer decides: True, a shutdown is under way; False, the machine
    is up with no shutdown asked for (running or degraded, no shutdown job, logind not
    preparing one); None, not yet known: it is still booting, or systemd's bus did not
    answer (as when it goes down), or a reboot asked for a moment ago is still on its way
    to systemd (logind passes it on after the command has returned)."""
    if says_going_down(out):
        return True
    lines = out.strip().splitlines()
    return False if lines and lines[0].strip() in UP else None


def watch_going_down(answer: Callable[[], str | None]) -> bool:
    """After a step that may have asked for a reboot: whether the machine is going down,
    from its own answers to GOING_DOWN (`answer`: the output, None once the machine no
    longer answers). A reboot command returns before systemd has the job, by seconds under
    TCG, so the answers are watched until one decides (going_down_verdict), or "up,
    nothing asked" holds for SETTLE_STEADY seconds, or SETTLE_WITHIN seconds pass; a
    machine that stops answering is going down."""
    up_since: list[float] = []

    def decided() -> bool | None:
        out = answer()
        verdict = True if out is None else going_down_verdict(out)
        if verdict is False:
            up_since[:] = up_since or [time.monotonic()]
            return False if time.monotonic() - up_since[0] >= SETTLE_STEADY else None
        up_since.clear()
        return verdict

    return bool(poll(decided, within=SETTLE_WITHIN, every=0.3))


REBOOT_WORDS = re.compile(rb"\b(reboot|shutdown|init\s+6|telinit\s+6|kexec)\b")


def may_reboot(script: bytes) -> bool:
    """Whether a script may reboot the machine (then the target looks whether it does)."""
    return REBOOT_WORDS.search(script) is not None
