"""Fetch scriptUri/sourceUri files and verify their sha256 before anything runs.

A URI may be https://, http://, file:// or a path relative to the template's folder; an
https URL under a --map-uri prefix reads its working copy instead (engine.uri_map).
Downloads stream to a file (memory stays flat whatever the size) and are retried with
exponential backoff, as AIB retries its own downloads. A download whose digest differs
from the template's stops the build; a local file or working copy that differs runs as
it is (validation warns that AIB would fail the step, and --strict refuses it).
"""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)
from tenacity.stop import stop_base

from engine.errors import UsageError
from engine.uri_map import UriMap

CHUNK = 1 << 20
ATTEMPTS = 5
BACKOFF = 0.5  # seconds before the first retry; each next wait doubles (at most 8 s)
STALL_TIMEOUT = 60.0  # seconds without a byte before an attempt is abandoned


class FetchError(UsageError):
    """A referenced file could not be fetched, or its digest did not match."""


class _Retryable(Exception):
    pass


class _OutOfTime(Exception):
    pass


@dataclass(frozen=True)
class Fetched:
    """A local copy of a referenced file and its digest."""

    uri: str
    path: Path
    sha256: str
    size: int
    working_copy: str = ""  # a mapped URL's: how to name what was read ("scripts/a.sh, the working copy of ...")
    differs: bool = False  # a local file or working copy whose digest is not the template's


def redact_uri(uri: str) -> str:
    """The URI without its query string (SAS tokens live there)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.query and parts.scheme in ("http", "https"):
        return urllib.parse.urlunsplit(parts._replace(query="***"))
    return uri


def fetch(
    uri: str,
    base_dir: Path,
    dest: Path,
    *,
    expected_sha256: str = "",
    progress: Callable[[int], None] | None = None,
    retrying: Callable[[str], None] | None = None,
    deadline: float | None = None,
    stall_timeout: float = STALL_TIMEOUT,
    uri_map: UriMap | None = None,
) -> Fetched:
    """Copy `uri` to `dest`, hashing as it streams; check `expected_sha256` if given.

    Downloads: `progress` is told the size of each chunk as it arrives, `retrying` is
    told of each failed attempt before the next; an attempt that receives nothing for
    `stall_timeout` seconds fails, and no attempt outlives `deadline` (time.monotonic()).
    The file appears at `dest` only whole and verified.
    """
    parts = urllib.parse.urlsplit(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial")
    mapped = uri_map.find(uri) if uri_map else None
    try:
        source = local_source(uri, base_dir, uri_map)
        if source is not None:
            digest, size = _copy(source, partial, uri)
        else:
            digest, size = _download(uri, partial, progress, retrying, deadline, stall_timeout)
        differs = bool(expected_sha256) and digest != expected_sha256.lower()
        if differs and (mapped is not None or parts.scheme not in ("http", "https")):
            pass  # the working copy runs; validation said that AIB would fail the step
        elif differs:
            raise FetchError(
                f"{redact_uri(uri)}: sha256 mismatch: expected {expected_sha256.lower()}, got {digest}",
                hint="update sha256Checksum (sha256sum FILE) or fix the file",
            )
        partial.replace(dest)
    finally:
        partial.unlink(missing_ok=True)
    working_copy = mapped.describe(redact_uri(uri)) if mapped is not None else ""
    return Fetched(uri, dest, digest, size, working_copy, differs)


def local_source(uri: str, base_dir: Path, uri_map: UriMap | None = None) -> Path | None:
    """The file on this machine that `uri` reads: a path (relative to `base_dir`), a file://
    URL or a mapped URL's working copy; None for a download."""
    mapped = uri_map.find(uri) if uri_map else None
    if mapped is not None:
        return mapped.path
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme in ("http", "https"):
        return None
    if parts.scheme == "file":
        return Path(urllib.request.url2pathname(parts.path))
    if parts.scheme and len(parts.scheme) > 1:
        raise FetchError(
            f"{redact_uri(uri)}: unsupported URI scheme {parts.scheme!r} (use https, http, file or a path)"
        )
    source = Path(uri)
    return source if source.is_absolute() else base_dir / source


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
    read: Callable[[int], bytes],
    write: Callable[[bytes], object],
    progress: Callable[[int], None] | None = None,
    deadline: float | None = None,
) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := read(CHUNK):
        digest.update(chunk)
        write(chunk)
        size += len(chunk)
        if progress is not None:
            progress(len(chunk))
        if deadline is not None and time.monotonic() > deadline:
            raise _OutOfTime(f"the build's time ran out after {size} bytes")
    return digest.hexdigest(), size


def _download(
    uri: str,
    dest: Path,
    progress: Callable[[int], None] | None,
    retrying: Callable[[str], None] | None,
    deadline: float | None,
    stall_timeout: float,
) -> tuple[str, int]:
    shown = redact_uri(uri)

    def left() -> float:
        return float("inf") if deadline is None else deadline - time.monotonic()

    def tell(state: RetryCallState) -> None:
        if retrying is not None and state.outcome is not None and state.next_action is not None:
            why = state.outcome.exception()
            retrying(
                f"download {shown}: attempt {state.attempt_number} of {ATTEMPTS} failed ({why}); "
                f"retrying in {state.next_action.sleep:.1f}s"
            )

    @retry(
        retry=retry_if_exception_type(_Retryable),
        stop=stop_after_attempt(ATTEMPTS) | stop_before_deadline(left),
        wait=wait_exponential(multiplier=BACKOFF, max=8),
        before_sleep=tell,
        reraise=True,
    )
    def attempt() -> tuple[str, int]:
        timeout = max(0.1, min(stall_timeout, left()))
        try:
            with urllib.request.urlopen(uri, timeout=timeout) as response, dest.open("wb") as out:
                return _stream(response.read1, out.write, progress, deadline)
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the response's connection
            if exc.code >= 500 or exc.code == 429:
                raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
            raise FetchError(f"{shown}: HTTP {exc.code} {exc.reason}") from None
        except TimeoutError:
            raise _Retryable(f"no data for {timeout:.0f}s") from None
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise _Retryable(f"no answer within {timeout:.0f}s") from None
            raise _Retryable(str(reason)) from None

    try:
        return attempt()
    except _OutOfTime as exc:
        raise FetchError(f"{shown}: download stopped: {exc}") from None
    except _Retryable as exc:
        if left() <= 0:
            raise FetchError(f"{shown}: download failed and the build's time ran out: {exc}") from None
        raise FetchError(f"{shown}: download failed after {ATTEMPTS} attempts: {exc}") from None


class stop_before_deadline(stop_base):
    """Stop retrying when the next wait would end past the deadline."""

    def __init__(self, left: Callable[[], float]) -> None:
        self.left = left

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.left() <= retry_state.upcoming_sleep
