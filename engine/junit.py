"""JUnit XML reports (`--junit FILE`), the format Jenkins, GitLab, Azure Pipelines and
GitHub test reporters read.

A build is a test suite, made from the events the build kept (events.jsonl, folded into
steps as the HTML report folds them): one test case per customizer, validator,
deprovision and distribution step, with its duration, its failure (the message and the
output's tail) and its output; a build that fails outside those steps gets a "build" case
that fails. For `validate` each template is a test case whose failure lists the findings.
The XML is written with the standard library's ElementTree: the format is a handful of
elements, and a library would not remove code.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.events import PASSED, steps_of
from engine.store import atomic_write

KEPT_STEPS = ("customize[", "validate[", "deprovision", "distribute[")
TAIL_LINES = 40
# Terminal escape sequences (colours, cursor moves, titles) and what XML 1.0 cannot hold at
# all (control characters but tab and newlines, lone surrogates, U+FFFE and U+FFFF): step
# output has both, and one of them makes the whole report unreadable to a CI server.
ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    """`text` as an XML document can hold it: escape sequences removed, other characters
    XML forbids replaced with U+FFFD."""
    return NOT_XML.sub("\ufffd", ANSI.sub("", text))


@dataclass
class Case:
    name: str
    seconds: float = 0.0
    status: str = "succeeded"
    exit_code: int | None = None
    output: list[str] = field(default_factory=list)
    failure: str = ""


@dataclass
class Suite:
    name: str
    started: str = ""
    seconds: float = 0.0
    status: str = ""
    message: str = ""
    cases: list[Case] = field(default_factory=list)


class JunitReport:
    """Builds and validations, as test suites, written at the end."""

    def __init__(self) -> None:
        self.suites: list[Suite] = []

    def add_build(self, name: str, events: list[dict[str, Any]]) -> None:
        """The build of template `name`, from its events."""
        finished: dict[str, Any] = next((e for e in reversed(events) if e["event"] == "build-finished"), {})
        started: dict[str, Any] = next((e for e in events if e["event"] == "build-started"), {})
        suite = Suite(
            name,
            started=str(started.get("time", "")),
            seconds=float(finished.get("duration") or 0.0),
            status=str(finished.get("status") or "Failed"),
            message=str(finished.get("message") or ""),
        )
        for step in steps_of(events):
            if not step["name"].startswith(KEPT_STEPS):
                continue
            output = step["output"][-TAIL_LINES:]
            if step.get("cachedFrom"):
                output = [f"(restored from the step cache: kept by build {step['cachedFrom']})"]
            case = Case(step["name"], step["duration"], step["status"], step["exitCode"], output)
            if case.status not in PASSED:
                case.failure = suite.message or f"{case.name}: {case.status}"
            suite.cases.append(case)
        self.suites.append(suite)

    def add_validation(self, template: str, seconds: float, errors: list[str], notes: list[str]) -> None:
        suite = Suite(f"validate {template}", seconds=seconds, status="Failed" if errors else "Succeeded")
        case = Case(template, seconds, "failed" if errors else "succeeded", output=notes)
        case.failure = "\n".join(errors)
        suite.cases.append(case)
        self.suites.append(suite)

    def write(self, path: Path) -> None:
        root = ET.Element("testsuites", name="aib-local")
        total = failures = 0
        for suite in self.suites:
            cases = list(suite.cases)
            if suite.status == "Failed" and not any(c.status not in PASSED for c in cases):
                cases.append(Case("build", 0.0, "failed", failure=suite.message or "the build failed"))
            if suite.status == "Canceled":
                cases.append(Case("build", 0.0, "failed", failure=suite.message or "the build was interrupted"))
            failed = sum(1 for c in cases if c.status not in PASSED)
            total, failures = total + len(cases), failures + failed
            element = ET.SubElement(
                root,
                "testsuite",
                name=xml_text(suite.name),
                tests=str(len(cases)),
                failures=str(failed),
                errors="0",
                skipped="0",
                time=f"{suite.seconds:.3f}",
            )
            if suite.started:
                element.set("timestamp", suite.started[:19])
            for case in cases:
                _case(element, suite.name, case)
        root.set("tests", str(total))
        root.set("failures", str(failures))
        root.set("errors", "0")
        root.set("time", f"{sum(s.seconds for s in self.suites):.3f}")
        ET.indent(root)
        atomic_write(path, ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")


def _case(parent: ET.Element, suite: str, case: Case) -> None:
    element = ET.SubElement(parent, "testcase", classname=xml_text(f"aib-local.{suite}"), name=xml_text(case.name))
    element.set("time", f"{case.seconds:.3f}")
    rebooted = case.status == "rebooted"
    if case.status not in PASSED:
        kind = f"exit code {case.exit_code}" if case.exit_code is not None else case.status
        message = case.failure.splitlines()[0] if case.failure else kind
        failure = ET.SubElement(element, "failure", message=xml_text(message), type=xml_text(kind))
        tail = ["--- output (tail) ---", *case.output] if case.output else []
        failure.text = xml_text("\n".join([case.failure, *tail]))
    if case.output or rebooted:
        out = ET.SubElement(element, "system-out")
        out.text = xml_text(
            "\n".join([*case.output, *(["(the machine rebooted during this step)"] if rebooted else [])])
        )
