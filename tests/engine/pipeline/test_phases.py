"""The phases one by one on the fake target: inputs, --debug, Windows steps, sources,
and the keep/remove decision as a table."""

from __future__ import annotations

import hashlib
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from engine.errors import BuildFailed, EnvironmentProblem, Interrupted, UsageError
from engine.pipeline import run_all
from engine.pipeline.deprovision import OVERRIDE_WINDOWS, plan_linux
from engine.pipeline.revisit import rerun, resume, step_index
from engine.pipeline.source import platform_image, recipe_hint
from engine.pipeline.teardown import ABORT, KEPT, decide_keep
from engine.template import model as m
from tests.engine.pipeline.conftest import Builds
from tests.fake_target import FakeTarget
from tests.support import base_url, http_server

SHELL_OK = {"type": "Shell", "name": "first", "inline": ["echo first"]}
SHELL_TWO = {"type": "Shell", "name": "second", "inline": ["echo second"]}


def test_inputs_are_fetched_and_checked_before_any_target_starts(builds: Builds) -> None:
    data = b"#!/bin/sh\necho from a file\n"
    (builds.folder / "step.sh").write_bytes(data)
    good = {"type": "Shell", "name": "file", "scriptUri": "step.sh", "sha256Checksum": hashlib.sha256(data).hexdigest()}
    placed = {"type": "File", "name": "put", "sourceUri": "step.sh", "destination": "/tmp/step.sh"}
    run = builds.make([good, placed])
    assert run.run().status == "Succeeded"
    target = builds.target(run)
    assert target.files["/tmp/step.sh"] == data and target.ran("echo from a file")
    assert "sha256 verified" in builds.messages()

    class Missing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *_args: Any) -> None:
            pass

    with http_server(ThreadingHTTPServer(("127.0.0.1", 0), Missing)) as server:
        missing = {"type": "Shell", "name": "file", "scriptUri": f"{base_url(server)}/step.sh"}
        failed = builds.make([missing], name="bad")
        result = failed.run()
    assert isinstance(result.error, BuildFailed) and result.error.step == "fetch (customize[0] file)"
    assert failed.build_id not in FakeTarget.opened  # nothing started


def test_an_edited_local_script_runs_as_it_is_and_says_it_differs(builds: Builds) -> None:
    (builds.folder / "step.sh").write_bytes(b"#!/bin/sh\necho edited\n")
    stale = {"type": "Shell", "name": "file", "scriptUri": "step.sh", "sha256Checksum": "0" * 64}
    run = builds.make([stale])
    assert run.run().status == "Succeeded"
    assert builds.target(run).ran("echo edited")
    assert "not the template's (AIB would fail this step)" in builds.messages()


@pytest.mark.parametrize(
    ("answers", "ran", "kept"),
    [
        (["continue", "continue"], ["echo first", "echo second"], False),
        (["skip", "continue"], ["echo second"], False),
        (["continue", "rerun", "continue"], ["echo first", "echo first", "echo second"], False),
        (["rerun", "continue", "continue"], ["echo first", "echo second"], False),
        (["continue", "abort"], ["echo first"], True),
    ],
)
def test_debug_asks_before_each_customizer(builds: Builds, answers: list[str], ran: list[str], kept: bool) -> None:
    asked: list[str] = []

    def pause(step: str) -> str:
        asked.append(step)
        return answers[len(asked) - 1]

    run = builds.make([SHELL_OK, SHELL_TWO], pause=pause)
    result = run.run()
    scripts = [c.script[1].decode() for c in builds.target(run).commands if c.script]
    assert [s.splitlines()[1] for s in scripts if s.startswith("#!/bin/sh -e")] == ran
    assert result.kept is kept
    if kept:
        assert "aborted before customize[1] second (--debug)" in str(result.error)


def test_windows_targets_get_the_sysprep_script_restarts_and_update_rounds(
    builds: Builds, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FakeTarget, "os", "Windows")
    builds.rule("Test-Path", 1, times=1)  # no script yet: AIB's is put in place
    builds.rule("-1-0.ps1", 101, times=1)  # customize[1]'s first round asks for a restart
    steps = [
        {"type": "WindowsRestart", "name": "reboot", "restartTimeout": "5m"},
        {"type": "WindowsUpdate", "name": "updates"},
    ]
    source = {
        "type": "PlatformImage",
        "publisher": "MicrosoftWindowsServer",
        "offer": "WindowsServer",
        "sku": "2022-datacenter",
        "version": "latest",
    }
    path = builds.folder / "win.json"
    from tests.support import template

    path.write_text(json.dumps(template("win", steps, source=source)))
    from engine.pipeline import BuildOptions, BuildRun
    from engine.template.loading import load_templates

    (loaded,) = load_templates(path)
    run = BuildRun(loaded, BuildOptions(target="fake"), builds.store, builds.events.append)
    result = run.run()
    target = builds.target(run)
    assert result.status == "Succeeded", result.error
    assert OVERRIDE_WINDOWS in target.files and target.files[OVERRIDE_WINDOWS].count(b"\r\n") > 1
    assert len(target.restarts) == 2  # the WindowsRestart, and one for the update round
    assert "customize[1] updates round 2" in builds.started_steps()
    assert target.ran(f"-File {OVERRIDE_WINDOWS}")


def test_a_missing_windows_deprovision_script_is_warned_as_aib_warns() -> None:
    from engine.pipeline.deprovision import MISSING_WINDOWS_SCRIPT, plan_windows

    assert plan_windows(False).warnings == [MISSING_WINDOWS_SCRIPT] and not plan_windows(False).generalizes
    assert plan_windows(True).steps and plan_linux(0, "skip").steps == []


