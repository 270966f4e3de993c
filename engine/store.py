"""The local resource store: a directory tree that mirrors Azure resource IDs.

`/subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/images/NAME` is kept at
`ROOT/resources/subscriptions/s/resourcegroups/rg/providers/microsoft.compute/images/name/
resource.json` (IDs are case-insensitive in Azure, so paths are lower case; the record
keeps the ID as written). Every write goes to a temporary file, is fsynced and renamed,
under a store-wide file lock, so a crash or a concurrent build never leaves a
half-written record. Builds (logs, records) live under `ROOT/builds/BUILD_ID/`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import platformdirs
from filelock import FileLock

from engine import failpoints
from engine.errors import EnvironmentProblem, StoreDamaged, StoreNewer, UsageError

ENV_VAR = "AIB_LOCAL_STORE"
# Every record names the format it is written in. Added fields do not change it (a field
# this aib-local does not know is kept on a round trip); a change of what a field means
# does, and an older aib-local then leaves such records alone and says why.
FORMAT_KEY = "aibLocalFormat"
RECORD_FORMAT = 1
DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
DEFAULT_RESOURCE_GROUP = "aib-local"
RECORD = "resource.json"


def read_record(path: Path) -> dict[str, Any] | None:
    """A JSON object from a store file: None when the file is not there, StoreDamaged when it
    is there but not a readable JSON object (truncated, empty, binary, a list...)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreDamaged(path, f"cannot read it: {exc.strerror}") from None
    if not data.strip():
        raise StoreDamaged(path, "it is empty")
    try:
        record = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise StoreDamaged(path, f"not valid JSON{where} (truncated?)") from None
    if not isinstance(record, dict):
        raise StoreDamaged(path, f"a JSON {type(record).__name__}, not a record")
    found = record.pop(FORMAT_KEY, RECORD_FORMAT)  # records from before the marker are format 1
    if not isinstance(found, int) or isinstance(found, bool) or found < 1:
        raise StoreDamaged(path, f"its {FORMAT_KEY} is {json.dumps(found)}, not a format number")
    if found > RECORD_FORMAT:
        raise StoreNewer(path, found, RECORD_FORMAT)
    return record


def _encoded(record: dict[str, Any]) -> bytes:
    """A record as written, naming its format (read_record takes the marker off again)."""
    return json.dumps({**record, FORMAT_KEY: RECORD_FORMAT}, indent=2).encode() + b"\n"


PARTIAL = ".partial"


