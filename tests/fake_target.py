"""A target in memory, for unit tests of the build: it runs nothing and answers each
command as the test says. Registered as the kind "fake" (one registry line, as any
target), so builds reach it through --target fake like any other."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from engine.targets.base import (
    Command,
    CommandTimeout,
    KeptStates,
    OpenRequest,
    OutputSink,
    OwnSource,
    Rebooted,
    Target,
    TargetError,
)

# What a command gets: an exit code, or one of these to raise.
TIMEOUT = "timeout"
GONE = "gone"
INTERRUPT = "interrupt"
DEFECT = "defect"
REBOOT = "reboot"  # the machine went down and came back during the command (a Shell step that reboots)


@dataclass
class Rule:
    """Commands whose argv or script contain `match` exit with `code` after printing `lines`."""

    match: str
    code: int | str = 0
    lines: list[str] = field(default_factory=list)
    times: int | None = None  # then the rule no longer applies (None: always)


class FakeStates(KeptStates):
    """Kept states of fake targets, in memory: key -> when it was made."""

    kind = "fake"
    keep_after = float("inf")  # only --checkpoint keeps (tests that need the rule lower it)
    fidelity = "a fake target keeps nothing real"
    kept: ClassVar[dict[str, float]] = {}
    busy: ClassVar[set[str]] = set()  # keys a build "runs from": they cannot be removed
    broken: ClassVar[set[str]] = set()  # keys whose state fails to start

    def present(self) -> dict[str, float]:
        return dict(self.kept)

    def remove(self, key: str) -> bool:
        if key in self.busy:
            return False
        self.kept.pop(key, None)
        return True


class FakeTarget(Target):
    kind = "fake"
    starts_from_image = False
    export_needs_stop = True
    # What the test set up for the targets its builds open, and the targets opened.
    rules: ClassVar[list[Rule]] = []
    opened: ClassVar[dict[str, FakeTarget]] = {}
    os: ClassVar[str] = "Linux"

    def __init__(self, build_id: str) -> None:
        self.build_id = build_id
        self.build_user = "packer"
        self.os_type = self.os
        self.notes = ["a fake target: nothing runs"]
        self.warnings: list[str] = []
        self.commands: list[Command] = []
        self.files: dict[str, bytes] = {}
        self.restarts: list[str] = []
        self.commits: list[str] = []
        self.kept: list[str] = []  # step cache keys it kept
        self.restored_from = ""  # the key it started from
        self.started = self.stopped = self.halted = self.removed = self.prepared = self.detached = False
        self.boots = 1

    @classmethod
    def open(cls, request: OpenRequest) -> FakeTarget:
        target = cls(request.build_id)
        target.restored_from = request.restore
        cls.opened[request.build_id] = target
        return target

    @classmethod
    def kept_states(cls, store: Path) -> FakeStates:
        return FakeStates()

    def keep_state(self, states: KeptStates, key: str, base_image: str) -> int:
        if "refuse" in key:
            raise TargetError("cannot keep")
        FakeStates.kept[key] = time.time()
        self.kept.append(key)
        return 1000

    @classmethod
    def attach(cls, info: dict[str, Any], build_id: str, *, within: float | None = None) -> FakeTarget:
        target = cls.opened.get(info.get("name", ""))
        if target is None or target.removed:
            raise TargetError(f"the kept fake target {info.get('name')} no longer exists")
        return target

    @classmethod
    def own_source(cls, spec: str) -> OwnSource:
        return OwnSource({"type": "FakeMachine"}, "fake machine")

    @property
    def name(self) -> str:
        return self.build_id

    def info(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.build_id, "osType": self.os_type}

    def start(self) -> None:
        if self.restored_from and self.restored_from in FakeStates.broken:
            raise TargetError(f"the kept state {self.restored_from[:8]} is damaged")
        self.started = True

    def run(self, command: Command, sink: OutputSink, timeout: float | None) -> int:
        self.commands.append(command)
        text = " ".join(command.argv) + (command.script[1].decode() if command.script else "")
        for rule in self.rules:
            if rule.match in text and rule.times != 0:
                if rule.times is not None:
                    rule.times -= 1
                for line in rule.lines:
                    sink("stdout", line)
                if rule.code == REBOOT:
                    self.boots += 1
                    raise Rebooted(f"{self.build_id} rebooted during the step and is back up (boot {self.boots})")
                return _outcome(rule.code)
        return 0

    def ran(self, fragment: str) -> bool:
        """Whether a command (or its script) containing `fragment` ran."""
        return any(fragment in " ".join(c.argv) + (c.script[1].decode() if c.script else "") for c in self.commands)

    def put(self, data: bytes, destination: str, *, mode: int = 0o644, owner: str | None = None) -> None:
        self.files[destination] = data

    def restart(self, command: str, timeout: float, report: Callable[[str], None]) -> None:
        report("restarting the fake target")
        self.restarts.append(command)

    def export(self) -> Iterator[bytes]:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            data = b"ID=fake\n"
            info = tarfile.TarInfo("etc/os-release")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        yield buffer.getvalue()

    def commit(self, repository: str, tag: str, base_image: str) -> str:
        if "refuse" in repository:
            raise TargetError(f"cannot commit {repository}")
        self.commits.append(f"{repository}:{tag}")
        return f"sha256:{len(self.commits):064x}"

    def stop(self) -> None:
        self.stopped = True

    def halt(self) -> None:
        self.halted = True

    def prepare_capture(self) -> None:
        self.prepared = True

    def detach(self) -> None:
        self.detached = True

    def remove(self) -> None:
        self.removed = True


def _outcome(code: int | str) -> int:
    if code == TIMEOUT:
        raise CommandTimeout("timed out; the process was killed in the fake target")
    if code == GONE:
        raise TargetError("the target went away during the step: the fake target was removed")
    if code == INTERRUPT:
        raise KeyboardInterrupt
    if code == DEFECT:
        raise RuntimeError("a defect in the engine")
    assert isinstance(code, int)
    return code
