"""The distributor interface: turn the captured target into an artifact in the store.

A distributor reads its template section and a `DistributeContext` (the captured
target, the store, who built it) and returns the run output AIB would record. It never
touches the screen; the pipeline reports what it returns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel

from engine import disks
from engine.journal import Journal
from engine.store import Store
from engine.template.sections import DistributeSection


class Captured(Protocol):
    """The generalized, stopped target, as distributors consume it."""

    def export(self) -> Iterator[bytes]:
        """Its root filesystem as a tar stream."""

    def commit(self, repository: str, tag: str, base_image: str) -> str:
        """A local image of it (Docker targets); returns the image ID."""

    def disk(self) -> Path | None:
        """Its whole disk (a VM's: partition table, bootloader and all), or None when it is
        captured as a filesystem or an image."""


# (tar stream, image path, offset, disk size or None) -> (disk size, bytes of files):
# writes an ext4 filesystem holding the stream at `offset` in the image file.
FilesystemWriter = Callable[[Iterator[bytes], str, int, "int | None"], tuple[int, int]]


@dataclass
class DistributeContext:
    """What a distributor may use: the captured target, the store, the build's facts."""

    captured: Captured
    store: Store
    build_id: str
    template_id: str
    base_image: str
    os_type: str
    generalized: bool
    source: dict[str, Any] = field(default_factory=dict)
    os_disk_size_gb: int = 0
    location: str | None = None
    write_filesystem: FilesystemWriter | None = None
    # Images and files are entered here before they exist, and settled once a record owns them.
    journal: Journal | None = None

    def pending(self, kind: str, ref: str) -> None:
        if self.journal is not None:
            self.journal.pending(kind, ref)

    def settled(self, kind: str, ref: str) -> None:
        if self.journal is not None:
            self.journal.settled(kind, ref)


@dataclass(frozen=True)
class RunOutput:
    """What AIB records under .../imageTemplates/T/runOutputs/NAME."""

    name: str
    artifact_id: str | None = None
    artifact_uri: str | None = None
    provisioning_state: str = "Succeeded"

    def properties(self) -> dict[str, Any]:
        result: dict[str, Any] = {"provisioningState": self.provisioning_state}
        if self.artifact_id:
            result["artifactId"] = self.artifact_id
        if self.artifact_uri:
            result["artifactUri"] = self.artifact_uri
        return result


class DistributeError(Exception):
    """The distribution failed, or cannot be done; the message says why."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


S = TypeVar("S", bound=BaseModel)


def keep_image(ctx: DistributeContext, repository: str, tag: str) -> dict[str, str]:
    """The captured machine kept as an image the next build can start from: a Docker image
    committed as `repository:tag`, or a VM's whole disk flattened into the store (qcow2).
    It is entered in the journal before it exists; `settle_image` once a record owns it."""
    whole = ctx.captured.disk()
    if whole is None:
        ctx.pending("images", f"{repository}:{tag}")
        return {"dockerImage": ctx.captured.commit(repository, tag, ctx.base_image), "reference": f"{repository}:{tag}"}
    final = ctx.store.root / "artifacts" / ctx.build_id / f"{repository.replace('/', '-')}.qcow2"
    partial = final.with_name(f".{final.name}.partial")
    ctx.pending("files", str(final))
    ctx.pending("files", str(partial))
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        disks.flatten(whole, partial, "qcow2")
        partial.replace(final)
    except OSError as exc:
        raise DistributeError(f"cannot write {final}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
        ctx.settled("files", str(partial))
    return {"disk": str(final)}


def settle_image(ctx: DistributeContext, kept: dict[str, str]) -> None:
    """A record owns the image `keep_image` made."""
    if "reference" in kept:
        ctx.settled("images", kept["reference"])
    else:
        ctx.settled("files", kept["disk"])


class Distributor(ABC, Generic[S]):
    """One entry of properties.distribute."""

    type_name: ClassVar[str]
    schema: ClassVar[type[DistributeSection]]  # its template section: fields and rules
    # Reads the exported filesystem (so the target must be stopped first), not a commit.
    needs_export: ClassVar[bool] = False

    def __init__(self, section: S) -> None:
        self.section = section

    def check(self, store: Store) -> None:
        """Refuse early (before any target starts) what cannot be distributed."""

    @abstractmethod
    def distribute(self, ctx: DistributeContext) -> RunOutput:
        """Write the artifact and its resource record; return the run output."""
