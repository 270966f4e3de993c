"""Guarantee 6a: whatever the template file holds, loading it ends in a valid template or
in findings with JSON paths (exit 2), never in an exception. Thousands of generated and
mutated templates, derandomized so that a run is reproducible; AIB_LOCAL_FUZZ_EXAMPLES
raises the count."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.cli import main
from engine.errors import TemplateError, UsageError
from engine.template.loading import LoadOptions, load_templates
from tests.support import ROOT

EXAMPLES = int(os.environ.get("AIB_LOCAL_FUZZ_EXAMPLES", "750"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SEEDS = [
    json.loads(path.read_text())
    for path in [
        ROOT / "fixtures/templates/quickstart.json",
        *sorted((ROOT / "tests/corpus/realistic").glob("*.json")),
    ]
    if not path.name.endswith(".expect.json") and "//" not in path.read_text()
]
FIELD_NAMES = [
    "type",
    "apiVersion",
    "name",
    "location",
    "properties",
    "source",
    "customize",
    "distribute",
    "inline",
    "scriptUri",
    "sourceUri",
    "destination",
    "sha256Checksum",
    "validExitCodes",
    "runElevated",
    "runAsSystem",
    "imageId",
    "galleryImageId",
    "runOutputName",
    "vmProfile",
    "vmSize",
    "osDiskSizeGB",
    "buildTimeoutInMinutes",
    "publisher",
    "offer",
    "sku",
    "version",
    "targetRegions",
    "replicationRegions",
    "restartTimeout",
    "uri",
    "resources",
    "parameters",
    "variables",
    "defaultValue",
    "identity",
    "errorHandling",
    "versioning",
]
ARM_STRINGS = st.sampled_from(
    [
        "[",
        "[]",
        "[[escaped]",
        "[concat('a', 'b')]",
        "[parameters('missing')]",
        "[variables('v')]",
        "[concat(",
        "[resourceGroup().location]",
        "[reference('x').y]",
        "[if(true(), 1, 'a')]",
        "[format('{0}', parameters('p'))]",
        "[concat(parameters('p'), variables('v'))]",
        "[length(42)]",
        "[uniqueString()]",
        "[subscription().subscriptionId]",
        "<placeholder>",
        "<imageResourceGroup>",
        "[split('a,b', ',')[5]]",
        "[json('{')]",
        "[int('x')]",
        "[add(1)]",
        "[toLower(1)]",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | ARM_STRINGS
    | st.sampled_from(
        [
            "Shell",
            "File",
            "PowerShell",
            "WindowsRestart",
            "WindowsUpdate",
            "PlatformImage",
            "ManagedImage",
            "SharedImage",
            "VHD",
            "SharedImageVersion",
            "/tmp/x",
            "../../etc/passwd",
            "file:///etc/shadow",
            "a\x00b",
            "5m",
            "2024-02-01",
            "1.0.0",
            "x" * 300,
        ]
    )
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def check(document: Any) -> None:
    """Load `document` from a file: a template or findings with paths, nothing else."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "template.json"
        path.write_text(json.dumps(document))
        try:
            load_templates(path, options=LoadOptions())
        except TemplateError as exc:
            assert exc.exit_code == 2
            assert exc.findings
            assert any(f.severity == "error" for f in exc.findings)
            for finding in exc.findings:
                assert isinstance(finding.path, str) and finding.message
                assert resolves(document, finding.path), (finding.path, finding.message)
        except UsageError as exc:
            assert exc.exit_code == 2


def resolves(document: Any, path: str) -> bool:
    """Whether a finding's path names something in the document, or a field absent from it."""
    if not path:
        return True
    segments = re.findall(r'\.?([A-Za-z_$@][A-Za-z0-9_$@-]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]', path)
    if "".join(_unparse(s) for s in segments).lstrip(".") != path:
        return False  # not a well-formed path
    node = document
    for index, (word, number, quoted) in enumerate(segments):
        last = index == len(segments) - 1
        if number:
            if not isinstance(node, list) or int(number) >= len(node):
                return False
            node = node[int(number)]
            continue
        key = word or json.loads(quoted)
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif index == 0 and isinstance(node, dict) and isinstance(node.get("properties"), dict):
            node = node["properties"].get(key)  # a bare template's paths start below properties
        else:
            # An absent field, or a path through a value of the wrong type; else a wrong path.
            return last or not isinstance(node, (dict, list))
    return True


def _unparse(segment: tuple[str, str, str]) -> str:
    word, number, quoted = segment
    return f".{word}" if word else f"[{number}]" if number else f"[{quoted}]"


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    """A realistic template with a few things changed at random places."""
    document = json.loads(json.dumps(draw(st.sampled_from(SEEDS))))
    for _ in range(draw(st.integers(1, 4))):
        containers = list(_containers(document))
        if not containers:
            break
        parent, key = draw(st.sampled_from(containers))
        action = draw(st.sampled_from(["replace", "delete", "wrap", "add", "stringify", "duplicate"]))
        if isinstance(parent, dict) and isinstance(key, str):
            if action == "delete":
                del parent[key]
            elif action == "add":
                parent[draw(st.sampled_from(FIELD_NAMES))] = draw(VALUES)
            elif action == "wrap":
                parent[key] = [parent[key]]
            elif action == "stringify":
                parent[key] = json.dumps(parent[key])
            else:
                parent[key] = draw(VALUES)
        elif isinstance(parent, list) and isinstance(key, int):
            if action == "delete":
                del parent[key]
            elif action == "duplicate":
                parent.insert(key, json.loads(json.dumps(parent[key])))
            else:
                parent[key] = draw(VALUES)
    return document


def _containers(node: Any) -> Any:
    if isinstance(node, dict):
        for key, value in node.items():
            yield node, key
            yield from _containers(value)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield node, index
            yield from _containers(value)


@FUZZ
@given(VALUES)
def test_any_json_value_loads_or_gives_findings(document: Any) -> None:
    check(document)


@FUZZ
@given(mutated())
def test_mutated_real_templates_load_or_give_findings_with_paths(document: Any) -> None:
    check(document)


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_load_or_give_findings(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "template.json"
        path.write_bytes(data)
        try:
            load_templates(path, options=LoadOptions())
        except UsageError as exc:
            assert exc.exit_code == 2


@settings(max_examples=max(50, EXAMPLES // 10), deadline=None, derandomize=True)
@given(mutated())
def test_the_cli_exits_0_or_2_and_never_shows_a_traceback(document: Any) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "template.json"
        path.write_text(json.dumps(document))
        with pytest.raises(SystemExit) as ended:
            main(["validate", str(path)])
        assert ended.value.code in (0, 2)
