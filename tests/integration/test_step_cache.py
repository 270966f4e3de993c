"""The step cache on the real engine: a rebuild after an edit runs only what changed,
restores state as the first build left it, and ends in the same image; --cache-from,
--resume, prune and the size limit; and the faults (a keep killed or interrupted, two
builds keeping the same step, a kept image removed by hand) all end in a correct build."""

from __future__ import annotations

import io
import json
import signal
import tarfile
from pathlib import Path
from typing import Any

import pytest

from engine.targets.docker import DockerStates
from tests.support import Running, build_ids, managed_image_id, template

pytestmark = pytest.mark.docker

SLOW = {
    "type": "Shell",
    "name": "setup",
    "inline": [
        "sleep 2.2",
        "echo installed | sudo tee /opt/state",
        "echo carried > /tmp/carried",
        "echo SETUP-RAN",
    ],
}
SHORT = {"type": "Shell", "name": "short", "inline": ["echo SHORT-RAN"]}


def app(text: str = "v1", after_setup: bool = False) -> dict[str, Any]:
    check = "cat /opt/state /tmp/carried && " if after_setup else ""
    return {"type": "Shell", "name": "app", "inline": [f"{check}echo APP-{text}"]}


def image(name: str) -> list[dict[str, Any]]:
    return [
        {"type": "ManagedImage", "imageId": managed_image_id(name), "location": "westeurope", "runOutputName": name}
    ]


def kept(store: Path, docker_client: Any) -> dict[str, float]:
    return DockerStates(docker_client, store).present()


def entries(store: Path) -> dict[str, dict[str, Any]]:
    folder = store / "step-cache"
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")} if folder.is_dir() else {}


def files_of(docker_client: Any, cli: Any, name: str) -> dict[str, int]:
    """The files of a managed image the store holds: path -> size (what a VHD would hold)."""
    shown = json.loads(cli("show", managed_image_id(name)).stdout)
    ref = shown["aibLocal"]["dockerImage"]
    container = docker_client.containers.create(ref, command=["true"], entrypoint=[])
    try:
        data = b"".join(container.export())
    finally:
        container.remove(force=True)
    volatile = ("var/log/", "var/cache/", "var/lib/systemd/", "etc/machine-id", "var/lib/dpkg/")
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {m.name: m.size for m in archive.getmembers() if m.isfile() and not m.name.startswith(volatile)}


def test_a_rebuild_after_an_edit_runs_only_the_edited_step_and_makes_the_same_image(
    cli: Any, write_template: Any, store: Path, docker_client: Any, base_image: str, leftovers: Any
) -> None:
    path = write_template(template("cache", [SLOW, SHORT, app(after_setup=True)], distribute=image("first")))
    first = cli("build", str(path), "--network", "none")
    assert first.code == 0, first.output
    assert first.stdout.count("state kept for the next builds") == 1
    assert len(kept(store, docker_client)) == 1  # the short steps were not worth a keep

    path = write_template(template("cache", [SLOW, SHORT, app("v2", after_setup=True)], distribute=image("cached")))
    again = cli("build", str(path), "--network", "none")
    assert again.code == 0, again.output
    assert "customize[0] setup: cached (from build" in again.stdout
    assert "SETUP-RAN" not in again.stdout and "SHORT-RAN" in again.stdout and "APP-v2" in again.stdout
    assert "installed" in again.stdout and "carried" in again.stdout  # /opt kept, /tmp put back
    assert "boots afresh, as after a restart" in again.stdout

    plain = cli(
        "build",
        str(write_template(template("cache", [SLOW, SHORT, app("v2", after_setup=True)], distribute=image("plain")))),
        "--network",
        "none",
        "--no-cache",
    )
    assert plain.code == 0 and "SETUP-RAN" in plain.stdout
    cached_files, plain_files = files_of(docker_client, cli, "cached"), files_of(docker_client, cli, "plain")
    assert cached_files == plain_files
    assert not [name for name in cached_files if "aib-local-tmp" in name]
    assert leftovers() == []

    junit = store.parent / "junit.xml"
    assert cli("build", str(path), "--network", "none", "--junit", str(junit)).code == 0
    assert 'failures="0"' in junit.read_text() and "restored from the step cache" in junit.read_text()


