"""ARM template language, as far as image templates use it.

JSON with comments (ARM accepts `//` and `/* */`), and the template expressions seen
in image-template deployments: `[parameters('x')]`, `[variables('x')]`, `concat`,
`format`, `resourceId`, `subscription().subscriptionId`, `resourceGroup().name` and
`.location`, `toLower`, `toUpper`, `string`, `uniqueString`, and the `[[` escape. An
expression with any other function is an error that names the function and the JSON
path. Parameter values come from `defaultValue`, a parameters file or NAME=VALUE pairs,
as `az deployment group create --parameters` takes them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import Finding, UsageError, key_path

SUPPORTED = (
    "parameters",
    "variables",
    "concat",
    "format",
    "resourceId",
    "subscription",
    "resourceGroup",
    "toLower",
    "toUpper",
    "string",
    "uniqueString",
)


class ExpressionError(Exception):
    """An expression that cannot be evaluated here; the message says why."""


def strip_comments(text: str) -> str:
    """JSON with `//` and `/* */` comments (outside strings) as plain JSON."""
    out: list[str] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        char = text[i]
        if in_string:
            out.append(char)
            if char == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if char == '"':
                in_string = False
            i += 1
        elif char == '"':
            in_string = True
            out.append(char)
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ValueError("a /* comment is not closed")
            out.append("\n" * text.count("\n", i, end))  # keep line numbers for error messages
            i = end + 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


@dataclass
class Context:
    """What a deployment's expressions can see."""

    subscription: str
    resource_group: str
    location: str
    parameters: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    notes: list[Finding] = field(default_factory=list)
    _evaluating: set[str] = field(default_factory=set)


# --- parsing -------------------------------------------------------------------------

TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[(),.\[\]]))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = TOKEN.match(text, position)
        if not match:
            raise ExpressionError(f"cannot read the expression at {text[position : position + 20]!r}")
        kind = match.lastgroup or "op"
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str, ctx: Context, path: str, resolve: Callable[[Any, str], Any]) -> None:
        self.tokens = _tokens(text)
        self.position = 0
        self.ctx = ctx
        self.path = path
        self.resolve = resolve

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise ExpressionError(f"expected {value or 'more'} in the expression")
        self.position += 1
        return token

    def parse(self) -> Any:
        value = self.expression()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()[1]!r} in the expression")  # type: ignore[index]
        return value

    def expression(self) -> Any:
        kind, text = self.take()
        if kind == "string":
            value: Any = text[1:-1].replace("''", "'")
        elif kind == "number":
            value = int(text)
        elif kind == "name":
            self.take("(")
            args = []
            if self.peek() != ("op", ")"):
                args.append(self.expression())
                while self.peek() == ("op", ","):
                    self.take(",")
                    args.append(self.expression())
            self.take(")")
            value = self.call(text, args)
        else:
            raise ExpressionError(f"unexpected {text!r} in the expression")
        while self.peek() in (("op", "."), ("op", "[")):
            if self.take()[1] == ".":
                member = self.take()[1]
                value = self.member(value, member)
            else:
                key = self.expression()
                self.take("]")
                value = self.member(value, key)
        return value

    def member(self, value: Any, key: Any) -> Any:
        try:
            return value[key]
        except (KeyError, IndexError, TypeError):
            raise ExpressionError(f"no property {key!r} here") from None

    def call(self, name: str, args: list[Any]) -> Any:
        ctx = self.ctx
        lowered = name.lower()
        if lowered == "parameters":
            key = named(ctx.parameters, str(args[0]))
            if key is None:
                raise ExpressionError(f"parameter {args[0]!r} has no value (give it with --parameters {args[0]}=VALUE)")
            return ctx.parameters[key]
        if lowered == "variables":
            return self.variable(str(args[0]))
        if lowered == "concat":
            if args and all(isinstance(a, list) for a in args):
                return [item for a in args for item in a]
            return "".join(_text(a) for a in args)
        if lowered == "format":
            return re.sub(r"\{(\d+)(?::[^}]*)?\}", lambda m: _text(args[1 + int(m.group(1))]), str(args[0]))
        if lowered == "tolower":
            return str(args[0]).lower()
        if lowered == "toupper":
            return str(args[0]).upper()
        if lowered == "string":
            return args[0] if isinstance(args[0], str) else json.dumps(args[0], separators=(",", ":"))
        if lowered == "subscription":
            return {"subscriptionId": ctx.subscription, "id": f"/subscriptions/{ctx.subscription}"}
        if lowered == "resourcegroup":
            return {
                "name": ctx.resource_group,
                "location": ctx.location,
                "id": f"/subscriptions/{ctx.subscription}/resourceGroups/{ctx.resource_group}",
            }
        if lowered == "resourceid":
            return resource_id(ctx, [str(a) for a in args])
        if lowered == "uniquestring":
            ctx.notes.append(
                Finding(self.path, "uniqueString() computed locally: the value differs from Azure's", "note", False)
            )
            digest = hashlib.sha256("-".join(str(a) for a in args).encode()).digest()
            return base64.b32encode(digest).decode().lower()[:13]
        raise ExpressionError(f"the function {name}() is not supported locally (supported: {', '.join(SUPPORTED)})")

    def variable(self, name: str) -> Any:
        ctx = self.ctx
        found = named(ctx.variables, name)
        if found is None:
            raise ExpressionError(f"variable {name!r} is not defined")
        name = found
        if name in ctx._evaluating:
            raise ExpressionError(f"variable {name!r} refers to itself")
        ctx._evaluating.add(name)
        try:
            return self.resolve(ctx.variables[name], f"variables.{name}")
        finally:
            ctx._evaluating.discard(name)


