"""An HTML build report (`aib-local report BUILD_ID`, `build --report FILE`): one
self-contained file (no network, no external files) with the build's outcome, a timeline
of its steps drawn to scale, each step's status, exit code, duration and output
(collapsed, searchable; a failed step is open), the warnings, the run outputs with their
artifact IDs, and the template. It is made from the build's record and events.jsonl.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from engine.errors import UsageError
from engine.events import EVENTS_NAME, PASSED, cached, read_events, steps_of

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}.muted{color:#666}
.timeline{position:relative;border:1px solid #ccc;background:#fafafa;margin:1em 0}
.bar{position:relative;height:18px;margin:3px 0;border-radius:3px;background:#4a8;min-width:2px;
 font-size:11px;color:#fff;white-space:nowrap;overflow:visible}
.bar.failed,.bar.timed-out{background:#c33}.bar.rebooted{background:#d90}.bar.cached{background:#9bc}
.bar span{position:absolute;left:100%;padding-left:4px;color:#333}
details{border:1px solid #ddd;border-radius:4px;margin:4px 0;padding:2px 8px}
details.failed,details.timed-out{border-color:#c33;background:#fff4f4}
summary{cursor:pointer}pre{background:#f6f6f6;padding:6px;overflow:auto;max-height:30em}
.hidden{display:none}table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 6px}
"""
SCRIPT = """
document.getElementById('search').addEventListener('input', function (event) {
  var text = event.target.value.toLowerCase();
  document.querySelectorAll('details.step').forEach(function (step) {
    var hit = !text || step.textContent.toLowerCase().indexOf(text) >= 0;
    step.classList.toggle('hidden', !hit);
    if (text && hit) { step.open = true; }
  });
});
"""


def render(record: dict[str, Any], events: list[dict[str, Any]]) -> str:
    """The report of one build, as HTML text."""
    steps = steps_of(events)
    finished: dict[str, Any] = next((e for e in reversed(events) if e["event"] == "build-finished"), {})
    total = max([float(finished.get("duration") or 0.0)] + [s["start"] + s["duration"] for s in steps] + [0.001])
    status = str(finished.get("status") or record.get("status", "")).capitalize()
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    artifacts = [e for e in events if e["event"] == "artifact"]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>aib-local build {escape(record.get('buildId', ''))}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(record.get('templateName', ''))}: <span id='status'>{escape(status)}</span></h1>",
        f"<p class='muted'>build {escape(record.get('buildId', ''))}, {total:.1f} s, started "
        f"{escape(record.get('startedAt', ''))}; template {escape(record.get('template', ''))}</p>",
    ]
    if finished.get("message"):
        parts.append(f"<p id='message'><b>{escape(str(finished['message']))}</b></p>")
    parts.append("<h2>Timeline</h2><div class='timeline' id='timeline'>")
    for step in steps:
        left, width = 100 * step["start"] / total, max(0.2, 100 * step["duration"] / total)
        parts.append(
            f"<div class='bar {escape(step['status'])}' data-step='{escape(step['name'])}' "
            f"style='margin-left:{left:.2f}%;width:{min(width, 100 - left):.2f}%' "
            f"title='{escape(step['name'])}: {step['duration']:.2f} s'>"
            f"<span>{escape(step['name'])} ({step['duration']:.1f} s)</span></div>"
        )
    parts.append("</div><h2>Steps</h2><p><input id='search' type='search' placeholder='search the output'></p>")
    for step in steps:
        failed = step["status"] not in PASSED
        code = f", exit {step['exitCode']}" if step["exitCode"] is not None else ""
        parts.append(
            f"<details class='step {escape(step['status'])}'{' open' if failed else ''} "
            f"data-step='{escape(step['name'])}'>"
            f"<summary>{escape(step['name'])}: {escape(status_text(step))}{code} in {step['duration']:.2f} s"
            f"{' — ' + escape(step['detail']) if step['detail'] else ''}</summary>"
            f"<pre>{escape(chr(10).join(step['output']))}</pre></details>"
        )
    if warnings:
        parts.append("<h2>Findings and warnings</h2><ul id='warnings'>")
        parts += [f"<li>{escape(w)}</li>" for w in warnings]
        parts.append("</ul>")
    if artifacts:
        parts.append("<h2>Run outputs</h2><table id='artifacts'><tr><th>run output</th><th>artifact</th></tr>")
        for item in artifacts:
            artifact = item.get("artifactId") or item.get("artifactUri") or ""
            parts.append(
                f"<tr><td>{escape(str(item.get('runOutputName', '')))}</td><td>{escape(str(artifact))}</td></tr>"
            )
        parts.append("</table>")
    template = Path(str(record.get("template", "")))
    if template.is_file():
        parts.append(
            f"<h2>Template</h2><details><summary>{escape(str(template))}</summary>"
            f"<pre>{escape(template.read_text(errors='replace'))}</pre></details>"
        )
    parts.append(f"<script>{SCRIPT}</script></body></html>\n")
    return "".join(parts)


def status_text(step: dict[str, Any]) -> str:
    return cached(step) if step["status"] == "cached" else str(step["status"])


def report_of(build_dir: Path, record: dict[str, Any]) -> str:
    if not (build_dir / EVENTS_NAME).exists():
        raise UsageError(f"build {record.get('buildId')} has no {EVENTS_NAME} (made by an older aib-local?)")
    return render(record, read_events(build_dir))
