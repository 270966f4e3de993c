"""Guarantee 6b: hostile values get clear errors with their JSON paths and exit 2: local
files outside the template's folder (unless --allow-outside-template-dir), `..` in File
destinations, NUL characters, absurd sizes, nesting bombs, oversized files."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from engine.errors import TemplateError
from engine.template.loading import load_templates
from tests.support import managed_image_id, template


def shell(**fields: Any) -> dict[str, Any]:
    return {"type": "Shell", "name": "s", **fields}


@pytest.mark.parametrize(
    ("step", "path"),
    [
        (shell(scriptUri="../outside.sh"), "properties.customize[0].scriptUri"),
        (shell(scriptUri="sub/../../outside.sh"), "properties.customize[0].scriptUri"),
        (shell(scriptUri="/etc/passwd"), "properties.customize[0].scriptUri"),
        (shell(scriptUri="file:///etc/passwd"), "properties.customize[0].scriptUri"),
        (shell(scriptUri="link/outside.sh"), "properties.customize[0].scriptUri"),  # a symlink out
        ({"type": "File", "sourceUri": "../outside.sh", "destination": "/tmp/x"}, "properties.customize[0].sourceUri"),
    ],
)
def test_local_files_outside_the_template_folder_are_refused(
    step: dict[str, Any], path: str, cli: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (tmp_path / "outside.sh").write_text("echo outside\n")
    (folder / "link").symlink_to(tmp_path)
    document = folder / "template.json"
    document.write_text(json.dumps(template("hostile", [step])))

    refused = cli("validate", str(document))
    assert refused.code == 2, refused.output
    assert f"error: {path}: " in refused.output
    assert "is outside the template's folder" in refused.output
    assert "--allow-outside-template-dir" in refused.output
    allowed = cli("validate", str(document), "--allow-outside-template-dir")
    assert "outside the template's folder" not in allowed.output


def test_files_inside_the_template_folder_are_fine(cli: Any, tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "a.sh").write_text("echo a\n")
    steps = [shell(scriptUri="scripts/a.sh"), shell(name="t", scriptUri=(tmp_path / "scripts/a.sh").as_uri())]
    document = tmp_path / "template.json"
    document.write_text(json.dumps(template("fine", steps)))
    assert cli("validate", str(document)).code == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"customize": [{"type": "File", "sourceUri": "a", "destination": "/tmp/../etc/passwd"}]},
            "properties.customize[0].destination: on Linux AIB can only write under /tmp",
        ),
        ({"customize": [shell(inline=["echo a\x00b"])]}, "properties.customize[0].inline[0]: contains a NUL"),
        ({"vmProfile": {"osDiskSizeGB": 10**30}}, "properties.vmProfile.osDiskSizeGB: must be at most 4095"),
        ({"buildTimeoutInMinutes": 10**20}, "properties.buildTimeoutInMinutes: must be at most 960"),
        ({"vmProfile": {"vmSize": -1}}, "properties.vmProfile.vmSize: expected a string"),
        ({"customize": [shell(inline=[{"x": 1}])]}, "properties.customize[0].inline[0]: expected a string"),
        (
            {"customize": [{"type": "PowerShell", "inline": ["a"], "validExitCodes": [2**80]}]},
            "properties.customize[0].validExitCodes[0]: must be at most 4294967295",
        ),
    ],
)
def test_hostile_values_get_their_json_path_and_exit_2(
    change: dict[str, Any], message: str, cli: Any, tmp_path: Path
) -> None:
    document = template("hostile", [shell(inline=["true"])])
    document["properties"].update(change)
    path = tmp_path / "template.json"
    path.write_text(json.dumps(document))
    result = cli("validate", str(path))
    assert result.code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and "internal error" not in result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
        ('{"properties": ' * 100 + "{}" + "}" * 100, "nested more than 64 levels deep"),
        ('{"a": "' + "x" * (5 << 20) + '"}', "over the 4 MiB Azure Resource Manager accepts"),
        ("\x00\x01\x02", "not valid JSON"),
        ('{"a": 1e999999}', "error"),
    ],
    ids=["bracket-bomb", "deep-properties", "over-4-mib", "binary", "huge-number"],
)
def test_bombs_and_garbage_are_refused_quickly(text: str, message: str, cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "template.json"
    path.write_text(text)
    started = time.monotonic()
    result = cli("validate", str(path))
    assert time.monotonic() - started < 10
    assert result.code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and "internal error" not in result.output


def test_a_huge_inline_array_within_the_size_limit_is_handled(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template("huge", [shell(inline=["echo line"] * 200_000)])))
    started = time.monotonic()
    result = cli("validate", str(path))
    assert time.monotonic() - started < 15
    assert result.code == 0, result.output


def test_a_customizer_type_that_is_not_a_string_is_a_finding(tmp_path: Path) -> None:
    customize = [{"type": ["Shell"], "inline": ["true"]}, {"type": {"a": 1}}]
    document = template("odd", customize, source={"type": "ManagedImage", "imageId": managed_image_id("base")})
    path = tmp_path / "t.json"
    path.write_text(json.dumps(document))
    with pytest.raises(TemplateError) as caught:
        load_templates(path)
    assert {f.path for f in caught.value.findings} >= {"properties.customize[0].type", "properties.customize[1].type"}


def test_a_file_over_the_size_limit_is_refused_without_being_read_for_locations(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 4 MiB refusal is one finding at 1:1: the locator never scans the refused file."""
    import engine.template.locations

    def scanned(_text: str) -> Any:
        raise AssertionError("the refused file was scanned for locations")

    monkeypatch.setattr(engine.template.locations, "locate", scanned)
    path = tmp_path / "template.json"
    path.write_text('{"a": "' + "x" * (5 << 20) + '"}')
    result = cli("validate", str(path), "--output", "sarif")
    assert result.code == 2, result.output
    assert "over the 4 MiB" in result.output