def named(mapping: dict[str, Any], name: str) -> str | None:
    """The key of `mapping` that is `name`, compared as ARM compares names: without case."""
    if not isinstance(mapping, dict):
        return None
    if name in mapping:
        return name
    lowered = name.lower()
    return next((key for key in mapping if key.lower() == lowered), None)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return value if isinstance(value, str) else json.dumps(value)


def resource_id(ctx: Context, args: list[str]) -> str:
    """resourceId([subscriptionId], [resourceGroupName], type, name1, [name2], ...)."""
    type_index = next((i for i, a in enumerate(args) if "/" in a and "." in a.split("/")[0]), None)
    if type_index is None or type_index > 2:
        raise ExpressionError("resourceId() needs a resource type such as 'Microsoft.Compute/images'")
    scope, kind, names = args[:type_index], args[type_index], args[type_index + 1 :]
    subscription = scope[0] if len(scope) == 2 else ctx.subscription
    group = scope[-1] if scope else ctx.resource_group
    namespace, *types = kind.split("/")
    if len(names) != len(types):
        raise ExpressionError(f"resourceId() for {kind} needs {len(types)} name(s), got {len(names)}")
    segments = "/".join(f"{t}/{n}" for t, n in zip(types, names, strict=True))
    return f"/subscriptions/{subscription}/resourceGroups/{group}/providers/{namespace}/{segments}"


# --- resolving a document ----------------------------------------------------------------


def resolve(value: Any, ctx: Context, path: str, errors: list[Finding]) -> Any:
    """`value` with every expression evaluated; problems are added to `errors`."""

    def walk(item: Any, where: str) -> Any:
        if isinstance(item, dict):
            # ARM evaluates property names too (userAssignedIdentities keys are resourceId()s).
            return {_key(walk(k, where)): walk(v, key_path(where, str(k))) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(item)]
        if isinstance(item, str) and item.startswith("[") and item.endswith("]"):
            if item.startswith("[["):
                return item[1:]
            try:
                return _Parser(item[1:-1], ctx, where, walk).parse()
            except ExpressionError as exc:
                errors.append(Finding(where, f"{exc} (in {item})"))
                return item
        return item

    return walk(value, path)


def _key(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def parameter_values(deployment: dict[str, Any], given: dict[str, Any], errors: list[Finding]) -> dict[str, Any]:
    """Each declared parameter's value: given, else its defaultValue (which may be an expression)."""
    declared = deployment.get("parameters") or {}
    values: dict[str, Any] = {}
    for name in given:
        if named(declared, name) is None:
            errors.append(
                Finding(f"parameters.{name}", f"no such parameter (declared: {', '.join(declared) or 'none'})")
            )
    for name, spec in declared.items():
        key = named(given, name)
        if key is not None:
            values[name] = given[key]
        elif isinstance(spec, dict) and "defaultValue" in spec:
            values[name] = spec["defaultValue"]
        else:
            errors.append(Finding(f"parameters.{name}", f"no value: give it with --parameters {name}=VALUE"))
        allowed = spec.get("allowedValues") if isinstance(spec, dict) else None
        if name in values and isinstance(allowed, list) and values[name] not in allowed:
            errors.append(Finding(f"parameters.{name}", f"{values[name]!r} is not one of {allowed}"))
    return values


def read_parameters(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """`--parameters` as az takes them: a parameters file (or @file), or NAME=VALUE."""
    values: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if sep and re.match(r"^[A-Za-z_][A-Za-z0-9_-]*$", name):
            try:
                values[name] = json.loads(value) if value[:1] in "[{" or value in ("true", "false") else value
            except json.JSONDecodeError:
                values[name] = value
            continue
        path = Path(item.removeprefix("@"))
        try:
            data = json.loads(strip_comments(path.read_text()))
        except FileNotFoundError:
            raise UsageError(f"--parameters {item}: no such file (or give NAME=VALUE)") from None
        except (OSError, ValueError) as exc:
            raise UsageError(f"--parameters {item}: not a readable parameters file: {exc}") from None
        parameters = data.get("parameters", data) if isinstance(data, dict) else None
        if not isinstance(parameters, dict):
            raise UsageError(f"--parameters {item}: expected an ARM parameters file")
        for name, spec in parameters.items():
            if isinstance(spec, dict) and "value" in spec:
                values[name] = spec["value"]
            elif isinstance(spec, dict) and "reference" in spec:
                raise UsageError(f"--parameters {item}: {name} is a Key Vault reference; give its value instead")
    return values


PLACEHOLDER = re.compile(r"<([A-Za-z][A-Za-z0-9_ .\-]{0,62})>")


def fill_placeholders(
    value: Any, sets: dict[str, str], path: str, unfilled: list[Finding], skip: tuple[str, ...] = ()
) -> Any:
    """`<NAME>` replaced by --set NAME=VALUE; the ones left are reported together.

    Fields named in `skip` (commands, where `<word>` is shell or markup) are left alone.
    """

    def text(item: str, where: str) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in sets:
                return sets[name]
            unfilled.append(Finding(where, f"placeholder <{name}> is not filled in (--set {name}=VALUE)"))
            return match.group(0)

        return PLACEHOLDER.sub(replace, item) if "<" in item else item

    def walk(item: Any, where: str) -> Any:
        if isinstance(item, dict):
            return {text(k, where): v if k in skip else walk(v, key_path(where, str(k))) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(item)]
        return text(item, where) if isinstance(item, str) else item

    return walk(value, path)
