"""Load template files and validate them: every finding, each with its JSON path.

Three passes over one document, all collected before anything is reported:
1. field names, against the models' declared fields and the template's API version
   (unknown, mis-cased, too-new and read-only fields);
2. structure and types, by the pydantic models in `engine.model`;
3. the rules AIB applies across fields (exactly one of scriptUri/inline, runAsSystem
   needs runElevated, unique names, replicationRegions vs targetRegions, ...).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic_core import PydanticUndefined

import customizers
import distributors
from engine import arm
from engine import model as m
from engine.errors import Finding, TemplateError, UsageError, key_path
from engine.jsonc import strip_comments
from engine.sections import NAME_PATTERN, REGIONS, Check, Section, normalize_region
from engine.store import DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION
from engine.uri_map import UriMap

DEFAULT_LOCATION = "eastus"  # resourceGroup().location when --location does not say
# Fields whose text is commands, where <word> is shell or markup, not a placeholder.
COMMAND_FIELDS = ("inline", "filters", "restartCommand", "restartCheckCommand")

RESOURCE_TYPE = "Microsoft.VirtualMachineImages/imageTemplates"
SOURCE_TAGS = ["PlatformImage", "ManagedImage", "SharedImageVersion"]
# The `type` tags of each list, from the registries (ISO: a source AIB no longer has).
TAGS_BY_LIST = {
    "source": SOURCE_TAGS,
    "customize": list(customizers.REGISTRY),
    "distribute": list(distributors.REGISTRY),
    "inVMValidations": [name for name, c in customizers.REGISTRY.items() if c.validates],
}
TAGS = {tag for tags in TAGS_BY_LIST.values() for tag in tags} | {"ISO"}
WINDOWS_ONLY = {name for name, c in customizers.REGISTRY.items() if c.windows_only}


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


def guess_os_of(props: Any) -> str:
    """`guess_os` on the raw properties (of a template that may be invalid elsewhere)."""
    props = props if isinstance(props, dict) else {}
    source = props.get("source")
    if isinstance(source, dict) and source.get("type") == "PlatformImage":
        text = f"{source.get('publisher')} {source.get('offer')}".lower()
        return "Windows" if "windows" in text else "Linux"
    customize = props.get("customize")
    items = customize if isinstance(customize, list) else []
    kinds = {c["type"] for c in items if isinstance(c, dict) and isinstance(c.get("type"), str)}
    return "Windows" if kinds & WINDOWS_ONLY and "Shell" not in kinds else "Linux"


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
                [Finding("", f"{size} bytes: over the 4 MiB Azure Resource Manager accepts for a template")],
            )
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it: {exc}") from None
    try:
        return json.loads(strip_comments(text))
    except RecursionError:
        raise TemplateError(str(path), [Finding("", "not valid JSON: nested too deeply")]) from None
    except (json.JSONDecodeError, ValueError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise TemplateError(str(path), [Finding("", f"not valid JSON: {message}{where}")]) from None


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
                findings.append(Finding(f"resources[{index}]", note, "note", False))
                continue
            resolved = arm.resolve(resource, ctx, f"resources[{index}]", findings)
            documents.append((f"resources[{index}].", resolved))
        findings += list(dict.fromkeys(ctx.notes))
        if not documents:
            findings.append(Finding("resources", f"no resource of type {RESOURCE_TYPE} in this deployment"))
        return documents
    if isinstance(raw, dict) and "properties" in raw:
        if "type" not in raw:
            findings.append(Finding("type", f"absent; read as {RESOURCE_TYPE}", "note", False))
        return [("", arm.resolve(raw, ctx, "", findings))]
    if isinstance(raw, dict) and {"source", "distribute", "customize"} & raw.keys():
        return [("", {"properties": arm.resolve(raw, ctx, "", findings), "__bare__": True})]
    findings.append(
        Finding(
            "",
            "not an image template: expected an imageTemplates resource, its 'properties' object, or an ARM deployment",
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
        raise TemplateError(str(path), [Finding("", f"nested more than {MAX_DEPTH} levels deep")])
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
            unfilled = [Finding(_unbare(f.path), f.message, f.severity, f.aib_rejects) for f in unfilled]
        findings += unfilled
        unknown += [f.path for f in unfilled]
    documents = filled
    if options.template_name is not None:
        names = [str(d.get("name", "")) for _, d in documents]
        documents = [(p, d) for p, d in documents if d.get("name") == options.template_name]
        if not documents:
            wanted = options.template_name
            findings.append(Finding("", f"no image template named {wanted!r} here (names: {', '.join(names)})"))

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
                Finding(f.path, f.message, "error", True) if f.severity == "warning" and f.aib_rejects else f
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
            )
        )
        api_version = m.LATEST_API_VERSION
    elif not isinstance(api_version, str):
        findings.append(Finding("apiVersion", "expected a string such as '2024-02-01'"))
        api_version = m.LATEST_API_VERSION
    elif api_version not in m.API_VERSIONS:
        findings.append(
            Finding(
                "apiVersion",
                f"unknown API version {api_version!r}; known: {', '.join(m.API_VERSIONS)}",
                "warning",
            )
        )

    normalized = _check_fields(document, m.ImageTemplate, "", api_version, findings)
    template: m.ImageTemplate | None = None
    try:
        template = m.ImageTemplate.model_validate(normalized)
    except ValidationError as exc:
        findings += [_from_pydantic(error) for error in exc.errors()]
    _check_strings(document, "", findings)
    _check_rules(
        normalized, api_version, bare, findings, allow_any_destination, template, local_root, template_dir, uri_map
    )

    findings = [Finding(where(f.path), f.message, f.severity, f.aib_rejects) for f in findings]
    findings = list(dict.fromkeys(findings))
    if template is None or any(f.severity == "error" for f in findings):
        return None, findings
    name = template.name if isinstance(template.name, str) and template.name else path.stem
    return LoadedTemplate(path, name, api_version, template), findings


# --- pass 1: field names -------------------------------------------------------------


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The model classes an annotation can hold (through Optional, list, dict, unions)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if origin in (typing.Union, types.UnionType, list):
        return [cls for arg in typing.get_args(annotation) for cls in _models_in(arg)]
    return []


def _pick_model(candidates: list[type[BaseModel]], raw: Any) -> type[BaseModel] | None:
    if len(candidates) == 1:
        return candidates[0]
    tag = raw.get("type") if isinstance(raw, dict) else None
    for cls in candidates:
        annotation = cls.model_fields.get("type")
        if annotation is not None and tag in typing.get_args(annotation.annotation):
            return cls
    return None


def _check_fields(raw: Any, cls: type[BaseModel], path: str, version: str, findings: list[Finding]) -> Any:
    """Report unknown, mis-cased, too-new and read-only fields; return a normalized copy.

    Before 2024-02-01 AIB reads field names case-insensitively, so a mis-cased field
    is honoured there (and here), with a warning that newer versions reject it.
    """
    if not isinstance(raw, dict):
        return raw
    strict = version >= m.STRICT_FROM
    fields = {(f.alias or name): f for name, f in cls.model_fields.items()}
    by_lower = {alias.lower(): alias for alias in fields}
    since_class = getattr(cls, "since_version", None)
    if since_class and version < since_class:
        findings.append(
            _too_new(path + ".type" if path else "type", f"type {raw.get('type')!r}", since_class, version, strict)
        )
    result: dict[str, Any] = {}
    for key, value in raw.items():
        here = key_path(path, key)
        alias = key if key in fields else by_lower.get(key.lower())
        if alias is None:
            findings.append(_unknown(key, here, cls, list(fields), version, strict))
            result[key] = value
            continue
        if alias != key:
            findings.append(
                Finding(
                    here,
                    f"mis-cased field; the name is {alias!r}"
                    + (
                        " (field names are case-sensitive from 2024-02-01)"
                        if strict
                        else f" (accepted by apiVersion {version}, rejected from {m.STRICT_FROM})"
                    ),
                    "error" if strict else "warning",
                    strict,
                )
            )
            if strict:
                result[key] = value
                continue
        info = fields[alias]
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("read_only"):
            findings.append(
                Finding(here, "read-only field (AIB returns it from a GET); it is ignored", "warning", False)
            )
        first = extra.get("since")
        if isinstance(first, str) and version < first:
            findings.append(_too_new(here, f"field {alias!r}", first, version, strict))
        candidates = _models_in(info.annotation)
        if candidates:
            if isinstance(value, list):
                result[alias] = [
                    _check_fields(item, chosen, f"{here}[{i}]", version, findings)
                    if (chosen := _pick_model(candidates, item))
                    else item
                    for i, item in enumerate(value)
                ]
                continue
            if (chosen := _pick_model(candidates, value)) is not None:
                result[alias] = _check_fields(value, chosen, here, version, findings)
                continue
        result[alias] = value
    return result


def _unknown(key: str, here: str, cls: type[BaseModel], known: list[str], version: str, strict: bool) -> Finding:
    if key == "validExitCodes":
        hint = "validExitCodes exists only on PowerShell; a Shell customizer must exit 0"
    elif key in ("script", "sourceURI", "aritfactTags"):
        right = {"script": "scriptUri' or 'inline", "sourceURI": "sourceUri", "aritfactTags": "artifactTags"}[key]
        hint = f"did you mean '{right}'?"
    else:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
        hint = f"did you mean {close[0]!r}?" if close else f"known fields: {', '.join(sorted(known))}"
    owner = cls.__name__
    verdict = f"rejected by AIB from {m.STRICT_FROM}" if strict else f"ignored by AIB in apiVersion {version}"
    return Finding(
        here,
        f"unknown field {key!r} in {owner} ({verdict}); {hint}",
        "error" if strict else "warning",
        strict,
    )


def _too_new(here: str, what: str, first: str, version: str, strict: bool) -> Finding:
    return Finding(
        here,
        f"{what} arrived in apiVersion {first}; this template says {version}",
        "error" if strict else "warning",
        strict,
    )


# --- pass 2: structure ---------------------------------------------------------------


def _json_type(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in TAGS and (isinstance(previous, int) or previous == "source"):
            pass  # the discriminator pydantic inserts; not part of the JSON path
        elif "[" in part or part.startswith("function-"):
            pass
        else:
            path = key_path(path, part)
        previous = part
    return path


def _from_pydantic(error: Any) -> Finding:
    loc = tuple(error["loc"])
    path = _loc_to_path(loc)
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    got = f", got {_json_type(value)}"
    messages = {
        "missing": "required field is missing",
        "int_type": "expected an integer" + got,
        "int_from_float": "expected an integer" + got,
        "string_type": "expected a string" + got,
        "bool_type": "expected true or false" + got,
        "list_type": "expected a list" + got,
        "dict_type": "expected an object" + got,
        "model_type": "expected an object" + got,
        "model_attributes_type": "expected an object" + got,
        "greater_than_equal": f"must be at least {ctx.get('ge')}, got {value!r}",
        "less_than_equal": f"must be at most {ctx.get('le')}, got {value!r}",
    }
    if kind in messages:
        text = messages[kind]
        if kind == "list_type" and loc and loc[-1] in ("validExitCodes",):
            text = "expected a list of integers" + got
        elif kind == "list_type" and loc and loc[-1] in ("inline", "filters", "replicationRegions"):
            text = "expected a list of strings" + got
    elif kind == "literal_error":
        text = f"expected {ctx.get('expected')}, got {value!r}"
    elif kind == "union_tag_invalid":
        tag, expected = ctx.get("tag"), ctx.get("expected_tags", "")
        options = [t.strip(" '") for t in str(expected).split(",")]
        close = [t for t in options if t.lower() == str(tag).lower()]
        text = f"unknown type {tag!r}; expected one of {expected}"
        if close:
            text += f" (did you mean {close[0]!r}? type names are case-sensitive)"
        path += ".type"
    elif kind == "union_tag_not_found":
        owner = next((p for p in reversed(loc) if isinstance(p, str)), "")
        text = f"'type' is required; one of {', '.join(TAGS_BY_LIST.get(str(owner), sorted(TAGS)))}"
        path += ".type"
    elif kind == "string_pattern_mismatch" and loc and loc[-1] == "runOutputName":
        text = f"must be 1-64 letters, digits, '-', '_' or '.', got {value!r}"
    elif kind == "value_error":
        text = str(error["msg"]).removeprefix("Value error, ")
    else:
        text = str(error["msg"])
    return Finding(path, text)


# --- pass 3: rules across fields -------------------------------------------------------


def _check_rules(
    doc: dict[str, Any],
    version: str,
    bare: bool,
    findings: list[Finding],
    allow_any_destination: bool,
    template: m.ImageTemplate | None,
    local_root: Path | None = None,
    template_dir: Path | None = None,
    uri_map: UriMap | None = None,
) -> None:
    """The template's own rules here; each section's own rules in its `check`."""
    _check_resource(doc, version, bare, findings)
    props = doc.get("properties")
    if not isinstance(props, dict):
        return
    timeout = props.get("buildTimeoutInMinutes")
    if isinstance(timeout, int) and not isinstance(timeout, bool) and 1 <= timeout <= 5:
        findings.append(
            Finding(
                "properties.buildTimeoutInMinutes",
                f"{timeout} is accepted locally, but AIB needs at least 6",
                "warning",
            )
        )
    source = props.get("source")
    if isinstance(source, dict) and source.get("type") == "ISO":
        findings.append(
            Finding(
                "properties.source.type",
                "the ISO source was removed from AIB: it builds from none today, whatever the template's "
                "apiVersion (2019-05-01-preview took RHEL 7.2-7.5 ISOs); use a PlatformImage",
            )
        )
    validate = props.get("validate")
    lists = [
        ("properties.customize", props.get("customize")),
        (
            "properties.validate.inVMValidations",
            validate.get("inVMValidations") if isinstance(validate, dict) else None,
        ),
    ]
    for path, items in lists:
        if isinstance(items, list):
            _duplicates(items, path, "name", "; names must be unique", findings)
    distribute = props.get("distribute")
    if isinstance(distribute, list):
        if not distribute:
            findings.append(
                Finding(
                    "properties.distribute",
                    "empty; AIB needs at least one distribution (locally: customize only)",
                    "warning",
                )
            )
        _duplicates(distribute, "properties.distribute", "runOutputName", "", findings)
    os_type = guess_os_of(doc.get("properties"))
    check = Check(version, os_type, findings, allow_any_destination, local_root, template_dir, _source_known(doc))
    check.uri_map = uri_map or UriMap()
    for here, section in _sections(doc, template):
        section.check(here, check)


def _source_known(doc: dict[str, Any]) -> bool:
    """Whether the catalogue maps the template's PlatformImage source (so its OS is sure)."""
    from engine.catalogue import Catalogue

    props = doc.get("properties")
    source = props.get("source") if isinstance(props, dict) else None
    if not isinstance(source, dict) or source.get("type") != "PlatformImage":
        return False
    try:
        urn = ":".join(str(source.get(k, "")) for k in ("publisher", "offer", "sku", "version"))
        return Catalogue.load().knows(urn)
    except UsageError:  # a broken $AIB_LOCAL_CATALOGUE: the build says so
        return False


