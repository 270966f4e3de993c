"""SharedImage: a new image version in a local shared image gallery.

As in Azure, the gallery and the image definition must exist (the error names the
command that creates them), the gallery's region must be among the target regions,
the version number is assigned monotonically (or taken from `galleryImageId`
.../versions/X.Y.Z, or from `versioning`), and the image is recorded with its
replication state per region.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from distributors.base import DistributeContext, DistributeError, Distributor, RunOutput, keep_image, settle_image
from engine import failpoints
from engine.gallery import Galleries, GalleryError, parse_version
from engine.store import Store
from engine.template.sections import Check, DistributeSection, Section, check_region, since

GALLERY_IMAGE_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/galleries/[^/]+"
    r"/images/[^/]+(/versions/[^/]+)?$",
    re.I,
)
TARGET_REGIONS_SINCE = "2022-07-01"
StorageAccountType = Literal["Standard_LRS", "Standard_ZRS", "Premium_LRS"]


def _gallery_image_id(value: str) -> str:
    if not GALLERY_IMAGE_ID.match(value):
        raise ValueError(
            "expected /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Compute"
            "/galleries/G/images/DEF[/versions/X.Y.Z]"
        )
    return value


class TargetRegion(Section):
    name: str
    replica_count: int = Field(1, ge=1)
    storage_account_type: StorageAccountType | None = None

    def check(self, here: str, check: Check) -> None:
        check_region(self.name, f"{here}.name", check)


class Versioning(Section):
    scheme: Literal["Latest", "Source"]
    major: int = Field(-1, ge=-1)


class SharedImageDistribute(DistributeSection):
    type: Literal["SharedImage"]
    gallery_image_id: Annotated[str, AfterValidator(_gallery_image_id)]
    replication_regions: list[str] | None = None
    target_regions: list[TargetRegion] | None = Field(None, json_schema_extra=since(TARGET_REGIONS_SINCE))
    exclude_from_latest: bool = Field(False, json_schema_extra=since("2020-02-14"))
    storage_account_type: StorageAccountType | None = Field(None, json_schema_extra=since("2020-02-14"))
    versioning: Versioning | None = Field(None, json_schema_extra=since(TARGET_REGIONS_SINCE))
    replication_mode: Literal["Full", "Shallow"] | None = Field(None, json_schema_extra=since("2025-10-01"))

    def check(self, here: str, check: Check) -> None:
        if self.replication_regions is not None and self.target_regions is not None:
            check.error(
                f"{here}.targetRegions",
                "replicationRegions and targetRegions are mutually exclusive",
                rule="aib/replication-and-target-regions",
            )
        if self.target_regions is not None and self.storage_account_type is not None:
            check.error(
                f"{here}.storageAccountType",
                "can only be given with replicationRegions; set it per target region",
                rule="aib/storage-account-type",
            )
        for index, region in enumerate(self.replication_regions or []):
            check_region(region, f"{here}.replicationRegions[{index}]", check)
        if self.replication_regions is None and check.version < TARGET_REGIONS_SINCE:
            check.error(
                f"{here}.replicationRegions",
                f"required in apiVersion {check.version} (targetRegions arrived in {TARGET_REGIONS_SINCE})",
                rule="aib/replication-regions-required",
            )
        if self.replication_regions is not None and check.version >= TARGET_REGIONS_SINCE:
            check.warning(
                f"{here}.replicationRegions",
                "deprecated since 2022-07-01; use targetRegions",
                aib_rejects=False,
                rule="aib/replication-regions-deprecated",
            )


def _region(name: str) -> str:
    return name.replace(" ", "").lower()


class SharedImage(Distributor[SharedImageDistribute]):
    type_name = "SharedImage"
    schema = SharedImageDistribute

    @property
    def definition_id(self) -> str:
        return self.section.gallery_image_id.split("/versions/")[0]

    @property
    def explicit_version(self) -> str | None:
        _, _, version = self.section.gallery_image_id.partition("/versions/")
        return version or None

    def target_regions(self, gallery_location: str) -> list[dict[str, Any]]:
        section = self.section
        if section.target_regions:
            regions: list[dict[str, Any]] = [
                {
                    "name": _region(r.name),
                    "regionalReplicaCount": r.replica_count,
                    "storageAccountType": r.storage_account_type or "Standard_LRS",
                }
                for r in section.target_regions
            ]
        elif section.replication_regions:
            storage = section.storage_account_type or "Standard_LRS"
            regions = [
                {"name": _region(r), "regionalReplicaCount": 1, "storageAccountType": storage}
                for r in section.replication_regions
            ]
        else:
            regions = [{"name": gallery_location, "regionalReplicaCount": 1, "storageAccountType": "Standard_LRS"}]
        names = [str(r["name"]) for r in regions]
        if gallery_location not in names:
            raise DistributeError(
                f"the gallery is in {gallery_location}, which must be among the target regions ({', '.join(names)})"
            )
        return regions

    def check(self, store: Store) -> None:
        galleries = Galleries(store)
        try:
            definition = galleries.require_definition(self.definition_id)
            gallery = galleries.require_gallery(self.definition_id.split("/images/")[0])
            if self.explicit_version:
                parse_version(self.explicit_version)
                if store.get(self.section.gallery_image_id) is not None:
                    raise GalleryError(f"image version {self.section.gallery_image_id} already exists")
        except GalleryError as exc:
            raise DistributeError(exc.message, hint=exc.hint) from None
        if definition["properties"]["osState"] not in ("Generalized", "Specialized"):
            raise DistributeError(f"image definition {self.definition_id} has no valid osState")
        self.target_regions(gallery["location"])

    def _version_number(self, ctx: DistributeContext) -> tuple[str | None, int | None]:
        versioning = self.section.versioning
        if self.explicit_version:
            return self.explicit_version, None
        if versioning is None:
            return None, None
        if versioning.scheme == "Latest":
            return None, versioning.major
        source_version = str(ctx.source.get("version") or "")
        if not re.match(r"^\d+\.\d+\.\d+$", source_version):
            raise DistributeError(
                "versioning scheme 'Source' needs a source with a MAJOR.MINOR.PATCH version "
                f"(this source has {source_version or 'none'})"
            )
        return source_version, None

    def distribute(self, ctx: DistributeContext) -> RunOutput:
        galleries = Galleries(ctx.store)
        try:
            definition = galleries.require_definition(self.definition_id)
            gallery = galleries.require_gallery(self.definition_id.split("/images/")[0])
        except GalleryError as exc:
            raise DistributeError(exc.message, hint=exc.hint) from None
        properties = definition["properties"]
        if properties["osType"].lower() != ctx.os_type.lower():
            raise DistributeError(f"the image definition is for {properties['osType']}, this build is {ctx.os_type}")
        if properties["osState"] == "Generalized" and not ctx.generalized:
            raise DistributeError(
                "the image definition says Generalized but this image was not deprovisioned (--deprovision skip)"
            )
        regions = self.target_regions(gallery["location"])
        version, major = self._version_number(ctx)
        name = definition["name"].lower()
        repository = f"aib-local/sig/{gallery['name'].lower()}/{re.sub(r'[^a-z0-9._-]+', '-', name)}"
        tag = f"build-{ctx.build_id}"
        kept = keep_image(ctx, repository, tag)
        failpoints.hit("image:committed")
        try:
            version_id = galleries.add_version(
                self.definition_id,
                version=version,
                major=major,
                location=gallery["location"],
                target_regions=regions,
                exclude_from_latest=self.section.exclude_from_latest,
                source={"id": ctx.template_id},
                local={
                    **kept,
                    "buildId": ctx.build_id,
                    "imageTemplate": ctx.template_id,
                    "source": ctx.source,
                    "osType": ctx.os_type,
                },
                tags=dict(self.section.artifact_tags),
                disk_size_gb=ctx.os_disk_size_gb,
            )
        except GalleryError as exc:
            raise DistributeError(exc.message, hint=exc.hint) from None
        settle_image(ctx, kept)
        return RunOutput(self.section.run_output_name, artifact_id=version_id)
