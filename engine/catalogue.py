"""PlatformImage URNs to container images: a built-in table, overridable by a user file.

The file format is a JSON object mapping `publisher:offer:sku:version` (version may be
`latest`) to a Docker image reference. Lookups are case-insensitive, as Azure's are. A
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

from engine.errors import UsageError
from engine.model import PlatformImageSource

ENV_VAR = "AIB_LOCAL_CATALOGUE"


class Catalogue:
    """A case-insensitive URN → image table."""

    def __init__(self, entries: dict[str, str]) -> None:
        self._entries = {urn.lower(): image for urn, image in entries.items()}

    @classmethod
    def load(cls, override: Path | None = None) -> Catalogue:
        """The built-in table, updated by `override` (or $AIB_LOCAL_CATALOGUE)."""
        entries = dict(_built_in())
        if override is None and os.environ.get(ENV_VAR):
            override = Path(os.environ[ENV_VAR])
        if override is not None:
            entries.update(_read_override(override))
        return cls(entries)

    def resolve(self, source: PlatformImageSource) -> str | None:
        """The image for the source's URN, or None when the catalogue has no entry."""
        urn = source.urn.lower()
        if urn in self._entries:
            return self._entries[urn]
        base = urn.rsplit(":", 1)[0]
        return self._entries.get(f"{base}:latest")

    def knows(self, urn: str) -> bool:
        """Whether `resolve` finds an image for the URN."""
        urn = urn.lower()
        return urn in self._entries or f"{urn.rsplit(':', 1)[0]}:latest" in self._entries

    def urns(self) -> list[str]:
        return sorted(self._entries)


@functools.cache
def _built_in() -> dict[str, str]:
    entries: dict[str, str] = json.loads(resources.files("engine").joinpath("data/catalogue.json").read_text())
    return entries


def _read_override(path: Path) -> dict[str, str]:
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
        if not isinstance(image, str) or not image:
            raise UsageError(f"catalogue {path}: {urn!r}: expected an image reference string")
    return data
