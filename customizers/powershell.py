"""PowerShell: a script or inline commands, with validExitCodes, elevation and SYSTEM.

By default the command is the one AIB's customization.log shows (Packer's powershell
provisioner): the exit code is `$LastExitCode`, so a failing cmdlet that is not a
native program does not fail the step. `strict` mode (opt-in) stops on the first error
instead. On Windows, runAsSystem runs the script as a scheduled task under SYSTEM, as
Packer does; on Linux (pwsh) elevation is sudo.
"""

from __future__ import annotations

import base64
import hashlib
from importlib import resources
from typing import Literal

from pydantic import Field

from customizers.base import (
    SCRIPT,
    Customizer,
    Input,
    PlanContext,
    PlanError,
    RunScript,
    ScriptSection,
    Step,
    check_windows_only,
)
from engine.template.sections import Check, ExitCode, since

PROGRESS_OFF = (
    "if (Test-Path variable:global:ProgressPreference)"
    "{set-variable -name variable:global:ProgressPreference -value 'SilentlyContinue'}"
)
AIB_WRAPPER = "& { " + PROGRESS_OFF + "; &'%s'; exit $LastExitCode }"
STRICT_WRAPPER = (
    "& { " + PROGRESS_OFF + "; $ErrorActionPreference='Stop'; "
    "try { &'%s' } catch { Write-Error $_; exit 1 }; if ($LASTEXITCODE) { exit $LASTEXITCODE } }"
)
AIB_MODE = "AIB-compatible: exit code is $LastExitCode, cmdlet errors do not fail the step"
STRICT_MODE = "strict: the first error fails the step"


def command(os_type: str, wrapper: str) -> tuple[str, ...]:
    """The command that runs the uploaded script (SCRIPT) through the wrapper."""
    if os_type == "Windows":
        return ("powershell", "-executionpolicy", "bypass", wrapper % SCRIPT)
    return ("pwsh", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-Command", wrapper % SCRIPT)


def elevated_launcher(script: bytes, *, system: bool) -> bytes:
    """A PowerShell launcher that runs `script` as a scheduled task (SYSTEM or the user)."""
    template = resources.files("customizers").joinpath("data/elevated.ps1").read_text()
    task_id = hashlib.sha256(script).hexdigest()[:12]
    text = (
        template.replace("__ID__", task_id)
        .replace("__SCRIPT_BASE64__", base64.b64encode(script).decode())
        .replace("__USER__", "SYSTEM" if system else "$env:USERNAME")
        .replace("__LOGON__", "ServiceAccount" if system else "Interactive")
    )
    return text.replace("\n", "\r\n").encode()


class PowerShellCustomizer(ScriptSection):
    """Runs PowerShell on a Windows target (or Linux with pwsh)."""

    type: Literal["PowerShell"]
    run_elevated: bool = False
    run_as_system: bool = Field(False, json_schema_extra=since("2020-02-14"))
    valid_exit_codes: list[ExitCode] = Field(default_factory=lambda: [0])

    def check(self, here: str, check: Check) -> None:
        super().check(here, check)
        check_windows_only(here, check, "PowerShell", "locally it runs with pwsh where the image has it")
        if self.run_as_system is True and self.run_elevated is not True:
            check.error(
                f"{here}.runAsSystem",
                "runAsSystem: true needs runElevated: true",
                rule="aib/run-as-system-needs-elevated",
            )
        if check.os_type != "Linux":
            return
        for code in self.valid_exit_codes or []:
            if not 0 <= code <= 255:
                check.warning(
                    f"{here}.validExitCodes",
                    f"{code} cannot occur on a Linux target, where exit codes are 0-255 "
                    f"(it would arrive as {code & 255})",
                    aib_rejects=False,
                    rule="aib/exit-code-out-of-range",
                )


class PowerShell(Customizer[PowerShellCustomizer]):
    type_name = "PowerShell"
    schema = PowerShellCustomizer
    validates = True
    windows_only = True

    def inputs(self) -> list[Input]:
        uri = self.section.script_uri
        return [Input(uri, self.section.sha256_checksum)] if uri else []

    def plan(self, ctx: PlanContext) -> list[Step]:
        section = self.section
        if ctx.os_type != "Windows" and not ctx.has_pwsh:
            raise PlanError("a PowerShell customizer on a Linux target needs pwsh in the image")
        if section.inline is not None:
            newline = "\r\n" if ctx.os_type == "Windows" else "\n"
            script, label = newline.join(section.inline).encode(), "inline"
        else:
            uri = section.script_uri or ""
            script, label = ctx.fetched[uri].read_bytes(), uri
        wrapper, mode = (STRICT_WRAPPER, STRICT_MODE) if ctx.powershell_strict else (AIB_WRAPPER, AIB_MODE)
        elevated = section.run_elevated or section.run_as_system
        as_root = False
        if ctx.os_type == "Windows" and section.run_as_system:
            # Over SSH an administrator's session is already elevated; SYSTEM needs a task.
            script, mode = elevated_launcher(script, system=True), f"{mode}; as SYSTEM through a scheduled task"
            wrapper = AIB_WRAPPER
        elif ctx.os_type != "Windows" and elevated:
            as_root, mode = True, f"{mode}; elevated with sudo"
        return [
            RunScript(
                script,
                command(ctx.os_type, wrapper),
                suffix=".ps1",
                ok_codes=tuple(section.valid_exit_codes),
                as_root=as_root,
                label=f"{label} (PowerShell {mode})",
            )
        ]
