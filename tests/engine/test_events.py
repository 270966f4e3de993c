"""What builds report: whole lines, even from builds that run at once."""

from __future__ import annotations

import io
import json
import re
import threading
import time

from engine.events import JsonReporter, TextReporter


class SlowStream(io.StringIO):
    """A stream that lets other threads in between writes, as a busy terminal does."""

    def write(self, text: str) -> int:
        written = super().write(text)
        time.sleep(0)
        return written


def report_from_threads(make: type, count: int = 6, events: int = 300) -> list[str]:
    stream = SlowStream()

    def build(n: int) -> None:
        reporter = make(stream, prefix=f"[b{n}] ") if make is TextReporter else make(stream)
        for i in range(events):
            reporter({"event": "output", "step": f"customize[{n}]", "line": f"line {i}", "time": "t"})

    threads = [threading.Thread(target=build, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return stream.getvalue().splitlines()


def test_parallel_builds_never_run_their_text_lines_together() -> None:
    lines = report_from_threads(TextReporter)
    assert len(lines) == 6 * 300
    pattern = re.compile(r"^\[b(\d)\] \d\d:\d\d:\d\d customize\[\1\] \| line \d+$")
    assert [line for line in lines if not pattern.match(line)] == []


def test_parallel_builds_never_run_their_json_events_together() -> None:
    lines = report_from_threads(JsonReporter)
    assert len(lines) == 6 * 300 and all(json.loads(line)["event"] == "output" for line in lines)


def test_each_json_event_names_its_build_so_parallel_builds_can_be_told_apart() -> None:
    stream = io.StringIO()
    reporters = {n: JsonReporter(stream) for n in ("a", "b")}
    for n, reporter in reporters.items():
        reporter({"event": "build-started", "buildId": f"build-{n}", "template": f"{n}.json"})
    reporters["b"]({"event": "output", "step": "customize[0]", "line": "from b"})
    reporters["a"]({"event": "output", "step": "customize[0]", "line": "from a"})
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["event"], e["buildId"]) for e in events] == [
        ("build-started", "build-a"),
        ("build-started", "build-b"),
        ("output", "build-b"),
        ("output", "build-a"),
    ]
    assert events[2]["line"] == "from b"
