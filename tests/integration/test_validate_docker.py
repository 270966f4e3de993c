"""AIB's validation phase on the real Docker engine, through the real CLI: a failing
in-VM validator with each continueDistributeOnFailure, sourceValidationOnly, and
onValidationError abort followed by `rerun --only VALIDATOR`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import managed_image_id, template, template_id

pytestmark = pytest.mark.docker

INSTALL = {"type": "Shell", "name": "install", "inline": ["echo ready | sudo tee /etc/marker"]}
# Passes only where the customizer ran: the marker is there.
CHECK = {"type": "Shell", "name": "check", "inline": ["test -f /etc/marker", "echo validated"]}
FAILS = {"type": "Shell", "name": "check", "inline": ["echo looking for /etc/missing", "test -f /etc/missing"]}


def image(name: str) -> dict[str, Any]:
    return {"type": "ManagedImage", "imageId": managed_image_id(name), "location": "westeurope", "runOutputName": name}


def events(result: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def last_run(cli: Any, name: str) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(cli("show", template_id(name)).stdout)["properties"]["lastRunStatus"]
    return status


def test_a_passing_validator_runs_after_the_customizers_as_its_own_phase(
    cli: Any, write_template: Any, base_image: str, leftovers: Any
) -> None:
    path = write_template(
        template("valid", [INSTALL], distribute=[image("valid")], validate={"inVMValidations": [CHECK]})
    )
    result = cli("build", str(path), "--network", "none", "--output", "json")
    assert result.code == 0, result.output
    started = [e["step"] for e in events(result) if e["event"] == "step-started"]
    assert started.index("customize[0] install") < started.index("validate[0] check") < started.index("deprovision")
    finished = [e for e in events(result) if e["event"] == "step-finished" and e["step"] == "validate[0] check"]
    assert finished[0]["status"] == "succeeded"
    assert any(e.get("line") == "validated" for e in events(result) if e["event"] == "output")
    assert last_run(cli, "valid")["runState"] == "Succeeded"
    assert leftovers() == []


@pytest.mark.parametrize("go_on", [False, True])
def test_a_failing_validator_fails_the_build_and_distributes_only_when_asked(
    cli: Any, write_template: Any, base_image: str, leftovers: Any, go_on: bool
) -> None:
    name = f"invalid-{str(go_on).lower()}"
    validate = {"inVMValidations": [FAILS], "continueDistributeOnFailure": go_on}
    path = write_template(template(name, [INSTALL], distribute=[image(name)], validate=validate))
    result = cli("build", str(path), "--network", "none")
    assert result.code == 1, result.output
    assert "validation failed: validate[0] check failed with exit code 1" in result.stderr
    assert "looking for /etc/missing" in result.stdout
    distributed = cli("show", managed_image_id(name))
    assert (distributed.code == 0) is go_on
    assert last_run(cli, name)["runState"] == "Failed"
    assert leftovers() == []


def test_source_validation_only_validates_the_source_image_and_builds_nothing(
    cli: Any, write_template: Any, base_image: str, leftovers: Any
) -> None:
    source_check = {
        "type": "Shell",
        "name": "source",
        "inline": ["test -f /etc/debian_version", "test ! -f /etc/marker"],
    }
    validate = {"inVMValidations": [source_check], "sourceValidationOnly": True}
    path = write_template(template("source-only", [INSTALL], distribute=[image("source-only")], validate=validate))
    result = cli("build", str(path), "--network", "none")
    assert result.code == 0, result.output
    assert "sourceValidationOnly" in result.stdout and "customize[0]" not in result.stdout
    assert cli("show", managed_image_id("source-only")).code != 0
    assert leftovers() == []


def test_on_validation_error_abort_keeps_the_target_and_rerun_only_runs_the_validator(
    cli: Any, write_template: Any, base_image: str, leftovers: Any
) -> None:
    validate = {"inVMValidations": [FAILS]}
    document = template("rerun-check", [INSTALL], distribute=[image("rerun-check")], validate=validate)
    document["properties"]["errorHandling"] = {"onValidationError": "abort"}
    path: Path = write_template(document)
    failed = cli("build", str(path), "--network", "none")
    assert failed.code == 1 and len(leftovers()) == 1, failed.output
    build_id = leftovers()[0].labels["io.aib-local.build-id"]

    document["properties"]["validate"]["inVMValidations"] = [CHECK]  # the validator fixed
    path.write_text(json.dumps(document))
    again = cli("rerun", build_id, "--only", "check")
    assert again.code == 0, again.output
    assert "validated" in again.stdout and "customize[0] install" not in again.stdout
    assert len(leftovers()) == 1  # still kept: no --finish
    finished = cli("rerun", build_id, "--only", "check", "--finish")
    assert finished.code == 0, finished.output
    assert cli("show", managed_image_id("rerun-check")).code == 0 and leftovers() == []
