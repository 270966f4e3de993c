"""PowerShell and WindowsUpdate, engine side, on a Linux target with a STAND-IN pwsh.

The stand-in (fixtures/stand-ins/pwsh) is not PowerShell: it records its arguments and
exits with the code the script asks for, so these tests check what the engine does
with commands, exit codes, elevation, restarts and rounds. Real PowerShell semantics
are checked by the real-pwsh tests, where an image with pwsh is available.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support import template

pytestmark = pytest.mark.docker

SOURCE = {"type": "PlatformImage", "publisher": "Test", "offer": "pwsh", "sku": "stand-in", "version": "latest"}


@pytest.fixture
def catalogue(tmp_path: Path, pwsh_stand_in_image: str) -> Path:
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps({"Test:pwsh:stand-in:latest": pwsh_stand_in_image}))
    return path


def build(cli: Any, write_template: Any, catalogue: Path, customize: list[dict[str, Any]], *extra: str) -> Any:
    path = write_template(template("pwsh", customize, source=SOURCE))
    return cli("build", str(path), "--network", "none", "--catalogue", str(catalogue), "--deprovision", "skip", *extra)


def test_valid_exit_codes_accept_a_listed_code(cli: Any, write_template: Any, catalogue: Path) -> None:
    result = build(
        cli,
        write_template,
        catalogue,
        [
            {
                "type": "PowerShell",
                "name": "reboot-pending",
                "inline": ["Write-Output installing", "exit 3"],
                "validExitCodes": [0, 3],
            },
            {"type": "Shell", "name": "argv", "inline": ["cat /tmp/pwsh-stand-in.argv"]},
        ],
    )
    assert result.code == 0, result.output
    assert "installing" in result.stdout
    assert "<== customize[0] reboot-pending: ok (exit 3)" in result.stdout
    assert "-NoProfile -NonInteractive -ExecutionPolicy Bypass -Command & { if (Test-Path" in result.stdout
    assert "exit $LastExitCode }" in result.stdout
    assert "PowerShell AIB-compatible" in result.stdout


def test_unlisted_code_fails_and_is_explained(cli: Any, write_template: Any, catalogue: Path) -> None:
    result = build(
        cli,
        write_template,
        catalogue,
        [
            {"type": "PowerShell", "name": "denied", "inline": ["exit 5"], "validExitCodes": [0, 3]},
            {"type": "Shell", "name": "never", "inline": ["echo NEVER-RUNS"]},
        ],
    )
    assert result.code == 1, result.output
    assert "customize[0] denied failed with exit code 5 (valid exit codes: [0, 3]): access is denied" in result.stderr
    assert "NEVER-RUNS" not in result.stdout


def test_run_elevated_runs_as_root(cli: Any, write_template: Any, catalogue: Path) -> None:
    result = build(
        cli,
        write_template,
        catalogue,
        [
            {
                "type": "PowerShell",
                "name": "elevated",
                "inline": ["Write-Output elevated"],
                "runElevated": True,
                "runAsSystem": True,
            },
            {"type": "Shell", "name": "who", "inline": ["stat -c %U /tmp/pwsh-stand-in.argv"]},
        ],
    )
    assert result.code == 0, result.output
    assert "customize[1] who | root" in result.stdout
    assert "elevated with sudo" in result.stdout


def test_strict_mode_is_opt_in_and_announced(cli: Any, write_template: Any, catalogue: Path) -> None:
    result = build(
        cli,
        write_template,
        catalogue,
        [
            {"type": "PowerShell", "name": "strict", "inline": ["Write-Output hi"]},
            {"type": "Shell", "name": "argv", "inline": ["cat /tmp/pwsh-stand-in.argv"]},
        ],
        "--powershell-strict",
    )
    assert result.code == 0, result.output
    assert "PowerShell strict" in result.stdout
    assert "$ErrorActionPreference='Stop'; try {" in result.stdout


def test_windows_update_restarts_until_done(cli: Any, write_template: Any, catalogue: Path) -> None:
    result = build(
        cli,
        write_template,
        catalogue,
        [
            {"type": "WindowsUpdate", "name": "updates", "searchCriteria": "IsInstalled=0", "updateLimit": 40},
            {"type": "Shell", "name": "after", "inline": ["echo rounds=$(cat /var/tmp/stand-in-update-rounds)"]},
        ],
    )
    assert result.code == 0, result.output
    out = result.stdout
    assert "uid=0 $SearchCriteria = 'IsInstalled=0' $UpdateLimit = 40" in out
    assert out.count("asks for a restart") == 2
    assert "customize[0] updates restart 2" in out and "customize[0] updates restart 3" not in out
    assert "No Windows updates found" in out
    assert "rounds=3" in out


@pytest.mark.skipif(
    not os.environ.get("AIB_LOCAL_PWSH_IMAGE"),
    reason="real PowerShell: set AIB_LOCAL_PWSH_IMAGE to a local image with pwsh "
    "(PowerShell is not packaged for Debian, and no registry is reachable here)",
)
def test_real_pwsh_exit_code_semantics(cli: Any, write_template: Any, tmp_path: Path) -> None:
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps({"Test:pwsh:stand-in:latest": os.environ["AIB_LOCAL_PWSH_IMAGE"]}))
    result = build(
        cli,
        write_template,
        path,
        [
            # AIB semantics: a failing cmdlet does not fail the step; the last native exit code does.
            {"type": "PowerShell", "name": "cmdlet-error", "inline": ["Write-Error 'not fatal'", "Write-Output done"]},
            {"type": "PowerShell", "name": "native", "inline": ["sh -c 'exit 3'"], "validExitCodes": [3]},
        ],
    )
    assert result.code == 0, result.output
