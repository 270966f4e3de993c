"""Guarantee 4: downloads survive flaky servers (retries with backoff, in the log), fail
clearly and within the build's deadline against servers that always fail or stall, and
a body that does not match sha256Checksum means nothing runs."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import base_url, build_ids, http_server, store_problems, template

pytestmark = pytest.mark.docker

SCRIPT = b"#!/bin/sh\necho downloaded script ran\n"


class FaultyServer(ThreadingHTTPServer):
    daemon_threads = True
    requests: dict[str, int]


class Handler(BaseHTTPRequestHandler):
    server: FaultyServer

    def log_message(self, *_args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        count = self.server.requests[path] = self.server.requests.get(path, 0) + 1
        if path == "/flaky.sh" and count <= 2:
            self.send_error(503, "Service Unavailable")
        elif path == "/always.sh":
            self.send_error(500, "Internal Server Error")
        elif path in ("/stall.sh", "/trickle.sh"):
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            for _ in range(400):  # stall: nothing at all; trickle: a byte every half second
                if path == "/trickle.sh":
                    self.wfile.write(b"#")
                    self.wfile.flush()
                time.sleep(0.5)
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(SCRIPT)))
            self.end_headers()
            self.wfile.write(SCRIPT)


@pytest.fixture
def server() -> Iterator[tuple[str, FaultyServer]]:
    with http_server(FaultyServer(("127.0.0.1", 0), Handler)) as httpd:
        httpd.requests = {}
        yield base_url(httpd), httpd


def downloading(url: str, **extra: Any) -> dict[str, Any]:
    step = {"type": "Shell", "name": "fetched", "scriptUri": url, **extra}
    return template("download", [step])


def test_a_server_that_fails_twice_then_serves_is_retried_with_backoff(
    cli: Any, write_template: Any, server: Any, store: Path, base_image: str
) -> None:
    base, httpd = server
    url = f"{base}/flaky.sh"
    path = write_template(downloading(url, sha256Checksum=hashlib.sha256(SCRIPT).hexdigest()))
    result = cli("build", str(path), "--network", "none")

    assert result.code == 0, result.output
    assert httpd.requests["/flaky.sh"] == 3
    assert "downloaded script ran" in result.stdout
    log = (store / "builds" / build_ids(store)[0] / "customization.log").read_text()
    for attempt, wait in ((1, "0.5"), (2, "1.0")):
        line = f"attempt {attempt} of 5 failed (HTTP 503 Service Unavailable); retrying in {wait}s"
        assert line in result.output
        assert line in log


def test_a_server_that_always_fails_is_a_clear_error_and_nothing_starts(
    cli: Any, write_template: Any, server: Any, store: Path, docker_client: Any, base_image: str
) -> None:
    base, httpd = server
    path = write_template(downloading(f"{base}/always.sh"))
    started = time.monotonic()
    result = cli("build", str(path), "--network", "none")

    assert result.code == 1, result.output
    assert time.monotonic() - started < 20
    assert f"{base}/always.sh: download failed after 5 attempts: HTTP 500 Internal Server Error" in result.stderr
    assert httpd.requests["/always.sh"] == 5
    assert "start-target" not in result.stdout
    assert store_problems(store) == []


def test_a_stalled_download_is_abandoned_after_the_download_timeout(
    cli: Any, write_template: Any, server: Any, store: Path, base_image: str
) -> None:
    base, _httpd = server
    path = write_template(downloading(f"{base}/stall.sh"))
    started = time.monotonic()
    result = cli("build", str(path), "--network", "none", "--download-timeout", "1")

    assert result.code == 1, result.output
    assert time.monotonic() - started < 25
    assert "download failed after 5 attempts: no data for 1s" in result.stderr
    assert "start-target" not in result.stdout
    assert store_problems(store) == []


def test_a_trickling_download_stops_at_the_build_deadline(
    cli: Any, write_template: Any, server: Any, store: Path, base_image: str
) -> None:
    base, _httpd = server
    path = write_template({**downloading(f"{base}/trickle.sh")})
    document = path.read_text().replace('"customize"', '"buildTimeoutInMinutes": 1, "customize"')
    path.write_text(document)
    started = time.monotonic()
    result = cli("build", str(path), "--network", "none")
    elapsed = time.monotonic() - started

    assert result.code == 1, result.output
    assert 55 < elapsed < 75, elapsed
    assert "download stopped: the build's time ran out" in result.stderr
    assert store_problems(store) == []


def test_a_body_that_does_not_match_its_checksum_runs_nothing(
    cli: Any, write_template: Any, server: Any, store: Path, docker_client: Any, base_image: str
) -> None:
    base, _httpd = server
    path = write_template(downloading(f"{base}/script.sh", sha256Checksum="0" * 64))
    result = cli("build", str(path), "--network", "none")

    assert result.code == 1, result.output
    assert "sha256 mismatch: expected " + "0" * 64 in result.stderr
    assert "downloaded script ran" not in result.output
    assert "start-target" not in result.stdout
    inputs = store / "builds" / build_ids(store)[0] / "inputs"
    assert not inputs.exists() or list(inputs.iterdir()) == []
