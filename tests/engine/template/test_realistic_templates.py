"""Templates as users have them (ARM deployments, quickstarts with placeholders, JSONC,
typos, API versions): tests/corpus/realistic/NAME.json with NAME.expect.json beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.errors import TemplateError
from engine.template.arm import read_parameters
from engine.template.loading import LoadOptions, load_templates

CORPUS = Path(__file__).resolve().parents[2] / "corpus" / "realistic"
CASES = sorted(CORPUS.glob("*.expect.json"))


def dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        name, _, index = part.partition("[")
        data = data[name]
        if index:
            data = data[int(index.rstrip("]"))]
    return data


@pytest.mark.parametrize("case", CASES, ids=[c.name.removesuffix(".expect.json") for c in CASES])
def test_realistic_template(case: Path) -> None:
    expect = json.loads(case.read_text())
    args = dict(expect.get("args", {}))
    options = LoadOptions(
        parameters=read_parameters(args.pop("parameters", [])),
        sets=dict(item.split("=", 1) for item in args.pop("sets", [])),
        **args,
    )
    template = case.with_name(case.name.replace(".expect.json", ".json"))
    if not expect["valid"]:
        with pytest.raises(TemplateError) as caught:
            load_templates(template, options=options)
        findings = [f.render() for f in caught.value.findings]
    else:
        [loaded] = load_templates(template, options=options)
        findings = [f.render() for f in loaded.findings]
        if "name" in expect:
            assert loaded.name == expect["name"]
        data = loaded.template.model_dump(mode="json", by_alias=True, exclude_unset=True)
        for path, value in expect.get("checks", {}).items():
            assert dig(data, path) == value, path
    for message in expect.get("messages", []):
        assert any(message in f for f in findings), f"{message!r} not among:\n" + "\n".join(findings)
