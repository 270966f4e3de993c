"""The debugging loop on the real engine: keep, rerun after editing, --debug with a real
pseudo-terminal, secrets, many templates, clean. The step cache: test_step_cache.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import managed_image_id, shell_in_kept, template, template_id

pytestmark = pytest.mark.docker


def build_id_of(result: Any) -> str:
    line = next(line for line in result.stdout.splitlines() if " build " in line and " of " in line)
    return line.split(" build ", 1)[1].split()[0]


def test_edit_and_rerun_on_the_kept_target(
    cli: Any, write_template: Any, tmp_path: Path, base_image: str, leftovers: Any
) -> None:
    script = tmp_path / "step.sh"
    script.write_text("#!/bin/sh\necho attempt-one\nexit 3\n")
    image_id = managed_image_id("rerun")
    path = write_template(
        template(
            "rerun",
            [
                {"type": "Shell", "name": "prepare", "inline": ["echo prepared | tee /tmp/prepared"]},
                {"type": "Shell", "name": "flaky", "scriptUri": "step.sh"},
                {"type": "Shell", "name": "last", "inline": ["cat /tmp/prepared /tmp/fixed"]},
            ],
            distribute=[
                {"type": "ManagedImage", "imageId": image_id, "location": "westeurope", "runOutputName": "img"}
            ],
            errorHandling={"onCustomizerError": "abort"},
        )
    )
    first = cli("build", str(path), "--network", "none")
    assert first.code == 1, first.output
    build_id = build_id_of(first)
    assert f"aib-local rerun {build_id}" in first.stdout
    assert "(kept)" in cli("list", "--type", "builds").stdout

    # Edit the script and rerun: from the failed step, on the same container.
    script.write_text("#!/bin/sh\necho attempt-two\ntouch /tmp/fixed\n")
    again = cli("rerun", build_id)
    assert again.code == 0, again.output
    assert "attached to the kept docker container" in again.stdout
    assert "attempt-two" in again.stdout and "prepared" in again.stdout
    assert "customize[0] prepare" not in again.stdout.split("attached", 1)[1].split("customize[1]")[0]
    assert len(leftovers()) == 1  # still kept: no --finish
    status = json.loads(cli("show", template_id("rerun")).stdout)["properties"]["lastRunStatus"]
    assert status["runState"] == "Failed"  # a rerun without --finish is not a run of the template

    only = cli("rerun", build_id, "--only", "prepare")
    assert only.code == 0 and "==> customize[1] flaky" not in only.stdout and "==> customize[0] prepare" in only.stdout

    finished = cli("rerun", build_id, "--from", "last", "--finish")
    assert finished.code == 0, finished.output
    assert "distribute[0] img (ManagedImage)" in finished.stdout
    assert leftovers() == []
    status = json.loads(cli("show", template_id("rerun")).stdout)["properties"]["lastRunStatus"]
    assert status["runState"] == "Succeeded"
    log = cli("logs", build_id)
    assert "attempt-one" in log.stdout and "attempt-two" in log.stdout


def test_secrets_are_exported_and_never_shown(cli: Any, write_template: Any, store: Path, base_image: str) -> None:
    path = write_template(
        template(
            "secret",
            [
                {
                    "type": "Shell",
                    "name": "use",
                    "inline": ['echo "token is $API_TOKEN"', 'test "$FROM_ENV" = from-the-env'],
                },
            ],
        )
    )
    result = cli(
        "build",
        str(path),
        "--network",
        "none",
        "--output",
        "json",
        "--secret",
        "API_TOKEN=tok-123-very-secret",
        "--secret",
        "FROM_ENV",
        env={"FROM_ENV": "from-the-env"},
    )
    assert result.code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert any(e.get("line") == "token is ***" for e in events)
    assert "tok-123-very-secret" not in result.output
    log = next(store.glob("builds/*/customization.log")).read_text()
    assert "token is ***" in log and "tok-123-very-secret" not in log
    assert cli("build", str(path), "--secret", "NOT_SET_ANYWHERE").code == 2


def test_many_templates_in_parallel(cli: Any, write_template: Any, base_image: str, leftovers: Any) -> None:
    good = write_template(template("good", [{"type": "Shell", "inline": ["echo fine"]}]), "good.json")
    bad = write_template(template("bad", [{"type": "Shell", "inline": ["exit 5"]}]), "bad.json")
    result = cli("build", str(good), str(bad), "--network", "none", "--parallel", "2")
    assert result.code == 1, result.output
    assert "[good] " in result.stdout and "[bad] " in result.stdout
    assert "summary:" in result.stdout
    summary = result.stdout.split("summary:")[1]
    assert "Succeeded" in summary and "Failed" in summary
    assert leftovers() == []


def test_logs_follow_a_running_build(cli: Any, write_template: Any, store: Path, base_image: str) -> None:
    path = write_template(template("follow", [{"type": "Shell", "inline": ["echo begin", "sleep 3", "echo end"]}]))
    env = {**os.environ, "AIB_LOCAL_STORE": str(store)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "build", str(path), "--network", "none"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "begin" in line:
            break
    build_id = next(p.name for p in (store / "builds").iterdir())
    followed = cli("logs", build_id, "--follow", timeout=60)
    proc.communicate(timeout=60)
    assert followed.code == 0
    assert "OUT begin" in followed.stdout and "OUT end" in followed.stdout
    assert "build-finished" in followed.stdout


def test_debug_pauses_with_shell_skip_and_continue(
    write_template: Any, store: Path, base_image: str, leftovers: Any
) -> None:
    pexpect = pytest.importorskip("pexpect")
    path = write_template(
        template(
            "debugged",
            [
                {"type": "Shell", "name": "one", "inline": ["echo ONE-RAN > /tmp/one"]},
                {"type": "Shell", "name": "two", "inline": ["echo TWO-RAN"]},
                {"type": "Shell", "name": "three", "inline": ["echo THREE-RAN"]},
            ],
        )
    )
    env = {**os.environ, "AIB_LOCAL_STORE": str(store), "TERM": "dumb"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "engine", "build", str(path), "--network", "none", "--debug"],
        env=env,
        encoding="utf-8",
        timeout=60,
    )
    child.expect("next is customize\\[0\\] one")
    child.expect("choice")
    child.sendline("c")
    child.expect("next is customize\\[1\\] two")
    child.expect("choice")
    child.sendline("s")
    child.expect("[$#] ")
    child.sendline("cat /tmp/one; echo shell-$((40+2))")
    child.expect("ONE-RAN")
    child.expect("shell-42")
    child.sendline("exit")
    child.expect("next is customize\\[1\\] two")
    child.expect("choice")
    child.sendline("k")
    child.expect("skipped")
    child.expect("next is customize\\[2\\] three")
    child.expect("choice")
    child.sendline("c")
    child.expect("THREE-RAN")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "TWO-RAN" not in (child.before or "")
    assert leftovers() == []


def test_shell_into_a_kept_build(cli: Any, write_template: Any, store: Path, base_image: str, leftovers: Any) -> None:
    pytest.importorskip("pexpect")
    path = write_template(
        template("shelled", [{"type": "Shell", "inline": ["echo evidence > /tmp/evidence", "exit 2"]}])
    )
    result = cli("build", str(path), "--network", "none", "--on-error", "abort")
    build_id = build_id_of(result)
    shell_in_kept(store, build_id, "shell in docker container", "cat /tmp/evidence; id -un", ["evidence", "packer"])
    assert len(leftovers()) == 1
    cleaned = cli("clean")
    assert f"removed container aib-local-{build_id}" in cleaned.stdout
    assert leftovers() == []
    assert cli("shell", build_id).code == 2  # not kept any more (and no terminal)


def test_on_error_ask_on_a_terminal_with_the_live_view(
    write_template: Any, store: Path, base_image: str, leftovers: Any
) -> None:
    pexpect = pytest.importorskip("pexpect")
    path = write_template(template("asked", [{"type": "Shell", "name": "boom", "inline": ["echo live", "exit 4"]}]))
    env = {**os.environ, "AIB_LOCAL_STORE": str(store), "TERM": "xterm", "COLUMNS": "120"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "engine", "build", str(path), "--network", "none", "--on-error", "ask"],
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 120),
    )
    child.expect("Keep docker container")
    child.sendline("y")
    child.expect(pexpect.EOF)
    child.close()
    output = child.before or ""
    assert child.exitstatus == 1
    assert "step" in output and "result" in output and "failed (exit 4)" in output  # the summary table
    assert len(leftovers()) == 1
