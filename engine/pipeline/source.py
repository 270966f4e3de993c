"""The resolve-source phase: which image the build starts from, as one `Source`.

A PlatformImage goes through the catalogue, a ManagedImage or gallery version through
the local store; a target that is its own source (a
host the user runs) records the template's source only. Distributions are checked here
too, before any target starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import distributors
from distributors.base import DistributeError, Distributor
from engine import images, store_rules
from engine.catalogue import Catalogue
from engine.errors import BuildFailed, EnvironmentProblem, TemplateError, UsageError
from engine.gallery import VERSION_TYPE, Galleries
from engine.pipeline.context import BuildContext, Source
from engine.store import Store
from engine.targets.registry import for_spec
from engine.template import model as m


def resolve_source(ctx: BuildContext) -> None:
    ctx.distributors = check_distributors(ctx)
    if ctx.options.validate_disk is not None:  # `boot --validate`: the template's source is not used
        disk = str(ctx.options.validate_disk)
        ctx.events.info(f"validating {disk} with the template's validators; its source and customizers are not used")
        generation = ctx.options.generation or "V1"
        ctx.source = Source({"type": "Disk", "disk": disk, "hyperVGeneration": generation}, disk, disk)
        return
    starts_from_image = for_spec(ctx.options.target).starts_from_image
    refused = [
        f for f in store_rules.check(ctx.loaded, ctx.store, source_image=starts_from_image) if f.severity == "error"
    ]
    if refused:
        raise TemplateError(str(ctx.loaded.path), refused)
    ctx.source = resolve(ctx)
    ctx.os_type = ctx.source.os_type or ctx.os_type
    if ctx.source.record.get("type") in ("PlatformImage", "ManagedImage", "SharedImageVersion"):
        ctx.source.record.setdefault("hyperVGeneration", store_rules.source_generation(ctx.props.source, ctx.store))


def resolve(ctx: BuildContext) -> Source:
    """The build's source: its record, and the local image where the target starts from one."""
    declared = ctx.props.source
    own = for_spec(ctx.options.target).own_source(ctx.options.target)
    if own is not None:
        ctx.events.info(
            f"the build runs on the {own.description}: it is the source image, "
            f"properties.source ({declared.type}) is recorded only"
        )
        return Source({**own.record, "declared": declared.type})
    if for_spec(ctx.options.target).source_kind == "disk":
        return source_disk(ctx, declared)
    if isinstance(declared, m.PlatformImageSource):
        source = platform_image(declared, ctx.options.catalogue)
    else:
        source = stored_image(ctx, declared)
    source.image_id = images.ensure_image(ctx.docker(), source.image_ref, recipe_hint(source.image_ref))
    source.record["exactVersion"] = source.image_id
    if isinstance(declared, m.PlatformImageSource):
        old = images.older_recipe(ctx.docker(), source.image_id)
        if old is not None:
            ctx.events.warning(
                f"{source.image_ref} was made by an older recipe ({old}; now {images.FIXTURE_RECIPE}) and lacks "
                f"{images.recipe_changes(old)}; remake it: {recipe_hint(source.image_ref)}"
            )
    ctx.events.info(
        f"source {source.record.get('urn') or source.record.get('id')}"
        f" -> image {source.image_ref} ({source.image_id[:19]})"
    )
    return source


def source_disk(ctx: BuildContext, declared: m.Source) -> Source:
    """The disk file a VM build boots (an overlay of it): from the catalogue for a
    PlatformImage, from the store for an image an earlier VM build made."""
    if isinstance(declared, m.PlatformImageSource):
        disk = Catalogue.load(ctx.options.catalogue).resolve_disk(declared)
        if disk is None:
            raise EnvironmentProblem(
                f"no disk in the catalogue for {declared.urn}: VM builds boot a disk file",
                hint=f'map it with --catalogue FILE: {{"{declared.urn}": {{"disk": "/path/to/disk.qcow2"}}}}',
            )
        record: dict[str, Any] = {"type": "PlatformImage", "urn": declared.urn, "disk": str(disk)}
        hint = f"make it: {disk_recipe()}" if disk.name == "debian-12.qcow2" else "build or download that disk first"
    else:
        stored, resource_id = stored_record(ctx, declared)
        local = stored.get("aibLocal") or {}
        if not local.get("disk"):
            raise UsageError(
                f"properties.source: {resource_id} was made by a container build: a VM build needs a disk",
                hint="build the image it comes from with --target vm",
            )
        disk = Path(str(local["disk"]))
        record = {"type": declared.type, "id": resource_id, "disk": str(disk)}
        hint = "its store record names a disk that is gone: build that image again"
    if not disk.is_file():
        raise EnvironmentProblem(f"the source disk {disk} does not exist", hint=hint)
    ctx.events.info(f"source {record.get('urn') or record.get('id')} -> disk {disk}")
    return Source(record, str(disk), str(disk))


