"""The store's journal of in-flight work, so that a build killed outright leaves nothing.

While a build runs, `ROOT/inflight/BUILD_ID.json` names the process that owns it
(host, pid and the pid's start time, so a reused pid is not mistaken for it) and the
things it is making that no record owns yet: images about to be committed, partial
files about to be written. An entry is written *before* the thing exists and dropped
once a store record owns it (or it is gone), so after SIGKILL at any point the entry
covers whatever was left. Containers need no entry: each carries the build's label.

`sweep` removes what dead owners left: their labelled containers (except a kept target
a rerun had attached to), pending images, partial files, and the step still running on
an SSH host; it marks their build records failed and drops the entries. `aib-local clean` and every build start run it;
entries of live processes, and of processes on other hosts, are never touched.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import AibLocalError
from engine.events import utc_now
from engine.store import PARTIAL, Store, atomic_write

FOLDER = "inflight"
# (build id, container names to leave) -> names removed; (image refs) -> refs removed
RemoveContainers = Callable[[str, list[str]], list[str]]
RemoveImages = Callable[[list[str]], list[str]]
# (build id) -> what was stopped on the build's SSH host
ReleaseHost = Callable[[str], list[str]]


def _start_time(pid: int) -> str:
    """The pid's start time in clock ticks since boot ('' where /proc is not there)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]


def identity(pid: int | None = None) -> str:
    """HOST:PID:START of a process (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def alive(owner: str) -> bool | None:
    """Whether the process `owner` names still runs; None when it is on another host."""
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname():
        return None
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except ValueError:
        return False
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by somebody else
    return not start or _start_time(pid) == start


def owner_pid(entry: dict[str, Any]) -> str:
    """The pid of the process an entry names ('?' if it names none)."""
    parts = str(entry.get("owner", "")).split(":")
    return parts[1] if len(parts) > 1 and parts[1] else "?"


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
    release_host: ReleaseHost | None = None,
) -> list[str]:
    """Remove what dead builds left; a description of each thing removed.

    `release_host` stops what a dead build left running on its SSH host, if it had one.
    """
    removed: list[str] = []
    for path, entry in entries(store):
        dead_id = str(entry.get("buildId", ""))
        if (build_id and dead_id != build_id) or alive(str(entry.get("owner", ""))) is not False:
            continue
        removed += [f"container {name}" for name in remove_containers(dead_id, list(entry.get("keep") or []))]
        removed += _discard(entry, remove_images)
        if release_host is not None:
            removed += release_host(dead_id)
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
    build_id = str(entry["buildId"])
    message = (
        f"the aib-local process (pid {owner_pid(entry)}) ended without finishing this build; what it left was removed"
    )
    with store.lock():
        record = store.get_build(build_id)
        if record is not None and record.get("status") == "running":
            store.put_build(build_id, {**record, "status": "failed", "message": message, "updatedAt": utc_now()})
        template_id = str(entry.get("templateId") or "")
        template = store.get(template_id) if template_id else None
        if template is not None and (template.get("aibLocal") or {}).get("lastBuildId") == build_id:
            status = (template.get("properties") or {}).get("lastRunStatus") or {}
            if status.get("runState") == "Running":
                status = {**status, "runState": "Failed", "message": message, "endTime": utc_now()}
                status.pop("runSubState", None)
                template["properties"]["lastRunStatus"] = status
                store.put(template_id, template)


def release_host(store: Store, warn: Callable[[str], None] | None = None) -> Callable[[str], list[str]]:
    """For a sweep: stop the step a dead build left running on its SSH host, remove its scripts."""

    def release(build_id: str) -> list[str]:
        record = store.get_build(build_id) or {}
        info = record.get("target") or {}
        if info.get("kind") != "ssh" or record.get("kept"):
            return []
        from engine.targets.ssh import SshTarget  # paramiko only when a dead build used SSH

        try:
            target = SshTarget.attach(info, build_id, within=10)
            try:
                stopped = target.stop_leftovers()
            finally:
                target.remove()
        except AibLocalError as exc:
            message = f"could not reach {info.get('target')} to stop what build {build_id} left there: {exc}"
            (warn or _stderr)(message)
            return []
        return [f"{stopped} running step(s) of build {build_id} on {info.get('target')}"] if stopped else []

    return release


def _stderr(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")
