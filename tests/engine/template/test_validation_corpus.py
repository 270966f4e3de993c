"""The invalid-template corpus: each file names the errors (path: message) it must raise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import TemplateError
from engine.template.loading import load_templates

CORPUS = sorted((Path(__file__).parents[2] / "corpus" / "invalid").glob("*.json"))


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 40


@pytest.mark.parametrize("case", CORPUS, ids=[p.stem for p in CORPUS])
def test_invalid_template_names_the_path(case: Path, tmp_path: Path) -> None:
    data = json.loads(case.read_text())
    template = tmp_path / "template.json"
    template.write_text(json.dumps(data["template"]))
    with pytest.raises(TemplateError) as caught:
        load_templates(template)
    errors = [f"{f.path}: {f.message}" for f in caught.value.findings if f.severity == "error"]
    for expected in data["expect"]:
        assert any(e.startswith(expected) for e in errors), f"{expected!r} not among {errors}"
