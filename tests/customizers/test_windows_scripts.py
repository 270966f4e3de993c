"""Golden files for the PowerShell that Windows customizers generate (fixtures/golden)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

import customizers
from customizers.base import PlanContext, RunScript, UntilDone
from customizers.powershell import elevated_launcher
from engine.template.model import Customizer

GOLDEN = Path(__file__).resolve().parents[2] / "fixtures" / "golden"
ADAPTER: TypeAdapter[Any] = TypeAdapter(Customizer)


def create(section: dict[str, Any]) -> Any:
    return customizers.create(ADAPTER.validate_python(section))


@pytest.mark.parametrize(
    ("golden", "section"),
    [
        ("windows-update-defaults", {"type": "WindowsUpdate"}),
        (
            "windows-update-filters",
            {
                "type": "WindowsUpdate",
                "searchCriteria": "AutoSelectOnWebSites=1 and IsInstalled=0",
                "filters": [
                    "exclude:$_.Title -like '*Preview*'",
                    "include:$_.Title -like '*Cumulative*'",
                    "include:$true",
                ],
                "updateLimit": 25,
            },
        ),
    ],
)
def test_windows_update_worker(golden: str, section: dict[str, Any]) -> None:
    assert create(section).worker() == (GOLDEN / f"{golden}.ps1").read_text()


def test_worker_defaults_are_aibs() -> None:
    worker = create({"type": "WindowsUpdate"}).worker()
    assert worker.startswith(
        "$SearchCriteria = 'BrowseOnly=0 and IsInstalled=0'\n$Filters = @('include:$true')\n$UpdateLimit = 1000\n"
    )


def test_bad_filter_is_refused_by_the_section() -> None:
    with pytest.raises(ValidationError, match="expected include:EXPRESSION or exclude:EXPRESSION, got 'install:"):
        create({"type": "WindowsUpdate", "filters": ["install:$true"]})


def test_elevated_launcher() -> None:
    assert (
        elevated_launcher(b"Write-Output 'hello'\r\nexit 3", system=True)
        == (GOLDEN / "elevated-system.ps1").read_bytes()
    )


def test_windows_update_plan_on_windows_runs_as_system_and_restarts_like_aib() -> None:
    [step] = create({"type": "WindowsUpdate"}).plan(PlanContext("Windows", {}))
    assert isinstance(step, UntilDone)
    assert step.restart_codes == (101, 2147942501)
    assert step.restart.command == 'shutdown /r /f /t 0 /c "packer restart"'
    assert step.run.command[:3] == ("powershell", "-executionpolicy", "bypass")
    assert b"New-ScheduledTaskPrincipal -UserId 'SYSTEM' -LogonType ServiceAccount" in step.run.script


def test_run_as_system_on_windows_uses_a_scheduled_task() -> None:
    [step] = create({"type": "PowerShell", "inline": ["whoami"], "runElevated": True, "runAsSystem": True}).plan(
        PlanContext("Windows", {})
    )
    assert isinstance(step, RunScript)
    assert b"Register-ScheduledTask" in step.script and not step.as_root
    assert "as SYSTEM through a scheduled task" in step.label
