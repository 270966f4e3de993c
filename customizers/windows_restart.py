"""WindowsRestart: restart the target, wait for it to come back, run the check command."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import field_validator

from customizers.base import Customizer, PlanContext, Restart, Step, check_windows_only
from engine.template.sections import Check, CustomizerSection

DEFAULT_RESTART_COMMAND = 'shutdown /r /f /t 0 /c "packer restart"'
DURATION_PATTERN = re.compile(r"^(\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
LINUX_RESTART_COMMAND = "shutdown -r now"
DEFAULT_WINDOWS_RESTART = DEFAULT_RESTART_COMMAND
UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """Seconds in a Go/Packer duration such as '5m', '90s', '1h30m'."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * UNITS[u] for n, u in parts)


class WindowsRestartCustomizer(CustomizerSection):
    """Restarts the target and waits for it to come back."""

    type: Literal["WindowsRestart"]
    restart_command: str = DEFAULT_RESTART_COMMAND
    restart_check_command: str = ""
    restart_timeout: str = "5m"

    @field_validator("restart_timeout")
    @classmethod
    def _duration(cls, value: str) -> str:
        if value and not DURATION_PATTERN.match(value):
            raise ValueError("expected a duration such as '5m', '90s' or '2h'")
        return value

    def check(self, here: str, check: Check) -> None:
        check_windows_only(here, check, "WindowsRestart", "locally the Linux target restarts")


class WindowsRestart(Customizer[WindowsRestartCustomizer]):
    type_name = "WindowsRestart"
    schema = WindowsRestartCustomizer
    windows_only = True

    def plan(self, ctx: PlanContext) -> list[Step]:
        command = self.section.restart_command
        if ctx.os_type != "Windows" and command == DEFAULT_RESTART_COMMAND:
            command = LINUX_RESTART_COMMAND
        timeout = parse_duration(self.section.restart_timeout or "5m")
        return [Restart(command, self.section.restart_check_command, timeout)]
