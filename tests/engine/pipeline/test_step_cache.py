"""The step cache's rules, on the in-memory fake target: what is kept, what a rebuild
restores, what each part of the key changes, and what is told. The same on the real
engine: tests/integration/test_step_cache.py."""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import pytest

from engine.errors import UsageError
from engine.events import steps_of
from engine.junit import JunitReport
from engine.step_cache import Entry, StepCache, all_entries, chain, parse_size
from engine.targets.base import TargetError
from tests.engine.pipeline.conftest import Builds
from tests.fake_target import FakeStates, FakeTarget

STEPS = [
    {"type": "Shell", "name": "install", "inline": ["echo install"]},
    {"type": "Shell", "name": "compile", "inline": ["echo compile"]},
    {"type": "Shell", "name": "app", "inline": ["echo app v1"]},
]


def with_inline(index: int, text: str) -> list[dict[str, Any]]:
    steps = [dict(s) for s in STEPS]
    steps[index]["inline"] = [text]
    return steps


def customize_runs(builds: Builds, since: int) -> list[str]:
    """The customizers whose commands ran (not cached) in events after `since`."""
    return [
        e["step"]
        for e in builds.events[since:]
        if e["event"] == "step-finished" and e["step"].startswith("customize") and e["status"] != "cached"
    ]


def cached_steps(builds: Builds, since: int) -> list[str]:
    return [e["step"] for e in builds.events[since:] if e["event"] == "step-finished" and e["status"] == "cached"]


def test_a_rebuild_after_editing_the_last_step_runs_only_that_step(builds: Builds) -> None:
    first = builds.make(STEPS, checkpoint=True)
    assert first.run().status == "Succeeded"
    assert len(builds.target(first).kept) == 3
    since = len(builds.events)
    again = builds.make(with_inline(2, "echo app v2"))
    assert again.run().status == "Succeeded"
    assert cached_steps(builds, since) == ["customize[0] install", "customize[1] compile"]
    assert customize_runs(builds, since) == ["customize[2] app"]
    target = builds.target(again)
    assert target.restored_from == first.ctx.cache_keys[1]
    assert not target.ran("echo install") and target.ran("echo app v2")
    finished = [e for e in builds.events[since:] if e["event"] == "step-finished" and e["status"] == "cached"]
    assert {e["cachedFrom"] for e in finished} == {first.build_id}
    assert (
        "customize[0] to [1] are cached: the build starts from the state kept after customize[1] compile"
        in builds.messages()
    )


def test_an_unchanged_rebuild_runs_no_customizer_but_still_deprovisions(builds: Builds) -> None:
    builds.make(STEPS, checkpoint=True).run()
    since = len(builds.events)
    again = builds.make(STEPS)
    assert again.run().status == "Succeeded"
    assert len(cached_steps(builds, since)) == 3 and customize_runs(builds, since) == []
    assert any(e.get("step") == "deprovision" for e in builds.events[since:] if e["event"] == "step-started")


@pytest.mark.parametrize(
    ("change", "first_run"),
    [
        (lambda steps: [*steps[:1], steps[2], steps[1]], 1),  # the order
        (lambda steps: [{**steps[0], "inline": ["echo other"]}, *steps[1:]], 0),  # an inline command
        (lambda steps: [*steps[:1], {**steps[1], "name": "build"}, *steps[2:]], 1),  # a definition
    ],
    ids=["order", "inline", "definition"],
)
def test_a_change_runs_the_changed_step_and_every_one_after_it(builds: Builds, change: Any, first_run: int) -> None:
    builds.make(STEPS, checkpoint=True).run()
    since = len(builds.events)
    assert builds.make(change(STEPS)).run().status == "Succeeded"
    ran = customize_runs(builds, since)
    assert len(cached_steps(builds, since)) == first_run and len(ran) == 3 - first_run
    assert ran[0].startswith(f"customize[{first_run}]")


def test_a_different_setting_or_secret_misses(builds: Builds) -> None:
    builds.make(STEPS, checkpoint=True).run()
    for options in ({"init": "none"}, {"network": "none"}, {"secrets": {"TOKEN": "x"}}):
        since = len(builds.events)
        assert builds.make(STEPS, **options).run().status == "Succeeded"
        assert cached_steps(builds, since) == [], options


