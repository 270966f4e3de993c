"""The store's journal of in-flight work, so that a build killed outright leaves nothing.

While a build runs, `ROOT/inflight/BUILD_ID.json` names the process that owns it
(host, pid and the pid's start time, so a reused pid is not mistaken for it) and the
things it is making that no record owns yet: images about to be committed, partial
files about to be written. An entry is written *before* the thing exists and dropped
once a store record owns it (or it is gone), so after SIGKILL at any point the entry
covers whatever was left. Containers need no entry: each carries the build's label.

`sweep` removes what dead owners left: their labelled containers (except a kept target
a rerun had attached to), pending images, partial files, and what their target left
running elsewhere (a step on an SSH host); it marks their build records failed and
drops the entries. `aib-local clean` and every build start run it; entries of live
processes, and of processes on other hosts, are never touched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import records
from engine.events import utc_now
from engine.process import alive, identity, pid_of
from engine.store import PARTIAL, Store, atomic_write

FOLDER = "inflight"
# (build id, container names to leave) -> names removed; (image refs) -> refs removed
RemoveContainers = Callable[[str, list[str]], list[str]]
RemoveImages = Callable[[list[str]], list[str]]
# (build id) -> what was stopped on the dead build's target (a step left running on a host)
ReleaseTarget = Callable[[str], list[str]]


def owner_pid(entry: dict[str, Any]) -> str:
    """The pid of the process an entry names ('?' if it names none)."""
    return pid_of(str(entry.get("owner", "")))


class Journal:
    """The in-flight entry of one build."""

    def __init__(self, store: Store, build_id: str, template_id: str = "") -> None:
        self.path = store.root / FOLDER / f"{build_id}.json"
        self.entry: dict[str, Any] = {
            "buildId": build_id,
            "templateId": template_id,
            "owner": identity(),
            "startedAt": utc_now(),
            "images": [],
            "files": [],
            "keep": [],
        }

    def _write(self) -> None:
        atomic_write(self.path, json.dumps(self.entry, indent=2).encode() + b"\n")

    def open(self) -> None:
        self._write()

    def pending(self, kind: str, ref: str) -> None:
        """`ref` (an image reference or a file path) is about to exist and nothing owns it yet."""
        if ref not in self.entry[kind]:
            self.entry[kind].append(ref)
            self._write()

    def settled(self, kind: str, ref: str) -> None:
        """`ref` is owned by a record now, or gone."""
        if ref in self.entry[kind]:
            self.entry[kind].remove(ref)
            self._write()

    def keep(self, container: str) -> None:
        """A kept target this build attached to: a sweep leaves it to `clean`."""
        self.pending("keep", container)

    def discard(self, remove_images: RemoveImages) -> list[str]:
        """Remove what is still pending (nothing owns it: the build did not get that far)."""
        if not self.entry["images"] and not self.entry["files"]:
            return []
        removed = _discard(self.entry, remove_images)
        self.entry["images"], self.entry["files"] = [], []
        self._write()
        return removed

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


def entries(store: Store) -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted((store.root / FOLDER).glob("*.json")):
        try:
            found.append((path, json.loads(path.read_text())))
        except (OSError, json.JSONDecodeError):
            continue
    return found


def is_running(store: Store, build_id: str) -> bool:
    """Whether a live process is building `build_id` (an unknown owner on another host counts)."""
    try:
        entry = json.loads((store.root / FOLDER / f"{build_id}.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return alive(str(entry.get("owner", ""))) is not False


def live_builds(store: Store) -> dict[str, dict[str, Any]]:
    """Entries of builds whose process still runs (or may: those on other hosts)."""
    return {entry["buildId"]: entry for _, entry in entries(store) if alive(str(entry.get("owner", ""))) is not False}


def sweep(
    store: Store,
    remove_containers: RemoveContainers,
    remove_images: RemoveImages,
    *,
    build_id: str | None = None,
    release_target: ReleaseTarget | None = None,
) -> list[str]:
    """Remove what dead builds left; a description of each thing removed.

    `release_target` stops what a dead build left running on its target (engine.targets
    knows how, per kind of target); the journal itself never reaches into a target.
    """
    removed: list[str] = []
    for path, entry in entries(store):
        dead_id = str(entry.get("buildId", ""))
        if (build_id and dead_id != build_id) or alive(str(entry.get("owner", ""))) is not False:
            continue
        removed += [f"container {name}" for name in remove_containers(dead_id, list(entry.get("keep") or []))]
        removed += _discard(entry, remove_images)
        if release_target is not None:
            removed += release_target(dead_id)
        for partial in sorted((store.root / "builds" / dead_id).rglob(f"*{PARTIAL}")):
            partial.unlink(missing_ok=True)
            removed.append(f"partial file {partial}")
        _mark_dead(store, entry)
        path.unlink(missing_ok=True)
    if build_id is None:
        removed += _orphaned_writes(store)
    return removed


def _orphaned_writes(store: Store) -> list[str]:
    """Temporary files of record writes whose process died between write and rename."""
    removed = []
    for partial in sorted(store.root.rglob(f".*-*{PARTIAL}")):
        pid = partial.name.removesuffix(PARTIAL).rpartition("-")[0].rpartition(".")[2]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            partial.unlink(missing_ok=True)
            removed.append(f"partial file {partial}")
        except (PermissionError, ValueError, OverflowError):
            continue
    return removed


def _discard(entry: dict[str, Any], remove_images: RemoveImages) -> list[str]:
    removed = [f"image {ref}" for ref in remove_images(list(entry.get("images") or []))] if entry.get("images") else []
    for name in entry.get("files") or []:
        file = Path(name)
        if file.exists():
            file.unlink(missing_ok=True)
            removed.append(f"partial file {file}")
    return removed


def _mark_dead(store: Store, entry: dict[str, Any]) -> None:
    message = (
        f"the aib-local process (pid {owner_pid(entry)}) ended without finishing this build; what it left was removed"
    )
    records.mark_failed(store, str(entry["buildId"]), str(entry.get("templateId") or ""), message)