def _check_resource(doc: dict[str, Any], version: str, bare: bool, findings: list[Finding]) -> None:
    """The ARM resource around the properties: type, name, location, identity."""
    add = findings.append
    kind = doc.get("type")
    if isinstance(kind, str) and kind.lower() != RESOURCE_TYPE.lower():
        if kind == "Microsoft.VirtualMachineImages":
            add(
                Finding(
                    "type",
                    "the bare namespace (az resource create --is-full-object style); read as an image template",
                    "note",
                    False,
                )
            )
        else:
            add(Finding("type", f"expected {RESOURCE_TYPE!r}, got {kind!r}"))
    name = doc.get("name")
    if isinstance(name, str) and not re.match(NAME_PATTERN, name):
        add(Finding("name", f"must be 1-64 letters, digits, '-', '_' or '.', got {name!r}"))
    location = doc.get("location")
    if isinstance(location, str) and normalize_region(location) not in REGIONS:
        close = difflib.get_close_matches(normalize_region(location), REGIONS, n=1)
        add(
            Finding(
                "location",
                f"unknown Azure region {location!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
            )
        )
    elif location is None and not bare:
        add(Finding("location", "absent; ARM requires a location", "warning"))
    if "identity" not in doc and not bare and version >= "2020-02-14":
        add(
            Finding(
                "identity",
                f"absent; AIB requires an identity from apiVersion 2020-02-14 (this template: {version}); "
                "local builds need none",
                "warning",
            )
        )


