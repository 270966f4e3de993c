"""Build targets by kind: where customizers run (a Docker container, a host over SSH, a
local QEMU VM).

`TARGETS` maps the kind (the --target name, or the scheme of its URL) to the module's
target class, loaded on first use so that paramiko is imported only for SSH builds.
Adding a target is one module, one line here, and its command-line options.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.errors import AibLocalError, StoreDamaged, UsageError
from engine.records import read_build
from engine.store import Store
from engine.targets.base import Target
from engine.targets.endpoint import TARGET_SPECS


def _docker() -> type[Target]:
    from engine.targets.docker import DockerTarget

    return DockerTarget


def _ssh() -> type[Target]:
    from engine.targets.ssh import SshTarget

    return SshTarget


def _vm() -> type[Target]:
    from engine.targets.vm import VmTarget

    return VmTarget


TARGETS: dict[str, Callable[[], type[Target]]] = {"docker": _docker, "ssh": _ssh, "vm": _vm}


def kind_of(spec: str) -> str:
    """The kind a --target names: `docker`, or the scheme of `ssh://...`."""
    scheme, sep, _ = spec.partition("://")
    return scheme.lower() if sep else spec.lower()


def lookup(kind: str) -> type[Target]:
    """The target class of a kind; UsageError naming the known kinds."""
    load = TARGETS.get(kind)
    if load is None:
        raise UsageError(f"no target kind {kind!r}: expected one of {', '.join(TARGETS)}")
    return load()


def for_spec(spec: str) -> type[Target]:
    """The target class that --target `spec` names, with the spec checked."""
    load = TARGETS.get(kind_of(spec))
    if load is None:
        raise UsageError(f"--target {spec!r}: expected {TARGET_SPECS}")
    cls = load()
    cls.check_spec(spec)
    return cls


def attach(info: dict[str, Any], build_id: str, *, within: float | None = None) -> Target:
    """The target an earlier build kept, connected again, from its recorded info."""
    return lookup(str(info.get("kind", ""))).attach(info, build_id, within=within)


def releaser(store: Store, warn: Callable[[str], None]) -> Callable[[str], list[str]]:
    """For a journal sweep: stop what a dead build left running on its target (a step on
    an SSH host, a VM's QEMU), unless the build kept its target; `warn` hears of a target
    not reached. A build that died before its record named its target is looked for in
    its build folder: a target that keeps things on this machine keeps them in a
    subfolder named after its kind."""

    def release(build_id: str) -> list[str]:
        try:
            record = read_build(store, build_id)
        except StoreDamaged as exc:  # what its folder holds is still found below
            warn(str(exc.message))
            record = None
        if record is not None and record.kept:
            return []
        info = (record.target if record else None) or {}
        if info.get("kind") in TARGETS:
            found = [info]
        else:
            folder = store.build_dir(build_id)
            found = [{"kind": kind, "folder": str(folder / kind)} for kind in TARGETS if (folder / kind).is_dir()]
        released = []
        for item in found:
            try:
                released += lookup(str(item["kind"])).release(item, build_id)
            except AibLocalError as exc:
                warn(str(exc))
        return released

    return release
