"""Build events: one stream that feeds the customization.log and the screen.

The pipeline emits events (step started, output line, step finished, warning, artifact,
build finished); `BuildLog` writes each to the build's customization.log with a
timestamp, and a reporter shows them: plain timestamped lines, or one JSON object per
line for CI (`--output json`).
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TextIO


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Reporter(Protocol):
    def __call__(self, event: dict[str, Any]) -> None: ...


_STREAM_LOCK = threading.Lock()  # the reporters of builds run at once write to one stream


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
            result = {"succeeded": "ok", "rebooted": "rebooted", "cached": cached(event)}.get(
                event["status"], event["status"].upper()
            )
            text = (
                f"<== {step}: {result}"
                + (f" (exit {code})" if code is not None else "")
                + f" in {event['duration']:.1f}s"
            )
        elif kind == "warning":
            text = f"warning: {event['message']}"
        elif kind == "artifact":
            text = f"artifact {event['runOutputName']}: {event.get('artifactId') or event.get('artifactUri')}"
        elif kind == "progress":
            text = f"{step} | {event['label']}: {event['bytes'] / 1e6:.0f} MB at {event['rate'] / 1e6:.0f} MB/s" + (
                " (done)" if event.get("final") else ""
            )
        elif kind == "build-started":
            text = f"build {event['buildId']} of {event['template']} ({event['target']})"
        elif kind == "build-finished":
            text = f"build {event['buildId']} {event['status']} in {event['duration']:.1f}s"
        else:
            text = str(event.get("message", ""))
        # One write per line under one lock: --parallel builds share the stream, and
        # print() writes the text and the newline apart, so lines could run together.
        with _STREAM_LOCK:
            self.stream.write(f"{self.prefix}{stamp} {text}\n")
            self.stream.flush()


PASSED = ("succeeded", "rebooted", "cached")  # the step statuses that are not failures


def cached(event: dict[str, Any]) -> str:
    """How a step restored from the step cache is told."""
    return f"cached (from build {event.get('cachedFrom') or '?'})"


class RichReporter:
    """A live view for terminals: a spinner with elapsed time and the output's tail for
    the running step, a line per finished step, and a summary table at the end."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(highlight=False, soft_wrap=True)
        self.text = TextReporter()
        self.live: Any = None
        self.step = ""
        self.tail = ""
        self.started = 0.0
        self.rows: list[tuple[str, str, float]] = []

    def _render(self) -> Any:
        from rich.spinner import Spinner

        elapsed = time.monotonic() - self.started
        tail = f"  [dim]{self.tail[:100]}[/dim]" if self.tail else ""
        return Spinner("dots", text=f"{self.step}  [bold]{elapsed:5.1f}s[/bold]{tail}")

    def _stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def __call__(self, event: dict[str, Any]) -> None:
        from rich.live import Live
        from rich.markup import escape
        from rich.table import Table

        kind = event["event"]
        if kind == "step-started":
            self._stop()
            self.step, self.tail, self.started = event["step"], "", time.monotonic()
            detail = f": {event['detail']}" if event.get("detail") else ""
            self.console.print(f"[bold cyan]==>[/bold cyan] {escape(event['step'] + detail)}")
            self.live = Live(get_renderable=self._render, console=self.console, transient=True, refresh_per_second=8)
            self.live.start()
        elif kind == "output":
            self.tail = event["line"]
            self.console.print(f"  [dim]{escape(event['step'])} |[/dim] {escape(event['line'])}")
        elif kind == "progress":
            self.tail = f"{event['label']}: {event['bytes'] / 1e6:.0f} MB at {event['rate'] / 1e6:.0f} MB/s"
            if event.get("final"):
                self.console.print(f"  [dim]{escape(event['step'])} |[/dim] {escape(self.tail)}")
        elif kind == "step-finished":
            self._stop()
            code = event.get("exitCode")
            mark = {
                "succeeded": "[green]ok[/green]",
                "rebooted": "[yellow]rebooted[/yellow]",
                "cached": f"[green]{escape(cached(event))}[/green]",
            }.get(event["status"], f"[red]{event['status'].upper()}[/red]")
            exit_text = f" (exit {code})" if code is not None else ""
            self.console.print(
                f"[bold cyan]<==[/bold cyan] {escape(event['step'])}: {mark}{exit_text} in {event['duration']:.1f}s"
            )
            self.rows.append((event["step"], event["status"] + exit_text, event["duration"]))
        elif kind == "build-finished":
            self._stop()
            table = Table(title=f"build {event['buildId']}: {event['status']} in {event['duration']:.1f}s")
            for column in ("step", "result", "duration"):
                table.add_column(column)
            for step, result, duration in self.rows:
                table.add_row(escape(step), result, f"{duration:.1f}s")
            self.console.print(table)
        elif kind == "warning":
            self.console.print(f"[yellow]warning:[/yellow] {escape(event['message'])}")
        else:
            self.text(event)


