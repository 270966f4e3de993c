"""Fetching scriptUri/sourceUri: local paths, file://, http with retries, sha256 checks."""

from __future__ import annotations

import hashlib
import http.server
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.fetch import FetchError, fetch, redact_uri
from tests.support import base_url, http_server

BODY = b"#!/bin/sh\necho served\n"
DIGEST = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def server() -> Iterator[Any]:
    """A loopback HTTP server: /ok serves BODY, /flaky fails twice first, /missing is 404."""
    hits: dict[str, int] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            hits[path] = hits.get(path, 0) + 1
            if path == "/flaky" and hits[path] <= 2:
                self.send_error(503)
                return
            if path in ("/ok", "/flaky"):
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY)
                return
            self.send_error(404)

        def log_message(self, *_args: Any) -> None:
            pass

    with http_server(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as httpd:
        httpd.hits = hits  # type: ignore[attr-defined]
        httpd.base = base_url(httpd)  # type: ignore[attr-defined]
        yield httpd


def test_relative_path_is_read_from_the_template_folder(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "a.sh").write_bytes(BODY)
    got = fetch("scripts/a.sh", tmp_path, tmp_path / "out" / "0", expected_sha256=DIGEST)
    assert got.path.read_bytes() == BODY
    assert (got.sha256, got.size) == (DIGEST, len(BODY))


def test_file_uri(tmp_path: Path) -> None:
    (tmp_path / "a.sh").write_bytes(BODY)
    got = fetch((tmp_path / "a.sh").as_uri(), Path("/nonexistent"), tmp_path / "0")
    assert got.sha256 == DIGEST


def test_checksum_is_compared_case_insensitively(tmp_path: Path) -> None:
    (tmp_path / "a.sh").write_bytes(BODY)
    assert fetch("a.sh", tmp_path, tmp_path / "0", expected_sha256=DIGEST.upper()).sha256 == DIGEST


def test_a_download_that_mismatches_names_both_digests_and_keeps_nothing(server: Any, tmp_path: Path) -> None:
    with pytest.raises(FetchError) as caught:
        fetch(f"{server.base}/ok", tmp_path, tmp_path / "0", expected_sha256="ab" * 32)
    assert f"expected {'ab' * 32}, got {DIGEST}" in str(caught.value)
    assert not (tmp_path / "0").exists()


def test_a_local_file_that_mismatches_is_the_working_copy_and_runs(tmp_path: Path) -> None:
    """Validation warns that AIB would fail the step (and --strict refuses it); the fetch
    takes the file as it is, so that an edited script can be tried before its checksum."""
    (tmp_path / "a.sh").write_bytes(BODY)
    got = fetch("a.sh", tmp_path, tmp_path / "0", expected_sha256="ab" * 32)
    assert got.differs and got.sha256 == DIGEST and (tmp_path / "0").read_bytes() == BODY


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"nope\.sh: no such file"):
        fetch("nope.sh", tmp_path, tmp_path / "0")


def test_http_download(server: Any, tmp_path: Path) -> None:
    got = fetch(f"{server.base}/ok", tmp_path, tmp_path / "0", expected_sha256=DIGEST)
    assert got.path.read_bytes() == BODY


def test_http_errors_are_retried_with_backoff(server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engine.fetch.BACKOFF", 0.01)  # the waits themselves: tests/guarantees/test_download_faults
    waits: list[str] = []
    got = fetch(f"{server.base}/flaky", tmp_path, tmp_path / "0", retrying=waits.append)
    assert [w.split("; ")[-1] for w in waits] == ["retrying in 0.0s", "retrying in 0.0s"]
    assert got.sha256 == DIGEST
    assert server.hits["/flaky"] == 3


def test_http_404_is_not_retried(server: Any, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(f"{server.base}/missing?sig=SECRET", tmp_path, tmp_path / "0")
    assert server.hits["/missing"] == 1


def test_sas_token_is_redacted_in_errors(server: Any, tmp_path: Path) -> None:
    with pytest.raises(FetchError) as caught:
        fetch(f"{server.base}/missing?sv=2022&sig=SECRET", tmp_path, tmp_path / "0")
    assert "SECRET" not in str(caught.value)
    assert redact_uri("https://a.blob.core.windows.net/c/x.sh?sig=abc") == "https://a.blob.core.windows.net/c/x.sh?***"


def test_unsupported_scheme(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="unsupported URI scheme 'ftp'"):
        fetch("ftp://example.org/x", tmp_path, tmp_path / "0")


def test_download_progress_counts_every_byte(server: Any, tmp_path: Path) -> None:
    chunks: list[int] = []
    got = fetch(f"{server.base}/ok", tmp_path, tmp_path / "0", progress=chunks.append)
    assert sum(chunks) == got.size == len(BODY)


def test_meter_reports_bytes_and_a_final_event() -> None:
    from engine.events import Events

    seen: list[dict[str, Any]] = []
    events = Events(seen.append)
    data = list(events.metered(iter([b"a" * 10, b"b" * 5]), step="capture", label="export"))
    assert data == [b"a" * 10, b"b" * 5]
    assert seen[-1]["event"] == "progress" and seen[-1]["bytes"] == 15 and seen[-1]["final"] is True
