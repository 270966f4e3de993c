"""File: one downloaded file placed at `destination` on the target."""

from __future__ import annotations

import re
from typing import Literal

from customizers.base import Customizer, Input, PlanContext, PutFile, Step
from engine.template.sections import Check, CustomizerSection, Sha256, Uri, check_digest, check_local_file

AIB_FILE_LIMIT = 20 * 1024 * 1024


class FileCustomizer(CustomizerSection):
    """Downloads one file and places it at `destination` on the target."""

    type: Literal["File"]
    source_uri: Uri
    destination: str
    sha256_checksum: Sha256 = ""

    def check(self, here: str, check: Check) -> None:
        check_digest(self.sha256_checksum, here, check)
        check_destination(self.destination, f"{here}.destination", check)
        check_local_file(self.source_uri, f"{here}.sourceUri", check, limit=AIB_FILE_LIMIT, sha256=self.sha256_checksum)


def check_destination(destination: str | None, here: str, check: Check) -> None:
    """An absolute file path; on Linux AIB writes only under /tmp."""
    if destination is None:
        return
    if check.os_type == "Windows":
        if not re.match(r"^[A-Za-z]:[\\/]", destination):
            check.error(
                here,
                f"expected an absolute Windows path such as C:\\\\temp\\\\file, got {destination!r}",
                rule="aib/file-destination",
            )
        return
    if not destination.startswith("/"):
        check.error(
            here, f"expected an absolute path including the file name, got {destination!r}", rule="aib/file-destination"
        )
    elif destination.endswith("/"):
        check.error(here, "must name the file itself, not a directory", rule="aib/file-destination")
    elif not (destination.startswith("/tmp/") and ".." not in destination.split("/")):
        if check.allow_any_destination:
            check.warning(
                here,
                "outside /tmp: allowed locally by --allow-any-destination, but on Linux AIB can only write under /tmp",
                rule="aib/file-destination-outside-tmp",
            )
        else:
            check.error(
                here,
                f"on Linux AIB can only write under /tmp, got {destination!r} (local opt-out: --allow-any-destination)",
                rule="aib/file-destination-outside-tmp",
            )


class File(Customizer[FileCustomizer]):
    type_name = "File"
    schema = FileCustomizer
    validates = True
    input_limit = AIB_FILE_LIMIT

    def inputs(self) -> list[Input]:
        return [Input(self.section.source_uri, self.section.sha256_checksum)]

    def plan(self, ctx: PlanContext) -> list[Step]:
        return [PutFile(ctx.fetched[self.section.source_uri], self.section.destination)]