def _duplicates(items: list[Any], path: str, key: str, why: str, findings: list[Finding]) -> None:
    """Each `key` once in the list (names compared as AIB compares them)."""
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        value = item.get(key) if isinstance(item, dict) else None
        if not isinstance(value, str) or (key == "name" and not value):
            continue
        folded = value if key == "name" else value.lower()
        if folded in seen:
            findings.append(
                Finding(f"{path}[{index}].{key}", f"duplicate {key} {value!r} (also {path}[{seen[folded]}]){why}")
            )
        seen.setdefault(folded, index)


def _sections(doc: dict[str, Any], template: m.ImageTemplate | None) -> Iterator[tuple[str, Section]]:
    """Every section of the template with its path: from the parsed template, or (when
    something in it is invalid) each entry built from the fields that are valid."""
    if template is not None:
        yield from _walk(template, "")
        return
    props = doc.get("properties")
    props = props if isinstance(props, dict) else {}
    validate = props.get("validate")
    validators = validate.get("inVMValidations") if isinstance(validate, dict) else None
    customizer: dict[str, type[Section]] = {name: c.schema for name, c in customizers.REGISTRY.items()}
    places: list[tuple[str, Any, dict[str, type[Section]]]] = [
        ("properties.customize", props.get("customize"), customizer),
        ("properties.distribute", props.get("distribute"), {n: d.schema for n, d in distributors.REGISTRY.items()}),
        ("properties.validate.inVMValidations", validators, customizer),
    ]
    for path, items, schemas in places:
        for index, item in enumerate(items if isinstance(items, list) else []):
            schema = schemas.get(str(item.get("type"))) if isinstance(item, dict) else None
            if schema is not None:
                yield from _walk(_lenient(schema, item), f"{path}[{index}]")
    if isinstance(props.get("vmProfile"), dict):
        yield from _walk(_lenient(m.VmProfile, props["vmProfile"]), "properties.vmProfile")


