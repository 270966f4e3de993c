"""`aib-local boot`: boot what a build made in a throw-away VM, and say whether it came up.

The artifact (a VHD file or its file:// URI, a managed image or a gallery version made
by a VM build) is never written: the VM boots an overlay of it, gets a NoCloud seed
like any VM build (so the image's cloud-init must provision it, as Azure's does), and
counts as booted once SSH answers as the build user and cloud-init has finished. With
`expect`, the text must also appear on the serial console (a unit of the image that
reports). The VM and its folder are removed whatever happens.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from engine.errors import AibLocalError, UsageError
from engine.gallery import Galleries
from engine.polling import poll
from engine.store import Store
from engine.store_rules import source_generation
from engine.targets.base import OpenRequest, Target, TargetError
from engine.targets.registry import lookup
from engine.template import model as m

BOOT_WITHIN = 600.0


@dataclass
class BootReport:
    artifact: str
    disk: str
    booted: bool = False
    seconds_to_ssh: float | None = None
    seconds_to_expected: float | None = None
    expected: str | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "artifact": self.artifact,
            "disk": self.disk,
            "booted": self.booted,
            "secondsToSsh": self.seconds_to_ssh,
            "expected": self.expected,
            "secondsToExpected": self.seconds_to_expected,
            "notes": self.notes,
            "error": self.error,
        }


def disk_of(store: Store, artifact: str) -> Path:
    """The disk file an artifact names: a path or file:// URI, or the resource ID of a
    managed image or gallery version whose record holds a disk (made by a VM build)."""
    if artifact.startswith("/subscriptions/"):
        record = Galleries(store).resolve(artifact) if "/versions/" in artifact else store.get(artifact)
        if record is None:
            raise UsageError(f"{artifact} is not in the local store {store.root}")
        local = record.get("aibLocal") or {}
        if not local.get("disk"):
            raise UsageError(
                f"{artifact} was made by a container build: it has no disk to boot",
                hint="build it with --target vm, or boot its VHD distribution",
            )
        path = Path(str(local["disk"]))
    elif artifact.startswith("file://"):
        path = Path(url2pathname(urlsplit(artifact).path))
    else:
        path = Path(artifact)
    if not path.is_file():
        raise UsageError(f"no disk file at {path}")
    return path.resolve()


def generation_of(store: Store, artifact: str) -> str:
    """The Hyper-V generation of a managed image or gallery version (its definition's), as
    a build from it takes it; V1 for what has no record (a VHD file says nothing of it)."""
    if not artifact.startswith("/subscriptions/"):
        return "V1"
    source: m.Source  # an ID the store knows (disk_of found it): no template rules to check
    if "/versions/" in artifact:
        source = m.SharedImageVersionSource.model_construct(type="SharedImageVersion", image_version_id=artifact)
    else:
        source = m.ManagedImageSource.model_construct(type="ManagedImage", image_id=artifact)
    return source_generation(source, store)


def boot(
    store: Store,
    artifact: str,
    *,
    expect: str | None = None,
    vm_size: str = "",
    generation: str | None = None,
    within: float = BOOT_WITHIN,
    report: Callable[[str], None] = lambda _message: None,
    on_booted: Callable[[Target], None] | None = None,
) -> BootReport:
    """Boot `artifact` in a throw-away VM; the report says how far it got. Once it is up,
    `on_booted` may run more on it (a build's validators): what it raises is raised."""
    disk = disk_of(store, artifact)
    result = BootReport(artifact, str(disk), expected=expect)
    run_id = f"boot-{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns() % 1_000_000:06d}"
    target = lookup("vm").open(
        OpenRequest(
            spec="vm",
            build_id=run_id,
            image=str(disk),
            vm_size=vm_size,
            generation=generation or generation_of(store, artifact),
            network="none",
            progress=report,
            within=within,
            folder=str(store.root / "boots" / run_id),
        )
    )
    started = time.monotonic()
    end = started + within
    try:
        target.start()
        result.seconds_to_ssh = round(time.monotonic() - started, 1)
        report(f"SSH answered as {target.build_user} after {result.seconds_to_ssh}s")
        if expect is not None:
            result.seconds_to_expected = _await_console(target.console(), expect, end, started)
            report(f"{expect!r} on the serial console after {result.seconds_to_expected}s")
        result.booted = True
        if on_booted is not None:
            on_booted(target)
    except AibLocalError as exc:
        if result.booted:
            raise
        result.error = str(exc)
    finally:
        result.notes = list(target.notes)
        target.remove()
        with contextlib.suppress(OSError):
            (store.root / "boots" / run_id).rmdir()
    return result


def _await_console(console: Path | None, text: str, end: float, started: float) -> float:
    if console is None:
        raise TargetError("this machine has no serial console to watch")
    needle = text.encode()

    def appeared() -> float | None:
        with contextlib.suppress(OSError):
            if needle in console.read_bytes():
                return round(time.monotonic() - started, 1)
        return None

    seen = poll(appeared, within=end - time.monotonic(), every=0.5)
    if seen is None:
        raise TargetError(f"{text!r} did not appear on the serial console ({console})")
    return seen
