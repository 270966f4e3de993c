"""ARM template functions evaluated locally, against the values ARM's documentation gives."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.template import arm

DOCUMENTED: list[tuple[str, Any]] = [
    # string functions
    ("base64('one, two, three')", "b25lLCB0d28sIHRocmVl"),
    ("base64ToString('b25lLCB0d28sIHRocmVl')", "one, two, three"),
    ("base64ToJson('eyJvbmUiOiAiYSIsICJ0d28iOiAiYiJ9')", {"one": "a", "two": "b"}),
    ("dataUri('Hello')", "data:text/plain;charset=utf8;base64,SGVsbG8="),
    ("dataUriToString('data:;base64,SGVsbG8sIFdvcmxkIQ==')", "Hello, World!"),
    ("endsWith('abcdef', 'ef')", True),
    ("endsWith('abcdef', 'F')", True),
    ("startsWith('abcdef', 'AB')", True),
    ("startsWith('abcdef', 'e')", False),
    ("first('One Two Three')", "O"),
    ("first(createArray('one', 'two', 'three'))", "one"),
    ("last('One Two Three')", "e"),
    (
        "format('{0}, {1}. Formatted number: {2:N0}', 'Hello', 'User', 8175133)",
        "Hello, User. Formatted number: 8,175,133",
    ),
    ("indexOf('test', 't')", 0),
    ("indexOf('abcdef', 'CD')", 2),
    ("lastIndexOf('test', 't')", 3),
    ("indexOf('abcdef', 'z')", -1),
    ("join(createArray('one', 'two', 'three'), ',')", "one,two,three"),
    ("length('One Two Three')", 13),
    ("length(createArray('a', 'b', 'c'))", 3),
    ("length(createObject('a', 1, 'b', 2))", 2),
    ("padLeft('123', 10, '0')", "0000000123"),
    ("replace('123-123-1234', '-', '')", "1231231234"),
    ("skip('one two three', 4)", "two three"),
    ("skip(createArray('one', 'two', 'three'), 2)", ["three"]),
    ("take('one two three', 2)", "on"),
    ("take(createArray('one', 'two', 'three'), 2)", ["one", "two"]),
    ("split('one,two,three', ',')", ["one", "two", "three"]),
    ("split('one;two,three', createArray(',', ';'))", ["one", "two", "three"]),
    ("substring('one two three', 4, 3)", "two"),
    ("substring('one two three', 4)", "two three"),
    ("toLower('One Two Three')", "one two three"),
    ("toUpper('One Two Three')", "ONE TWO THREE"),
    ("trim('    one two three   ')", "one two three"),
    (
        "uri('http://contoso.com/resources/', 'nested/azuredeploy.json')",
        "http://contoso.com/resources/nested/azuredeploy.json",
    ),
    (
        "uri('http://contoso.com/resources/azuredeploy.json', 'nested/azuredeploy.json')",
        "http://contoso.com/resources/nested/azuredeploy.json",
    ),
    (
        "uriComponent('http://contoso.com/resources/nested/azuredeploy.json')",
        "http%3A%2F%2Fcontoso.com%2Fresources%2Fnested%2Fazuredeploy.json",
    ),
    (
        "uriComponentToString('http%3A%2F%2Fcontoso.com%2Fresources%2Fnested%2Fazuredeploy.json')",
        "http://contoso.com/resources/nested/azuredeploy.json",
    ),
    ("string(true)", "True"),
    ("string(true())", "True"),
    ("string(createObject('valueA', 10, 'valueB', 'Example Text'))", '{"valueA":10,"valueB":"Example Text"}'),
    ("string(createArray('a', 'b', 'c'))", '["a","b","c"]'),
    ("string(5)", "5"),
    ("concat('prefix', '-', 5)", "prefix-5"),
    ("concat(createArray('1-1', '1-2'), createArray('2-1'))", ["1-1", "1-2", "2-1"]),
    ("contains('OneTwoThree', 'e')", True),
    ("contains('OneTwoThree', 'z')", False),
    ("contains('OneTwoThree', 'one')", False),  # strings: case-sensitive
    ("contains(createObject('one', 'a', 'two', 'b'), 'ONE')", True),  # object keys: not
    ("contains(createArray('one', 'two', 'three'), 'two')", True),
    ("empty('')", True),
    ("empty(createArray())", True),
    ("empty(createObject())", True),
    ("empty('a')", False),
    ("json('{\"a\": [1, 2]}').a[1]", 2),
    ("json('null')", None),
    # arrays and objects
    ("union(createArray('one', 'two', 'three'), createArray('three', 'four'))", ["one", "two", "three", "four"]),
    (
        "union(createObject('one', 'a', 'two', 'b', 'three', 'c'), createObject('three', 'd', 'four', 'e'))",
        {"one": "a", "two": "b", "three": "d", "four": "e"},
    ),
    (
        'union(json(\'{"n": {"a": 1, "b": 2}}\'), json(\'{"n": {"b": 3, "c": 4}}\'))',
        {"n": {"a": 1, "b": 3, "c": 4}},
    ),
    ("intersection(createArray('one', 'two', 'three'), createArray('two', 'three'))", ["two", "three"]),
    (
        "intersection(createObject('one', 'a', 'two', 'b', 'three', 'c'),"
        " createObject('one', 'a', 'two', 'z', 'three', 'c'))",
        {"one": "a", "three": "c"},
    ),
    ("createObject('intProp', 1, 'stringProp', 'abc')", {"intProp": 1, "stringProp": "abc"}),
    ("coalesce(null(), null(), 1)", 1),
    ("range(1, 3)", [1, 2, 3]),
    ("flatten(createArray(createArray('a', 'b'), createArray('c')))", ["a", "b", "c"]),
    (
        "items(createObject('item002', 'b', 'item001', 'a'))",
        [{"key": "item001", "value": "a"}, {"key": "item002", "value": "b"}],
    ),
    ("array('a')", ["a"]),
    # comparison and logic
    ("equals(1, 1)", True),
    ("equals('1', 1)", False),
    ("equals(createArray('a'), createArray('a'))", True),
    ("greater(10, 5)", True),
    ("greater('A', 'a')", False),
    ("greaterOrEquals(5, 5)", True),
    ("less('A', 'a')", True),
    ("lessOrEquals(6, 5)", False),
    ("and(true(), false())", False),
    ("or(true(), false())", True),
    ("not(true())", False),
    ("bool('true')", True),
    ("bool(0)", False),
    ("if(equals('a', 'a'), 'yes', 'no')", "yes"),
    # numbers
    ("add(5, 3)", 8),
    ("sub(7, 3)", 4),
    ("mul(5, 3)", 15),
    ("div(8, 3)", 2),
    ("div(-8, 3)", -2),
    ("mod(7, 3)", 1),
    ("mod(-7, 3)", -1),
    ("int('4')", 4),
    ("min(createArray(0, 3, 2, 5, 4))", 0),
    ("max(0, 3, 2, 5, 4)", 5),
    # as Bicep's uniqueString() gives them
    ("uniqueString('test')", "rbgf3xv4ufgzg"),
    ("uniqueString('hello', 'world')", "a7wkljktk6wne"),
    ("uniqueString('/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/my-rg')", "bmg7c6xu4tw46"),
    ("uniqueString('foo', 'bar', 'baz')", "xzi4ioaxtmth4"),
]


def context() -> arm.Context:
    return arm.Context("00000000-0000-0000-0000-000000000000", "my-rg", "westeurope")


@pytest.mark.parametrize(("expression", "expected"), DOCUMENTED, ids=[e for e, _ in DOCUMENTED])
def test_function_gives_the_documented_value(expression: str, expected: Any) -> None:
    assert arm.evaluate(expression, context()) == expected


def test_guid_is_arm_s_name_based_uuid() -> None:
    value = arm.evaluate("guid(resourceGroup().id, 'role')", context())
    # UUID version 5 over "<arg1>-<arg2>" in ARM's namespace, so the names match Azure's.
    namespace = uuid.UUID("11fb06fb-712d-4ddd-98c7-e71bbd588830")
    assert value == str(
        uuid.uuid5(namespace, "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/my-rg-role")
    )
    assert uuid.UUID(value).version == 5
    assert arm.evaluate("guid('a', 'b')", context()) != arm.evaluate("guid('b', 'a')", context())


def test_if_evaluates_only_the_branch_it_takes() -> None:
    ctx = context()
    assert arm.evaluate("if(true(), 'local', reference('storage').location)", ctx) == "local"
    with pytest.raises(arm.NotLocal, match="reference"):
        arm.evaluate("if(false(), 'local', reference('storage').location)", ctx)


def test_utcnow_is_one_value_per_run_and_only_in_parameter_defaults() -> None:
    ctx = context()
    ctx.now = datetime(2019, 3, 5, 17, 53, 18, 123456, tzinfo=UTC)
    ctx.in_defaults = True
    assert arm.evaluate("utcNow()", ctx) == "20190305T175318Z"
    assert arm.evaluate("utcNow('u')", ctx) == "2019-03-05 17:53:18Z"
    assert arm.evaluate("utcNow('d')", ctx) == "3/5/2019"
    assert arm.evaluate("utcNow('yyyy.MM.dd')", ctx) == "2019.03.05"
    assert arm.evaluate("utcNow('yyyyMMdd-HHmm')", ctx) == arm.evaluate("utcNow('yyyyMMdd-HHmm')", ctx)
    assert uuid.UUID(arm.evaluate("newGuid()", ctx)).version == 4
    ctx.in_defaults = False
    with pytest.raises(arm.ExpressionError, match="only in a parameter's defaultValue"):
        arm.evaluate("utcNow()", ctx)


def test_deployment_is_named_after_the_file_and_links_to_it(tmp_path: Path) -> None:
    path = tmp_path / "aib-deploy.json"
    ctx = arm.Context.for_file(path, "sub", "rg", "westeurope")
    assert arm.evaluate("deployment().name", ctx) == "aib-deploy"
    link = arm.evaluate("deployment().properties.templateLink.uri", ctx)
    assert link == path.as_uri()
    assert arm.evaluate("uri(deployment().properties.templateLink.uri, 'scripts/setup.sh')", ctx) == (
        (tmp_path / "scripts" / "setup.sh").as_uri()
    )


def test_resource_ids_at_each_scope() -> None:
    ctx = context()
    sub = "/subscriptions/00000000-0000-0000-0000-000000000000"
    assert arm.evaluate("subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'abc')", ctx) == (
        f"{sub}/providers/Microsoft.Authorization/roleDefinitions/abc"
    )
    assert arm.evaluate("tenantResourceId('Microsoft.Management/managementGroups', 'mg')", ctx) == (
        "/providers/Microsoft.Management/managementGroups/mg"
    )
    assert (
        arm.evaluate("extensionResourceId(resourceGroup().id, 'Microsoft.Authorization/locks', 'lock')", ctx)
        == f"{sub}/resourceGroups/my-rg/providers/Microsoft.Authorization/locks/lock"
    )
    assert arm.evaluate("environment().suffixes.storage", ctx) == "core.windows.net"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("substring('abc', 2, 5)", "runs past the string"),
        ("div(1, 0)", "division by zero"),
        ("toLower(1)", "expects a string"),
        ("frobnicate('x')", "not an ARM template function"),
        ("length(1)", "expects a string, an array or an object"),
        ("createObject('a')", "key, value pairs"),
        ("padLeft('1', 3, 'ab')", "one character"),
    ],
)
def test_wrong_arguments_are_errors_arm_would_give(expression: str, message: str) -> None:
    with pytest.raises(arm.ExpressionError, match=message) as caught:
        arm.evaluate(expression, context())
    assert not isinstance(caught.value, arm.NotLocal)


@pytest.mark.parametrize(
    "expression", ["reference('x').id", "listKeys('x', '2021-01-01').keys[0]", "tenant().tenantId"]
)
def test_functions_that_ask_azure_are_not_evaluated_locally(expression: str) -> None:
    with pytest.raises(arm.NotLocal, match="not evaluated locally"):
        arm.evaluate(expression, context())


# .NET composite formatting, as format() does it: the examples of .NET's documentation
# ("Standard numeric format strings", "Composite formatting").
DOTNET_FORMAT: list[tuple[str, Any, str]] = [
    ("{0:D}", 12345, "12345"),
    ("{0:D8}", 12345, "00012345"),
    ("{0:D}", -12345, "-12345"),
    ("{0:D8}", -12345, "-00012345"),
    ("{0:D5}", -42, "-00042"),
    ("{0:X}", 255, "FF"),
    ("{0:x}", 255, "ff"),
    ("{0:X4}", 255, "00FF"),
    ("{0:X}", -1, "FFFFFFFF"),
    ("{0:x}", 0x2045E, "2045e"),
    ("{0:N}", -12445.6789, "-12,445.68"),
    ("{0:N1}", 1234.567, "1,234.6"),
    ("{0:N0}", 8175133, "8,175,133"),
    ("{0:F}", 1234.567, "1234.57"),
    ("{0:F4}", -1898300.1987, "-1898300.1987"),
    ("{0:F0}", 1234, "1234"),
    ("[{0,10}]", "Adam", "[      Adam]"),
    ("[{0,-10}]", "Adam", "[Adam      ]"),
    ("{0,8:D4}|", 42, "    0042|"),
    ("{{{0}}}", 7, "{7}"),
]


@pytest.mark.parametrize(("spec", "value", "expected"), DOTNET_FORMAT)
def test_format_follows_dotnet_composite_formatting(spec: str, value: Any, expected: str) -> None:
    argument = f"json('{value}')" if isinstance(value, float) else repr(value).replace('"', "'")  # no float literals
    assert arm.evaluate(f"format('{spec}', {argument})", context()) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [("a } b", "a } with no {"), ("{0", "a { with no }"), ("{a}", "not a format item"), ("{1}", "names no argument")],
)
def test_format_refuses_what_dotnet_refuses(spec: str, message: str) -> None:
    with pytest.raises(arm.ExpressionError, match=message):
        arm.evaluate(f"format('{spec}', 1)", context())
