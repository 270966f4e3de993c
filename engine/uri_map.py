"""Working copies behind real URLs (`--map-uri PREFIX=DIR`).

A template being readied for AIB names its scripts by the https URLs they will be
published at. Locally, a URL that starts with a mapped PREFIX is read from DIR plus the
rest of the URL's path instead: the working copy runs, and the template stays exactly as
it will be submitted. The rules of local files hold (nothing outside DIR, no symlink
out of it), and a mapped URL is no "path on this machine" to AIB's eyes.

Mappings come from, in order of precedence (for the same PREFIX, the first wins; among
different prefixes, the longest that matches):
1. the command line: `--map-uri PREFIX=DIR` (DIR relative to the current folder);
2. the environment: AIB_LOCAL_MAP_URI, entries `PREFIX=DIR` separated by newlines or
   spaces (DIR relative to the current folder);
3. a project file, `aib-local.json`, in the template's folder or the nearest folder
   above it (up to the repository's root, where `.git` is): `{"mapUri": {PREFIX: DIR}}`,
   DIR relative to the file's folder.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import UsageError

ENVIRONMENT = "AIB_LOCAL_MAP_URI"
PROJECT_FILE = "aib-local.json"


@dataclass(frozen=True)
class Mapping:
    prefix: str
    folder: Path
    origin: str  # where it was given: "--map-uri", the variable, or the project file's path


@dataclass(frozen=True)
class Mapped:
    """What a mapped URL reads: the working copy, and the mapping that led there."""

    path: Path
    mapping: Mapping

    def describe(self, uri: str) -> str:
        try:
            shown = self.path.relative_to(Path.cwd())
        except ValueError:
            shown = self.path
        return f"{shown}, the working copy of {uri}"


@dataclass(frozen=True)
class UriMap:
    mappings: tuple[Mapping, ...] = field(default_factory=tuple)

    def __bool__(self) -> bool:
        return bool(self.mappings)

    def find(self, uri: str) -> Mapped | None:
        """The working copy `uri` maps to (None: not mapped). UsageError when the mapped
        path leaves its folder."""
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme not in ("http", "https"):
            return None
        bare = urllib.parse.urlunsplit(parts._replace(query="", fragment=""))
        matches = [m for m in self.mappings if bare.startswith(m.prefix)]
        if not matches:
            return None
        mapping = max(matches, key=lambda m: len(m.prefix))
        rest = urllib.parse.unquote(bare[len(mapping.prefix) :]).lstrip("/")
        root = mapping.folder.resolve()
        try:
            path = (root / rest).resolve()  # symlinks followed: one out of the folder is refused
        except (OSError, RuntimeError) as exc:
            raise UsageError(f"{uri}: cannot resolve its working copy under {root}: {exc}") from None
        if not rest or not path.is_relative_to(root):
            raise UsageError(
                f"{uri} maps to {root / rest}, which is outside {root} ({mapping.origin}); refused",
                hint="map a prefix that ends at a folder, and keep the working copies inside DIR",
            )
        return Mapped(path, mapping)

    @classmethod
    def for_template(cls, template: Path, given: tuple[str, ...] | list[str] = ()) -> UriMap:
        """The mappings for `template`: the command line's, the environment's, then its
        project file's."""
        mappings: dict[str, Mapping] = {}
        for entry in given:
            _add(mappings, *_split(entry, "--map-uri"), Path.cwd(), "--map-uri")
        for entry in os.environ.get(ENVIRONMENT, "").split():
            _add(mappings, *_split(entry, ENVIRONMENT), Path.cwd(), ENVIRONMENT)
        project = project_file(template)
        if project is not None:
            for prefix, folder in _read_project(project).items():
                _add(mappings, prefix, folder, project.parent, str(project))
        return cls(tuple(mappings.values()))


def project_file(template: Path) -> Path | None:
    """The aib-local.json nearest above `template` (within its repository)."""
    folder = template.resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / PROJECT_FILE).is_file():
            return candidate / PROJECT_FILE
        if (candidate / ".git").exists():
            return None
    return None


def _split(entry: str, origin: str) -> tuple[str, str]:
    prefix, sep, folder = entry.rpartition("=")
    if not sep or not prefix or not folder:
        raise UsageError(f"{origin} {entry!r}: expected PREFIX=DIR (e.g. https://example.com/scripts/=./scripts)")
    return prefix, folder


def _add(mappings: dict[str, Mapping], prefix: str, folder: str, base: Path, origin: str) -> None:
    parts = urllib.parse.urlsplit(prefix)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"{origin}: {prefix!r} is not an http(s) URL prefix")
    path = Path(folder).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_dir():
        raise UsageError(f"{origin}: {prefix} maps to {path}, which is not a folder")
    mappings.setdefault(prefix, Mapping(prefix, path, origin))


def _read_project(path: Path) -> dict[str, str]:
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: not a readable JSON file: {exc}") from None
    found = document.get("mapUri", {}) if isinstance(document, dict) else None
    if not isinstance(found, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in found.items()):
        raise UsageError(f'{path}: "mapUri" must be an object of URL prefixes to folders')
    return found
