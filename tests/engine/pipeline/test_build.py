"""The build package end to end on the fake target: phase order, statuses, records,
the deadline, and what happens to the target on every kind of ending."""

from __future__ import annotations

import time
from typing import Any

import pytest

from engine.errors import BuildFailed, BuildTimeout, Interrupted, UsageError
from engine.pipeline import PHASES, BuildOptions
from engine.pipeline.deprovision import GENERIC_DEPROVISION, OVERRIDE_LINUX
from engine.records import BuildRecord
from tests.engine.pipeline.conftest import Builds
from tests.fake_target import DEFECT, GONE, INTERRUPT, TIMEOUT
from tests.support import managed_image_id

SHELL_OK = {"type": "Shell", "name": "first", "inline": ["echo first"]}
SHELL_FAILS = {"type": "Shell", "name": "second", "inline": ["echo second; exit 3"]}


def image(name: str = "img", run_output: str = "out") -> dict[str, Any]:
    return {
        "type": "ManagedImage",
        "imageId": managed_image_id(name),
        "location": "westeurope",
        "runOutputName": run_output,
    }


def test_phases_run_in_order_and_the_template_moves_through_aibs_sub_states(builds: Builds) -> None:
    run = builds.make([SHELL_OK], distribute=[image()])
    result = run.run()
    assert result.status == "Succeeded" and result.error is None
    assert [p.name for p in run.phases()] == [
        "fetch",
        "resolve-source",
        "look-up-cache",
        "start-target",
        "plan",
        "customize",
        "deprovision",
        "capture",
        "distribute",
    ]
    steps = builds.started_steps()
    assert steps.index("start-target") < steps.index("customize[0] first") < steps.index("deprovision")
    assert steps.index("prepare-capture") < steps.index("distribute[0] out (ManagedImage)")
    # A commit only: the target is halted at once (no clean stop), after the build user is gone.
    assert steps.index("prepare-capture") < steps.index("capture") < steps.index("distribute[0] out (ManagedImage)")
    assert builds.target(run).halted and not builds.target(run).stopped
    status = builds.template_record()["properties"]["lastRunStatus"]
    assert status["runState"] == "Succeeded" and "runSubState" not in status and status["endTime"]
    finished = builds.named("build-finished")[0]
    assert finished["status"] == "Succeeded" and finished["runOutputs"][0]["artifactId"] == managed_image_id("img")
    # Where the time went: each phase run, in order, then the teardown, within the build's own clock.
    assert list(finished["phases"]) == [p.name for p in run.phases()] + ["teardown"]
    assert all(seconds >= 0 for seconds in finished["phases"].values())
    assert sum(finished["phases"].values()) <= finished["duration"] + 0.01


def test_a_good_build_records_everything_and_leaves_nothing(builds: Builds) -> None:
    run = builds.make([SHELL_OK], distribute=[image()])
    result = run.run()
    target = builds.target(run)
    assert target.started and target.prepared and target.removed
    assert not target.stopped  # a managed image is committed from the running target
    record = builds.record(run.build_id)
    assert record["status"] == "succeeded" and record["kept"] is False
    assert record["source"]["type"] == "FakeMachine" and record["customizers"] == ["customize[0] first"]
    assert record["completed"] == [0] and len(record["fingerprints"]) == 1
    assert BuildRecord.model_validate(record).options.target == "fake"
    stored = builds.store.get(managed_image_id("img"))
    assert stored is not None and stored["properties"]["storageProfile"]["osDisk"]["osState"] == "Generalized"
    assert not (builds.store.root / "inflight" / f"{run.build_id}.json").exists()
    assert result.log_path.read_text().count("customize[0] first") >= 2


def test_a_failing_customizer_fails_the_build_names_the_step_and_removes_the_target(builds: Builds) -> None:
    builds.rule("exit 3", 3, ["second"])
    run = builds.make([SHELL_OK, SHELL_FAILS], distribute=[image()])
    result = run.run()
    assert result.status == "Failed" and not result.kept
    assert isinstance(result.error, BuildFailed) and result.error.exit_code == 1
    assert "customize[1] second failed with exit code 3" in str(result.error)
    assert builds.target(run).removed
    record = builds.record(run.build_id)
    assert record["failedStep"] == "customize[1] second" and record["failedIndex"] == 1
    assert builds.template_record()["properties"]["lastRunStatus"]["runState"] == "Failed"
    assert builds.store.get(managed_image_id("img")) is None
    assert "deprovision" not in builds.started_steps()


def test_valid_exit_codes_let_a_step_pass(builds: Builds) -> None:
    builds.rule("exit 3", 3)
    step = {"type": "PowerShell", "name": "second", "inline": ["exit 3"], "validExitCodes": [0, 3]}
    run = builds.make([step])
    assert run.run().status == "Succeeded"
    finished = [e for e in builds.named("step-finished") if e["step"] == "customize[0] second"]
    assert finished[0]["status"] == "succeeded" and finished[0]["exitCode"] == 3


