"""The GitHub Action and the pre-commit hook call aib-local as it is: their commands and
options exist, and the hook's file pattern picks image templates and not other JSON."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from tests.support import ROOT

# A template AIB takes as it is (the fixtures' quickstart reads local files: --strict refuses it).
CLEAN = ROOT / "tests" / "corpus" / "realistic" / "two-templates.json"


def test_the_action_is_a_composite_whose_commands_the_cli_takes(cli: Any, tmp_path: Path) -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    assert {"templates", "build", "args", "strict"} <= set(action["inputs"])
    scripts = "\n".join(step.get("run", "") for step in action["runs"]["steps"])
    for script in ("fixtures/ensure-docker.sh", "fixtures/images/build-image.sh"):
        assert script in scripts and (ROOT / script).exists()
    commands = [line.strip() for line in scripts.splitlines() if line.strip().startswith("aib-local ")]
    assert [c.split()[1] for c in commands] == ["validate", "build"]
    for command in commands:
        options = set(re.findall(r"(--[a-z-]+)", command))
        help_text = cli(command.split()[1], "--help").stdout
        assert all(option in help_text for option in options), command
    # The validation step, with the workflow's expressions given values.
    line = commands[0].replace("$strict", "--strict")
    line = line.replace('"${{ steps.paths.outputs.out }}', f'"{tmp_path}').replace(
        "${{ inputs.templates }}", str(CLEAN)
    )
    result = cli(*shlex.split(line)[1:])
    assert result.code == 0, result.output
    assert (tmp_path / "validate.xml").exists()


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