def test_cache_from_checkpoint_and_resume(
    cli: Any, write_template: Any, store: Path, docker_client: Any, base_image: str
) -> None:
    path = write_template(template("every", [SHORT, app()]))
    first = cli("build", str(path), "--network", "none", "--checkpoint", "--output", "json")
    assert first.code == 0, first.output
    build_id = json.loads(first.stdout.splitlines()[0])["buildId"]
    assert len(kept(store, docker_client)) == 2  # every step, with --checkpoint
    # --cache-from: customize[0] stays cached, app runs again and its state is replaced.
    before = {k: v["build"] for k, v in entries(store).items()}
    again = cli("build", str(path), "--network", "none", "--cache-from", "app", "--checkpoint", "--output", "json")
    events = [json.loads(line) for line in again.stdout.splitlines()]
    finished = {e["step"]: e for e in events if e["event"] == "step-finished"}
    assert finished["customize[0] short"]["status"] == "cached"
    assert finished["customize[0] short"]["cachedFrom"] == build_id
    assert finished["customize[1] app"]["status"] == "succeeded"
    after = {k: v["build"] for k, v in entries(store).items()}
    assert sorted(after.values()) == sorted([build_id, events[0]["buildId"]]) and after != before
    # --resume of a build from before the cache: a build of its template, restored from the cache.
    resumed = cli("build", "--resume", build_id, "--network", "none")
    assert resumed.code == 0, resumed.output
    assert "--resume is the step cache now" in resumed.stdout
    assert "customize[1] app: cached" in resumed.stdout
    refused = cli("build", str(path), "--cache-from", "nope")
    assert refused.code == 2 and "no customizer or validator 'nope'" in refused.stderr


def test_a_kept_image_removed_by_hand_is_a_miss(
    cli: Any, write_template: Any, store: Path, docker_client: Any, base_image: str
) -> None:
    path = write_template(template("removed", [SHORT, app()]))
    assert cli("build", str(path), "--network", "none", "--checkpoint").code == 0
    states = DockerStates(docker_client, store)
    for key in states.present():
        docker_client.images.remove(states.ref(key))
    again = cli("build", str(path), "--network", "none")
    assert again.code == 0, again.output
    assert "SHORT-RAN" in again.stdout and "cached" not in again.stdout
    assert entries(store) == {}  # the entries of states that are gone were dropped


@pytest.mark.parametrize("how", ["kill", "sigint"])
def test_a_keep_cut_short_leaves_no_entry_and_the_next_build_is_right(
    how: str, cli: Any, write_template: Any, store: Path, docker_client: Any, base_image: str, leftovers: Any
) -> None:
    path = write_template(template("cut", [SHORT, app()]))
    point = "cache:kept=kill" if how == "kill" else "cache:keeping=sigint"
    running = Running(["build", str(path), "--network", "none", "--checkpoint"], store, {"AIB_LOCAL_FAILPOINTS": point})
    code, output = running.finish()
    assert code == (-9 if how == "kill" else 130), output
    assert entries(store) == {}  # no half entry: a state without its entry is no hit
    again = cli("build", str(path), "--network", "none", "--checkpoint")
    assert again.code == 0, again.output
    assert "SHORT-RAN" in again.stdout and "APP-v1" in again.stdout
    assert set(entries(store)) == set(kept(store, docker_client))  # replaced: one image per key
    assert cli("build", str(path), "--network", "none").stdout.count(": cached (from build") == 2
    assert cli("clean").code == 0
    assert leftovers() == []


def test_two_builds_keeping_the_same_steps_at_once_keep_one_image_each(
    cli: Any, write_template: Any, store: Path, docker_client: Any, base_image: str, leftovers: Any
) -> None:
    one = write_template(template("twin-a", [SHORT, app()]), "a.json")
    two = write_template(template("twin-b", [SHORT, app()]), "b.json")
    both = cli("build", str(one), str(two), "--parallel", "2", "--network", "none", "--checkpoint")
    assert both.code == 0, both.output
    assert set(entries(store)) == set(kept(store, docker_client)) and len(entries(store)) == 2
    assert both.stdout.count("state kept for the next builds") == 2  # each step kept once, by one build
    again = cli("build", str(one), "--network", "none")
    assert again.stdout.count(": cached (from build") == 2
    assert leftovers() == []


