"""The HTML build report, loaded in headless Chromium as a user opens it: it loads without
errors, its timeline has one bar per step, and a failed step is marked and open."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from engine.report import report_of
from tests.engine.pipeline.conftest import Builds
from tests.support import managed_image_id

pytestmark = pytest.mark.browser


def load(chromium: str, page: Path) -> tuple[str, str]:
    """The page's DOM after its script ran, and Chromium's log (console messages included)."""
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={page.parent / 'chromium-profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def test_the_report_of_a_failed_build(builds: Builds, chromium: str, tmp_path: Path, cli: Any) -> None:
    builds.rule("exit 3", 3, ["checking", "<b>not markup</b>", "the reason"])
    steps = [
        {"type": "Shell", "name": "first", "inline": ["echo first"]},
        {"type": "Shell", "name": "second", "inline": ["echo x; exit 3"]},
    ]
    image = {"type": "ManagedImage", "imageId": managed_image_id("r"), "location": "westeurope", "runOutputName": "o"}
    run = builds.make(steps, distribute=[image])
    run.run()
    record = builds.record(run.build_id)
    page = tmp_path / "report.html"
    page.write_text(report_of(builds.store.build_dir(run.build_id), record))

    dom, log = load(chromium, page)
    assert ":CONSOLE" not in log, log[-2000:]  # no console message: no script error
    started = [e["step"] for e in builds.named("step-started")]
    bars = re.findall(r"<div class=\"bar ([a-z-]+)\" data-step=\"([^\"]+)\"", dom)
    assert [name for _, name in bars] == started
    assert {name: status for status, name in bars}["customize[1] second"] == "failed"
    failed = re.search(r"<details class=\"step failed\" open=\"\" data-step=\"customize\[1\] second\">", dom)
    assert failed, dom[:3000]
    assert re.search(r"<details class=\"step succeeded\" data-step=\"customize\[0\] first\">", dom)
    assert "&lt;b&gt;not markup&lt;/b&gt;" in dom and "<b>not markup</b>" not in dom
    assert "customize[1] second failed with exit code 3" in dom


def test_the_cli_writes_a_stored_build_s_report(builds: Builds, cli: Any, tmp_path: Path) -> None:
    run = builds.make([{"type": "Shell", "name": "only", "inline": ["echo hi"]}])
    run.run()
    out = tmp_path / "r.html"
    result = cli("report", run.build_id, "--store", str(builds.store.root), "-o", str(out))
    assert result.code == 0, result.output
    assert 'data-step="customize[0] only"' in out.read_text().replace("'", '"')
    missing = cli("report", "no-such-build", "--store", str(builds.store.root))
    assert missing.code == 2
