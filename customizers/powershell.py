"""PowerShell: a script or inline commands, with validExitCodes, elevation and SYSTEM.

On Windows the command is the one AIB's customization.log shows (Packer's powershell
provisioner); on Linux it runs under `pwsh` when the target has it.
"""

from __future__ import annotations

from customizers.base import SCRIPT, Customizer, Input, PlanContext, PlanError, RunScript, Step
from engine.model import PowerShellCustomizer, PowerShellValidator

WRAPPER = (
    "& { if (Test-Path variable:global:ProgressPreference)"
    "{set-variable -name variable:global:ProgressPreference -value 'SilentlyContinue'}; "
    "&'%s'; exit $LastExitCode }"
)


class PowerShell(Customizer[PowerShellCustomizer | PowerShellValidator]):
    type_name = "PowerShell"

    def inputs(self) -> list[Input]:
        uri = self.section.script_uri
        return [Input(uri, self.section.sha256_checksum)] if uri else []

    def plan(self, ctx: PlanContext) -> list[Step]:
        section = self.section
        if section.inline is not None:
            script = ("\r\n" if ctx.os_type == "Windows" else "\n").join(section.inline).encode()
            label = "inline"
        else:
            uri = section.script_uri or ""
            script, label = ctx.fetched[uri].read_bytes(), uri
        if ctx.os_type == "Windows":
            command: tuple[str, ...] = ("powershell", "-executionpolicy", "bypass", WRAPPER % SCRIPT)
        elif ctx.has_pwsh:
            command = (
                "pwsh",
                "-NoProfile",
                "-NonInteractive",
                "-ExecutionPolicy",
                "Bypass",
                "-Command",
                WRAPPER % SCRIPT,
            )
        else:
            raise PlanError("a PowerShell customizer on a Linux target needs pwsh in the image")
        return [
            RunScript(
                script,
                command,
                suffix=".ps1",
                ok_codes=tuple(section.valid_exit_codes),
                as_root=section.run_elevated or section.run_as_system,
                label=label,
            )
        ]