def test_the_checksum_field_is_not_part_of_the_key_but_the_file_is(builds: Builds) -> None:
    script = builds.folder / "app.sh"
    script.write_text("echo from the file\n")
    steps = [STEPS[0], {"type": "Shell", "name": "file", "scriptUri": "app.sh"}]
    builds.make(steps, checkpoint=True).run()
    since = len(builds.events)
    digest = hashlib.sha256(script.read_bytes()).hexdigest()
    builds.make([STEPS[0], {**steps[1], "sha256Checksum": digest}]).run()
    assert len(cached_steps(builds, since)) == 2  # `checksums --write` does not undo the cache
    script.write_text("echo edited\n")
    since = len(builds.events)
    builds.make(steps).run()
    assert cached_steps(builds, since) == ["customize[0] install"]


def test_no_cache_neither_restores_nor_keeps(builds: Builds) -> None:
    builds.make(STEPS, checkpoint=True).run()
    kept = dict(FakeStates.kept)
    since = len(builds.events)
    run = builds.make(STEPS, cache=False)
    assert run.run().status == "Succeeded"
    assert cached_steps(builds, since) == [] and len(customize_runs(builds, since)) == 3
    assert FakeStates.kept == kept and builds.target(run).kept == []


def test_cache_from_runs_again_from_that_step_and_replaces_what_was_kept(builds: Builds) -> None:
    first = builds.make(STEPS, checkpoint=True)
    first.run()
    since = len(builds.events)
    again = builds.make(STEPS, cache_from="compile", checkpoint=True)
    assert again.run().status == "Succeeded"
    assert cached_steps(builds, since) == ["customize[0] install"]
    assert builds.target(again).kept == first.ctx.cache_keys[1:]  # replaced
    entries = {e.key: e for e in all_entries(builds.store.root)}
    assert entries[first.ctx.cache_keys[2]].build == again.build_id
    refused = builds.make(STEPS, cache_from="nope").run()
    assert isinstance(refused.error, UsageError) and "no customizer or validator 'nope'" in str(refused.error)


def test_only_work_worth_a_keep_is_kept(builds: Builds, monkeypatch: pytest.MonkeyPatch) -> None:
    run = builds.make(STEPS)  # fake steps take no time, the rule wants more
    monkeypatch.setattr(FakeStates, "keep_after", 0.5)
    assert run.run().status == "Succeeded"
    assert builds.target(run).kept == []
    monkeypatch.setattr(FakeStates, "keep_after", 0.0)
    run = builds.make(STEPS)
    run.run()
    assert len(builds.target(run).kept) == 3


def test_a_state_removed_by_hand_is_a_miss_and_its_entry_goes(builds: Builds) -> None:
    first = builds.make(STEPS, checkpoint=True)
    first.run()
    FakeStates.kept.pop(first.ctx.cache_keys[2])
    since = len(builds.events)
    assert builds.make(STEPS).run().status == "Succeeded"
    assert customize_runs(builds, since) == ["customize[2] app"]
    assert first.ctx.cache_keys[2] not in {e.key for e in all_entries(builds.store.root)}


def test_a_kept_state_that_fails_to_start_is_dropped_and_every_step_runs(builds: Builds) -> None:
    first = builds.make(STEPS, checkpoint=True)
    first.run()
    FakeStates.broken.add(first.ctx.cache_keys[2])
    since = len(builds.events)
    again = builds.make(STEPS)
    assert again.run().status == "Succeeded"
    assert len(customize_runs(builds, since)) == 3 and cached_steps(builds, since) == []
    warned = [e["message"] for e in builds.named("warning") if "did not start" in e["message"]]
    assert len(warned) == 1 and "is damaged" in warned[0] and "every customizer runs" in warned[0]
    assert first.ctx.cache_keys[2] not in FakeStates.kept
    assert first.ctx.cache_keys[2] not in {e.key for e in all_entries(builds.store.root)}