def disk_recipe() -> str:
    return str(Path(__file__).resolve().parents[2] / "fixtures" / "images" / "build-disk.sh")


def platform_image(declared: m.PlatformImageSource, catalogue: Path | None) -> Source:
    ref = Catalogue.load(catalogue).resolve(declared)
    if ref is None:
        raise EnvironmentProblem(
            f"no catalogue entry for {declared.urn}",
            hint=f'map it to a local image with --catalogue FILE: {{"{declared.urn}": "IMAGE"}}',
        )
    record: dict[str, Any] = {"type": "PlatformImage", "urn": declared.urn, "image": ref}
    if re.match(r"^\d+\.\d+\.\d+$", declared.version):
        record["version"] = declared.version
    return Source(record, ref)


def stored_image(ctx: BuildContext, declared: m.Source) -> Source:
    """A ManagedImage or SharedImageVersion source: the image an earlier local build made."""
    record, resource_id = stored_record(ctx, declared)
    local = record.get("aibLocal") or {}
    ref = str(local.get("dockerImage", ""))
    if not ref and local.get("disk"):
        raise UsageError(
            f"properties.source: {resource_id} is a disk made by a VM build: build from it with --target vm",
        )
    os_disk = (record.get("properties") or {}).get("storageProfile", {}).get("osDisk", {})
    source = Source({"type": declared.type, "id": resource_id, "image": ref}, ref)
    source.os_type = os_disk.get("osType") or local.get("osType")
    if record.get("type") == VERSION_TYPE:
        source.record["version"] = record["name"]
    return source


def stored_record(ctx: BuildContext, declared: m.Source) -> tuple[dict[str, Any], str]:
    """The store record of a ManagedImage or SharedImageVersion source, and its ID."""
    if isinstance(declared, m.ManagedImageSource):
        resource_id = declared.image_id
        record = ctx.store.get(resource_id)
    else:
        resource_id = getattr(declared, "image_version_id", "")
        record = Galleries(ctx.store).resolve(resource_id)
        if record is not None and str(record["id"]) != resource_id:
            ctx.events.info(f"{resource_id} resolves to {record['id']}")
            resource_id = str(record["id"])
    if record is None:
        raise UsageError(
            f"properties.source: {resource_id} is not in the local store {ctx.store.root}",
            hint="build the template that distributes it first, or pass the right --store",
        )
    return record, resource_id


def check_distributors(ctx: BuildContext) -> list[Distributor[Any]]:
    """A distributor for each entry of properties.distribute, each checked against the store."""
    return [_distributor(index, section, ctx.store) for index, section in enumerate(ctx.props.distribute)]


def _distributor(index: int, section: Any, store: Store) -> Distributor[Any]:
    try:
        distributor = distributors.lookup(section.type)(section)
    except KeyError as exc:
        raise BuildFailed(str(exc.args[0]), step=f"distribute[{index}] {section.run_output_name}") from None
    try:
        distributor.check(store)
    except DistributeError as exc:
        raise UsageError(f"properties.distribute[{index}]: {exc}", hint=exc.hint) from None
    return distributor


def recipe_hint(image: str) -> str:
    """The command that makes a missing image locally."""
    recipe = Path(__file__).resolve().parents[2] / "fixtures" / "images" / "build-image.sh"
    if image in ("debian:12", "debian:bookworm", "aib-local/sshd:12"):
        return f"make it locally: {recipe if recipe.exists() else 'fixtures/images/build-image.sh'} {image}"
    return (
        f"make it locally (debootstrap/rootfs tarball | docker import - {image}), "
        "or map the source URN to an image you have with --catalogue FILE"
    )
