"""Findings that point at the line: JSON paths located in the file as written (comments,
ARM deployments), `file:line:column:` in text output, and SARIF 2.1.0 for code scanning."""

from __future__ import annotations

import json
import os
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from engine.template.locations import locate, position
from engine.template.sarif import RULES, describe_rule, rule_id
from tests.support import ROOT, unavailable

JSONC = """{
  // a comment with "quotes" and [brackets]
  "type": "Microsoft.VirtualMachineImages/imageTemplates",
  /* a block
     comment */ "properties": {
    "tags": {"a b": "x\\"y", "k": [1, {"deep": true}]},
    "customize": [
      {"type": "Shell", "inline": ["echo [1]", "echo {2}"]},
      {"type": "Shel"}
    ]
  }
}
"""


def test_paths_are_located_at_their_key_or_item() -> None:
    found = locate(JSONC)
    assert found["type"] == (3, 3)
    assert found["properties"] == (5, 17)
    assert found['properties.tags["a b"]'] == (6, 14)
    assert found["properties.tags.k[1].deep"] == (6, 39)
    assert found["properties.customize[0].inline[1]"] == (8, 48)
    assert found["properties.customize[1].type"] == (9, 8)
    # A path that is not written is placed at its nearest ancestor.
    assert position(found, "properties.distribute") == (5, 17)
    assert position(found, "properties.customize[1].inline") == (9, 7)


def test_every_kind_of_finding_has_a_stable_rule_id_with_a_description() -> None:
    """Ids are given where findings are made (not derived from their text, so rewording a
    message keeps its rule); each has a description for code scanning."""
    root = Path(__file__).resolve().parents[3]
    used: set[str] = set()
    for folder in ("engine", "customizers", "distributors"):
        for source in (root / folder).rglob("*.py"):
            used |= set(re.findall(r'rule="(aib/[a-z-]+)"', source.read_text()))
    assert len(used) > 50
    assert used <= set(RULES), sorted(used - set(RULES))
    assert set(RULES) - used <= {"aib/not-local"}  # made by Check.not_local, by name
    assert describe_rule("aib/value-missing").startswith("A value of the wrong type")
    assert rule_id({"message": "anything", "rule": "aib/field-unknown"}) == "aib/field-unknown"


def write_invalid(tmp_path: Path) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(JSONC.replace('"type": "Microsoft', '"apiVersion": "2024-02-01",\n  "type": "Microsoft'))
    return path


def test_text_output_says_file_line_and_column(cli: Any, tmp_path: Path) -> None:
    path = write_invalid(tmp_path)
    result = cli("validate", str(path))
    assert result.code == 2
    assert f"{path}:10:8: error: properties.customize[1].type: unknown type 'Shel'" in result.stderr
    assert f"{path}:6:17: error: properties.source: required field is missing" in result.stderr


def test_sarif_output_has_rules_levels_and_regions(cli: Any, tmp_path: Path) -> None:
    path = write_invalid(tmp_path)
    result = cli("validate", str(path), "--output", "sarif")
    assert result.code == 2
    log = json.loads(result.stdout)
    assert log["version"] == "2.1.0" and log["$schema"].endswith("sarif-2.1.0.json")
    (run,) = log["runs"]
    rules = {rule["id"] for rule in run["tool"]["driver"]["rules"]}
    by_path = {r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"]: r for r in run["results"]}
    shel = by_path["properties.customize[1].type"]
    assert shel["level"] == "error" and shel["ruleId"] in rules
    region = shel["locations"][0]["physicalLocation"]["region"]
    assert (region["startLine"], region["startColumn"]) == (10, 8)
    # Outside the repository the tests run in: an absolute file URI (inside: see below).
    assert shel["locations"][0]["physicalLocation"]["artifactLocation"] == {"uri": path.resolve().as_uri()}
    assert by_path["properties.source"]["ruleId"] == "aib/value-missing"


MULTITOOL_PREFIX = "/opt/sarif-multitool"  # where .ci/run installs it (npm install --prefix)
MULTITOOL = Path(
    os.environ.get(
        "AIB_LOCAL_SARIF_MULTITOOL", f"{MULTITOOL_PREFIX}/node_modules/@microsoft/sarif-multitool-linux/Sarif.Multitool"
    )
)


def sarif_of_repository(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], Path]:
    """`validate --output sarif` of an invalid template inside a repository, run from it."""
    (tmp_path / ".git").mkdir()
    (tmp_path / "images").mkdir()
    path = write_invalid(tmp_path / "images")
    monkeypatch.chdir(tmp_path / "images")
    result = cli("validate", str(path), "--output", "sarif")
    assert result.code == 2
    return json.loads(result.stdout), tmp_path


def test_sarif_passes_its_schema_names_files_from_the_repository_and_says_its_version(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, root = sarif_of_repository(cli, tmp_path, monkeypatch)
    schema = json.loads((ROOT / "fixtures" / "schemas" / "sarif-2.1.0.json").read_text())
    jsonschema.validate(log, schema)
    (run,) = log["runs"]
    assert run["originalUriBaseIds"] == {"SRCROOT": {"uri": root.resolve().as_uri() + "/"}}
    location = run["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert location == {"uri": "images/bad.json", "uriBaseId": "SRCROOT"}
    driver = run["tool"]["driver"]
    assert driver["version"] == metadata.version("aib-local")
    for rule in driver["rules"]:
        assert rule["fullDescription"]["text"] and rule["help"]["text"] and rule["helpUri"]


def test_sarif_passes_githubs_own_rules_in_the_sarif_multitool(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not MULTITOOL.is_file():
        install = f"npm install --prefix {MULTITOOL_PREFIX} @microsoft/sarif-multitool-linux"
        unavailable(f"no SARIF Multitool at {MULTITOOL}: {install}")
    log, root = sarif_of_repository(cli, tmp_path, monkeypatch)
    written = root / "findings.sarif"
    written.write_text(json.dumps(log))
    checked = subprocess.run(
        [str(MULTITOOL), "validate", "--rule-kind", "Gh;Sarif", str(written)],
        env={**os.environ, "DOTNET_SYSTEM_GLOBALIZATION_INVARIANT": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0 and " error " not in checked.stdout, checked.stdout + checked.stderr
    assert "1 files scanned" in checked.stdout
