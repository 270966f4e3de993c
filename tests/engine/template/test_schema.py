"""The JSON Schema that `aib-local schema` gives editors: it accepts real templates and
catches the invalid corpus's structural errors, checked with a JSON Schema validator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from engine.template import model
from engine.template.arm import strip_comments
from engine.template.schema import template_schema
from tests.support import ROOT

INVALID = ROOT / "tests" / "corpus" / "invalid"
REALISTIC = ROOT / "tests" / "corpus" / "realistic"
# The corpus's errors of structure (types, required fields, enums, ranges, unknown fields
# and types); the others are rules across fields or against Azure that a schema cannot say.
STRUCTURAL = [
    "artifact-tags-not-strings",
    "artifact-tags-typo-strict",
    "customize-not-list",
    "customizer-missing-type",
    "error-handling-bad-value",
    "file-missing-destination",
    "file-missing-source",
    "lowercase-type",
    "managed-image-missing-location",
    "managed-image-source-no-id",
    "miscased-field-strict",
    "missing-distribute",
    "missing-source",
    "os-disk-negative",
    "plan-info-incomplete",
    "platform-image-missing-sku",
    "run-elevated-not-bool",
    "run-output-name-missing",
    "run-output-name-pattern",
    "shared-image-bad-storage-type",
    "shared-image-replica-count-zero",
    "shell-inline-not-list",
    "shell-inline-number",
    "source-not-object",
    "timeout-negative",
    "timeout-string",
    "timeout-too-long",
    "too-new-field-strict",
    "unknown-customizer-type",
    "unknown-distribute-type",
    "unknown-field-strict",
    "update-filters-not-list",
    "update-limit-negative",
    "valid-exit-codes-item-string",
    "valid-exit-codes-on-shell",
    "valid-exit-codes-string",
    "wrong-resource-type",
]


def errors(template: Any) -> list[str]:
    version = template.get("apiVersion") if isinstance(template, dict) else None
    schema = template_schema(version if version in model.API_VERSIONS else model.LATEST_API_VERSION)
    return [error.message for error in jsonschema.Draft202012Validator(schema).iter_errors(template)]


@pytest.mark.parametrize("version", model.API_VERSIONS)
def test_each_api_version_s_schema_is_a_valid_json_schema(version: str) -> None:
    jsonschema.Draft202012Validator.check_schema(template_schema(version))


def plain_templates() -> list[Path]:
    """The fixture and corpus templates that are imageTemplates resources with every value given."""
    found = [ROOT / "fixtures" / "templates" / "quickstart.json"]
    for case in sorted(REALISTIC.glob("*.expect.json")):
        expect = json.loads(case.read_text())
        path = case.with_name(case.name.replace(".expect.json", ".json"))
        data = json.loads(strip_comments(path.read_text()))
        if expect["valid"] and not expect.get("args") and "properties" in data and "resources" not in data:
            found.append(path)
    return found


@pytest.mark.parametrize("path", plain_templates(), ids=lambda p: p.stem)
def test_real_templates_are_valid_under_the_schema(path: Path) -> None:
    assert errors(json.loads(strip_comments(path.read_text()))) == []


@pytest.mark.parametrize("name", STRUCTURAL)
def test_structural_errors_of_the_invalid_corpus_are_caught(name: str) -> None:
    assert errors(json.loads((INVALID / f"{name}.json").read_text())["template"])


def test_a_field_newer_than_the_api_version_is_left_out() -> None:
    old = template_schema("2020-02-14")["$defs"]["Properties"]["properties"]
    new = template_schema("2024-02-01")["$defs"]["Properties"]["properties"]
    assert "validate" not in old and "validate" in new
    assert template_schema("2020-02-14")["$defs"]["Properties"].get("additionalProperties") is not False
    assert template_schema("2024-02-01")["$defs"]["Properties"]["additionalProperties"] is False


def test_the_cli_writes_the_schema(cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "aib.schema.json"
    result = cli("schema", "--api-version", "2022-07-01", "-o", str(out))
    assert result.code == 0, result.output
    assert json.loads(out.read_text())["title"].endswith("2022-07-01)")
    refused = cli("schema", "--api-version", "1999-01-01")
    assert refused.code == 2 and "unknown" in refused.stderr
