"""reboot.says_going_down: whether a machine's answer to GOING_DOWN means a shutdown is
under way (the answers below are systemd 252's, as Debian 12 prints them)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from engine.targets import reboot
from engine.targets.reboot import going_down_verdict, says_going_down, watch_going_down

JOBS_AT_BOOT = "  1 multi-user.target  start waiting\n 87 cloud-final.service start running\n"


@pytest.mark.parametrize(
    "answer",
    [
        "stopping\n",
        "running\nb true\n",
        # A reboot asked for before the boot before it finished: systemd still says
        # "starting", and logind without delay inhibitors says false; its job is queued.
        f"starting\nb false\n{JOBS_AT_BOOT}412 reboot.target start waiting\n",
        "degraded\nb false\n501 poweroff.target start waiting\n",
        "running\nb false\n 77 shutdown.target start waiting\n",
        # `shutdown -r now`: logind's schedule, before its timer hands the job to systemd.
        "running\nb false\nUSEC=1764934523000000\nWARN_WALL=1\nMODE=reboot\n",
    ],
)
def test_a_shutdown_under_way_is_seen(answer: str) -> None:
    assert says_going_down(answer)


@pytest.mark.parametrize(
    "answer",
    [
        "running\nb false\n",
        f"starting\nb false\n{JOBS_AT_BOOT}",
        "degraded\nb false\n 12 systemd-reboot-helper.service start waiting\n",  # a name, not the target
        "",
    ],
)
def test_a_machine_that_stays_up_is_not_taken_for_one_going_down(answer: str) -> None:
    assert not says_going_down(answer)


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        ("stopping\n", True),
        ("running\nb false\n", False),
        ("degraded\nb false\n", False),
        (f"starting\nb false\n{JOBS_AT_BOOT}", None),  # still booting: a reboot may yet be queued
        ("Failed to query system state: Connection reset by peer\nunknown\n", None),  # the bus going away
        ("", None),
    ],
)
def test_what_an_answer_decides_after_a_step_that_may_have_rebooted(answer: str, verdict: bool | None) -> None:
    assert going_down_verdict(answer) is verdict


def answers(*outputs: str | None) -> Callable[[], str | None]:
    """A machine's answers to GOING_DOWN, in turn (the last one again once they run out)."""
    given = list(outputs)
    return lambda: given.pop(0) if len(given) > 1 else given[0]


@pytest.mark.parametrize(
    ("machine", "going_down"),
    [
        # The reboot reaches systemd only after the command returned, and after a boot that had not finished.
        (
            answers("starting\nb false\n", f"starting\nb false\n{JOBS_AT_BOOT}", "starting\n 9 reboot.target start\n"),
            True,
        ),
        (answers("running\nb false\n", "running\nb false\n", "stopping\n"), True),  # up for a moment only
        (answers("Failed to query system state: Connection reset by peer\nunknown\n", None), True),
        (answers("running\nb false\n"), False),  # up and steady: it stays up
        (answers(f"starting\nb false\n{JOBS_AT_BOOT}", "running\nb false\n", "degraded\nb false\n"), False),
    ],
)
def test_the_answers_are_watched_until_they_decide(
    machine: Callable[[], str | None], going_down: bool, monkeypatch: Any
) -> None:
    monkeypatch.setattr(reboot, "SETTLE_STEADY", 0.5)
    assert watch_going_down(machine) is going_down


def test_a_machine_that_never_settles_is_taken_as_staying_up_once_the_watch_ends(monkeypatch: Any) -> None:
    monkeypatch.setattr(reboot, "SETTLE_WITHIN", 0.5)
    started = time.monotonic()
    assert watch_going_down(answers("System has not been booted with systemd as init system\n")) is False
    assert time.monotonic() - started < 3


class _ShuttingDown:
    """A systemd container, in its answers only: its state and GOING_DOWN's output over
    time, from the moment its step runner was lost."""

    def __init__(self, timeline: list[tuple[float, bool, str]]) -> None:
        self.started = time.monotonic()
        self.timeline = timeline  # (from second, running, answer), in order

    def now(self) -> tuple[bool, str]:
        elapsed = time.monotonic() - self.started
        running, out = self.timeline[0][1:]
        for since, *rest in self.timeline:
            if elapsed >= since:
                running, out = rest
        return running, out


def test_a_container_whose_systemd_bus_is_gone_late_in_a_shutdown_is_still_going_down() -> None:
    """Late in a shutdown systemd's bus refuses connections for as long as the last units
    take to stop (seconds, for a service slow to stop): that is no "up and calm" answer,
    and the exit with the reboot status that follows is a reboot."""
    from engine.targets.docker_systemd import SystemdContainer
    from engine.targets.systemd import REBOOT_EXIT, cgroup_setup

    bus_gone = "Failed to connect to bus: Connection refused\n"
    machine = _ShuttingDown([(0.0, True, "stopping\nb true\n"), (0.5, True, bus_gone), (3.6, False, "")])

    class Container(SystemdContainer):
        booted = False

        def state(self) -> dict[str, Any]:
            running, _ = machine.now()
            return {"Running": running, "ExitCode": 0 if running else REBOOT_EXIT}

        def ask(self, argv: list[str]) -> tuple[int, str]:
            return 0, machine.now()[1]

        def boot_again(self, end: float) -> None:
            self.booted = True

    container = Container(None, type("C", (), {"name": "c"})(), "/lib/systemd/systemd", cgroup_setup(1))
    assert container.rebooted(timeout=30) and container.booted