def test_a_keep_cut_short_leaves_no_entry_and_is_replaced_then_swept(builds: Builds) -> None:
    first = builds.make(STEPS, checkpoint=True)
    first.run()
    key = first.ctx.cache_keys[2]
    (builds.store.root / "step-cache" / f"{key}.json").unlink()  # the state was written, its entry not
    since = len(builds.events)
    again = builds.make(STEPS, checkpoint=True)
    assert again.run().status == "Succeeded"
    assert customize_runs(builds, since) == ["customize[2] app"]  # a state without an entry is no hit
    assert builds.target(again).kept == [key]  # replaced under the lock
    cache = StepCache(builds.store.root, FakeStates())
    FakeStates.kept["f" * 64] = time.time() - 3600  # an old state nobody wrote an entry for
    FakeStates.kept["e" * 64] = time.time()  # a build may be writing its entry right now
    removed = cache.orphans()
    assert len(removed) == 1 and "f" * 64 not in FakeStates.kept and "e" * 64 in FakeStates.kept


def test_a_keep_that_fails_is_a_warning_and_the_build_goes_on(builds: Builds, monkeypatch: pytest.MonkeyPatch) -> None:
    def refusing(self: FakeTarget, states: FakeStates, key: str, base_image: str) -> int:
        raise TargetError("cannot keep")

    monkeypatch.setattr(FakeTarget, "keep_state", refusing)
    assert builds.make(STEPS, checkpoint=True).run().status == "Succeeded"
    warnings = [e["message"] for e in builds.named("warning")]
    assert any("could not be kept for the next builds: cannot keep" in w for w in warnings)


def test_a_build_with_nothing_kept_does_not_ask_the_engine_what_it_keeps(
    builds: Builds, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Listing kept states searches every image the engine holds: a build whose steps have
    # no entry in the store skips it; one whose steps do, asks once.
    asked: list[int] = []
    original = FakeStates.present
    monkeypatch.setattr(FakeStates, "present", lambda self: asked.append(1) or original(self))
    assert builds.make(STEPS).run().status == "Succeeded"
    assert asked == []
    assert builds.make(STEPS, checkpoint=True).run().status == "Succeeded"
    since = len(builds.events)
    asked.clear()
    assert builds.make(STEPS).run().status == "Succeeded"
    assert cached_steps(builds, since) and len(asked) == 1


def test_prune_removes_the_least_recently_used_beyond_the_limit_but_not_states_in_use(builds: Builds) -> None:
    cache = StepCache(builds.store.root, FakeStates())
    for number in range(4):
        key = f"{number}" * 64
        FakeStates.kept[key] = time.time()
        cache.record(Entry(key, "fake", f"customize[{number}]", number, "b", "t", time.time(), 1000))
        os.utime(builds.store.root / "step-cache" / f"{key}.json", (1000 + number, 1000 + number))
    FakeStates.busy.add("0" * 64)
    removed = cache.prune(2000)
    assert [e.key[0] for e in removed] == ["1", "2"]  # 0 is older but in use
    assert set(FakeStates.kept) == {"0" * 64, "3" * 64}


def test_a_cached_step_is_told_everywhere_a_step_is(builds: Builds, tmp_path: Any) -> None:
    first = builds.make(STEPS, checkpoint=True)
    first.run()
    again = builds.make(STEPS)
    again.run()
    events = [e for e in builds.events if e.get("buildId", again.build_id) == again.build_id]
    events = events[events.index(next(e for e in events if e.get("buildId") == again.build_id)) :]
    steps = {s["name"]: s for s in steps_of(events)}
    assert steps["customize[0] install"]["status"] == "cached"
    assert steps["customize[0] install"]["cachedFrom"] == first.build_id
    report = JunitReport()
    report.add_build("t", events)
    path = tmp_path / "junit.xml"
    report.write(path)
    text = path.read_text()
    assert 'failures="0"' in text and f"kept by build {first.build_id}" in text
    log = (builds.store.build_dir(again.build_id) / "customization.log").read_text()
    assert f"restored from the step cache (kept by build {first.build_id})" in log


def test_keys_chain_and_sizes_parse() -> None:
    one, two = chain({"source": "a"}, ["x", "y"]), chain({"source": "a"}, ["x", "z"])
    assert one[0] == two[0] and one[1] != two[1]
    assert chain({"source": "b"}, ["x"])[0] != one[0]
    assert parse_size("20G") == 20 * 1024**3 and parse_size("1.5k") == 1536 and parse_size("100") == 100
    with pytest.raises(UsageError, match="not a size"):
        parse_size("lots")
    assert json.dumps(chain({}, [])) == "[]"
