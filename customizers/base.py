"""The customizer interface and the plan vocabulary.

Customizers plan, the engine executes: a customizer turns its template section into a
short list of steps (run this script with these OK exit codes, put this file there,
restart within this timeout), and the pipeline runs the steps against a target. A
customizer never touches a target or the screen.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel, field_validator

from engine.template.sections import Check, CustomizerSection, Sha256, Uri, check_digest, check_local_file

SCRIPT = "{script}"  # stands for the uploaded script's path in a RunScript command


def check_windows_only(here: str, check: Check, type_name: str, locally: str) -> None:
    """A Windows-only customizer on a source the catalogue knows is Linux: AIB refuses it."""
    if check.os_type == "Linux" and check.source_known:
        check.warning(
            f"{here}.type",
            f"AIB runs {type_name} customizers on Windows images, and the source is a Linux image ({locally})",
            rule="aib/customizer-os",
        )


class ScriptSection(CustomizerSection):
    """A script to run: `scriptUri` (fetched, optionally checksummed) or `inline` commands."""

    script_uri: Uri | None = None
    inline: list[str] | None = None
    sha256_checksum: Sha256 = ""

    @field_validator("inline")
    @classmethod
    def _some_commands(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("empty: give at least one command")
        return value

    def check(self, here: str, check: Check) -> None:
        has_uri, has_inline = self.script_uri is not None, self.inline is not None
        if has_uri == has_inline:
            check.error(
                here,
                "exactly one of 'scriptUri' or 'inline' must be given" + (", not both" if has_uri else ""),
                rule="aib/script-uri-or-inline",
            )
        if self.script_uri:
            check_local_file(self.script_uri, f"{here}.scriptUri", check, sha256=self.sha256_checksum)
        check_digest(self.sha256_checksum, here, check)
        if self.sha256_checksum and has_inline and not has_uri:
            check.warning(
                f"{here}.sha256Checksum",
                "has no effect with inline commands",
                aib_rejects=False,
                rule="aib/checksum-with-inline",
            )


@dataclass(frozen=True)
class Input:
    """A file the customizer needs, fetched and checksummed before the target starts."""

    uri: str
    sha256: str = ""


@dataclass(frozen=True)
class RunScript:
    """Upload `script` and run `command` (with SCRIPT replaced by its path)."""

    script: bytes
    command: tuple[str, ...]
    suffix: str = ".sh"
    ok_codes: tuple[int, ...] = (0,)
    as_root: bool = False
    label: str = "script"
    denied_hint: str = ""  # said when the step fails after a "Permission denied"


@dataclass(frozen=True)
class RunCommand:
    """Run `argv` as it is (a script already on the target, a check)."""

    argv: tuple[str, ...]
    as_root: bool = False
    ok_codes: tuple[int, ...] = (0,)
    label: str = ""
    windows_codes: bool = False  # explain a failing code as a Windows error (HRESULT, Win32)
    # (path, content): written before the command runs, removed after it.
    script: tuple[str, bytes] | None = None
    denied_hint: str = ""  # said when the step fails after a "Permission denied"


@dataclass(frozen=True)
class PutFile:
    """Copy a fetched local file to `destination` on the target."""

    source: Path
    destination: str


@dataclass(frozen=True)
class Restart:
    """Restart the target, wait for it within `timeout` seconds, then run the check."""

    command: str
    check_command: str
    timeout: float


@dataclass(frozen=True)
class UntilDone:
    """Run `run` again and again: a restart code restarts the target first, 0 ends it."""

    run: RunScript
    restart: Restart
    restart_codes: tuple[int, ...] = ()
    max_rounds: int = 50


Step = RunScript | RunCommand | PutFile | Restart | UntilDone


@dataclass(frozen=True)
class PlanContext:
    """What a customizer may know when it plans: the OS and the fetched inputs."""

    os_type: str  # "Linux" | "Windows"
    fetched: Mapping[str, Path]
    has_pwsh: bool = False
    powershell_strict: bool = False


class PlanError(Exception):
    """The customizer cannot run on this target; the message says why."""


S = TypeVar("S", bound=BaseModel)


class Customizer(ABC, Generic[S]):
    """One entry of properties.customize (or of properties.validate.inVMValidations)."""

    type_name: ClassVar[str]
    schema: ClassVar[type[CustomizerSection]]  # its template section: fields and rules
    validates: ClassVar[bool] = False  # AIB also takes it as an in-VM validator
    windows_only: ClassVar[bool] = False  # its presence (without Shell) says the image is Windows
    # The largest input AIB takes for this type, in bytes (None: no limit); larger is warned.
    input_limit: ClassVar[int | None] = None

    def __init__(self, section: S) -> None:
        self.section = section

    def inputs(self) -> list[Input]:
        """Files to fetch and verify before anything starts."""
        return []

    @abstractmethod
    def plan(self, ctx: PlanContext) -> list[Step]:
        """The steps that carry out this customizer."""
