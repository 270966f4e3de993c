"""The third pass over a template: the rules AIB applies across fields (exactly one of
scriptUri/inline, runAsSystem needs runElevated, unique names, replicationRegions vs
targetRegions, the resource's type and name, ...), as findings.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic_core import PydanticUndefined

import customizers
import distributors
from engine.errors import Finding, UsageError, key_path
from engine.template import model as m
from engine.template.sections import NAME_PATTERN, REGIONS, Check, Section, normalize_region
from engine.uri_map import UriMap

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


def check_rules(
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
                rule="aib/build-timeout-too-short",
            )
        )
    source = props.get("source")
    if isinstance(source, dict) and source.get("type") == "ISO":
        findings.append(
            Finding(
                "properties.source.type",
                "the ISO source was removed from AIB: it builds from none today, whatever the template's "
                "apiVersion (2019-05-01-preview took RHEL 7.2-7.5 ISOs); use a PlatformImage",
                rule="aib/iso-source-removed",
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
                    rule="aib/no-distribution",
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
                    rule="aib/bare-namespace",
                )
            )
        else:
            add(Finding("type", f"expected {RESOURCE_TYPE!r}, got {kind!r}", rule="aib/resource-type"))
    name = doc.get("name")
    if isinstance(name, str) and not re.match(NAME_PATTERN, name):
        add(Finding("name", f"must be 1-64 letters, digits, '-', '_' or '.', got {name!r}", rule="aib/template-name"))
    location = doc.get("location")
    if isinstance(location, str) and normalize_region(location) not in REGIONS:
        close = difflib.get_close_matches(normalize_region(location), REGIONS, n=1)
        add(
            Finding(
                "location",
                f"unknown Azure region {location!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
                rule="aib/location-unknown",
            )
        )
    elif location is None and not bare:
        add(Finding("location", "absent; ARM requires a location", "warning", rule="aib/location-absent"))
    if "identity" not in doc and not bare and version >= "2020-02-14":
        add(
            Finding(
                "identity",
                f"absent; AIB requires an identity from apiVersion 2020-02-14 (this template: {version}); "
                "local builds need none",
                "warning",
                rule="aib/identity-absent",
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
                Finding(
                    f"{path}[{index}].{key}",
                    f"duplicate {key} {value!r} (also {path}[{seen[folded]}]){why}",
                    rule="aib/duplicate-name",
                )
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


def check_strings(value: Any, here: str, findings: list[Finding]) -> None:
    """No NUL characters anywhere: no command line, path or name can carry one."""
    if isinstance(value, str):
        if "\x00" in value:
            findings.append(Finding(here or "(top)", "contains a NUL character (\\u0000)", rule="aib/nul-character"))
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in str(key):
                findings.append(
                    Finding(
                        key_path(here, str(key)), "its property name contains a NUL character", rule="aib/nul-character"
                    )
                )
            check_strings(item, key_path(here, str(key)), findings)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_strings(item, f"{here}[{index}]", findings)


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
