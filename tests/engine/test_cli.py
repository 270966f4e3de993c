"""The command line contract: exit codes, messages, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support import ROOT, template

CORPUS = ROOT / "tests" / "corpus" / "invalid"


def test_validate_the_quickstart(cli: Any) -> None:
    result = cli("validate", str(ROOT / "fixtures/templates/quickstart.json"))
    assert result.code == 0, result.output
    assert "quickstart is valid (apiVersion 2024-02-01)" in result.stdout


def test_validate_reports_every_error_with_its_path_and_exit_2(cli: Any, tmp_path: Path) -> None:
    data = json.loads((CORPUS / "valid-exit-codes-string.json").read_text())["template"]
    data["properties"]["distribute"][0]["runOutputName"] = "bad name"
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    result = cli("validate", str(path))
    assert result.code == 2
    assert "properties.customize[0].validExitCodes: expected a list of integers, got a string" in result.stderr
    assert "properties.distribute[0].runOutputName: must be 1-64 letters" in result.stderr
    assert "2 error(s)" in result.stderr
    assert "Traceback" not in result.output


def test_validate_json_output(cli: Any, write_template: Any) -> None:
    path = write_template(template("t", [{"type": "Shell", "inline": ["x"]}], buildTimeoutInMinutes=2))
    result = cli("validate", "--output", "json", str(path))
    assert result.code == 0
    report = json.loads(result.stdout)
    assert report["valid"] is True
    by_path = {f["path"]: f for f in report["templates"][0]["findings"]}
    timeout = by_path["properties.buildTimeoutInMinutes"]
    assert timeout["severity"] == "warning" and timeout["aib_rejects"] is True
    assert by_path["properties.distribute"]["severity"] == "warning"


def test_missing_file_is_exit_2(cli: Any) -> None:
    result = cli("validate", "/nonexistent/template.json")
    assert result.code == 2
    assert "no such file" in result.stderr


def test_unknown_option_is_exit_2(cli: Any) -> None:
    result = cli("build", "--no-such-option", "t.json")
    assert result.code == 2
    assert "No such option" in result.stderr
    assert "Traceback" not in result.output


def test_invalid_template_builds_nothing_exit_2(cli: Any, write_template: Any) -> None:
    data = json.loads((CORPUS / "iso-source.json").read_text())["template"]
    result = cli("build", str(write_template(data)))
    assert result.code == 2
    assert "properties.source.type: the ISO source was removed" in result.stderr


def test_build_strict_refuses_what_aib_would_refuse_before_anything_starts(
    cli: Any, write_template: Any, store: Path
) -> None:
    path = write_template(template("short", [{"type": "Shell", "inline": ["true"]}], buildTimeoutInMinutes=3))
    result = cli("build", str(path), "--strict")
    assert result.code == 2
    assert "properties.buildTimeoutInMinutes: 3 is accepted locally, but AIB needs at least 6" in result.stderr
    assert not (store / "builds").exists()


def test_show_unknown_resource(cli: Any) -> None:
    result = cli("show", "/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/images/none")
    assert result.code == 2 and "not found in the local store" in result.stderr


def test_help(cli: Any) -> None:
    result = cli("--help")
    assert result.code == 0
    for command in ("validate", "build", "show", "list", "logs", "clean"):
        assert command in result.stdout


def test_boot_test_needs_a_vm_target(cli: Any) -> None:
    result = cli("build", "--boot-test", "t.json")
    assert result.code == 2
    assert "--boot-test boots a disk: it needs --target vm" in result.stderr


def test_boot_refuses_what_is_not_a_disk(cli: Any, tmp_path: Any) -> None:
    missing = cli("boot", str(tmp_path / "nothing.vhd"))
    assert missing.code == 2 and "no disk file at" in missing.stderr
    unknown = cli("boot", "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/images/none")
    assert unknown.code == 2 and "is not in the local store" in unknown.stderr
    assert "Traceback" not in missing.output + unknown.output


def test_boot_validate_needs_one_template_with_validators(cli: Any, tmp_path: Any) -> None:
    disk = tmp_path / "disk.vhd"
    disk.write_bytes(b"")
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(template("bare", [{"type": "Shell", "inline": ["true"]}])))
    none = cli("boot", str(disk), "--validate", str(bare))
    assert none.code == 2 and "has no validators (properties.validate.inVMValidations)" in none.stderr
    both = cli("boot", str(disk), "--validate", str(bare), "--expect", "login:")
    assert both.code == 2 and "without --expect" in both.stderr
    assert "Traceback" not in none.output + both.output
