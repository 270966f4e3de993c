"""The validate phase on the fake target: where validators run, what a failed one does
to the run, its distributions and its target, and coming back to one."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import BuildTimeout, ValidationFailed
from engine.pipeline import BuildOptions
from engine.pipeline.revisit import rerun
from tests.engine.pipeline.conftest import Builds
from tests.fake_target import TIMEOUT
from tests.support import managed_image_id

SHELL = {"type": "Shell", "name": "install", "inline": ["echo installing"]}
CHECK = {"type": "Shell", "name": "check", "inline": ["echo checking; exit 4"]}
IMAGE = {"type": "ManagedImage", "imageId": managed_image_id("img"), "location": "westeurope", "runOutputName": "out"}


def validate(*validators: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {"validate": {"inVMValidations": list(validators), **options}}


def test_validators_run_after_the_customizers_and_before_the_image_is_generalized(builds: Builds) -> None:
    run = builds.make([SHELL], distribute=[IMAGE], properties=validate({**CHECK, "inline": ["echo checking"]}))
    result = run.run()
    assert result.status == "Succeeded"
    assert [p.name for p in run.phases()][5:8] == ["customize", "validate", "deprovision"]
    steps = builds.started_steps()
    assert steps.index("customize[0] install") < steps.index("validate[0] check") < steps.index("deprovision")
    assert builds.record(run.build_id)["validators"] == ["validate[0] check"]


def test_a_failed_validator_fails_the_run_and_nothing_is_distributed(builds: Builds) -> None:
    builds.rule("exit 4", 4)
    run = builds.make([SHELL], distribute=[IMAGE], properties=validate(CHECK))
    result = run.run()
    assert isinstance(result.error, ValidationFailed) and result.error.exit_code == 1
    assert result.status == "Failed" and "validation failed: validate[0] check failed with exit code 4" in str(
        result.error
    )
    assert "deprovision" not in builds.started_steps() and builds.store.get(managed_image_id("img")) is None
    assert builds.target(run).removed  # errorHandling.onValidationError defaults to cleanup
    assert builds.template_record()["properties"]["lastRunStatus"]["runState"] == "Failed"
    assert builds.record(run.build_id)["failedIndex"] == 1  # after the one customizer


def test_continue_distribute_on_failure_distributes_and_still_fails_the_run(builds: Builds) -> None:
    builds.rule("exit 4", 4)
    run = builds.make([SHELL], distribute=[IMAGE], properties=validate(CHECK, continueDistributeOnFailure=True))
    result = run.run()
    assert isinstance(result.error, ValidationFailed) and result.status == "Failed"
    assert "distributed all the same: out" in str(result.error)
    assert builds.store.get(managed_image_id("img")) is not None
    assert [o.provisioning_state for o in result.run_outputs] == ["Succeeded"]
    assert "distributing all the same (validate.continueDistributeOnFailure)" in builds.messages()
    assert builds.template_record()["properties"]["lastRunStatus"]["runState"] == "Failed"


def test_source_validation_only_validates_the_source_and_builds_nothing(builds: Builds) -> None:
    run = builds.make(
        [SHELL], distribute=[IMAGE], properties=validate({**CHECK, "inline": ["true"]}, sourceValidationOnly=True)
    )
    result = run.run()
    assert result.status == "Succeeded"
    assert [p.name for p in run.phases()] == ["fetch", "resolve-source", "start-target", "plan", "validate"]
    assert not builds.target(run).ran("echo installing") and builds.target(run).ran("true")
    assert builds.store.get(managed_image_id("img")) is None
    assert "sourceValidationOnly" in builds.messages()


@pytest.mark.parametrize(
    ("handling", "on_error", "kept"),
    [
        ({"onValidationError": "abort"}, None, True),
        ({"onCustomizerError": "abort"}, None, False),  # the customizers' setting is not the validators'
        ({"onValidationError": "abort"}, "cleanup", False),  # --on-error overrides both
        ({}, "abort", True),
    ],
)
def test_on_validation_error_decides_whether_the_target_stays(
    builds: Builds, handling: dict[str, str], on_error: str | None, kept: bool
) -> None:
    builds.rule("exit 4", 4)
    properties = {**validate(CHECK), "errorHandling": handling}
    result = builds.make([SHELL], properties=properties, on_error=on_error).run()
    assert isinstance(result.error, ValidationFailed) and result.kept is kept


def test_a_kept_validation_failure_is_rerun_by_the_validators_name(builds: Builds) -> None:
    builds.rule("exit 4", 4, times=1)
    first = builds.make(
        [SHELL], distribute=[IMAGE], properties={**validate(CHECK), "errorHandling": {"onValidationError": "abort"}}
    )
    assert first.run().kept
    target = builds.target(first)
    default = rerun(builds.store, first.build_id, BuildOptions(), builds.events.append)
    assert default.ctx.continuation is not None and default.ctx.continuation.first == 1  # the failed validator
    before = len(target.commands)
    again = rerun(builds.store, first.build_id, BuildOptions(), builds.events.append, only="check")
    result = again.run()
    assert result.status == "Succeeded" and result.kept
    scripts = [c.script[1].decode() for c in target.commands[before:] if c.script]
    assert any("echo checking" in s for s in scripts) and not any("echo installing" in s for s in scripts)
    finished = rerun(
        builds.store, first.build_id, BuildOptions(), builds.events.append, start="validate[0]", finish=True
    )
    assert finished.run().status == "Succeeded" and builds.store.get(managed_image_id("img")) is not None


def test_debug_asks_before_each_validator_too(builds: Builds) -> None:
    asked: list[str] = []

    def pause(step: str) -> str:
        asked.append(step)
        return "skip" if step.startswith("validate") else "continue"

    builds.make([SHELL], properties=validate(CHECK), pause=pause).run()
    assert asked == ["customize[0] install", "validate[0] check"]
    assert "validate[0] check skipped (--debug)" in builds.messages()


def test_a_validator_that_outlives_the_deadline_is_a_timeout_not_a_failed_validation(builds: Builds) -> None:
    builds.rule("echo checking", TIMEOUT)
    result = builds.make([SHELL], properties=validate(CHECK, continueDistributeOnFailure=True)).run()
    assert isinstance(result.error, BuildTimeout) and not isinstance(result.error, ValidationFailed)


def test_file_and_powershell_validators_run_as_their_customizers_do(builds: Builds) -> None:
    (builds.folder / "expected.txt").write_text("expected\n")
    builds.rule("exit 3", 3)
    validators = [
        {"type": "File", "name": "put", "sourceUri": "expected.txt", "destination": "/tmp/expected.txt"},
        {"type": "PowerShell", "name": "ps", "inline": ["exit 3"], "validExitCodes": [3]},
    ]
    run = builds.make([SHELL], properties=validate(*validators))
    result = run.run()
    assert result.status == "Succeeded", result.error
    assert builds.target(run).files["/tmp/expected.txt"] == b"expected\n"
    assert "validate[1] ps" in builds.started_steps()
