"""WindowsUpdate: search, filter and install updates (the rgl windows-update provisioner)."""

from __future__ import annotations

from customizers.base import Customizer, PlanContext, PlanError, Step
from engine.model import WindowsUpdateCustomizer

DEFAULT_SEARCH = "BrowseOnly=0 and IsInstalled=0"
DEFAULT_LIMIT = 1000


class WindowsUpdate(Customizer[WindowsUpdateCustomizer]):
    type_name = "WindowsUpdate"

    @property
    def search_criteria(self) -> str:
        return self.section.search_criteria or DEFAULT_SEARCH

    @property
    def update_limit(self) -> int:
        return self.section.update_limit or DEFAULT_LIMIT

    def plan(self, ctx: PlanContext) -> list[Step]:
        if ctx.os_type != "Windows":
            raise PlanError("WindowsUpdate needs a Windows target (Windows Update Agent); this target runs Linux")
        raise PlanError("WindowsUpdate needs an SSH target running Windows, which this build does not use")
