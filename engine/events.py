"""Build events: one stream that feeds the customization.log and the screen.

The pipeline emits events (step started, output line, step finished, warning, artifact,
build finished); `BuildLog` writes each to the build's customization.log with a
timestamp, and a reporter shows them: plain timestamped lines, or one JSON object per
line for CI (`--output json`).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TextIO


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Reporter(Protocol):
    def __call__(self, event: dict[str, Any]) -> None: ...


class TextReporter:
    """Plain, timestamped lines: what a terminal or a CI log shows."""

    def __init__(self, stream: TextIO | None = None, prefix: str = "") -> None:
        self.stream = stream or sys.stdout
        self.prefix = prefix

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        stamp = time.strftime("%H:%M:%S")
        step = event.get("step", "")
        if kind == "output":
            text = f"{step} | {event['line']}"
        elif kind == "step-started":
            text = f"==> {step}" + (f": {event['detail']}" if event.get("detail") else "")
        elif kind == "step-finished":
            code = event.get("exitCode")
            result = "ok" if event["status"] == "succeeded" else event["status"].upper()
            text = (
                f"<== {step}: {result}"
                + (f" (exit {code})" if code is not None else "")
                + f" in {event['duration']:.1f}s"
            )
        elif kind == "warning":
            text = f"warning: {event['message']}"
        elif kind == "artifact":
            text = f"artifact {event['runOutputName']}: {event.get('artifactId') or event.get('artifactUri')}"
        elif kind == "build-started":
            text = f"build {event['buildId']} of {event['template']} ({event['target']})"
        elif kind == "build-finished":
            text = f"build {event['buildId']} {event['status']} in {event['duration']:.1f}s"
        else:
            text = str(event.get("message", ""))
        print(f"{self.prefix}{stamp} {text}", file=self.stream, flush=True)


class JsonReporter:
    """One JSON object per line on stdout, for machines."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, event: dict[str, Any]) -> None:
        print(json.dumps(event, sort_keys=False), file=self.stream, flush=True)


class BuildLog:
    """The build's customization.log: every step's command, output, exit code, duration."""

    def __init__(self, path: Path, build_id: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.build_id = build_id
        self._file = path.open("a", encoding="utf-8")

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        stamp = datetime.now(UTC).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
        step = event.get("step", "")
        if kind == "output":
            body = f"{step} {'OUT' if event['stream'] == 'stdout' else 'ERR'} {event['line']}"
        elif kind == "step-started":
            body = f"(telemetry) Starting {step}" + (f": {event['detail']}" if event.get("detail") else "")
            if event.get("command"):
                body += f"\n    command: {event['command']}"
        elif kind == "step-finished":
            body = (
                f"(telemetry) ending {step}: {event['status']}, "
                f"exit code {event.get('exitCode')}, {event['duration']:.3f}s"
            )
        elif "message" in event and kind in ("info", "warning"):
            body = f"{kind.upper()} {step + ' ' if step else ''}{event['message']}"
        else:
            body = f"{kind}: " + json.dumps({k: v for k, v in event.items() if k not in ("event", "time")})
        self._file.write(f"[{self.build_id}] {stamp} {body}\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Events:
    """Fans each event out to the log and the reporter, with a shared timestamp."""

    def __init__(self, *sinks: Callable[[dict[str, Any]], None], redact: Callable[[str], str] = lambda s: s) -> None:
        self.sinks = sinks
        self.redact = redact
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        record: dict[str, Any] = {"event": event, "time": utc_now()}
        for key, value in fields.items():
            record[key] = self.redact(value) if isinstance(value, str) else value
        with self._lock:
            for sink in self.sinks:
                sink(record)

    def warning(self, message: str, **fields: Any) -> None:
        self.emit("warning", message=message, **fields)

    def info(self, message: str, **fields: Any) -> None:
        self.emit("info", message=message, **fields)
