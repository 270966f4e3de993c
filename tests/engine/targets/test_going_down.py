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
