"""Fetch scriptUri/sourceUri files and verify their sha256 before anything runs.

A URI may be https://, http://, file:// or a path relative to the template's folder.
Downloads stream to a file (memory stays flat whatever the size) and are retried with
exponential backoff, as AIB retries its own downloads.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from engine.errors import UsageError

CHUNK = 1 << 20
ATTEMPTS = 5


class FetchError(UsageError):
    """A referenced file could not be fetched, or its digest did not match."""


class _Retryable(Exception):
    pass


@dataclass(frozen=True)
class Fetched:
    """A local copy of a referenced file and its digest."""

    uri: str
    path: Path
    sha256: str
    size: int


def redact_uri(uri: str) -> str:
    """The URI without its query string (SAS tokens live there)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.query and parts.scheme in ("http", "https"):
        return urllib.parse.urlunsplit(parts._replace(query="***"))
    return uri


def fetch(
    uri: str, base_dir: Path, dest: Path, *, expected_sha256: str = "", progress: Callable[[int], None] | None = None
) -> Fetched:
    """Copy `uri` to `dest`, hashing as it streams; check `expected_sha256` if given.

    `progress` is told the size of each chunk as it arrives (downloads only).
    """
    parts = urllib.parse.urlsplit(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if parts.scheme in ("http", "https"):
        digest, size = _download(uri, dest, progress)
    else:
        if parts.scheme == "file":
            source = Path(urllib.request.url2pathname(parts.path))
        elif parts.scheme and len(parts.scheme) > 1:
            raise FetchError(
                f"{redact_uri(uri)}: unsupported URI scheme {parts.scheme!r} (use https, http, file or a path)"
            )
        else:
            source = Path(uri)
            if not source.is_absolute():
                source = base_dir / source
        digest, size = _copy(source, dest, uri)
    if expected_sha256 and digest != expected_sha256.lower():
        dest.unlink(missing_ok=True)
        raise FetchError(
            f"{redact_uri(uri)}: sha256 mismatch: expected {expected_sha256.lower()}, got {digest}",
            hint="update sha256Checksum (sha256sum FILE) or fix the file",
        )
    return Fetched(uri, dest, digest, size)


def _copy(source: Path, dest: Path, uri: str) -> tuple[str, int]:
    try:
        with source.open("rb") as src, dest.open("wb") as out:
            return _stream(src.read, out.write)
    except FileNotFoundError:
        raise FetchError(f"{uri}: no such file ({source})") from None
    except IsADirectoryError:
        raise FetchError(f"{uri}: is a directory; AIB fetches single files") from None
    except OSError as exc:
        raise FetchError(f"{uri}: cannot read {source}: {exc.strerror}") from None


def _stream(
    read: Callable[[int], bytes], write: Callable[[bytes], object], progress: Callable[[int], None] | None = None
) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := read(CHUNK):
        digest.update(chunk)
        write(chunk)
        size += len(chunk)
        if progress is not None:
            progress(len(chunk))
    return digest.hexdigest(), size


def _download(uri: str, dest: Path, progress: Callable[[int], None] | None) -> tuple[str, int]:
    shown = redact_uri(uri)

    @retry(
        retry=retry_if_exception_type(_Retryable),
        stop=stop_after_attempt(ATTEMPTS),
        wait=wait_exponential(multiplier=0.5, max=8),
        reraise=True,
    )
    def attempt() -> tuple[str, int]:
        try:
            with urllib.request.urlopen(uri, timeout=60) as response, dest.open("wb") as out:
                return _stream(response.read, out.write, progress)
        except urllib.error.HTTPError as exc:
            if exc.code >= 500 or exc.code == 429:
                raise _Retryable(f"HTTP {exc.code}") from None
            raise FetchError(f"{shown}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            raise _Retryable(str(getattr(exc, "reason", exc))) from None

    try:
        return attempt()
    except _Retryable as exc:
        raise FetchError(f"{shown}: download failed after {ATTEMPTS} attempts: {exc}") from None
