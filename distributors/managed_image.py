"""ManagedImage: a local image committed from the target (a VM build's: its disk, as a
qcow2 file in the store), recorded under its resource ID.

It can be the `source` of the next build (`type: ManagedImage`), so builds chain.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from typing import Any, Literal

from distributors.base import DistributeContext, Distributor, RunOutput, keep_image, settle_image
from engine import failpoints
from engine.store import split_id
from engine.template.sections import Check, DistributeSection, ManagedImageId, check_region


class ManagedImageDistribute(DistributeSection):
    type: Literal["ManagedImage"]
    image_id: ManagedImageId
    location: str

    def check(self, here: str, check: Check) -> None:
        check_region(self.location, f"{here}.location", check)


def repository_for(resource_id: str) -> str:
    """A Docker repository name for a managed image ID (lower case, safe characters)."""
    parts = split_id(resource_id)
    group, name = parts[3], parts[-1]
    clean = [re.sub(r"[^a-z0-9._-]+", "-", p.lower()).strip("-._") or "x" for p in (group, name)]
    return f"aib-local/{clean[0]}/{clean[1]}"


class ManagedImage(Distributor[ManagedImageDistribute]):
    type_name = "ManagedImage"
    schema = ManagedImageDistribute

    def distribute(self, ctx: DistributeContext) -> RunOutput:
        image_id = self.section.image_id
        repository = repository_for(image_id)
        # A tag of this build's own: a build that dies before its record is written takes
        # only its own image with it, never the one the record still names.
        tag = f"build-{ctx.build_id}"
        replaced = ctx.store.get(image_id)
        kept = keep_image(ctx, repository, tag)
        failpoints.hit("image:committed")
        ctx.store.put(
            image_id,
            {
                "name": split_id(image_id)[-1],
                "type": "Microsoft.Compute/images",
                "location": self.section.location,
                "tags": dict(self.section.artifact_tags),
                "properties": {
                    "storageProfile": {
                        "osDisk": {
                            "osType": ctx.os_type,
                            "osState": "Generalized" if ctx.generalized else "Specialized",
                        }
                    },
                    "hyperVGeneration": ctx.source.get("hyperVGeneration", "V1"),
                    "provisioningState": "Succeeded",
                },
                "aibLocal": {
                    **kept,
                    "buildId": ctx.build_id,
                    "imageTemplate": ctx.template_id,
                    "source": ctx.source,
                    "createdAt": datetime.now(UTC).isoformat(),
                },
            },
        )
        settle_image(ctx, kept)
        drop_replaced(replaced, kept)
        return RunOutput(self.section.run_output_name, artifact_id=image_id)


def drop_replaced(replaced: dict[str, Any] | None, kept: dict[str, str]) -> None:
    """The image a replaced record named, untagged (its layers go with their last user: a
    build running from it keeps them), so that building the same image ID again and again
    does not pile up images. A VM build's disk file stays: a kept VM may be backed by it."""
    old = ((replaced or {}).get("aibLocal") or {}).get("reference")
    if old and old != kept.get("reference"):
        from engine import images
        from engine.targets.base import TargetError

        with contextlib.suppress(TargetError):  # in use by a container, or the engine busy: it stays
            images.remove_images([str(old)])
