"""A Shell step that reboots the machine, in the build: the step that asked for it ends
`rebooted` (not failed, not succeeded), the next step runs whole on the machine booted
again, and a kept target is let go of without being removed. On the fake target; the real
machines' side of the rule (when a step has asked for a reboot) is in
tests/engine/targets/test_going_down.py and the systemd, SSH and VM integration tests."""

from __future__ import annotations

from tests.engine.pipeline.conftest import Builds
from tests.fake_target import REBOOT

REBOOTS = {"type": "Shell", "name": "reboot", "inline": ["sudo reboot"]}
AFTER = {"type": "Shell", "name": "after", "inline": ["echo after-the-reboot"]}


def test_the_step_that_reboots_ends_rebooted_and_the_next_runs_in_the_new_boot(builds: Builds) -> None:
    builds.rule("sudo reboot", REBOOT, times=1)
    run = builds.make([REBOOTS, AFTER])
    result = run.run()
    assert result.status == "Succeeded", result.error
    finished = {e["step"]: (e["status"], e["exitCode"]) for e in builds.named("step-finished")}
    assert finished["customize[0] reboot"] == ("rebooted", None)
    assert finished["customize[1] after"] == ("succeeded", 0)
    target = builds.target(run)
    assert target.boots == 2 and target.ran("after-the-reboot")
    assert "customize[0] reboot: " in builds.messages() and "rebooted during the step" in builds.messages()
    record = builds.record(run.build_id)
    assert record["status"] == "succeeded"


def test_a_step_after_a_reboot_that_fails_still_fails_the_build(builds: Builds) -> None:
    builds.rule("sudo reboot", REBOOT, times=1)
    builds.rule("after-the-reboot", 4)
    result = builds.make([REBOOTS, AFTER]).run()
    assert result.status == "Failed" and "customize[1] after failed with exit code 4" in str(result.error)
    finished = {e["step"]: e["status"] for e in builds.named("step-finished")}
    assert finished["customize[0] reboot"] == "rebooted" and finished["customize[1] after"] == "failed"


def test_a_step_cut_off_by_a_reboot_it_did_not_ask_for_fails_and_the_build_stops(builds: Builds) -> None:
    # A reboot that reaches the machine late (an earlier step's, a timer's) ends a step
    # whose commands name none: its commands did not all run, so it may not pass.
    builds.rule("echo STARTED", REBOOT, times=1)
    steps = [{"type": "Shell", "name": "cut", "inline": ["echo STARTED", "echo FINISHED"]}, AFTER]
    result = builds.make(steps).run()
    assert result.status == "Failed"
    assert "customize[0] cut was cut off by a reboot it did not ask for" in str(result.error)
    assert "add a line `# reboot` to the step" in str(result.error)
    finished = {e["step"]: (e["status"], e["exitCode"]) for e in builds.named("step-finished")}
    assert finished["customize[0] cut"] == ("failed", None)
    assert "customize[1] after" not in builds.started_steps()


def test_a_step_that_names_its_reboot_in_a_comment_ends_rebooted(builds: Builds) -> None:
    # The way out for a step that reboots through a script it runs.
    builds.rule("bash /tmp/setup.sh", REBOOT, times=1)
    steps = [{"type": "Shell", "name": "setup", "inline": ["# reboot: setup.sh restarts", "bash /tmp/setup.sh"]}, AFTER]
    result = builds.make(steps).run()
    assert result.status == "Succeeded", result.error
    finished = {e["step"]: e["status"] for e in builds.named("step-finished")}
    customizers = {step: status for step, status in finished.items() if step.startswith("customize")}
    assert customizers == {"customize[0] setup": "rebooted", "customize[1] after": "succeeded"}


def test_a_kept_target_is_let_go_of_not_removed(builds: Builds) -> None:
    builds.rule("after-the-reboot", 4)
    run = builds.make([REBOOTS, AFTER], on_error="abort")
    assert run.run().status == "Failed"
    target = builds.target(run)
    assert target.detached and not target.removed