@pytest.mark.parametrize(
    ("on_error", "answer", "kept", "why"),
    [
        ("abort", None, True, "on-error abort"),
        ("cleanup", None, False, None),
        ("ask", True, True, "kept"),
        ("ask", False, False, None),
    ],
)
def test_on_error_decides_whether_a_failed_builds_target_stays(
    builds: Builds, on_error: str, answer: bool | None, kept: bool, why: str | None
) -> None:
    builds.rule("exit 3", 3)
    asked: list[str] = []

    def confirm(question: str) -> bool:
        asked.append(question)
        return bool(answer)

    run = builds.make([SHELL_FAILS], on_error=on_error, confirm_keep=confirm if answer is not None else None)
    result = run.run()
    assert result.kept is kept and builds.target(run).removed is not kept
    assert builds.record(run.build_id)["kept"] is kept
    assert bool(asked) is (on_error == "ask")
    if why:
        assert f"({why}). Next:" in builds.messages() and f"aib-local rerun {run.build_id}" in builds.messages()


def test_the_templates_error_handling_keeps_the_target_and_the_command_line_overrides_it(builds: Builds) -> None:
    builds.rule("exit 3", 3)
    handling = {"errorHandling": {"onCustomizerError": "abort"}}
    kept = builds.make([SHELL_FAILS], name="kept", properties=handling).run()
    removed = builds.make([SHELL_FAILS], name="removed", properties=handling, on_error="cleanup").run()
    assert kept.kept and not removed.kept


def test_an_expired_deadline_stops_the_build_before_the_next_phase(builds: Builds) -> None:
    run = builds.make([SHELL_OK])
    run.ctx.deadline.end = time.monotonic() - 1
    result = run.run()
    assert isinstance(result.error, BuildTimeout) and "expired during fetch" in str(result.error)
    assert result.status == "Failed" and run.build_id not in builds.started_steps()


def test_a_step_that_outlives_the_deadline_is_killed_and_named(builds: Builds) -> None:
    builds.rule("echo first", TIMEOUT)
    result = builds.make([SHELL_OK]).run()
    assert isinstance(result.error, BuildTimeout)
    assert "expired during customize[0] first; the step was killed" in str(result.error)
    timed_out = [e for e in builds.named("step-finished") if e["status"] == "timed-out"]
    assert [e["step"] for e in timed_out] == ["customize[0] first"]


def test_a_target_that_goes_away_fails_the_step_with_the_reason(builds: Builds) -> None:
    builds.rule("echo first", GONE)
    result = builds.make([SHELL_OK]).run()
    assert isinstance(result.error, BuildFailed)
    assert "customize[0] first failed: the target went away" in str(result.error)


def test_an_interrupt_cancels_the_build_and_removes_the_target_even_with_abort(builds: Builds) -> None:
    builds.rule("echo first", INTERRUPT)
    run = builds.make([SHELL_OK], distribute=[image()], on_error="abort")
    result = run.run()
    assert isinstance(result.error, Interrupted) and result.status == "Canceled"
    assert builds.target(run).removed and not result.kept
    assert builds.record(run.build_id)["status"] == "canceled"
    assert builds.template_record()["properties"]["lastRunStatus"]["runState"] == "Canceled"


def test_a_cancelled_build_ends_canceled(builds: Builds) -> None:
    run = builds.make([SHELL_OK])
    builds.rule("echo first", GONE)  # what cancel() does to a running step: its target goes
    run.ctx.cancelled = True
    result = run.run()
    assert result.status == "Canceled" and "interrupted during customize[0] first" in str(result.error)


def test_a_defect_still_removes_the_target_and_records_the_build_failed(builds: Builds) -> None:
    builds.rule("echo first", DEFECT)
    run = builds.make([SHELL_OK])
    with pytest.raises(RuntimeError, match="a defect"):
        run.run()
    assert builds.target(run).removed
    record = builds.record(run.build_id)
    assert record["status"] == "failed" and "internal error" in record["message"]
    assert not (builds.store.root / "inflight" / f"{run.build_id}.json").exists()


def test_one_template_cannot_run_twice_at_once(builds: Builds) -> None:
    run = builds.make([SHELL_OK])
    builds.live_entry("other-build", run.ctx.template_id)
    result = run.run()
    assert isinstance(result.error, UsageError) and "is being built by build other-build" in str(result.error)
    assert run.build_id not in FakeTargetsOpened(builds)


def FakeTargetsOpened(builds: Builds) -> list[str]:
    from tests.fake_target import FakeTarget

    return list(FakeTarget.opened)


