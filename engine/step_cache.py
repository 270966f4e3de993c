"""The step cache: a build keeps the machine's state after the customizers worth keeping,
and a later build whose steps begin the same way starts from the longest kept prefix.

Each customizer has a key, made as a chain: the key before it (for the first: the
source's identity and the target settings that change what steps see) and the
customizer's fingerprint (its definition as resolved, without sha256Checksum, and the
digest of every file it fetched). Changing a script, an inline command, the order, the
source image or a setting changes that step's key and every key after it.

Where a state lives is its target kind's business (engine.targets: an image for a
container, a saved VM for a local VM). The store keeps what each one is in
STORE/step-cache/KEY.json (the build and step that made it, when, its size); the file's
mtime is its last use. A state is written before its entry and removed before it, so
a build killed while keeping leaves at most a state without an entry: no build uses
that (a miss), the next keep of that key replaces it, and `clean` removes it. An entry
whose state was removed by hand is a miss too, and is dropped.

What is kept: the state after a customizer when the customizers run since the last kept
(or restored) point took at least the target kind's `keep_after` seconds (containers:
2 s), or after every customizer with --checkpoint. Keeping costs a commit (a container:
0.1-1 s; a VM: a save of its memory and disk), so short steps are cheaper to run again
than to keep: a template of a hundred one-line steps keeps nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.errors import UsageError
from engine.targets.base import KeptStates, TargetError

FORMAT = 1
FOLDER = "step-cache"
DEFAULT_LIMIT = 20 * 1024**3  # bytes of kept states a store holds before the least recently used go
ORPHAN_GRACE = 120.0  # seconds: a state younger than this may be a build's, still writing its entry


def chain(base: Any, fingerprints: list[str]) -> list[str]:
    """The key of each customizer: a digest of the one before and its own fingerprint."""
    key = hashlib.sha256(json.dumps([FORMAT, base], sort_keys=True).encode()).hexdigest()
    keys = []
    for fingerprint in fingerprints:
        key = hashlib.sha256(f"{key}:{fingerprint}".encode()).hexdigest()
        keys.append(key)
    return keys


def parse_size(text: str) -> int:
    """'20G', '500M', '1.5T' or a number of bytes."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not found:
        raise UsageError(f"{text!r} is not a size", hint="give bytes or a number with K, M, G or T (e.g. 20G)")
    return int(float(found.group(1)) * 1024 ** "_kmgt".index(found.group(2) or "_"))


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


@dataclass
class Entry:
    """A kept state: what made it and when; `used` is when a build last started from it."""

    key: str
    kind: str
    step: str
    index: int
    build: str
    template: str
    made: float
    size: int
    used: float = 0.0

    def describe(self) -> str:
        return f"{self.step} of {self.template} (build {self.build}, {human(self.size)})"


class StepCache:
    """The step cache of one store, for one kind of target."""

    def __init__(self, store: Path, states: KeptStates) -> None:
        self.root = store / FOLDER
        self.states = states

    # --- entries -------------------------------------------------------------------

    def _file(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def entry(self, key: str) -> Entry | None:
        entry = read_entry(self._file(key))
        return entry if entry is not None and entry.kind == self.states.kind else None

    def entries(self) -> list[Entry]:
        """This kind's entries, the most recently used first."""
        return [e for e in all_entries(self.root.parent) if e.kind == self.states.kind]

    def _write(self, entry: Entry) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        staged = self.root / f".{entry.key}.{os.getpid()}.new"
        data = {k: v for k, v in asdict(entry).items() if k != "used"}
        staged.write_text(json.dumps(data, indent=2) + "\n")
        staged.replace(self._file(entry.key))

    def forget(self, key: str) -> None:
        """Drop KEY's entry and what is left of its state (it failed to start)."""
        self._file(key).unlink(missing_ok=True)
        with contextlib.suppress(TargetError, OSError):
            self.states.remove(key)

    def used(self, key: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(self._file(key))

    # --- finding and keeping -------------------------------------------------------------

    def longest(self, keys: list[str]) -> tuple[int, Entry | None]:
        """The index of the last key (in order) with a kept state, and its entry; (-1, None).
        The engine is asked which states it holds only when some key has an entry: that
        listing searches every image the engine has (60 ms on an engine of 800 images),
        which a build with nothing kept should not pay."""
        entries = [(index, entry) for index in range(len(keys)) if (entry := self.entry(keys[index])) is not None]
        if not entries:
            return -1, None
        present = self.states.present()
        for index, entry in reversed(entries):
            if keys[index] in present:
                return index, entry
            self._file(keys[index]).unlink(missing_ok=True)  # its state was removed by hand
        return -1, None

    @contextlib.contextmanager
    def keeping(self, key: str, *, replace: bool = False) -> Iterator[bool]:
        """Hold KEY for the block: whether the caller should keep a state under it (not when
        another build is keeping it, nor when it is kept already, unless `replace`). A state
        without an entry (a keep cut short) is removed first; the caller writes the state,
        then `record`s the entry."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / f".{key}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            kept = self.entry(key) is not None and key in self.states.present()
            if kept and not replace:
                yield False
                return
            self._file(key).unlink(missing_ok=True)
            if not self.states.remove(key):
                yield False  # a build is running from the state being replaced
                return
            yield True
        finally:
            os.close(fd)  # the lock file stays: removing it could let two builds hold KEY

    def record(self, entry: Entry) -> None:
        self._write(entry)

    # --- removing ------------------------------------------------------------------

    def remove(self, entry: Entry) -> bool:
        """Remove a kept state and its entry; False when a build is using it."""
        if not self.states.remove(entry.key):
            return False
        self._file(entry.key).unlink(missing_ok=True)
        return True

    def prune(self, limit: int, spare: set[str] | frozenset[str] = frozenset()) -> list[Entry]:
        """Remove the least recently used entries until the rest fit in `limit` bytes (those
        in `spare`, the current build's, stay); what was removed."""
        entries = self.entries()
        total = sum(e.size for e in entries)
        removed = []
        for entry in reversed(entries):
            if total <= limit:
                break
            if entry.key in spare:
                continue
            if self.remove(entry):
                total -= entry.size
                removed.append(entry)
        return removed

    def orphans(self) -> list[str]:
        """Remove states without an entry (older than a build takes to write one) and entries
        without a state; a description of each."""
        removed = []
        now = time.time()
        present = self.states.present()
        known = {e.key for e in self.entries()}
        for key, made in present.items():
            if key not in known and now - made > ORPHAN_GRACE and self.states.remove(key):
                removed.append(f"a {self.states.kind} state of the step cache without its entry ({key[:16]})")
        for key in known - set(present):
            self._file(key).unlink(missing_ok=True)
            removed.append(f"a step cache entry whose {self.states.kind} state is gone ({key[:16]})")
        return removed


def read_entry(path: Path) -> Entry | None:
    """The entry in `path`; None when it is missing or damaged (a miss)."""
    try:
        raw = json.loads(path.read_text())
        entry = Entry(**{k: raw[k] for k in Entry.__dataclass_fields__ if k != "used"})
        entry.used = path.stat().st_mtime
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return entry


def all_entries(store: Path) -> list[Entry]:
    """Every entry of the store's step cache, the most recently used first."""
    root = store / FOLDER
    found = [read_entry(path) for path in root.glob("*.json")] if root.is_dir() else []
    return sorted((e for e in found if e is not None), key=lambda e: e.used, reverse=True)
