"""Reading template files: JSON or JSONC, a bare template, an image template resource or
an ARM deployment around one; each template validated (engine.template.fields for its
field names and types, engine.template.rules for AIB's rules across fields) into a
LoadedTemplate, with every finding and its JSON path.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.errors import Finding, TemplateError, UsageError
from engine.store import DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION
from engine.template import arm
from engine.template import model as m
from engine.template.fields import check_fields, from_pydantic
from engine.template.jsonc import strip_comments
from engine.template.rules import RESOURCE_TYPE, check_rules, check_strings, guess_os_of
from engine.uri_map import UriMap

DEFAULT_LOCATION = "eastus"  # resourceGroup().location when --location does not say
# Fields whose text is commands, where <word> is shell or markup, not a placeholder.
COMMAND_FIELDS = ("inline", "filters", "restartCommand", "restartCheckCommand")


@dataclass
class LoadedTemplate:
    """A template that passed validation, with its warnings and where it came from."""

    path: Path
    name: str
    api_version: str
    template: m.ImageTemplate
    findings: list[Finding] = field(default_factory=list)
    options: LoadOptions | None = None  # how the file was read, so a rerun reads it the same way
    uri_map: UriMap = field(default_factory=UriMap)  # working copies behind the template's URLs
    prefix: str = ""  # where it is in the file: "resources[N]." in an ARM deployment
    bare: bool = False  # the file holds only what is under "properties"

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def properties(self) -> m.Properties:
        return self.template.properties

    @property
    def os_type(self) -> str:
        return guess_os(self.template)


def guess_os(template: m.ImageTemplate) -> str:
    """'Windows' or 'Linux', from the source image and, failing that, the customizers."""
    return guess_os_of(template.properties.model_dump(by_alias=True))


MAX_TEMPLATE_BYTES = 4 << 20
MAX_DEPTH = 64  # far beyond any template; deeper nesting is refused before it is walked


def _depth(value: Any) -> int:
    """How deeply `value` nests, without recursion (counting stops past MAX_DEPTH)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            return level
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, level + 1) for child in children)
    return deepest


def read_json(path: Path) -> Any:
    """JSON, with comments allowed as ARM allows them."""
    try:
        size = path.stat().st_size
        if size > MAX_TEMPLATE_BYTES:
            raise TemplateError(
                str(path),
                [
                    Finding(
                        "",
                        f"{size} bytes: over the 4 MiB Azure Resource Manager accepts for a template",
                        rule="aib/template-too-large",
                    )
                ],
            )
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it: {exc}") from None
    try:
        return json.loads(strip_comments(text))
    except RecursionError:
        raise TemplateError(
            str(path), [Finding("", "not valid JSON: nested too deeply", rule="aib/json-too-deep")]
        ) from None
    except (json.JSONDecodeError, ValueError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise TemplateError(
            str(path), [Finding("", f"not valid JSON: {message}{where}", rule="aib/json-invalid")]
        ) from None


@dataclass
class LoadOptions:
    """What the command line adds to a template file: values, placeholders, strictness."""

    allow_any_destination: bool = False
    allow_outside_template_dir: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)
    sets: dict[str, str] = field(default_factory=dict)
    template_name: str | None = None
    strict: bool = False
    subscription: str = DEFAULT_SUBSCRIPTION
    resource_group: str = DEFAULT_RESOURCE_GROUP
    location: str = DEFAULT_LOCATION
    map_uri: tuple[str, ...] = ()  # --map-uri PREFIX=DIR (engine.uri_map adds the environment's and the project file's)


def _documents(
    raw: Any, path: Path, options: LoadOptions, findings: list[Finding], unevaluated: list[str]
) -> list[tuple[str, dict[str, Any]]]:
    """The image-template resources of a file, with ARM expressions resolved; the JSON
    paths of expressions left unevaluated are added to `unevaluated`."""
    ctx = arm.Context.for_file(path, options.subscription, options.resource_group, options.location)
    ctx.unevaluated = unevaluated
    if isinstance(raw, dict) and isinstance(raw.get("resources"), list):
        if isinstance(raw.get("contentVersion"), str):
            ctx.content_version = raw["contentVersion"]
        values = arm.parameter_values(raw, options.parameters, findings)
        ctx.in_defaults = True
        ctx.parameters = arm.resolve(values, ctx, "parameters", findings)
        ctx.in_defaults = False
        variables = raw.get("variables")
        ctx.variables = variables if isinstance(variables, dict) else {}
        documents = []
        for index, resource in enumerate(raw["resources"]):
            kind = resource.get("type") if isinstance(resource, dict) else None
            if not (isinstance(kind, str) and kind.lower() == RESOURCE_TYPE.lower()):
                note = f"skipped: a {kind} resource, not an image template"
                findings.append(Finding(f"resources[{index}]", note, "note", False, rule="aib/arm-deployment"))
                continue
            resolved = arm.resolve(resource, ctx, f"resources[{index}]", findings)
            documents.append((f"resources[{index}].", resolved))
        findings += list(dict.fromkeys(ctx.notes))
        if not documents:
            findings.append(
                Finding(
                    "resources",
                    f"no resource of type {RESOURCE_TYPE} in this deployment",
                    rule="aib/arm-no-image-template",
                )
            )
        return documents
    if isinstance(raw, dict) and "properties" in raw:
        if "type" not in raw:
            findings.append(
                Finding("type", f"absent; read as {RESOURCE_TYPE}", "note", False, rule="aib/resource-type-absent")
            )
        return [("", arm.resolve(raw, ctx, "", findings))]
    if isinstance(raw, dict) and {"source", "distribute", "customize"} & raw.keys():
        return [("", {"properties": arm.resolve(raw, ctx, "", findings), "__bare__": True})]
    findings.append(
        Finding(
            "",
            "not an image template: expected an imageTemplates resource, its 'properties' object, or an ARM deployment",
            rule="aib/not-an-image-template",
        )
    )
    return []


