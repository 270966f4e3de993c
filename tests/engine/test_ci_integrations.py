"""The GitHub Action and the pre-commit hook call aib-local as it is: their commands and
options exist, and the hook's file pattern picks image templates and not other JSON."""

from __future__ import annotations

import os
import re
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT, run_action

# A template AIB takes as it is (the fixtures' quickstart reads local files: --strict refuses it).
CLEAN = ROOT / "tests" / "corpus" / "realistic" / "two-templates.json"


def test_the_action_is_a_composite_whose_commands_the_cli_takes(cli: Any) -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    assert {"templates", "build", "args", "strict"} <= set(action["inputs"])
    scripts = "\n".join(step.get("run", "") for step in action["runs"]["steps"])
    for script in ("fixtures/ensure-docker.sh", "fixtures/images/build-image.sh"):
        assert script in scripts and (ROOT / script).exists()
    commands = [line.strip() for line in scripts.splitlines() if line.strip().startswith("aib-local ")]
    assert [c.split()[1] for c in commands] == ["validate", "build"]
    for command in commands:
        options = set(re.findall(r"(--[a-z-]+)", command)) - {"--"}
        help_text = cli(command.split()[1], "--help").stdout
        assert all(option in help_text for option in options), command


@pytest.mark.parametrize("separator", [" ", "\n"])
def test_the_actions_steps_take_names_with_spaces_and_never_run_them(tmp_path: Path, separator: str) -> None:
    """The validation steps, run as the runner runs them (inputs through the environment),
    with a template in a folder with a space and one whose name holds $(...): both are
    validated, and nothing in a name runs."""
    folder = tmp_path / "my templates"
    folder.mkdir()
    spaced = folder / "web image.json"
    spaced.write_bytes(CLEAN.read_bytes())
    trap = tmp_path / "$(touch PWNED).json"
    trap.write_bytes(CLEAN.read_bytes())
    runner_temp = tmp_path / "runner"
    runner_temp.mkdir()
    # Space-separated, a name with a space is given by a glob; one per line, as it is.
    spaced_out = f"{tmp_path}/my?templates/web?image.json {tmp_path}/$(touch?PWNED).json"
    names = spaced_out if separator == " " else f"{spaced}\n{trap}\n"
    values = {
        "inputs.templates": names,
        "inputs.build": "false",
        "inputs.args": "",
        "inputs.strict": "true",
        "github.action_path": str(ROOT),
    }
    env = {**os.environ, "RUNNER_TEMP": str(runner_temp)}
    env.pop("AIB_LOCAL_STORE", None)
    outputs = run_action(values, env, skip=("Install aib-local",))  # the package under test is installed
    report = ET.parse(outputs["junit"]).getroot()
    cases = {case.get("name") for case in report.iter("testcase")}
    assert len(cases) >= 2 and not report.findall(".//failure"), ET.tostring(report)
    assert not list(tmp_path.rglob("PWNED")) and not (Path.cwd() / "PWNED").exists()


def test_the_pre_commit_hook_validates_strictly_the_files_it_picks(cli: Any, tmp_path: Path) -> None:
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["language"] == "python" and hook["entry"].startswith("aib-local validate --strict")
    picks = re.compile(hook["files"])
    for name in ("image-templates/web.json", "aib/ubuntu.json", "templates/web.aib.json", "imagetemplate-web.json"):
        assert picks.search(name), name
    for name in ("package.json", "tsconfig.json", ".vscode/settings.json"):
        assert not picks.search(name), name
    entry = shlex.split(hook["entry"])[1:]
    assert cli(*entry, str(CLEAN)).code == 0
    broken = tmp_path / "web.aib.json"
    broken.write_text('{"type": "Microsoft.VirtualMachineImages/imageTemplates", "properties": {}}')
    result = cli(*entry, str(broken))
    assert result.code == 2 and f"{broken}:1:" in result.stderr