class JsonReporter:
    """One JSON object per line on stdout, for machines. Every event after a build's
    build-started carries its buildId, so that the lines of builds run at once
    (--parallel) can be told apart."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.build_id: str | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("event") == "build-started":
            self.build_id = event.get("buildId")
        if self.build_id and "buildId" not in event:
            event = {"event": event.get("event"), "buildId": self.build_id, **event}
        with _STREAM_LOCK:
            self.stream.write(json.dumps(event, sort_keys=False) + "\n")
            self.stream.flush()


EVENTS_NAME = "events.jsonl"


class BuildLog:
    """The build's customization.log: every step's command, output, exit code, duration."""

    def __init__(self, path: Path, build_id: str) -> None:
        self.path = path
        self.build_id = build_id
        # Opened with the first event: a build made but never run leaves no open file.
        self._files: tuple[TextIO, TextIO] | None = None

    def _open(self) -> tuple[TextIO, TextIO]:
        if self._files is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            log = self.path.open("a", encoding="utf-8")
            # The same events, one JSON object per line, for `aib-local report`.
            self._files = (log, (self.path.parent / EVENTS_NAME).open("a", encoding="utf-8"))
        return self._files

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
            if event.get("cachedFrom"):
                body += f", restored from the step cache (kept by build {event['cachedFrom']})"
        elif "message" in event and kind in ("info", "warning"):
            body = f"{kind.upper()} {step + ' ' if step else ''}{event['message']}"
        else:
            body = f"{kind}: " + json.dumps({k: v for k, v in event.items() if k not in ("event", "time")})
        log, events = self._open()
        log.write(f"[{self.build_id}] {stamp} {body}\n")
        log.flush()
        events.write(json.dumps(event) + "\n")
        events.flush()

    def close(self) -> None:
        if self._files is not None:
            for file in self._files:
                file.close()
            self._files = None


SAS_SIGNATURE = re.compile(r"([?&]sig=)[^&\s\"']+", re.IGNORECASE)


class Redactor:
    """Replaces secret values, and SAS signatures in URLs, with ***."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return SAS_SIGNATURE.sub(r"\1***", text)

    def deep(self, value: Any) -> Any:
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.deep(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.deep(v) for v in value]
        return value


class Events:
    """Fans each event out to the log and the reporter, with a shared timestamp."""

    def __init__(self, *sinks: Callable[[dict[str, Any]], None], redact: Redactor | None = None) -> None:
        self.sinks = sinks
        self.redact = redact or Redactor()
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        record: dict[str, Any] = {"event": event, "time": utc_now()}
        for key, value in fields.items():
            record[key] = self.redact.deep(value)
        with self._lock:
            for sink in self.sinks:
                sink(record)

    def warning(self, message: str, **fields: Any) -> None:
        self.emit("warning", message=message, **fields)

    def info(self, message: str, **fields: Any) -> None:
        self.emit("info", message=message, **fields)

    def meter(self, *, step: str, label: str, every: float = 1.0) -> Meter:
        """A byte counter that emits progress events (bytes, rate) at most every `every` s."""
        return Meter(self, step, label, every)

    def metered(self, chunks: Iterator[bytes], *, step: str, label: str) -> Iterator[bytes]:
        """Pass `chunks` through, counting them on a meter."""
        meter = self.meter(step=step, label=label)
        for chunk in chunks:
            meter.add(len(chunk))
            yield chunk
        meter.done()


class Meter:
    """Counts bytes of a long operation and reports progress now and then, and at the end."""

    def __init__(self, events: Events, step: str, label: str, every: float) -> None:
        self.events, self.step, self.label, self.every = events, step, label, every
        self.started = self.last = time.monotonic()
        self.bytes = 0

    def add(self, count: int) -> None:
        self.bytes += count
        if time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            self._report(final=False)

    def done(self) -> None:
        self._report(final=True)

    def _report(self, final: bool) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        self.events.emit(
            "progress",
            step=self.step,
            label=self.label,
            bytes=self.bytes,
            seconds=round(elapsed, 3),
            rate=round(self.bytes / elapsed),
            final=final,
        )


def read_events(build_dir: Path) -> list[dict[str, Any]]:
    """A build's events from its events.jsonl (none when it has none)."""
    path = build_dir / EVENTS_NAME
    events = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return events


def _time(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def steps_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The build's steps in order: name, start (s from the build's start), duration,
    status, exit code, detail and output lines."""
    start = next((_time(e["time"]) for e in events if e["event"] == "build-started"), None)
    if start is None and events:
        start = _time(events[0]["time"])
    found: list[dict[str, Any]] = []
    open_steps: dict[str, dict[str, Any]] = {}
    for event in events:
        step = event.get("step")
        if event["event"] == "step-started" and step:
            entry = {
                "name": step,
                "start": _time(event["time"]) - (start or 0.0),
                "duration": 0.0,
                "status": "running",
                "exitCode": None,
                "detail": event.get("detail") or "",
                "output": [],
            }
            open_steps[step] = entry
            found.append(entry)
        elif event["event"] == "output" and step in open_steps:
            open_steps[step]["output"].append(event.get("line", ""))
        elif event["event"] == "step-finished" and step in open_steps:
            entry = open_steps.pop(step)
            entry.update(duration=float(event.get("duration") or 0.0), status=event.get("status", ""))
            entry["exitCode"] = event.get("exitCode")
            if event.get("cachedFrom"):
                entry["cachedFrom"] = event["cachedFrom"]
    return found
