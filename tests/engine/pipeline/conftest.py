"""Builds against the in-memory fake target: no engine, no network, a private store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.events import utc_now
from engine.pipeline import BuildOptions, BuildRun
from engine.store import Store
from engine.targets import registry
from engine.template.loading import load_templates
from tests.fake_target import FakeStates, FakeTarget, Rule
from tests.support import template, template_id


class Builds:
    """Makes and runs builds of test templates on fake targets, recording their events."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.store = Store(folder / "store")
        self.events: list[dict[str, Any]] = []

    def rule(self, match: str, code: int | str = 0, lines: list[str] | None = None, times: int | None = None) -> None:
        FakeTarget.rules.append(Rule(match, code, lines or [], times))

    def make(
        self,
        customize: list[dict[str, Any]],
        *,
        name: str = "t",
        distribute: list[dict[str, Any]] | None = None,
        **options: Any,
    ) -> BuildRun:
        props = options.pop("properties", {})
        path = self.folder / f"{name}.json"
        path.write_text(json.dumps(template(name, customize, distribute=distribute, **props)))
        (loaded,) = load_templates(path)
        return BuildRun(loaded, BuildOptions(target="fake", **options), self.store, self.events.append)

    def target(self, run: BuildRun) -> FakeTarget:
        return FakeTarget.opened[run.build_id]

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]

    def messages(self) -> str:
        return "\n".join(str(e.get("message", "")) for e in self.events)

    def started_steps(self) -> list[str]:
        return [e["step"] for e in self.named("step-started")]

    def record(self, build_id: str) -> dict[str, Any]:
        found = self.store.get_build(build_id)
        assert found is not None
        return found

    def template_record(self, name: str = "t") -> dict[str, Any]:
        found = self.store.get(template_id(name))
        assert found is not None
        return found

    def live_entry(self, build_id: str, template_id: str) -> None:
        """The journal entry of a build that this very process runs (so it is alive)."""
        from engine.process import identity

        entry = {"buildId": build_id, "templateId": template_id, "owner": identity(), "startedAt": utc_now()}
        (self.store.root / "inflight").mkdir(parents=True, exist_ok=True)
        (self.store.root / "inflight" / f"{build_id}.json").write_text(json.dumps(entry))


@pytest.fixture
def builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Builds]:
    monkeypatch.setitem(registry.TARGETS, "fake", lambda: FakeTarget)
    monkeypatch.setattr(FakeTarget, "rules", [])
    monkeypatch.setattr(FakeTarget, "opened", {})
    monkeypatch.setattr(FakeTarget, "os", "Linux")
    monkeypatch.setattr(FakeStates, "kept", {})
    monkeypatch.setattr(FakeStates, "busy", set())
    monkeypatch.setattr(FakeStates, "broken", set())
    yield Builds(tmp_path)
