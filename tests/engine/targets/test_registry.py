"""Targets by kind: what --target names, and what a dead build's target needs released."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.errors import UsageError
from engine.records import BuildRecord, write_build
from engine.store import Store
from engine.targets import registry
from engine.targets.base import Target


def test_each_kind_names_its_class_and_its_capabilities() -> None:
    docker, ssh, vm = registry.lookup("docker"), registry.lookup("ssh"), registry.lookup("vm")
    assert (docker.kind, ssh.kind, vm.kind) == ("docker", "ssh", "vm")
    assert docker.export_needs_stop and docker.starts_from_image
    assert not ssh.export_needs_stop and not ssh.starts_from_image
    assert vm.export_needs_stop and vm.starts_from_image
    assert ssh.kept_states(Path("/nonexistent")) is None  # a host the user runs keeps no states
    assert (docker.source_kind, vm.source_kind) == ("image", "disk")
    assert vm.captures_disk and not docker.captures_disk and not ssh.captures_disk
    assert all(issubclass(load(), Target) for load in registry.TARGETS.values())


@pytest.mark.parametrize(
    ("spec", "kind"),
    [("docker", "docker"), ("vm", "vm"), ("VM", "vm"), ("ssh://me@host", "ssh"), ("ssh://me@[::1]:2222", "ssh")],
)
def test_a_target_spec_picks_its_kind(spec: str, kind: str) -> None:
    assert registry.for_spec(spec).kind == kind


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("podman", "--target 'podman': expected docker, vm or ssh://USER@HOST[:PORT]"),
        ("docker://x", "--target 'docker://x': expected docker, vm or ssh://USER@HOST[:PORT]"),
        ("ssh://me@host:99999", "port 99999 is out of range"),
        ("ssh://", "expected docker, vm or ssh://USER@HOST[:PORT]"),
    ],
)
def test_a_malformed_target_is_refused_before_anything_starts(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        registry.for_spec(spec)


def test_an_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(UsageError, match="no target kind 'podman': expected one of docker, ssh, vm"):
        registry.lookup("podman")


def test_the_ssh_host_is_its_own_source() -> None:
    own = registry.lookup("ssh").own_source("ssh://me@host:2222")
    assert own is not None and own.record == {"type": "SshHost", "host": "me@host:2222"}
    assert registry.lookup("docker").own_source("docker") is None


def test_a_dead_builds_target_is_released_unless_the_build_kept_it(tmp_path: Any) -> None:
    store = Store(tmp_path / "store")
    warnings: list[str] = []
    release = registry.releaser(store, warnings.append)
    ssh = {"kind": "ssh", "target": "ssh://nobody@127.0.0.1:1", "knownHosts": str(tmp_path / "none")}

    def build(build_id: str, target: dict[str, Any], kept: bool = False) -> None:
        write_build(
            store,
            BuildRecord(
                build_id=build_id, status="running", template="/t", template_name="t", kept=kept, target=target
            ),
        )

    build("kept", ssh, kept=True)
    build("docker", {"kind": "docker", "name": "x"})
    build("unknown", {"kind": "podman"})
    assert release("kept") == [] and release("docker") == [] and release("unknown") == [] and release("none") == []
    assert warnings == []
    build("left", ssh)
    assert release("left") == []  # a host that cannot be reached: a warning, not a failure
    assert len(warnings) == 1 and "to stop what build left left there" in warnings[0]
