"""Golden plans: a customizer section (fixtures/plans/*.json) and the steps it must plan."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

import customizers
from customizers.base import PlanContext, PlanError, PutFile
from engine.template.model import Customizer

ROOT = Path(__file__).resolve().parents[2]
CASES = sorted((ROOT / "fixtures" / "plans").glob("*.json"))
ADAPTER: TypeAdapter[Any] = TypeAdapter(Customizer)


def serialize(step: Any, base: Path) -> dict[str, Any]:
    data = {"step": type(step).__name__, **dataclasses.asdict(step)}
    if "script" in data:
        data["script"] = data["script"].decode()
    for key in ("command", "ok_codes"):
        if isinstance(data.get(key), tuple):
            data[key] = list(data[key])
    data.pop("label", None)
    if not data.get("denied_hint"):
        data.pop("denied_hint", None)
    if isinstance(step, PutFile):
        data["source"] = str(step.source.relative_to(base))
    return data


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_plan(case: Path, tmp_path: Path) -> None:
    spec = json.loads(case.read_text())
    fetched = {}
    for uri, content in spec.get("files", {}).items():
        (tmp_path / uri).write_bytes(content.encode())
        fetched[uri] = tmp_path / uri
    customizer = customizers.create(ADAPTER.validate_python(spec["section"]))
    ctx = PlanContext(spec["os"], fetched, spec.get("has_pwsh", False))
    if "error" in spec:
        with pytest.raises(PlanError, match=spec["error"]):
            customizer.plan(ctx)
        return
    assert [serialize(s, tmp_path) for s in customizer.plan(ctx)] == spec["expect"]


def test_registry_names_the_known_types() -> None:
    with pytest.raises(KeyError, match="known: Shell, PowerShell, File, WindowsRestart, WindowsUpdate"):
        customizers.lookup("Ansible")


def test_inputs_are_what_must_be_fetched() -> None:
    shell = customizers.create(
        ADAPTER.validate_python({"type": "Shell", "scriptUri": "a.sh", "sha256Checksum": "ab" * 32})
    )
    assert [(i.uri, i.sha256) for i in shell.inputs()] == [("a.sh", "ab" * 32)]
    inline = customizers.create(ADAPTER.validate_python({"type": "Shell", "inline": ["x"]}))
    assert inline.inputs() == []
