"""ARM template language, as far as image templates use it.

JSON with comments (ARM accepts `//` and `/* */`) and template expressions: every ARM
function that needs nothing from Azure (engine/arm_functions.py: string, array, object,
comparison, logical, numeric), `parameters`, `variables` (names without case, as ARM
compares them), `if` (only the chosen branch is evaluated), `deployment()`,
`subscription()`, `resourceGroup()`, `environment()`, the resource-ID functions,
`utcNow` and `newGuid` (in parameter defaults, one value per run), and the `[[` escape.

A function that needs Azure (`reference`, `list*`, `tenant`, ...) is "not evaluated
locally": AIB would evaluate it, so it is reported as such and the rest of the template
is still checked. An unknown function or a wrong argument is an error ARM would give.
Parameter values come from `defaultValue`, a parameters file or NAME=VALUE pairs, as
`az deployment group create --parameters` takes them.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.errors import Finding, UsageError, key_path
from engine.template import arm_functions
from engine.template.jsonc import strip_comments

# Functions that ask Azure for something: AIB evaluates them, this engine cannot.
NEEDS_AZURE = {
    "reference",
    "list",
    "listkeys",
    "listaccountsas",
    "listservicesas",
    "listsecrets",
    "listcallbackurl",
    "pickzones",
    "providers",
    "tenant",
    "managementgroup",
    "managementgroupresourceid",
    "getsecret",
    "availabilityzones",
}
# Functions ARM allows only in a parameter's defaultValue.
DEFAULT_ONLY = {"utcnow", "newguid"}


class ExpressionError(Exception):
    """An expression that ARM would refuse; the message says why."""


class NotLocal(ExpressionError):
    """An expression that needs Azure (or a value not given): AIB evaluates it, this engine cannot."""


@dataclass
class Context:
    """What a deployment's expressions can see."""

    subscription: str
    resource_group: str
    location: str
    parameters: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    notes: list[Finding] = field(default_factory=list)
    deployment_name: str = "deployment"
    template_uri: str = ""  # where the template file is, for deployment().properties.templateLink
    content_version: str = "1.0.0.0"
    now: datetime = field(default_factory=lambda: datetime.now(UTC))  # utcNow: one value per run
    in_defaults: bool = False  # evaluating parameter defaultValues (utcNow and newGuid are allowed)
    unevaluated: list[str] = field(default_factory=list)  # JSON paths left unevaluated
    _evaluating: set[str] = field(default_factory=set)

    @classmethod
    def for_file(cls, path: Path | None, subscription: str, resource_group: str, location: str) -> Context:
        """The context of `az deployment group create --template-file path`: the deployment
        is named after the file, and its templateLink is the file's own location."""
        ctx = cls(subscription, resource_group, location)
        if path is not None:
            ctx.deployment_name = path.stem
            ctx.template_uri = path.resolve().as_uri()
        return ctx

    def deployment(self) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "template": {"contentVersion": self.content_version},
            "mode": "Incremental",
            "provisioningState": "Accepted",
        }
        if self.template_uri:
            properties["templateLink"] = {"uri": self.template_uri, "contentVersion": self.content_version}
        return {
            "name": self.deployment_name,
            "id": f"{self.group_id()}/providers/Microsoft.Resources/deployments/{self.deployment_name}",
            "location": self.location,
            "properties": properties,
        }

    def group_id(self) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"


ENVIRONMENT = {
    "name": "AzureCloud",
    "gallery": "https://gallery.azure.com/",
    "graph": "https://graph.windows.net/",
    "portal": "https://portal.azure.com",
    "graphAudience": "https://graph.windows.net/",
    "activeDirectoryDataLake": "https://datalake.azure.net/",
    "batch": "https://batch.core.windows.net/",
    "media": "https://rest.media.azure.net",
    "sqlManagement": "https://management.core.windows.net:8443/",
    "vmImageAliasDoc": "https://raw.githubusercontent.com/Azure/azure-rest-api-specs/master/arm-compute/quickstart-templates/aliases.json",
    "resourceManager": "https://management.azure.com/",
    "authentication": {
        "loginEndpoint": "https://login.microsoftonline.com/",
        "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
        "tenant": "common",
        "identityProvider": "AAD",
    },
    "suffixes": {
        "acrLoginServer": ".azurecr.io",
        "azureDatalakeAnalyticsCatalogAndJob": "azuredatalakeanalytics.net",
        "azureDatalakeStoreFileSystem": "azuredatalakestore.net",
        "azureFrontDoorEndpointSuffix": "azurefd.net",
        "keyvaultDns": ".vault.azure.net",
        "sqlServerHostname": ".database.windows.net",
        "storage": "core.windows.net",
    },
}


