"""File: one downloaded file placed at `destination` on the target."""

from __future__ import annotations

from customizers.base import Customizer, Input, PlanContext, PutFile, Step
from engine.model import FileCustomizer, FileValidator

AIB_FILE_LIMIT = 20 * 1024 * 1024


class File(Customizer[FileCustomizer | FileValidator]):
    type_name = "File"
    input_limit = AIB_FILE_LIMIT

    def inputs(self) -> list[Input]:
        return [Input(self.section.source_uri, self.section.sha256_checksum)]

    def plan(self, ctx: PlanContext) -> list[Step]:
        return [PutFile(ctx.fetched[self.section.source_uri], self.section.destination)]
