"""Boot snapshots for VM builds: a source disk is booted once per store, and the booted
machine is saved, so that later builds of the same source restore it (a second or two)
instead of booting it (tens of seconds under TCG).

The first VM build of a source boots it as usual; once cloud-init is done, and before
any customizer, the machine is paused, its memory and devices are written with QEMU's
migration (`migrate` to a file), the disk as it stands is copied, and the machine goes
on. A snapshot lives in STORE/vm-snapshots/KEY/:

    disk.qcow2              the overlay over the source at that moment (copied for each
                            build, so a running or kept build never needs the snapshot)
    state                   the migration stream
    seed.iso                the NoCloud seed it booted with (a restore needs the same drives)
    id_ed25519, host_key.pub the build user's key and the guest's host key
    meta.json               what it is of (source, accelerator, the build that saved it,
                            when); its mtime is its last use

KEY is a digest of the source file (path, size, mtime, inode), QEMU's version and the
machine's command line without its paths (vCPUs, memory, accelerator, devices): any
change makes a new snapshot. Beyond the KEEP most recently used, the least recently used
go. Each KEY has an flock: shared while a build copies and loads the snapshot, exclusive
while it is made or removed, so neither happens under a build restoring it. The step
cache keeps saved VMs the same way, under its own keys, in STORE/step-cache/vm
(engine.targets.vm.VmStates), pruned by size instead of by count.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.disks import need
from engine.polling import poll

FORMAT = 1  # of the folder's contents
KEEP = 4
FOLDER = "vm-snapshots"
# The files of the VM's folder a snapshot keeps, under the same names (and modes: the key
# is 0600): the disk, the seed, the build user's key, the guest's host key; with UEFI
# firmware, its variables too.
FILES = ("disk.qcow2", "seed.iso", "id_ed25519", "host_key.pub")
UEFI_FILES = (*FILES, "efivars.fd")


@functools.cache
def qemu_version() -> str:
    qemu = need("qemu-system-x86_64", "qemu-system-x86")
    done = subprocess.run([qemu, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0] if done.stdout else ""


@dataclass(frozen=True)
class Snapshot:
    folder: Path

    @property
    def key(self) -> str:
        return self.folder.name

    @property
    def state(self) -> Path:
        return self.folder / "state"

    @property
    def meta_file(self) -> Path:
        return self.folder / "meta.json"

    def meta(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.meta_file.read_text()))
        except (OSError, ValueError):
            return {}

    def used(self) -> None:
        with contextlib.suppress(OSError):
            os.utime(self.meta_file)


class Snapshots:
    """The boot snapshots of one store."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @staticmethod
    def key(source: Path, shape: list[str]) -> str:
        """The snapshot key of a source disk booted by a command line of this shape."""
        status = source.stat()
        identity = [FORMAT, str(source.resolve()), status.st_size, status.st_mtime_ns, status.st_ino]
        text = json.dumps([*identity, qemu_version(), shape])
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def find(self, key: str) -> Snapshot | None:
        found = Snapshot(self.root / key)
        return found if found.meta_file.is_file() else None

    def all(self) -> list[Snapshot]:
        if not self.root.is_dir():
            return []
        found = [Snapshot(path) for path in self.root.iterdir() if (path / "meta.json").is_file()]
        return sorted(found, key=lambda snapshot: snapshot.meta_file.stat().st_mtime, reverse=True)

    @contextlib.contextmanager
    def locked(self, key: str, *, exclusive: bool, within: float = 0.0) -> Iterator[bool]:
        """Hold KEY's lock for the block: whether it was had within `within` seconds."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / f".{key}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB

            def had() -> bool | None:
                try:
                    fcntl.flock(fd, mode)
                    return True
                except BlockingIOError:
                    return None

            yield bool(poll(had, within=within, every=0.2))
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def making(self, key: str, *, prune: bool = True) -> Iterator[Path | None]:
        """A staging folder for a new snapshot of KEY, added when the block ends without
        an error (and removed when it fails). None when KEY exists or is being made.
        Then, unless `prune` is False (the step cache prunes by size), beyond KEEP the least
        recently used go."""
        with self.locked(key, exclusive=True) as had:
            if not had or self.find(key) is not None:
                yield None
                return
            self._drop_staged(key)
            staging = self.root / f".new-{key}-{uuid.uuid4().hex[:8]}"
            staging.mkdir(mode=0o700)  # it holds the build user's private key
            try:
                yield staging
                broken = self.root / key
                if broken.exists():  # a folder without its meta.json: a removal cut short
                    shutil.rmtree(broken)
                staging.rename(broken)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        if prune:
            self.prune(spare=key)

    def _drop_staged(self, key: str) -> None:
        """What an earlier making of KEY left when it was killed (its lock is held now)."""
        for leftover in self.root.glob(f".new-{key}-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def remove(self, key: str) -> bool:
        """Remove KEY's snapshot unless a build is restoring it right now."""
        with self.locked(key, exclusive=True) as had:
            if not had:
                return False
            self._drop_staged(key)
            snapshot = Snapshot(self.root / key)
            snapshot.meta_file.unlink(missing_ok=True)  # first: a half-removed folder is no snapshot
            shutil.rmtree(snapshot.folder, ignore_errors=True)
            return True

    def prune(self, keep: int = KEEP, spare: str = "") -> list[str]:
        """Remove the least recently used snapshots beyond `keep`; their keys."""
        gone = []
        for snapshot in [s for s in self.all() if s.key != spare][max(0, keep - (1 if spare else 0)) :]:
            if self.remove(snapshot.key):
                gone.append(snapshot.key)
        return gone

    def clear(self) -> tuple[list[str], list[str]]:
        """Remove every snapshot no build is restoring: (removed, busy), as descriptions."""
        removed: list[str] = []
        busy: list[str] = []
        for snapshot in self.all():
            what = describe(snapshot)
            (removed if self.remove(snapshot.key) else busy).append(what)
        return removed + self.sweep(), busy

    def sweep(self) -> list[str]:
        """Remove what builds killed while saving a VM left (half-made snapshots nobody is
        making now); what was removed."""
        removed = []
        for leftover in self.root.glob(".new-*") if self.root.is_dir() else []:
            key = leftover.name.split("-")[1]
            with self.locked(key, exclusive=True) as had:
                if had:
                    shutil.rmtree(leftover, ignore_errors=True)
                    removed.append(f"a saved VM left half-made ({leftover})")
        return removed


def describe(snapshot: Snapshot) -> str:
    meta = snapshot.meta()
    size = sum(path.stat().st_size for path in snapshot.folder.iterdir() if path.is_file()) >> 20
    return f"the boot snapshot of {meta.get('source', '?')} ({meta.get('accel', '?')}, {size} MiB, {snapshot.folder})"