def file_mode() -> int:
    """The mode new files get: 0666 less the umask (mkstemp alone would give 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


class StoreError(EnvironmentProblem):
    """The store's filesystem refused a write (full, read-only, quota)."""


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old or the new file, never a part."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The pid in the name tells a sweep whether the writer is still alive.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=PARTIAL, dir=path.parent)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), file_mode())
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        failpoints.hit("store:tmp-written")
        Path(tmp).replace(path)
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise StoreError(
            f"cannot write {path}: {exc.strerror or exc}; the record is unchanged",
            hint=("free space on the store's filesystem" if full else "check the store folder's permissions")
            + " (or point --store / AIB_LOCAL_STORE elsewhere)",
        ) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def split_id(resource_id: str) -> list[str]:
    """The segments of a resource ID, checked for shape."""
    parts = resource_id.strip("/").split("/")
    if (
        not resource_id.startswith("/")
        or len(parts) < 2
        or parts[0].lower() != "subscriptions"
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise UsageError(
            f"not a resource ID: {resource_id!r} (expected /subscriptions/SUB/resourceGroups/RG/providers/...)"
        )
    return parts


class Store:
    """Resource records and build folders under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.root / ".lock"))
        self.damaged: dict[Path, str] = {}  # records found damaged while going through many
        self.newer: dict[Path, str] = {}  # records in a format newer than this aib-local reads

    @staticmethod
    def where(root: Path | None = None) -> Path:
        """`root`, else $AIB_LOCAL_STORE, else the user data directory."""
        if root is None:
            env = os.environ.get(ENV_VAR)
            root = Path(env) if env else Path(platformdirs.user_data_dir("aib-local"))
        return root.expanduser()

    @classmethod
    def existing(cls, root: Path | None = None) -> Store | None:
        """The store at `root` (as `open` finds it) if there is one; nothing is created."""
        found = cls.where(root)
        return cls(found) if found.is_dir() else None

    @classmethod
    def open(cls, root: Path | None = None) -> Store:
        """`root`, else $AIB_LOCAL_STORE, else the user data directory."""
        root = cls.where(root)
        try:
            return cls(root)
        except OSError as exc:
            raise UsageError(f"store {root}: cannot use it: {exc.strerror}") from None

    def lock(self) -> FileLock:
        """The store-wide lock, for read-modify-write sequences (re-entrant)."""
        return self._lock

    def _dir(self, resource_id: str) -> Path:
        return self.root.joinpath("resources", *(p.lower() for p in split_id(resource_id)))

    def get(self, resource_id: str) -> dict[str, Any] | None:
        """A resource's record; None when there is none; StoreDamaged when it is unreadable."""
        return read_record(self._dir(resource_id) / RECORD)

    def put(self, resource_id: str, record: dict[str, Any]) -> None:
        record = {"id": resource_id, **{k: v for k, v in record.items() if k != "id"}}
        with self._lock:
            atomic_write(self._dir(resource_id) / RECORD, _encoded(record))

    def delete(self, resource_id: str) -> bool:
        """Remove a record (its folder goes when nothing else is in it); whether it was there."""
        folder = self._dir(resource_id)
        with self._lock:
            try:
                (folder / RECORD).unlink()
            except FileNotFoundError:
                return False
            with contextlib.suppress(OSError):  # child records (a gallery's definitions) keep it
                folder.rmdir()
        return True

    def update(self, resource_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Read-modify-write of one record under the lock (top-level keys replaced)."""
        with self._lock:
            record = self.get(resource_id) or {"id": resource_id}
            record.update(changes)
            atomic_write(self._dir(resource_id) / RECORD, _encoded(record))
        return record

    def records(self, type_suffix: str | None = None) -> Iterator[dict[str, Any]]:
        """Every stored record, optionally only those whose `type` ends with `type_suffix`."""
        base = self.root / "resources"
        if not base.is_dir():
            return
        for path in sorted(base.rglob(RECORD)):
            record = self._readable(path)
            if record is None:
                continue
            kind = str(record.get("type", ""))
            if type_suffix is None or kind.lower().endswith(type_suffix.lower()):
                yield record

    # --- builds ---------------------------------------------------------------------

    def build_dir(self, build_id: str) -> Path:
        if not build_id or "/" in build_id or build_id.startswith("."):
            raise UsageError(f"not a build id: {build_id!r}")
        return self.root / "builds" / build_id

    def put_build(self, build_id: str, record: dict[str, Any]) -> None:
        with self._lock:
            atomic_write(self.build_dir(build_id) / "build.json", _encoded(record))

    def get_build(self, build_id: str) -> dict[str, Any] | None:
        """A build's record; None when there is none; StoreDamaged when it is unreadable."""
        return read_record(self.build_dir(build_id) / "build.json")

    def builds(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Every readable build record and its file (a damaged one is noted in `damaged` and
        passed over)."""
        base = self.root / "builds"
        if not base.is_dir():
            return
        for path in sorted(base.glob("*/build.json")):
            record = self._readable(path)
            if record is not None:
                yield path, record

    def _readable(self, path: Path) -> dict[str, Any] | None:
        try:
            return read_record(path)
        except StoreDamaged as exc:
            self.note_damaged(exc)
            return None

    def note_damaged(self, exc: StoreDamaged) -> None:
        """Remember a damaged (or newer) record met while going through many (said once, by
        the command)."""
        (self.newer if isinstance(exc, StoreNewer) else self.damaged).setdefault(exc.path, exc.what)

    def quarantine(self, path: Path) -> Path:
        """Move a damaged record aside, under STORE/quarantine/, keeping its place in the store."""
        target = self.root / "quarantine" / time.strftime("%Y%m%dT%H%M%S") / path.relative_to(self.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)
        return target