def load_templates(
    path: Path, *, allow_any_destination: bool = False, options: LoadOptions | None = None
) -> list[LoadedTemplate]:
    """Every image template in the file, validated; raises TemplateError with all findings."""
    options = options or LoadOptions(allow_any_destination=allow_any_destination)
    findings: list[Finding] = []
    raw = read_json(path)
    if _depth(raw) > MAX_DEPTH:
        raise TemplateError(
            str(path), [Finding("", f"nested more than {MAX_DEPTH} levels deep", rule="aib/json-too-deep")]
        )
    # Values not known here (an expression that needs Azure, a placeholder not filled in):
    # reported once, and the rest of the template is still checked without them.
    unknown: list[str] = []
    documents = _documents(raw, path, options, findings, unknown)
    filled = []
    for prefix, document in documents:
        unfilled: list[Finding] = []
        filled.append(
            (prefix, arm.fill_placeholders(document, options.sets, prefix.rstrip("."), unfilled, skip=COMMAND_FIELDS))
        )
        if document.get("__bare__"):  # the file holds what is under "properties"
            unfilled = [dataclasses.replace(f, path=_unbare(f.path)) for f in unfilled]
        findings += unfilled
        unknown += [f.path for f in unfilled]
    documents = filled
    if options.template_name is not None:
        names = [str(d.get("name", "")) for _, d in documents]
        documents = [(p, d) for p, d in documents if d.get("name") == options.template_name]
        if not documents:
            wanted = options.template_name
            findings.append(
                Finding(
                    "",
                    f"no image template named {wanted!r} here (names: {', '.join(names)})",
                    rule="aib/template-name-not-found",
                )
            )

    loaded: list[LoadedTemplate] = []
    failed: list[Finding] = list(findings)
    uri_map = UriMap.for_template(path, options.map_uri)
    for prefix, document in documents:
        bare = bool(document.get("__bare__"))
        result, doc_findings = validate_document(
            document,
            path,
            prefix=prefix,
            allow_any_destination=options.allow_any_destination,
            local_root=None if options.allow_outside_template_dir else path.resolve().parent,
            template_dir=path.resolve().parent,
            uri_map=uri_map,
        )
        if options.strict:
            doc_findings = [
                dataclasses.replace(f, severity="error") if f.severity == "warning" and f.aib_rejects else f
                for f in doc_findings
            ]
        doc_findings = [f for f in doc_findings if not _under(f.path, unknown)]
        failed += doc_findings
        if result is not None and not any(f.severity == "error" for f in findings + doc_findings):
            result.findings = findings + doc_findings
            result.options = options
            result.uri_map = uri_map
            result.prefix, result.bare = prefix, bare
            loaded.append(result)
    if any(f.severity == "error" for f in failed):
        raise TemplateError(str(path), failed)
    return loaded


def _under(path: str, roots: list[str]) -> bool:
    """Whether `path` is one of `roots` or inside one."""
    return any(path == root or path.startswith((root + ".", root + "[")) for root in roots if root)


def _unbare(path: str) -> str:
    return path.removeprefix("properties").lstrip(".")


def validate_document(
    document: dict[str, Any],
    path: Path,
    *,
    prefix: str = "",
    allow_any_destination: bool = False,
    local_root: Path | None = None,
    template_dir: Path | None = None,
    uri_map: UriMap | None = None,
) -> tuple[LoadedTemplate | None, list[Finding]]:
    """Validate one resource; returns the template (None when invalid) and every finding.

    `local_root`: local script and file paths must lie under it (None: anywhere).
    """
    bare = bool(document.pop("__bare__", False))
    findings: list[Finding] = []

    def where(json_path: str) -> str:
        if bare and json_path.startswith("properties"):
            json_path = _unbare(json_path)
        return prefix + json_path if json_path else prefix.rstrip(".")

    api_version = document.get("apiVersion")
    if api_version is None:
        findings.append(
            Finding(
                "apiVersion",
                f"absent; checked against the newest API version, {m.LATEST_API_VERSION}",
                "note",
                False,
                rule="aib/api-version-absent",
            )
        )
        api_version = m.LATEST_API_VERSION
    elif not isinstance(api_version, str):
        findings.append(Finding("apiVersion", "expected a string such as '2024-02-01'", rule="aib/api-version-type"))
        api_version = m.LATEST_API_VERSION
    elif api_version not in m.API_VERSIONS:
        findings.append(
            Finding(
                "apiVersion",
                f"unknown API version {api_version!r}; known: {', '.join(m.API_VERSIONS)}",
                "warning",
                rule="aib/api-version-unknown",
            )
        )

    normalized = check_fields(document, m.ImageTemplate, "", api_version, findings)
    template: m.ImageTemplate | None = None
    try:
        template = m.ImageTemplate.model_validate(normalized)
    except ValidationError as exc:
        findings += [from_pydantic(error) for error in exc.errors()]
    check_strings(document, "", findings)
    check_rules(
        normalized, api_version, bare, findings, allow_any_destination, template, local_root, template_dir, uri_map
    )

    findings = [dataclasses.replace(f, path=where(f.path)) for f in findings]
    findings = list(dict.fromkeys(findings))
    if template is None or any(f.severity == "error" for f in findings):
        return None, findings
    name = template.name if isinstance(template.name, str) and template.name else path.stem
    return LoadedTemplate(path, name, api_version, template), findings


# --- pass 1: field names -------------------------------------------------------------
