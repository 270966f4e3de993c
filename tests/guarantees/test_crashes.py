"""Guarantee 2: after SIGKILL of the engine at any point, `aib-local clean` and the next
build find and remove what the dead build left (by label and by the store's journal),
and no partial artifact is ever visible as finished."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
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

STEP = {"type": "Shell", "name": "step", "inline": ["echo step ran"]}
IMAGE = managed_image_id("crashed")
TEMPLATE_ID = template_id("crash")

# failpoint -> (distribution, what the dead build must have left for the test to mean anything)
KILL_POINTS: dict[str, tuple[str, set[str]]] = {
    "phase:customize=kill": ("managed", {"container"}),
    "vhd:unpacked=kill": ("vhd", {"container"}),  # the target and the disk helper
    "vhd:written=kill": ("vhd", {"container", "partial"}),  # a whole VHD, not yet renamed
    "image:committed=kill": ("managed", {"image"}),  # committed, no record yet
    "image:committed=kill ": ("gallery", {"image"}),
    "store:tmp-written=kill@5": ("managed", {"container", "partial"}),  # a record half-written
}


def distribution(kind: str, cli: Any) -> list[dict[str, Any]]:
    if kind == "vhd":
        return [{"type": "VHD", "runOutputName": "disk"}]
    if kind == "gallery":
        return [{"type": "SharedImage", "galleryImageId": make_gallery(cli), "runOutputName": "sig"}]
    return [{"type": "ManagedImage", "imageId": IMAGE, "location": "westeurope", "runOutputName": "img"}]


def leftovers(store: Path, docker_client: Any, build_id: str) -> set[str]:
    found = set()
    if containers_of(docker_client, build_id):
        found.add("container")
    if images_named(docker_client, build_id):
        found.add("image")
    if list(store.rglob("*.partial")):
        found.add("partial")
    return found


@pytest.mark.parametrize("then", ["clean", "next-build"])
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_what_a_killed_build_left_is_found_and_removed(
    point: str, then: str, cli: Any, store: Path, write_template: Any, docker_client: Any, base_image: str
) -> None:
    kind, expected = KILL_POINTS[point]
    path = write_template(template("crash", [STEP], distribute=distribution(kind, cli)))
    running = Running(["build", str(path), "--network", "none"], store, {"AIB_LOCAL_FAILPOINTS": point.strip()})
    code, output = running.finish()
    assert code == -9, output  # killed outright: no Python cleanup ran
    (build_id,) = build_ids(store)
    assert expected <= leftovers(store, docker_client, build_id), output
    assert (store / "inflight" / f"{build_id}.json").exists()
    # Nothing half-made is visible as finished.
    assert record(store, IMAGE) is None
    assert list(store.rglob("*.vhd")) == []
    assert cli("sig", "image-version", "list", "-g", "rg", "-r", "gal", "-i", "debian").stdout.strip() in ("", "[]")

    if then == "clean":
        cleaned = cli("clean")
        assert cleaned.code == 0, cleaned.output
        assert "removed" in cleaned.stdout
    else:
        other = write_template(template("next", [STEP]), "next.json")
        result = cli("build", str(other), "--network", "none")
        assert result.code == 0, result.output
        assert "removed what builds that died left" in result.stdout

    assert leftovers(store, docker_client, build_id) == set()
    assert store_problems(store) == []
    dead = build_record(store, build_id)
    assert dead["status"] == "failed"
    assert "ended without finishing this build" in dead["message"]
    status = record(store, TEMPLATE_ID)
    assert status is None or status["properties"]["lastRunStatus"]["runState"] == "Failed"


def test_clean_leaves_a_running_build_alone(
    cli: Any, store: Path, write_template: Any, docker_client: Any, base_image: str
) -> None:
    path = write_template(template("alive", [STEP]))
    running = Running(
        ["build", str(path), "--network", "none"], store, {"AIB_LOCAL_FAILPOINTS": "phase:customize=wait:4"}
    )
    running.wait_for("failpoint phase:customize reached")
    (build_id,) = build_ids(store)
    cleaned = cli("clean")
    assert cleaned.code == 0, cleaned.output
    assert "its build is still running" in cleaned.stdout
    assert containers_of(docker_client, build_id) != []
    refused = cli("clean", "--build", build_id)
    assert refused.code == 2 and "is still running" in refused.stderr
    code, output = running.finish()
    assert code == 0, output
    assert "step ran" in output
    assert containers_of(docker_client, build_id) == []
    assert store_problems(store) == []


def test_the_same_template_cannot_run_twice_at_once(
    cli: Any, store: Path, write_template: Any, base_image: str
) -> None:
    path = write_template(template("once", [STEP]))
    running = Running(
        ["build", str(path), "--network", "none"], store, {"AIB_LOCAL_FAILPOINTS": "phase:customize=wait:4"}
    )
    running.wait_for("failpoint phase:customize reached")
    second = cli("build", str(path), "--network", "none")
    assert second.code == 2, second.output
    assert "is being built by build once-" in second.stderr
    assert "one build of a template at a time" in second.stderr
    code, output = running.finish()
    assert code == 0, output
    template_record = json.loads(cli("show", template_id("once")).stdout)
    assert template_record["properties"]["lastRunStatus"]["runState"] == "Succeeded"


@pytest.mark.ssh
@pytest.mark.parametrize("then", ["clean", "next-build"])
def test_the_step_a_killed_ssh_build_left_running_is_stopped(
    then: str, cli: Any, store: Path, write_template: Any, sshd: Any
) -> None:
    step = {"type": "Shell", "name": "slow", "inline": ["echo STEP-STARTED", "exec sleep 4242"]}
    path = write_template(template("ssh-crash", [step]))
    running = Running(["build", str(path), *sshd.cli_args()], store)
    running.wait_for("STEP-STARTED")
    running.proc.kill()
    running.finish()

    def sleeping() -> bool:
        return sshd.container.exec_run(["pgrep", "-f", "sleep 4242"]).exit_code == 0

    assert sleeping()  # an SSH host does not stop a step when its client dies
    (build_id,) = build_ids(store)
    if then == "clean":
        result = cli("clean")
    else:
        result = cli("build", str(write_template(template("next", [STEP]), "next.json")), *sshd.cli_args())
    assert result.code == 0, result.output
    assert f"1 running step(s) of build {build_id} on {sshd.target}" in result.stdout
    assert not sleeping()
    scripts = sshd.container.exec_run(["sh", "-c", f"ls /tmp/aib-local-script-{build_id[-6:]}-* 2>/dev/null"])
    assert scripts.output == b""
    assert store_problems(store) == []
    assert build_record(store, build_id)["status"] == "failed"


def test_a_dead_build_is_shown_as_dead_until_cleaned(
    cli: Any, store: Path, write_template: Any, base_image: str
) -> None:
    path = write_template(template("crash", [STEP]))
    running = Running(
        ["build", str(path), "--network", "none"], store, {"AIB_LOCAL_FAILPOINTS": "phase:deprovision=kill"}
    )
    assert running.finish()[0] == -9
    (build_id,) = build_ids(store)
    listed = cli("list", "--type", "builds")
    assert f"{build_id}  died (aib-local clean)" in listed.stdout
    followed = cli("logs", build_id, "--follow", timeout=20)  # ends: nobody will finish this log
    assert followed.code == 0, followed.output
    assert "step ran" in followed.stdout
    assert f"the process of build {build_id} has died" in followed.stdout
    assert cli("clean").code == 0
    assert f"{build_id}  failed" in cli("list", "--type", "builds").stdout


def test_a_build_is_not_rerun_twice_at_once(
    cli: Any, store: Path, write_template: Any, docker_client: Any, base_image: str
) -> None:
    path = write_template(template("rerun-twice", [{"type": "Shell", "name": "fails", "inline": ["exit 5"]}]))
    assert cli("build", str(path), "--network", "none", "--on-error", "abort").code == 1
    (build_id,) = build_ids(store)
    write_template(template("rerun-twice", [STEP]))
    running = Running(["rerun", build_id], store, {"AIB_LOCAL_FAILPOINTS": "phase:customize=wait:4"})
    running.wait_for("failpoint phase:customize reached")
    second = cli("rerun", build_id)
    assert second.code == 2, second.output
    assert f"build {build_id} is already being rerun by another aib-local" in second.stderr
    code, output = running.finish()
    assert code == 0, output
    assert "step ran" in output
    assert cli("clean", "--build", build_id).code == 0
    assert containers_of(docker_client, build_id) == []


def test_a_defect_mid_build_still_leaves_nothing_behind(
    cli: Any, store: Path, write_template: Any, docker_client: Any, base_image: str
) -> None:
    path = write_template(template("defect", [STEP]))
    # An exception that is none of aib-local's own errors, as a bug would raise.
    result = cli("build", str(path), "--network", "none", env={"AIB_LOCAL_FAILPOINTS": "phase:customize=error"})
    assert result.code == 1, result.output
    assert "internal error" in result.stderr and "rerun with --debug" in result.stderr
    assert "Traceback" not in result.output
    named = re.search(r"traceback in (\S+);", result.stderr)
    assert named, result.stderr
    crash_log = Path(named.group(1))
    assert "Traceback" in crash_log.read_text()
    crash_log.unlink()  # this test's own: each run would leave one
    (build_id,) = build_ids(store)
    assert containers_of(docker_client, build_id) == []
    assert build_record(store, build_id)["status"] == "failed"
    assert store_problems(store) == []  # the journal entry closed too