def test_a_platform_image_goes_through_the_catalogue(tmp_path: Path) -> None:
    declared = m.PlatformImageSource(
        type="PlatformImage", publisher="Debian", offer="debian-12", sku="12", version="latest"
    )
    assert platform_image(declared, None).image_ref == "debian:12"
    pinned = declared.model_copy(update={"version": "0.20240101.1"})
    assert platform_image(pinned, None).record["version"] == "0.20240101.1"
    unknown = declared.model_copy(update={"publisher": "Nobody"})
    with pytest.raises(EnvironmentProblem, match="no catalogue entry"):
        platform_image(unknown, None)
    override = tmp_path / "catalogue.json"
    override.write_text(json.dumps({"Nobody:debian-12:12:latest": "mine:1"}))
    assert platform_image(unknown, override).image_ref == "mine:1"
    assert "build-image.sh debian:12" in recipe_hint("debian:12") and "--catalogue" in recipe_hint("other:1")


def test_a_stored_source_must_be_in_the_store(builds: Builds) -> None:
    from tests.support import managed_image_id

    run = builds.make([SHELL_OK])
    from engine.pipeline.source import stored_image

    declared = m.ManagedImageSource(type="ManagedImage", imageId=managed_image_id("missing"))
    with pytest.raises(UsageError, match="is not in the local store"):
        stored_image(run.ctx, declared)
    builds.store.put(
        managed_image_id("there"),
        {
            "name": "there",
            "properties": {"storageProfile": {"osDisk": {"osType": "Windows"}}},
            "aibLocal": {"dockerImage": "img:1"},
        },
    )
    found = stored_image(run.ctx, declared.model_copy(update={"image_id": managed_image_id("there")}))
    assert found.image_ref == "img:1" and found.os_type == "Windows"


@pytest.mark.parametrize(
    ("error", "on_error", "rerun", "finishing", "user", "expected"),
    [
        (None, "cleanup", False, False, False, None),
        (BuildFailed("x", step="s"), "cleanup", False, False, False, None),
        (BuildFailed("x", step="s"), "abort", False, False, False, ABORT),
        (BuildFailed("x", step="s"), "ask", False, False, True, KEPT),
        (BuildFailed("x", step="s"), "ask", False, False, False, None),
        (Interrupted("x"), "abort", False, False, False, None),
        (Interrupted("x"), "cleanup", True, False, False, KEPT),  # a rerun never takes the kept target
        (None, "cleanup", True, False, False, KEPT),
        (None, "cleanup", True, True, False, None),  # ... unless it finished the build
        (BuildFailed("x", step="s"), "cleanup", True, True, False, KEPT),
        (None, "cleanup", False, False, True, KEPT),  # --debug abort
    ],
)
def test_keep_decision(
    error: Any, on_error: str, rerun: bool, finishing: bool, user: bool, expected: str | None
) -> None:
    assert decide_keep(error, on_error=on_error, rerun=rerun, finishing=finishing, user_keeps=user) == expected


def test_rerun_and_resume_refuse_what_they_cannot_do(builds: Builds) -> None:
    from engine.pipeline import BuildOptions

    run = builds.make([SHELL_OK, SHELL_TWO])
    assert run.run().status == "Succeeded"
    options = BuildOptions()
    with pytest.raises(UsageError, match="give --from or --only"):
        rerun(builds.store, run.build_id, options, builds.events.append, start="first", only="second")
    with pytest.raises(UsageError, match=r"built .*, not"):
        resume(builds.store, run.build_id, options, builds.events.append, [builds.folder / "other.json"])
    with pytest.raises(UsageError, match="no build 'nope'"):
        rerun(builds.store, "nope", options, builds.events.append)
    again = rerun(builds.store, run.build_id, options, builds.events.append, start="customize[1]")
    result = again.run()
    assert isinstance(result.error, UsageError) and "kept no target" in str(result.error)
    assert step_index(run.ctx.loaded, "1") == 1 and step_index(run.ctx.loaded, "second") == 1
    with pytest.raises(
        UsageError, match="no customizer or validator 'third' in t \\(customizers: 0:first, 1:second\\)"
    ):
        step_index(run.ctx.loaded, "third")


def test_builds_run_side_by_side(builds: Builds) -> None:
    runs = [builds.make([SHELL_OK], name=f"t{i}") for i in range(3)]
    results = run_all(runs, parallel=3)
    assert [r.status for r in results] == ["Succeeded"] * 3
    assert len({r.build_id for r in results}) == 3


def test_a_download_over_aibs_file_limit_is_warned_once_it_is_known(builds: Builds) -> None:

    class Big(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            size = 21 * 1024 * 1024
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"\0" * (1 << 20)
            for _ in range(21):
                self.wfile.write(chunk)

        def log_message(self, *_args: Any) -> None:
            pass

    with http_server(ThreadingHTTPServer(("127.0.0.1", 0), Big)) as server:
        placed = {"type": "File", "name": "big", "sourceUri": f"{base_url(server)}/big.bin", "destination": "/tmp/big"}
        assert builds.make([placed]).run().status == "Succeeded"
    warned = [m for m in builds.messages().splitlines() if "over AIB's 20 MB File customizer limit" in m]
    assert warned == ["customize[0] big: 22020096 bytes is over AIB's 20 MB File customizer limit"]