# --- parsing -------------------------------------------------------------------------

TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[(),.\[\]]))"
)


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Member:
    target: Node
    key: Node


Node = Literal | Call | Member


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


KEYWORDS = {"true": True, "false": False, "null": None}  # written bare, as well as true()


class _Parser:
    """Expression text -> a tree of Literal, Call and Member nodes."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.position = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise ExpressionError(f"expected {value or 'more'} in the expression")
        self.position += 1
        return token

    def parse(self) -> Node:
        node = self.expression()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()[1]!r} in the expression")  # type: ignore[index]
        return node

    def expression(self) -> Node:
        kind, text = self.take()
        node: Node
        if kind == "string":
            node = Literal(text[1:-1].replace("''", "'"))
        elif kind == "number":
            node = Literal(int(text))
        elif kind == "name" and text.lower() in KEYWORDS and self.peek() != ("op", "("):
            node = Literal(KEYWORDS[text.lower()])
        elif kind == "name":
            self.take("(")
            args = []
            if self.peek() != ("op", ")"):
                args.append(self.expression())
                while self.peek() == ("op", ","):
                    self.take(",")
                    args.append(self.expression())
            self.take(")")
            node = Call(text, tuple(args))
        else:
            raise ExpressionError(f"unexpected {text!r} in the expression")
        while self.peek() in (("op", "."), ("op", "[")):
            if self.take()[1] == ".":
                node = Member(node, Literal(self.take()[1]))
            else:
                key = self.expression()
                self.take("]")
                node = Member(node, key)
        return node


class _Evaluator:
    def __init__(self, ctx: Context, resolve: Callable[[Any, str], Any]) -> None:
        self.ctx = ctx
        self.resolve = resolve

    def value(self, node: Node) -> Any:
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Member):
            return self.member(self.value(node.target), self.value(node.key))
        return self.call(node.name, node.args)

    def member(self, value: Any, key: Any) -> Any:
        if isinstance(value, dict) and isinstance(key, str):
            found = named(value, key)  # property names are compared without case too
            if found is not None:
                return value[found]
        elif isinstance(value, list) and isinstance(key, int) and not isinstance(key, bool) and -1 < key < len(value):
            return value[key]
        raise ExpressionError(f"no property {key!r} here")

    def call(self, name: str, nodes: tuple[Node, ...]) -> Any:
        ctx = self.ctx
        lowered = name.lower()
        if lowered == "if":  # only the branch chosen is evaluated, as in ARM
            if len(nodes) != 3:
                raise ExpressionError(f"if() takes 3 arguments, got {len(nodes)}")
            condition = self.value(nodes[0])
            if not isinstance(condition, bool):
                raise ExpressionError(f"if() needs a boolean condition, got {condition!r}")
            return self.value(nodes[1] if condition else nodes[2])
        if lowered in NEEDS_AZURE or lowered.startswith("list"):
            raise NotLocal(f"{name}() asks Azure and is not evaluated locally")
        if lowered in DEFAULT_ONLY and not ctx.in_defaults:
            raise ExpressionError(f"{name}() is allowed only in a parameter's defaultValue")
        args = [self.value(node) for node in nodes]
        try:
            result = self.builtin(name, lowered, args)
        except arm_functions.ArmError as exc:
            raise ExpressionError(str(exc)) from None
        except (ExpressionError, NotLocal):
            raise
        except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError, MemoryError) as exc:
            # What a function's own checks missed is still the template's expression at fault.
            raise ExpressionError(f"{name}() cannot take these arguments ({type(exc).__name__}: {exc})") from None
        return _bounded(name, result)

    def builtin(self, name: str, lowered: str, args: list[Any]) -> Any:
        ctx = self.ctx
        if lowered == "parameters":
            wanted = str(args[0]) if args else ""
            key = named(ctx.parameters, wanted)
            if key is not None and key_path("parameters", key) in ctx.unevaluated:
                raise NotLocal(f"parameter {key!r} is not known here (see parameters.{key})")
            if key is None:
                raise NotLocal(f"parameter {wanted!r} has no value (give it with --parameters {wanted}=VALUE)")
            return ctx.parameters[key]
        if lowered == "variables":
            return self.variable(str(args[0]) if args else "")
        if lowered == "deployment":
            if ctx.template_uri.startswith("file:"):
                note = (
                    "deployment(): templateLink.uri is this file's own location here; in Azure, the URL deployed from"
                )
                ctx.notes.append(Finding("", note, "note", False, rule="aib/not-evaluated-locally"))
            return ctx.deployment()
        if lowered == "environment":
            return json.loads(json.dumps(ENVIRONMENT))
        if lowered == "subscription":
            return {
                "id": f"/subscriptions/{ctx.subscription}",
                "subscriptionId": ctx.subscription,
                "displayName": ctx.subscription,
            }
        if lowered == "resourcegroup":
            return {
                "id": ctx.group_id(),
                "name": ctx.resource_group,
                "type": "Microsoft.Resources/resourceGroups",
                "location": ctx.location,
                "properties": {"provisioningState": "Succeeded"},
            }
        if lowered == "resourceid":
            return resource_id(ctx, [str(a) for a in args])
        if lowered == "subscriptionresourceid":
            return _scoped_id(f"/subscriptions/{ctx.subscription}", [str(a) for a in args], name, subscription=True)
        if lowered == "tenantresourceid":
            return _scoped_id("", [str(a) for a in args], name)
        if lowered == "extensionresourceid":
            if len(args) < 3:
                raise ExpressionError("extensionResourceId() needs a resource ID, a type and a name")
            return _scoped_id(str(args[0]), [str(a) for a in args[1:]], name)
        if lowered == "utcnow":
            return arm_functions.format_time(ctx.now, *(str(a) for a in args[:1]))
        if lowered == "newguid":
            return str(uuid.uuid4())
        return arm_functions.call(name, args)  # its ArmError becomes an ExpressionError in call()

    def variable(self, name: str) -> Any:
        ctx = self.ctx
        found = named(ctx.variables, name)
        if found is None:
            raise ExpressionError(f"variable {name!r} is not defined")
        if found in ctx._evaluating:
            raise ExpressionError(f"variable {found!r} refers to itself")
        ctx._evaluating.add(found)
        try:
            return self.resolve(ctx.variables[found], f"variables.{found}")
        except ExpressionError as exc:
            raise type(exc)(f"variable {found!r}: {exc}") from None
        finally:
            ctx._evaluating.discard(found)


def _bounded(name: str, value: Any) -> Any:
    """`value`, when it is no larger than a template can hold (arm_functions.MAX_TEXT)."""
    if isinstance(value, str) and len(value) > arm_functions.MAX_TEXT:
        raise ExpressionError(f"{name}() made a string of {len(value)} characters, past what a template can hold")
    if isinstance(value, list | dict) and len(value) > arm_functions.MAX_ITEMS:
        raise ExpressionError(f"{name}() made {len(value)} items, past what a template can hold")
    return value


def evaluate(text: str, ctx: Context, resolve: Callable[[Any, str], Any] | None = None) -> Any:
    """The value of one expression (without its brackets)."""
    return _Evaluator(ctx, resolve or (lambda value, _where: value)).value(_Parser(text).parse())


def named(mapping: dict[str, Any], name: str) -> str | None:
    """The key of `mapping` that is `name`, compared as ARM compares names: without case."""
    if not isinstance(mapping, dict):
        return None
    if name in mapping:
        return name
    lowered = name.lower()
    return next((key for key in mapping if key.lower() == lowered), None)


def _split_type(kind: str, names: list[str], function: str) -> str:
    namespace, *types = kind.split("/")
    if not types or len(names) != len(types):
        raise ExpressionError(f"{function}() for {kind} needs {len(types)} name(s), got {len(names)}")
    segments = "/".join(f"{t}/{n}" for t, n in zip(types, names, strict=True))
    return f"/providers/{namespace}/{segments}"


def _scoped_id(scope: str, args: list[str], function: str, *, subscription: bool = False) -> str:
    if subscription and args and "/" not in args[0]:  # subscriptionResourceId(subscriptionId, type, ...)
        scope, args = f"/subscriptions/{args[0]}", args[1:]
    if not args or "/" not in args[0]:
        raise ExpressionError(f"{function}() needs a resource type such as 'Microsoft.Compute/galleries'")
    return scope + _split_type(args[0], args[1:], function)


def resource_id(ctx: Context, args: list[str]) -> str:
    """resourceId([subscriptionId], [resourceGroupName], type, name1, [name2], ...)."""
    type_index = next((i for i, a in enumerate(args) if "/" in a and "." in a.split("/")[0]), None)
    if type_index is None or type_index > 2:
        raise ExpressionError("resourceId() needs a resource type such as 'Microsoft.Compute/images'")
    scope, kind, names = args[:type_index], args[type_index], args[type_index + 1 :]
    subscription = scope[0] if len(scope) == 2 else ctx.subscription
    group = scope[-1] if scope else ctx.resource_group
    return f"/subscriptions/{subscription}/resourceGroups/{group}" + _split_type(kind, names, "resourceId")


# --- resolving a document ----------------------------------------------------------------


def resolve(value: Any, ctx: Context, path: str, errors: list[Finding]) -> Any:
    """`value` with every expression evaluated; problems are added to `errors`, and the
    expressions that could not be evaluated are left as they are, their paths in
    `ctx.unevaluated`. A variable is evaluated where it is used: a problem in it is
    reported there (so nothing is computed from a value that is not known)."""

    def walk(item: Any, where: str, strict: bool = False) -> Any:
        if isinstance(item, dict):
            # ARM evaluates property names too (userAssignedIdentities keys are resourceId()s).
            return {_key(walk(k, where, strict)): walk(v, key_path(where, str(k)), strict) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v, f"{where}[{i}]", strict) for i, v in enumerate(item)]
        if isinstance(item, str) and item.startswith("[") and item.endswith("]"):
            if item.startswith("[["):
                return item[1:]
            if strict:
                return evaluate(item[1:-1], ctx, strict_walk)
            try:
                return evaluate(item[1:-1], ctx, strict_walk)
            except ExpressionError as exc:
                ctx.unevaluated.append(where)
                local = isinstance(exc, NotLocal)
                errors.append(Finding(where, f"{exc} (in {item})", "error", not local, rule="aib/arm-expression"))
                return item
        return item

    def strict_walk(item: Any, where: str) -> Any:
        return walk(item, where, True)

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
                Finding(
                    f"parameters.{name}",
                    f"no such parameter (declared: {', '.join(declared) or 'none'})",
                    rule="aib/arm-parameter-unknown",
                )
            )
    for name, spec in declared.items():
        key = named(given, name)
        if key is not None:
            values[name] = given[key]
        elif isinstance(spec, dict) and "defaultValue" in spec:
            values[name] = spec["defaultValue"]
        else:
            errors.append(
                Finding(
                    f"parameters.{name}",
                    f"no value: give it with --parameters {name}=VALUE",
                    rule="aib/arm-parameter-missing",
                )
            )
        allowed = spec.get("allowedValues") if isinstance(spec, dict) else None
        if name in values and isinstance(allowed, list) and values[name] not in allowed:
            errors.append(
                Finding(
                    f"parameters.{name}",
                    f"{values[name]!r} is not one of {allowed}",
                    rule="aib/arm-parameter-not-allowed",
                )
            )
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
            unfilled.append(
                Finding(
                    where,
                    f"placeholder <{name}> is not filled in (--set {name}=VALUE)",
                    rule="aib/placeholder-unfilled",
                )
            )
            return match.group(0)

        return PLACEHOLDER.sub(replace, item) if "<" in item else item

    def walk(item: Any, where: str) -> Any:
        if isinstance(item, dict):
            return {text(k, where): v if k in skip else walk(v, key_path(where, str(k))) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(item)]
        return text(item, where) if isinstance(item, str) else item

    return walk(value, path)
