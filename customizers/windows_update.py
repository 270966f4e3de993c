"""WindowsUpdate: search, filter and install updates until none are left.

The behaviour of the rgl windows-update provisioner that AIB uses: a worker script
searches with `searchCriteria` (default `BrowseOnly=0 and IsInstalled=0`), applies the
`filters` in order (`include:`/`exclude:` expressions over `$_`; the first match
decides; no match means not installed), installs up to `updateLimit` updates (default
1000) and exits 101 when a restart is needed. The engine restarts the target and runs
it again, until it exits 0. Every round and every wait is bounded.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field

from customizers.base import Customizer, PlanContext, PlanError, Restart, RunScript, Step, UntilDone, check_windows_only
from customizers.powershell import AIB_WRAPPER, command, elevated_launcher
from customizers.windows_restart import DEFAULT_WINDOWS_RESTART, LINUX_RESTART_COMMAND
from engine.template.sections import Check, CustomizerSection

DEFAULT_SEARCH = "BrowseOnly=0 and IsInstalled=0"
DEFAULT_FILTERS = ("include:$true",)
DEFAULT_LIMIT = 1000
RESTART_CODES = (101, 2147942501)  # and the HRESULT-wrapped form seen on Server 2012
RESTART_TIMEOUT = 4 * 3600.0
MAX_ROUNDS = 50


def _filter(text: str) -> str:
    if text.split(":", 1)[0] not in ("include", "exclude") or ":" not in text:
        raise ValueError(f"expected include:EXPRESSION or exclude:EXPRESSION, got {text!r}")
    return text


def quote(text: str) -> str:
    """A PowerShell single-quoted string."""
    return "'" + text.replace("'", "''") + "'"


class WindowsUpdateCustomizer(CustomizerSection):
    """Searches, filters and installs Windows updates until none are left."""

    since_version: ClassVar[str] = "2020-02-14"
    type: Literal["WindowsUpdate"]
    search_criteria: str = ""
    filters: list[Annotated[str, AfterValidator(_filter)]] = Field(default_factory=list)
    update_limit: int = Field(0, ge=0, le=2**31 - 1)

    def check(self, here: str, check: Check) -> None:
        check_windows_only(here, check, "WindowsUpdate", "locally it runs with pwsh where the image has it")


class WindowsUpdate(Customizer[WindowsUpdateCustomizer]):
    type_name = "WindowsUpdate"
    schema = WindowsUpdateCustomizer
    windows_only = True

    @property
    def search_criteria(self) -> str:
        return self.section.search_criteria or DEFAULT_SEARCH

    @property
    def filters(self) -> tuple[str, ...]:
        return tuple(self.section.filters) or DEFAULT_FILTERS

    @property
    def update_limit(self) -> int:
        return self.section.update_limit or DEFAULT_LIMIT

    def worker(self) -> str:
        """The worker script: its parameters, then the body."""
        body = resources.files("customizers").joinpath("data/windows-update.ps1").read_text()
        header = (
            f"$SearchCriteria = {quote(self.search_criteria)}\n"
            f"$Filters = @({', '.join(quote(f) for f in self.filters)})\n"
            f"$UpdateLimit = {self.update_limit}\n"
        )
        return header + body

    def plan(self, ctx: PlanContext) -> list[Step]:
        script = self.worker()
        if ctx.os_type == "Windows":
            run = RunScript(
                elevated_launcher(script.replace("\n", "\r\n").encode(), system=True),
                command("Windows", AIB_WRAPPER),
                suffix=".ps1",
                label="windows-update worker (as SYSTEM through a scheduled task)",
            )
            restart = Restart(DEFAULT_WINDOWS_RESTART, "", RESTART_TIMEOUT)
        elif ctx.has_pwsh:
            run = RunScript(
                script.encode(),
                command("Linux", AIB_WRAPPER),
                suffix=".ps1",
                as_root=True,
                label="windows-update worker (pwsh)",
            )
            restart = Restart(LINUX_RESTART_COMMAND, "", RESTART_TIMEOUT)
        else:
            raise PlanError("WindowsUpdate needs a Windows target (or pwsh on Linux); this target has neither")
        return [UntilDone(run, restart, restart_codes=RESTART_CODES, max_rounds=MAX_ROUNDS)]