def _lenient(schema: type[Section], raw: dict[str, Any]) -> Section:
    """The section with the fields of `raw` that are valid on their own; the others (each
    reported already) are None, so that its own rules still run on the rest."""
    values: dict[str, Any] = {}
    for name, info in schema.model_fields.items():
        alias = info.alias or name
        value = info.get_default(call_default_factory=True)
        if alias in raw:
            try:
                value = _field(schema, name).validate_python(raw[alias])
            except ValidationError:
                value = None
        values[name] = None if value is PydanticUndefined else value
    return schema.model_construct(**values)


@functools.cache
def _field(schema: type[Section], name: str) -> TypeAdapter[Any]:
    """One field of a section, validated on its own (its type and constraints, strictly)."""
    info = schema.model_fields[name]
    annotation: Any = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return TypeAdapter(annotation)
    return TypeAdapter(annotation, config=ConfigDict(strict=True))


def _walk(node: Any, path: str) -> Iterator[tuple[str, Section]]:
    if isinstance(node, Section):
        yield path, node
        for name, info in type(node).model_fields.items():
            yield from _walk(getattr(node, name), key_path(path, info.alias or name))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _walk(item, f"{path}[{index}]")


def _check_strings(value: Any, here: str, findings: list[Finding]) -> None:
    """No NUL characters anywhere: no command line, path or name can carry one."""
    if isinstance(value, str):
        if "\x00" in value:
            findings.append(Finding(here or "(top)", "contains a NUL character (\\u0000)"))
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in str(key):
                findings.append(Finding(key_path(here, str(key)), "its property name contains a NUL character"))
            _check_strings(item, key_path(here, str(key)), findings)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_strings(item, f"{here}[{index}]", findings)