def test_prune_the_size_limit_and_clean(
    cli: Any, write_template: Any, store: Path, docker_client: Any, base_image: str
) -> None:
    path = write_template(template("prune", [SHORT, app()]))
    assert cli("build", str(path), "--network", "none", "--checkpoint").code == 0
    listed = cli("cache", "list")
    assert listed.code == 0 and "prune: customize[0] short" in listed.stdout and "2 state(s)" in listed.stdout
    other = write_template(template("other", [app("other")]), "other.json")
    small = cli("build", str(other), "--network", "none", "--checkpoint", "--cache-limit", "1")
    assert small.code == 0, small.output
    assert small.stdout.count("removed the least recently used") == 2  # the older build's, not its own
    assert [e["template"] for e in entries(store).values()] == ["other"]
    pruned = cli("cache", "prune", "--all")
    assert pruned.code == 0 and "removed customize[0] app of other" in pruned.stdout
    assert kept(store, docker_client) == {} and entries(store) == {}
    # A state no entry names (a keep killed long ago) is removed by clean.
    states = DockerStates(docker_client, store)
    docker_client.images.get(base_image).tag(states.repository, "f" * 64)
    assert "f" * 64 in kept(store, docker_client)
    cleaned = cli("clean")
    assert cleaned.code == 0 and "state of the step cache without its entry" in cleaned.stdout
    assert kept(store, docker_client) == {}
    assert cli("cache", "prune", "--limit", "lots").code == 2
    assert len(build_ids(store)) == 2


def test_watch_builds_again_after_a_save_and_ctrl_c_leaves_nothing_running(
    write_template: Any, store: Path, tmp_path: Path, base_image: str, leftovers: Any
) -> None:
    script = tmp_path / "app.sh"
    script.write_text("echo APP-ONE\n")
    path = write_template(template("watch", [SHORT, {"type": "Shell", "name": "app", "scriptUri": "app.sh"}]))
    running = Running(
        ["build", str(path), "--watch", "--network", "none", "--checkpoint"],
        store,
        {"AIB_LOCAL_FAILPOINTS": "phase:customize=wait:30@3"},  # the third build waits in customize
    )
    running.wait_for("watching 2 file(s) for changes (Ctrl-C stops)")
    script.write_text("echo APP-TWO\n")
    running.wait_for("app.sh changed: building again")
    running.wait_for("APP-TWO")
    running.wait_for("watching 2 file(s)")
    path.write_text(path.read_text().replace('"short"', '"short-renamed"'))
    running.wait_for("template.json changed: building again")
    running.wait_for("failpoint phase:customize reached")
    running.send(signal.SIGINT)  # mid-build: the build cleans up, and the watch ends
    code, output = running.finish()
    assert code == 130, output
    assert "customize[0] short: cached (from build" in output  # the second build
    assert "APP-ONE" in output and "Canceled" in output
    assert leftovers() == []
    assert len(build_ids(store)) == 3


def test_another_source_image_or_setting_misses_and_the_same_again_hits(
    cli: Any, write_template: Any, store: Path, tmp_path: Path, no_sudo_image: str
) -> None:
    path = write_template(template("keys", [SHORT, app()]))
    assert cli("build", str(path), "--network", "none", "--checkpoint").code == 0
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps({"Debian:debian-12:12:latest": no_sudo_image}))
    for extra in (["--catalogue", str(catalogue)], ["--init", "none"], ["--secret", "TOKEN=x"]):
        other = cli("build", str(path), "--network", "none", *extra)
        assert other.code == 0, other.output
        assert "SHORT-RAN" in other.stdout and ": cached" not in other.stdout, extra
    same = cli("build", str(path), "--network", "none")
    assert same.stdout.count(": cached (from build") == 2 and "SHORT-RAN" not in same.stdout
