"""Guarantee 6b: no ARM expression, whatever functions and arguments it combines, ends in
anything but a value or a finding (ExpressionError), and none makes `validate` work or
allocate without bound. Derandomized; AIB_LOCAL_FUZZ_EXAMPLES raises the count."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.template import arm_functions
from engine.template.arm import Context, ExpressionError, evaluate
from tests.support import template

EXAMPLES = int(os.environ.get("AIB_LOCAL_FUZZ_EXAMPLES", "750"))
FUZZ = settings(
    max_examples=EXAMPLES * 2,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Every function: arm_functions' own and the ones the evaluator answers itself.
NAMES = [
    *sorted(arm_functions.FUNCTIONS),
    "if",
    "parameters",
    "variables",
    "resourceGroup",
    "subscription",
    "deployment",
    "resourceId",
    "utcNow",
    "newGuid",
    "reference",
]
# Arguments of every kind: numbers at the edges, strings (empty, text, JSON, URIs,
# base64, format strings), booleans, null, arrays, objects.
LITERALS = st.sampled_from(
    [
        "0",
        "1",
        "-1",
        "3",
        "10001",
        "2147483647",
        "-9223372036854775808",
        "9223372036854775807",
        "''",
        "'a'",
        "'abc'",
        "'{0} {1:D5} {0,5} }'",
        "'{'",
        "'[1,2]'",
        "'{\"a\":1}'",
        "'https://example.com/x/'",
        "'aGVsbG8='",
        "'data:,x'",
        "'yyyy-MM-dd'",
        "'2024-01-01T00:00:00Z'",
        "true()",
        "false()",
        "null()",
        "createArray()",
        "createArray(1, 'x', createArray(2))",
        "createObject()",
        "createObject('a', 1, 'b', createArray(1))",
        'json(\'{"k": [1, {"z": null}]}\')',
        "range(0, 3)",
        "parameters('p')",
        "variables('v')",
    ]
)


def _call(args: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda name, values, prop: f"{name}({', '.join(values)}){prop}",
        st.sampled_from(NAMES),
        st.lists(args, max_size=4),
        st.sampled_from(["", "", "", ".a", "[0]", "['k']", ".length"]),
    )


EXPRESSIONS = st.recursive(LITERALS, _call, max_leaves=12)


def context(in_defaults: bool) -> Context:
    return Context(
        "00000000-0000-0000-0000-000000000000",
        "rg",
        "westeurope",
        parameters={"p": {"a": [1, 2]}},
        variables={"v": "text"},
        in_defaults=in_defaults,
    )


@FUZZ
@given(EXPRESSIONS, st.booleans())
def test_any_expression_ends_in_a_value_or_a_finding(expression: str, in_defaults: bool) -> None:
    with contextlib.suppress(ExpressionError):  # a finding, with the path of the field that holds it
        evaluate(expression, context(in_defaults))


@pytest.mark.parametrize(
    "expression",
    [
        "take(createObject('a', 1), 1)",
        "skip(createObject('a', 1), 1)",
        "first(createObject('a', 1))",
        "last(createObject('k', 'v'))",
        "range(0, 10001)",
        "range(2147483647, 1)",
        "padLeft('a', 300000000, 'x')",
    ],
)
def test_arm_refuses_what_arm_refuses(expression: str) -> None:
    with pytest.raises(ExpressionError):
        evaluate(expression, context(False))


def test_arm_takes_its_own_limits() -> None:
    assert len(evaluate("range(0, 10000)", context(False))) == 10000
    assert evaluate("take('abcdef', 2)", context(False)) == "ab"
    assert evaluate("last(createArray(1, 2))", context(False)) == 2


def _limited_validate(path: Path) -> subprocess.CompletedProcess[str]:
    """`aib-local validate` with its address space capped at 1 GiB."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    return subprocess.run(
        [sys.executable, "-m", "engine", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=cap,
        check=False,
    )


@pytest.mark.parametrize(
    "name",
    [
        "[string(length(range(0, 100000000)))]",
        "[string(length(range(0, 1000000000)))]",
        "[padLeft('a', 300000000, 'x')]",
        "[take(createObject('a',1),1)]",
        "[last(createObject('k','v'))]",
    ],
)
def test_hostile_expressions_are_findings_within_bounded_memory(name: str, tmp_path: Path) -> None:
    document = template("x", [], distribute=[{"type": "VHD", "runOutputName": "v"}])
    document["name"] = name
    path = tmp_path / "t.json"
    path.write_text(json.dumps(document))
    done = _limited_validate(path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "name" in done.stdout + done.stderr
    assert "internal error" not in done.stdout + done.stderr
