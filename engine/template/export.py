"""Export a template as AIB takes it: resolved, cleaned for its apiVersion, with the az
commands that create and run it."""

from __future__ import annotations

import shlex
from typing import Any

from pydantic import BaseModel

from engine.template.loading import LoadedTemplate


def clean(model: BaseModel, version: str) -> dict[str, Any]:
    """The fields the user set that AIB knows for `version`: no extras, no read-only fields."""
    result: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        if name not in model.model_fields_set:
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        since = extra.get("since")
        if extra.get("read_only") or (isinstance(since, str) and version < since):
            continue
        result[info.alias or name] = _value(getattr(model, name), version)
    return result


def _value(value: Any, version: str) -> Any:
    if isinstance(value, BaseModel):
        return clean(value, version)
    if isinstance(value, list):
        return [_value(v, version) for v in value]
    if isinstance(value, dict):
        return {k: _value(v, version) for k, v in value.items()}
    return value


def export(loaded: LoadedTemplate) -> dict[str, Any]:
    """The ARM resource body to submit.

    `name` goes in the URL and `apiVersion` on the command line (AIB warns that an
    apiVersion in the body can cause errors); `dependsOn` is for deployments only.
    """
    body = clean(loaded.template, loaded.api_version)
    for key in ("name", "dependsOn", "apiVersion"):
        body.pop(key, None)
    body["type"] = "Microsoft.VirtualMachineImages/imageTemplates"
    return body


def az_commands(loaded: LoadedTemplate, resource_group: str, file_name: str) -> list[str]:
    """The az command lines that create the template from `file_name` and run it."""
    name, group = shlex.quote(loaded.name), shlex.quote(resource_group)
    return [
        f"az resource create --resource-group {group} --name {name} "
        f"--resource-type Microsoft.VirtualMachineImages/imageTemplates --api-version {loaded.api_version} "
        f"--is-full-object --properties @{shlex.quote(file_name)}",
        f"az image builder run --resource-group {group} --name {name} --no-wait",
        f"az image builder show-runs --resource-group {group} --name {name}",
    ]
