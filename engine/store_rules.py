"""Rules a template meets against the local store, as Azure checks them against its
resources: a managed image source in the template's region, a gallery version source
replicated there and not Specialized, gallery distributions into definitions whose OS
state and Hyper-V generation fit. `validate` runs them when the store exists; every
build runs them before its target starts.
"""

from __future__ import annotations

from typing import Any

from engine.errors import Finding
from engine.gallery import Galleries
from engine.store import Store
from engine.template import model as m
from engine.template.loading import LoadedTemplate
from engine.template.sections import normalize_region


def check(loaded: LoadedTemplate, store: Store, *, source_image: bool = True) -> list[Finding]:
    """Each finding with its JSON path; sources the store lacks only warn (a build that
    distributes them may come first). `source_image` False: the build machine is its own
    source (an SSH host), so the template's source is not checked."""
    findings: list[Finding] = []
    region = normalize_region(loaded.template.location or "")
    source = loaded.properties.source
    generation = "V1"
    if source_image or isinstance(source, m.PlatformImageSource):
        generation = _generation(source, region, store, findings)
    for index, section in enumerate(loaded.properties.distribute):
        if isinstance(section, m.SharedImageDistribute):
            _definition(section, f"properties.distribute[{index}].galleryImageId", generation, store, findings)
    return findings


def source_generation(source: m.Source, store: Store) -> str:
    """The Hyper-V generation of a template's source: V2 for a platform image whose SKU
    says so (Azure's names: gen2, -g2), the store record's for an image an earlier
    build made (a gallery version: its definition's)."""
    return _generation(source, "", store, [])


def _generation(source: m.Source, region: str, store: Store, findings: list[Finding]) -> str:
    if isinstance(source, m.PlatformImageSource):
        sku = source.sku.lower()
        return "V2" if "gen2" in sku or sku.endswith("-g2") else "V1"
    if isinstance(source, m.ManagedImageSource):
        return _managed_image(source, region, store, findings)
    if isinstance(source, m.SharedImageVersionSource):
        return _gallery_version(source, region, store, findings)
    return "V1"


def _missing(path: str, resource_id: str, store: Store) -> Finding:
    return Finding(
        path,
        f"{resource_id} is not in the local store {store.root}: a build fails until one distributes it",
        "warning",
        False,
        rule="aib/source-not-in-store",
    )


def _managed_image(source: m.ManagedImageSource, region: str, store: Store, findings: list[Finding]) -> str:
    path = "properties.source.imageId"
    record = store.get(source.image_id)
    if record is None:
        findings.append(_missing(path, source.image_id, store))
        return "V1"
    where = normalize_region(str(record.get("location") or ""))
    if region and where and where != region:
        findings.append(
            Finding(
                path,
                f"AIB takes a managed image from the template's region ({region}); this one is in {where}",
                rule="aib/source-region",
            )
        )
    return str((record.get("properties") or {}).get("hyperVGeneration") or "V1")


def _gallery_version(source: m.SharedImageVersionSource, region: str, store: Store, findings: list[Finding]) -> str:
    path = "properties.source.imageVersionId"
    record = Galleries(store).resolve(source.image_version_id)
    if record is None:
        findings.append(_missing(path, source.image_version_id, store))
        return "V1"
    targets = (record.get("properties") or {}).get("publishingProfile", {}).get("targetRegions") or []
    regions = [normalize_region(str(t.get("name", ""))) for t in targets]
    if region and regions and region not in regions:
        findings.append(
            Finding(
                path,
                f"AIB needs the version replicated to the template's region ({region}); "
                f"{record['name']} is in {', '.join(regions)}",
                rule="aib/source-version-region",
            )
        )
    definition = store.get(str(record["id"]).split("/versions/")[0]) or {}
    properties: dict[str, Any] = definition.get("properties") or {}
    if properties.get("osState") == "Specialized":
        findings.append(
            Finding(
                path,
                "a Specialized gallery image is not a valid source: AIB takes Generalized ones",
                rule="aib/source-specialized",
            )
        )
    return str(properties.get("hyperVGeneration") or "V1")


def _definition(
    section: m.SharedImageDistribute, path: str, generation: str, store: Store, findings: list[Finding]
) -> None:
    definition_id = section.gallery_image_id.split("/versions/")[0]
    record = store.get(definition_id)
    if record is None:
        return  # the distribution's own check says how to create it, before the target starts
    properties: dict[str, Any] = record.get("properties") or {}
    if properties.get("osState") == "Specialized":
        findings.append(
            Finding(
                path,
                "the definition is Specialized, and AIB's images are Generalized (it deprovisions them)",
                rule="aib/definition-specialized",
            )
        )
    wanted = str(properties.get("hyperVGeneration") or "V1")
    if wanted != generation:
        findings.append(
            Finding(
                path,
                f"the definition is Hyper-V generation {wanted}, and the source is {generation}",
                rule="aib/definition-generation",
            )
        )
