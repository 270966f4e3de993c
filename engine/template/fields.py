"""The first two passes over a template: field names against the models' declared fields
and the template's API version (unknown, mis-cased, too-new and read-only fields), then
structure and types by the pydantic models in engine.template.model, as findings.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel

from engine.errors import Finding, key_path
from engine.template import model as m
from engine.template.rules import TAGS, TAGS_BY_LIST


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


def check_fields(raw: Any, cls: type[BaseModel], path: str, version: str, findings: list[Finding]) -> Any:
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
                    rule="aib/field-mis-cased",
                )
            )
            if strict:
                result[key] = value
                continue
        info = fields[alias]
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("read_only"):
            findings.append(
                Finding(
                    here,
                    "read-only field (AIB returns it from a GET); it is ignored",
                    "warning",
                    False,
                    rule="aib/field-read-only",
                )
            )
        first = extra.get("since")
        if isinstance(first, str) and version < first:
            findings.append(_too_new(here, f"field {alias!r}", first, version, strict))
        candidates = _models_in(info.annotation)
        if candidates:
            if isinstance(value, list):
                result[alias] = [
                    check_fields(item, chosen, f"{here}[{i}]", version, findings)
                    if (chosen := _pick_model(candidates, item))
                    else item
                    for i, item in enumerate(value)
                ]
                continue
            if (chosen := _pick_model(candidates, value)) is not None:
                result[alias] = check_fields(value, chosen, here, version, findings)
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
        rule="aib/field-unknown",
    )


def _too_new(here: str, what: str, first: str, version: str, strict: bool) -> Finding:
    return Finding(
        here,
        f"{what} arrived in apiVersion {first}; this template says {version}",
        "error" if strict else "warning",
        strict,
        rule="aib/field-too-new",
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


def from_pydantic(error: Any) -> Finding:
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
    return Finding(path, text, rule=f"aib/value-{kind.replace('_', '-')}")


# --- pass 3: rules across fields -------------------------------------------------------