@pytest.mark.parametrize(
    ("probe", "mode", "ran", "generalized"),
    [
        (10, "generic", OVERRIDE_LINUX, True),
        (11, "generic", "-deprovision+user", True),
        (0, "generic", "aib-local generic deprovision", True),
        (0, "skip", None, False),
    ],
)
def test_deprovision_runs_what_the_image_has(
    builds: Builds, probe: int, mode: str, ran: str | None, generalized: bool
) -> None:
    builds.rule("test -f /tmp/DeprovisioningScript.sh", probe)
    run = builds.make([SHELL_OK], distribute=[image()], deprovision=mode)
    assert run.run().status == "Succeeded"
    target = builds.target(run)
    if ran is not None:
        assert target.ran(ran)
    assert not target.ran(GENERIC_DEPROVISION) or ran == "aib-local generic deprovision"
    stored = builds.store.get(managed_image_id("img"))
    assert stored is not None
    state = stored["properties"]["storageProfile"]["osDisk"]["osState"]
    assert state == ("Generalized" if generalized else "Specialized")
    if mode == "skip":
        assert "deprovision SKIPPED" in builds.messages()


def test_one_failed_distribution_of_two_is_partial_success(builds: Builds) -> None:
    refused = {**image("refuse", "bad"), "imageId": managed_image_id("refuse")}
    result = builds.make([SHELL_OK], distribute=[image(), refused]).run()
    assert result.status == "PartiallySucceeded"
    assert "Failed in distributing 1 images out of total 2" in str(result.error)
    states = {o.name: o.provisioning_state for o in result.run_outputs}
    assert states == {"out": "Succeeded", "bad": "Failed"}


def test_a_rerun_attaches_to_the_kept_target_and_runs_from_the_failed_step(builds: Builds) -> None:
    from engine.pipeline.revisit import rerun

    builds.rule("exit 3", 3, times=1)
    first = builds.make([SHELL_OK, SHELL_FAILS], distribute=[image()], on_error="abort")
    assert first.run().kept
    target = builds.target(first)
    ran_before = len(target.commands)
    again = rerun(builds.store, first.build_id, BuildOptions(), builds.events.append)
    assert [p.name for p in again.phases()] == ["fetch", "attach-target", "plan", "customize"]
    result = again.run()
    assert result.status == "Succeeded" and result.kept and not target.removed  # a rerun keeps it
    rerun_steps = [" ".join(c.argv) for c in target.commands[ran_before:]]
    assert any("/bin/sh" in s for s in rerun_steps) and not target.ran("prepare")
    finished = rerun(builds.store, first.build_id, BuildOptions(), builds.events.append, only="first", finish=True)
    assert finished.run().status == "Succeeded" and target.removed
    assert builds.store.get(managed_image_id("img")) is not None


def test_phases_are_data_for_every_kind_of_build() -> None:
    names = [p.name for p in PHASES]
    assert names[:2] == ["fetch", "attach-target"] and names[-2:] == ["distribute", "boot-test"]
    assert [p.sub_state for p in PHASES if p.sub_state] == [
        "Queued",
        "Building",
        "Building",
        "Building",
        "Building",
        "Building",
        "Customizing",
        "Validating",
        "Distributing",
        "Distributing",
        "Distributing",
    ]  # AIB's runSubState order; deprovision keeps the state it comes in


def test_every_phase_has_a_named_fault_point() -> None:
    from engine import failpoints

    assert {f"phase:{p.name}" for p in PHASES} <= set(failpoints.POINTS)


def test_a_build_says_what_it_does_instead_of_what_only_azure_does(builds: Builds) -> None:
    properties = {
        "optimize": {"vmBoot": {"state": "Enabled"}},
        "stagingResourceGroup": "/subscriptions/s/resourceGroups/x",
    }
    run = builds.make([SHELL_OK], properties=properties)
    assert run.run().status == "Succeeded"
    notes = [e["message"] for e in builds.named("info") if str(e.get("message", "")).startswith("note: ")]
    assert any("properties.optimize.vmBoot: AIB optimizes the image's boot; not done locally" in n for n in notes)
    assert any("properties.stagingResourceGroup: AIB creates the build's resources" in n for n in notes)
    kinds = [e["event"] + str(e.get("message", ""))[:5] for e in builds.events]
    assert kinds.index("infonote:") < kinds.index("step-started")  # said at the start, once each
    assert len(notes) == 2


def test_a_build_ends_by_saying_when_aib_would_reject_the_template(builds: Builds) -> None:
    run = builds.make([SHELL_OK], properties={"buildTimeoutInMinutes": 3})  # AIB needs at least 6
    assert run.run().status == "Succeeded"
    last_warning = builds.named("warning")[-1]["message"]
    # the short timeout, and no distribution at all
    assert last_warning.startswith("AIB would reject this template: 2 finding(s); aib-local validate --strict")
    assert builds.events.index(builds.named("warning")[-1]) > builds.events.index(builds.named("step-started")[-1])
