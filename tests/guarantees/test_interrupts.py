"""Guarantee 1: SIGINT or SIGTERM in any phase stops the work, removes the target and the
partial files, leaves the store unchanged or fully updated, and exits 130/143 within
10 s; a second signal during the cleanup cannot make it leave anything behind."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    SIGNALS,
    Running,
    build_ids,
    build_record,
    containers_of,
    images_named,
    make_gallery,
    managed_image_id,
    record,
    store_problems,
    template,
    template_id,
)

pytestmark = pytest.mark.docker

SLOW_STEP = {"type": "Shell", "name": "slow", "inline": ["echo STEP-STARTED", "sleep 120", "echo NEVER"]}
QUICK_STEP = {"type": "Shell", "name": "quick", "inline": ["echo quick step"]}

# phase -> (customizers, distribute kind, failpoint, what to wait for before signalling)
PHASES: dict[str, tuple[list[dict[str, Any]], str, str, str]] = {
    "start": ([QUICK_STEP], "managed", "target:started=wait:120", "failpoint target:started reached"),
    "customizer": ([SLOW_STEP], "managed", "", "STEP-STARTED"),
    "deprovision": ([QUICK_STEP], "managed", "phase:deprovision=wait:120", "failpoint phase:deprovision reached"),
    "vhd-writing": ([QUICK_STEP], "vhd", "vhd:unpacked=wait:120", "failpoint vhd:unpacked reached"),
    "gallery-write": ([QUICK_STEP], "gallery", "image:committed=wait:120", "failpoint image:committed reached"),
}


def distribution(kind: str, definition: str) -> list[dict[str, Any]]:
    if kind == "vhd":
        return [{"type": "VHD", "runOutputName": "disk"}]
    if kind == "gallery":
        return [{"type": "SharedImage", "galleryImageId": definition, "runOutputName": "sig"}]
    return [
        {
            "type": "ManagedImage",
            "imageId": managed_image_id("interrupted"),
            "location": "westeurope",
            "runOutputName": "managed",
        }
    ]


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", list(PHASES))
def test_a_signal_in_any_phase_cleans_up_and_exits_128_plus_signal(
    phase: str, signal_name: str, cli: Any, store: Path, write_template: Any, docker_client: Any, base_image: str
) -> None:
    customize, kind, failpoint, marker = PHASES[phase]
    definition = make_gallery(cli) if kind == "gallery" else ""
    name = f"int-{phase}"
    path = write_template(template(name, customize, distribute=distribution(kind, definition)))
    signum, expected_code = SIGNALS[signal_name]

    running = Running(["build", str(path), "--network", "none"], store, {"AIB_LOCAL_FAILPOINTS": failpoint})
    running.wait_for(marker)
    running.send(signum)
    code, output = running.finish()

    assert code == expected_code, output
    assert running.seconds_since_signal() < 10
    (build_id,) = build_ids(store)
    assert containers_of(docker_client, build_id) == []  # the target, and the VHD helper
    assert images_named(docker_client, build_id) == []  # no committed image outlives the build
    assert store_problems(store) == []
    assert build_record(store, build_id)["status"] == "canceled"
    status = record(store, template_id(name))
    assert status is not None
    assert status["properties"]["lastRunStatus"]["runState"] == "Canceled"
    assert "NEVER" not in output
    # Nothing half-made is visible as finished.
    assert record(store, managed_image_id("interrupted")) is None
    assert [p for p in store.rglob("*") if p.suffix == ".vhd"] == []
    if kind == "gallery":
        listed = cli("sig", "image-version", "list", "-g", "rg", "-r", "gal", "-i", "debian")
        assert listed.code == 0 and listed.stdout.strip() == "[]", listed.output


def test_a_second_ctrl_c_during_cleanup_leaves_nothing_either(
    store: Path, write_template: Any, docker_client: Any, base_image: str
) -> None:
    path = write_template(template("twice", [SLOW_STEP]))
    running = Running(["build", str(path), "--network", "none"], store, {"AIB_LOCAL_FAILPOINTS": "teardown=wait:2"})
    running.wait_for("STEP-STARTED")
    running.send(signal.SIGINT)
    running.wait_for("failpoint teardown reached")
    (build_id,) = build_ids(store)
    assert containers_of(docker_client, build_id) != []  # cleanup has not happened yet
    running.send(signal.SIGINT)
    time.sleep(0.2)
    running.send(signal.SIGTERM)
    code, output = running.finish()

    assert code == 130, output  # the first signal decides
    assert "still cleaning up" in output
    assert containers_of(docker_client, build_id) == []
    assert store_problems(store) == []
    assert build_record(store, build_id)["status"] == "canceled"


@pytest.mark.ssh
def test_an_interrupted_ssh_build_stops_the_remote_step(
    store: Path, write_template: Any, sshd: Any, docker_client: Any
) -> None:
    step = {"type": "Shell", "name": "slow", "inline": ["echo STEP-STARTED", "exec sleep 4242"]}
    path = write_template(template("int-ssh", [step]))
    running = Running(["build", str(path), *sshd.cli_args()], store)
    running.wait_for("STEP-STARTED")

    def sleeping() -> bool:
        return sshd.container.exec_run(["pgrep", "-f", "sleep 4242"]).exit_code == 0

    assert sleeping()
    running.send(signal.SIGINT)
    code, output = running.finish()
    assert code == 130, output
    assert running.seconds_since_signal() < 10
    assert not sleeping()
    assert store_problems(store) == []


def test_ctrl_c_stops_parallel_builds_and_their_targets(
    store: Path, write_template: Any, docker_client: Any, base_image: str
) -> None:
    paths = [write_template(template(f"par-{n}", [SLOW_STEP]), f"t{n}.json") for n in range(3)]
    running = Running(["build", *map(str, paths), "--network", "none", "--parallel", "3"], store)
    for _ in paths:
        running.wait_for("STEP-STARTED")
    running.send(signal.SIGINT)
    code, output = running.finish()

    assert code == 130, output
    assert running.seconds_since_signal() < 10
    ids = build_ids(store)
    assert len(ids) == 3
    for build_id in ids:
        assert containers_of(docker_client, build_id) == []
        assert build_record(store, build_id)["status"] == "canceled"
    assert store_problems(store) == []
    assert "NEVER" not in output


def test_an_interrupted_rerun_keeps_the_target_it_came_to(
    cli: Any, store: Path, write_template: Any, docker_client: Any, base_image: str
) -> None:
    failing = {"type": "Shell", "name": "slow", "inline": ["exit 7"]}
    path = write_template(template("rerun-int", [failing]))
    first = cli("build", str(path), "--network", "none", "--on-error", "abort")
    assert first.code == 1, first.output
    (build_id,) = build_ids(store)
    assert containers_of(docker_client, build_id) != []
    write_template(template("rerun-int", [SLOW_STEP]))  # the fix being tried is slow

    running = Running(["rerun", build_id, "--finish"], store)
    running.wait_for("STEP-STARTED")
    running.send(signal.SIGINT)
    code, output = running.finish()
    assert code == 130, output
    assert containers_of(docker_client, build_id) != []  # still there to debug
    assert build_record(store, build_id)["kept"] is True
    assert store_problems(store) == []
    assert cli("clean", "--build", build_id).code == 0
    assert containers_of(docker_client, build_id) == []


def test_a_signal_during_the_cleanup_of_a_failed_build_cannot_break_into_it(
    store: Path, write_template: Any, docker_client: Any, base_image: str
) -> None:
    failing = {"type": "Shell", "name": "fails", "inline": ["exit 4"]}
    path = write_template(template("fail-then-term", [failing]))
    running = Running(["build", str(path), "--network", "none"], store, {"AIB_LOCAL_FAILPOINTS": "teardown=wait:2"})
    running.wait_for("failpoint teardown reached")
    running.send(signal.SIGTERM)
    code, output = running.finish()

    assert code == 143, output
    assert "still cleaning up" in output
    (build_id,) = build_ids(store)
    assert containers_of(docker_client, build_id) == []
    assert build_record(store, build_id)["status"] == "failed"  # what happened to the build
    assert store_problems(store) == []


def test_ctrl_c_at_a_debug_prompt_runs_the_cleanup(
    store: Path, write_template: Any, docker_client: Any, base_image: str
) -> None:
    import pexpect

    path = write_template(template("debug-int", [QUICK_STEP]))
    env = {**os.environ, "AIB_LOCAL_STORE": str(store), "TERM": "dumb"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "engine", "build", str(path), "--network", "none", "--debug"],
        env=env,
        encoding="utf-8",
        timeout=60,
    )
    child.expect("choice")
    (build_id,) = build_ids(store)
    assert containers_of(docker_client, build_id) != []
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()

    assert child.exitstatus == 130, child.before
    assert containers_of(docker_client, build_id) == []
    assert build_record(store, build_id)["status"] == "canceled"
    assert store_problems(store) == []
