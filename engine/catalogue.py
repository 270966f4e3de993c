"""PlatformImage URNs to container images and VM disks: a built-in table, overridable by
a user file.

The file format is a JSON object mapping `publisher:offer:sku:version` (version may be
`latest`) to a Docker image reference, or to an object naming an image for container
builds and a disk file (qcow2, raw, VHD, VHDX) for VM builds:
`{"image": "ubuntu:22.04", "disk": "/images/ubuntu-22.04.qcow2"}`. A relative disk path
is taken from the file's folder; the built-in table's from the disks folder
($AIB_LOCAL_DISKS, else ~/.cache/aib-local/disks, where fixtures/images/build-disk.sh
writes). Lookups are case-insensitive, as Azure's are. A
pinned version that is not listed falls back to the URN's `latest` entry, so
`version: latest` and a concrete version both resolve; the resolution happens at build
time, when the source is resolved, never at validation.
"""

from __future__ import annotations

import functools
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from engine.errors import UsageError
from engine.template.model import PlatformImageSource

ENV_VAR = "AIB_LOCAL_CATALOGUE"
DISKS_ENV = "AIB_LOCAL_DISKS"


def disks_folder() -> Path:
    """Where the built-in catalogue's disks are (and build-disk.sh writes them)."""
    if os.environ.get(DISKS_ENV):
        return Path(os.environ[DISKS_ENV])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "aib-local" / "disks"


class Catalogue:
    """A case-insensitive URN → image (and disk) table."""

    def __init__(self, entries: dict[str, str], disks: dict[str, Path] | None = None) -> None:
        self._entries = {urn.lower(): image for urn, image in entries.items() if image}
        self._disks = {urn.lower(): disk for urn, disk in (disks or {}).items()}

    @classmethod
    def load(cls, override: Path | None = None) -> Catalogue:
        """The built-in table, updated by `override` (or $AIB_LOCAL_CATALOGUE)."""
        entries, disks = _split(_built_in(), disks_folder())
        if override is None and os.environ.get(ENV_VAR):
            override = Path(os.environ[ENV_VAR])
        if override is not None:
            images, files = _split(_read_override(override), override.resolve().parent)
            for urn in images.keys() | files.keys():  # an entry replaces the built-in one whole
                entries.pop(urn, None)
                disks.pop(urn, None)
            entries.update(images)
            disks.update(files)
        return cls(entries, disks)

    def resolve(self, source: PlatformImageSource) -> str | None:
        """The image for the source's URN, or None when the catalogue has no entry."""
        return _lookup(self._entries, source.urn)

    def resolve_disk(self, source: PlatformImageSource) -> Path | None:
        """The disk file for the source's URN (VM builds), or None when there is none."""
        return _lookup(self._disks, source.urn)

    def knows(self, urn: str) -> bool:
        """Whether `resolve` finds an image for the URN."""
        urn = urn.lower()
        return urn in self._entries or f"{urn.rsplit(':', 1)[0]}:latest" in self._entries


T = TypeVar("T")


def _lookup(table: dict[str, T], urn: str) -> T | None:
    urn = urn.lower()
    if urn in table:
        return table[urn]
    return table.get(f"{urn.rsplit(':', 1)[0]}:latest")


def _split(entries: dict[str, Any], folder: Path) -> tuple[dict[str, str], dict[str, Path]]:
    """(URN -> image, URN -> disk path) of a table whose values are a string or an object."""
    images: dict[str, str] = {}
    disks: dict[str, Path] = {}
    for urn, value in entries.items():
        if isinstance(value, str):
            images[urn.lower()] = value
            continue
        if value.get("image"):
            images[urn.lower()] = str(value["image"])
        if value.get("disk"):
            disks[urn.lower()] = folder / Path(str(value["disk"])).expanduser()
    return images, disks


@functools.cache
def _built_in() -> dict[str, Any]:
    entries: dict[str, Any] = json.loads(resources.files("engine").joinpath("data/catalogue.json").read_text())
    return entries


def _read_override(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"catalogue {path}: no such file") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"catalogue {path}: not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"catalogue {path}: expected a JSON object of URN -> image")
    for urn, image in data.items():
        if urn.count(":") != 3 or not all(urn.split(":")):
            raise UsageError(f"catalogue {path}: {urn!r}: expected publisher:offer:sku:version")
        if isinstance(image, dict):
            unknown = set(image) - {"image", "disk"}
            if unknown or not image or not all(isinstance(v, str) and v for v in image.values()):
                raise UsageError(
                    f"catalogue {path}: {urn!r}: expected an image reference, or an object with "
                    '"image" and/or "disk" strings' + (f" (not {', '.join(sorted(unknown))})" if unknown else "")
                )
        elif not isinstance(image, str) or not image:
            raise UsageError(f"catalogue {path}: {urn!r}: expected an image reference string")
    return data
