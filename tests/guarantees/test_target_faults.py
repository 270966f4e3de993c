"""Guarantee 3: a target that goes away is reported as such, promptly: a container
killed or stopped mid-step fails the step within 5 s saying so; an SSH link cut mid-step
is followed by bounded reconnects, then a clear failure; a machine that never comes
back from a restart fails the build at restartTimeout, naming the phase."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import Running, build_ids, containers_of, store_problems, template

pytestmark = pytest.mark.docker

SLOW_STEP = {"type": "Shell", "name": "slow", "inline": ["echo STEP-STARTED", "exec sleep 4242"]}


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_a_container_that_goes_away_mid_step_fails_the_step_within_5s(
    how: str, store: Path, write_template: Any, docker_client: Any, base_image: str
) -> None:
    path = write_template(template("vanish", [SLOW_STEP]))
    running = Running(["build", str(path), "--network", "none"], store)
    running.wait_for("STEP-STARTED")
    (build_id,) = build_ids(store)
    (name,) = containers_of(docker_client, build_id)
    container = docker_client.containers.get(name)
    gone_at = time.monotonic()
    container.kill() if how == "kill" else container.stop(timeout=2)
    code, output = running.finish()
    failed_after = time.monotonic() - gone_at

    assert code == 1, output
    assert failed_after < 5 + (2 if how == "stop" else 0), failed_after
    assert "customize[0] slow failed: the target went away during the step" in output
    assert ("was killed (docker kill)" if how == "kill" else "was stopped") in output
    assert containers_of(docker_client, build_id) == []
    assert store_problems(store) == []


@pytest.mark.ssh
def test_an_ssh_link_cut_mid_step_reconnects_stops_the_step_and_fails_clearly(
    store: Path, write_template: Any, sshd: Any
) -> None:
    path = write_template(template("cut", [SLOW_STEP]))
    running = Running(["build", str(path), *sshd.cli_args()], store)
    running.wait_for("STEP-STARTED")
    # Kill the connection's own sshd processes; the listening sshd (PID 1) stays.
    sshd.container.exec_run(["sh", "-c", "pkill -KILL -f 'sshd: builder'"])
    code, output = running.finish(within=60)

    assert code == 1, output
    assert "dropped during the step" in output
    assert "reconnected and stopped the step's process: the step did not complete" in output
    assert sshd.container.exec_run(["pgrep", "-f", "sleep 4242"]).exit_code != 0
    assert store_problems(store) == []


@pytest.mark.ssh
def test_an_ssh_host_that_stays_down_fails_after_bounded_reconnects(
    store: Path, write_template: Any, sshd: Any
) -> None:
    path = write_template(template("down", [SLOW_STEP]))
    running = Running(["build", str(path), *sshd.cli_args()], store)
    running.wait_for("STEP-STARTED")
    sshd.container.update(restart_policy={"Name": "no"})
    down_at = time.monotonic()
    sshd.container.kill()
    code, output = running.finish(within=120)

    assert code == 1, output
    assert "and reconnecting failed for 30s: the host or its sshd is down" in output
    assert 25 < time.monotonic() - down_at < 60
    assert store_problems(store) == []


@pytest.mark.ssh
def test_a_machine_that_never_comes_back_fails_at_restart_timeout_naming_the_phase(
    store: Path, write_template: Any, sshd: Any
) -> None:
    reboot = {"type": "WindowsRestart", "name": "reboot", "restartCommand": "kill 1", "restartTimeout": "15s"}
    after = {"type": "Shell", "name": "after", "inline": ["echo NEVER"]}
    path = write_template(template("gone", [reboot, after]))
    sshd.container.update(restart_policy={"Name": "no"})
    started = time.monotonic()
    running = Running(["build", str(path), *sshd.cli_args()], store)
    code, output = running.finish(within=120)

    assert code == 1, output
    assert 15 < time.monotonic() - started < 45
    assert "waiting for 127.0.0.1 to come back up" in output
    assert "customize[0] reboot failed: Timeout waiting for machine to restart: it did not come back" in output
    assert "NEVER" not in output
    assert store_problems(store) == []
