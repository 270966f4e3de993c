"""`aib-local sig ...`: local shared image galleries, with the flags of `az sig`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from engine.errors import UsageError
from engine.gallery import Galleries, definition_id, gallery_id
from engine.store import DEFAULT_SUBSCRIPTION, Store

F = TypeVar("F", bound=Callable[..., Any])


def common(func: F) -> F:
    """--subscription, --resource-group, --gallery-name, --store: on every sig command."""
    for option in reversed(
        [
            click.option("--subscription", default=DEFAULT_SUBSCRIPTION, show_default=True, help="Subscription ID."),
            click.option("--resource-group", "-g", required=True, help="Resource group."),
            click.option("--gallery-name", "-r", required=True, help="Gallery name."),
            click.option("--store", type=click.Path(path_type=Path), help="Local resource store."),
        ]
    ):
        func = option(func)
    return func


def definition_option(func: F) -> F:
    return click.option("--gallery-image-definition", "-i", required=True, help="Image definition name.")(func)


def emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


DISK_TYPES = ["Standard_LRS", "Premium_LRS", "StandardSSD_LRS", "UltraSSD_LRS", "Premium_ZRS", "StandardSSD_ZRS"]


def definition_details(func: F) -> F:
    """The descriptive and recommended properties of a definition, with az sig's flag names."""
    for option in reversed(
        [
            click.option("--eula", help="End-user license agreement text or link."),
            click.option("--privacy-statement-uri", help="Privacy statement URI."),
            click.option("--release-note-uri", help="Release notes URI."),
            click.option("--minimum-cpu-core", type=click.IntRange(1), help="Recommended minimum vCPUs."),
            click.option("--maximum-cpu-core", type=click.IntRange(1), help="Recommended maximum vCPUs."),
            click.option("--minimum-memory", type=click.IntRange(1), help="Recommended minimum memory (GB)."),
            click.option("--maximum-memory", type=click.IntRange(1), help="Recommended maximum memory (GB)."),
            click.option(
                "--disallowed-disk-types",
                multiple=True,
                type=click.Choice(DISK_TYPES, case_sensitive=False),
                help="Disk types VMs of this image must not use (repeatable).",
            ),
        ]
    ):
        func = option(func)
    return func


def details_of(
    eula: str | None = None,
    privacy_statement_uri: str | None = None,
    release_note_uri: str | None = None,
    minimum_cpu_core: int | None = None,
    maximum_cpu_core: int | None = None,
    minimum_memory: int | None = None,
    maximum_memory: int | None = None,
    disallowed_disk_types: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The definition properties these flags give, as Azure names them."""
    details: dict[str, Any] = {}
    for key, value in (
        ("eula", eula),
        ("privacyStatementUri", privacy_statement_uri),
        ("releaseNoteUri", release_note_uri),
    ):
        if value is not None:
            details[key] = value
    recommended: dict[str, Any] = {}
    for key, low, high in (("vCPUs", minimum_cpu_core, maximum_cpu_core), ("memory", minimum_memory, maximum_memory)):
        if low is not None and high is not None and low > high:
            raise UsageError(f"recommended {key}: the minimum {low} is above the maximum {high}")
        bounds = {k: v for k, v in (("min", low), ("max", high)) if v is not None}
        if bounds:
            recommended[key] = bounds
    if recommended:
        details["recommended"] = recommended
    if disallowed_disk_types:
        details["disallowed"] = {"diskTypes": list(disallowed_disk_types)}
    return details


def parse_features(text: str) -> list[dict[str, str]]:
    """'SecurityType=TrustedLaunch IsAcceleratedNetworkSupported=true' as Azure's features list."""
    features = []
    for item in text.split():
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"--features {item!r}: expected NAME=VALUE")
        features.append({"name": name, "value": value})
    return features


@click.group()
def sig() -> None:
    """Local shared image galleries (like az sig)."""


@sig.command("create")
@common
@click.option("--location", "-l", required=True, help="Region of the gallery, e.g. westeurope.")
@click.option("--description", default="", help="Gallery description.")
def sig_create(
    subscription: str, resource_group: str, gallery_name: str, store: Path | None, location: str, description: str
) -> None:
    """Create a gallery (idempotent)."""
    emit(Galleries(Store.open(store)).create_gallery(subscription, resource_group, gallery_name, location, description))


@sig.command("show")
@common
def sig_show(subscription: str, resource_group: str, gallery_name: str, store: Path | None) -> None:
    """Show a gallery."""
    emit(Galleries(Store.open(store)).require_gallery(gallery_id(subscription, resource_group, gallery_name)))


@sig.command("delete")
@common
def sig_delete(subscription: str, resource_group: str, gallery_name: str, store: Path | None) -> None:
    """Delete a gallery (Azure refuses while it has image definitions)."""
    Galleries(Store.open(store)).delete_gallery(gallery_id(subscription, resource_group, gallery_name))


@sig.command("list")
@click.option("--store", type=click.Path(path_type=Path), help="Local resource store.")
def sig_list(store: Path | None) -> None:
    """List galleries."""
    emit(Galleries(Store.open(store)).galleries())


@sig.group("image-definition")
def image_definition() -> None:
    """Image definitions in a gallery."""


@image_definition.command("create")
@common
@definition_option
@click.option("--publisher", "-p", required=True)
@click.option("--offer", "-f", required=True)
@click.option("--sku", "-s", required=True)
@click.option("--os-type", type=click.Choice(["Linux", "Windows"], case_sensitive=False), required=True)
@click.option(
    "--os-state",
    type=click.Choice(["Generalized", "Specialized"], case_sensitive=False),
    default="Generalized",
    show_default=True,
)
@click.option("--hyper-v-generation", type=click.Choice(["V1", "V2"]), default="V1", show_default=True)
@click.option("--location", "-l", help="Region [default: the gallery's].")
@click.option("--end-of-life-date", help="ISO 8601 date after which the definition should not be used.")
@click.option("--description", default="")
@definition_details
@click.option("--features", help="Space-separated NAME=VALUE, e.g. 'SecurityType=TrustedLaunch'.")
def definition_create(
    subscription: str,
    resource_group: str,
    gallery_name: str,
    store: Path | None,
    gallery_image_definition: str,
    publisher: str,
    offer: str,
    sku: str,
    os_type: str,
    os_state: str,
    hyper_v_generation: str,
    location: str | None,
    end_of_life_date: str | None,
    description: str,
    features: str | None,
    **details: Any,
) -> None:
    """Create an image definition (publisher/offer/sku unique in the gallery)."""
    extra = details_of(**details)
    if features:
        extra["features"] = parse_features(features)
    emit(
        Galleries(Store.open(store)).create_definition(
            subscription,
            resource_group,
            gallery_name,
            gallery_image_definition,
            publisher=publisher,
            offer=offer,
            sku=sku,
            os_type=os_type.capitalize(),
            os_state=os_state.capitalize(),
            hyper_v_generation=hyper_v_generation,
            location=location,
            end_of_life_date=end_of_life_date,
            description=description,
            extra=extra,
        )
    )


@image_definition.command("update")
@common
@definition_option
@click.option("--end-of-life-date", help="ISO 8601 date after which the definition should not be used.")
@click.option("--description")
@definition_details
def definition_update(
    subscription: str,
    resource_group: str,
    gallery_name: str,
    store: Path | None,
    gallery_image_definition: str,
    end_of_life_date: str | None,
    description: str | None,
    **details: Any,
) -> None:
    """Change what Azure lets a definition change (its identity, OS and generation stay)."""
    changes = details_of(**details)
    if end_of_life_date is not None:
        changes["endOfLifeDate"] = end_of_life_date
    if description is not None:
        changes["description"] = description
    if not changes:
        raise UsageError("nothing to update: give one of the options (see --help)")
    resource_id = definition_id(subscription, resource_group, gallery_name, gallery_image_definition)
    emit(Galleries(Store.open(store)).update_definition(resource_id, changes))


@image_definition.command("delete")
@common
@definition_option
def definition_delete(
    subscription: str, resource_group: str, gallery_name: str, store: Path | None, gallery_image_definition: str
) -> None:
    """Delete an image definition (Azure refuses while it has versions)."""
    resource_id = definition_id(subscription, resource_group, gallery_name, gallery_image_definition)
    Galleries(Store.open(store)).delete_definition(resource_id)


@image_definition.command("show")
@common
@definition_option
def definition_show(
    subscription: str, resource_group: str, gallery_name: str, store: Path | None, gallery_image_definition: str
) -> None:
    """Show an image definition."""
    resource_id = definition_id(subscription, resource_group, gallery_name, gallery_image_definition)
    emit(Galleries(Store.open(store)).require_definition(resource_id))


@image_definition.command("list")
@common
def definition_list(subscription: str, resource_group: str, gallery_name: str, store: Path | None) -> None:
    """List a gallery's image definitions."""
    galleries = Galleries(Store.open(store))
    resource_id = gallery_id(subscription, resource_group, gallery_name)
    galleries.require_gallery(resource_id)
    emit(galleries.definitions(resource_id))


@sig.group("image-version")
def image_version() -> None:
    """Image versions of a definition (created by builds)."""


@image_version.command("list")
@common
@definition_option
def version_list(
    subscription: str, resource_group: str, gallery_name: str, store: Path | None, gallery_image_definition: str
) -> None:
    """List the versions of an image definition, oldest first."""
    galleries = Galleries(Store.open(store))
    resource_id = definition_id(subscription, resource_group, gallery_name, gallery_image_definition)
    galleries.require_definition(resource_id)
    emit(galleries.versions(resource_id))


@image_version.command("show")
@common
@definition_option
@click.option("--gallery-image-version", "-e", required=True, help="Version, or 'latest'.")
def version_show(
    subscription: str,
    resource_group: str,
    gallery_name: str,
    store: Path | None,
    gallery_image_definition: str,
    gallery_image_version: str,
) -> None:
    """Show an image version ('latest' resolves as Azure does)."""
    galleries = Galleries(Store.open(store))
    base = definition_id(subscription, resource_group, gallery_name, gallery_image_definition)
    galleries.require_definition(base)
    record = galleries.resolve(f"{base}/versions/{gallery_image_version}")
    if record is None:
        raise UsageError(f"no image version {gallery_image_version!r} in {base}")
    emit(record)


def _count(parts: list[str], default: int | None) -> int:
    """REGION=COUNT's count (at least 1), else the --replica-count, else 1."""
    if len(parts) == 1:
        return default or 1
    if not parts[1].isdigit() or int(parts[1]) < 1:
        raise UsageError(f"--target-regions {'='.join(parts)!r}: expected REGION or REGION=COUNT, COUNT at least 1")
    return int(parts[1])


def version_id(subscription: str, group: str, gallery: str, definition: str, version: str) -> str:
    return f"{definition_id(subscription, group, gallery, definition)}/versions/{version}"


@image_version.command("update")
@common
@definition_option
@click.option("--gallery-image-version", "-e", required=True, help="Version.")
@click.option(
    "--target-regions",
    multiple=True,
    metavar="REGION[=COUNT]",
    help="Regions to replicate to (the gallery's among them), each with its replica count.",
)
@click.option("--replica-count", type=click.IntRange(1), help="Replicas in regions without their own count.")
@click.option("--exclude-from-latest", type=click.BOOL, help="true: 'latest' skips this version.")
@click.option("--end-of-life-date", help="ISO 8601 date after which the version should not be used.")
def version_update(
    subscription: str,
    resource_group: str,
    gallery_name: str,
    store: Path | None,
    gallery_image_definition: str,
    gallery_image_version: str,
    target_regions: tuple[str, ...],
    replica_count: int | None,
    exclude_from_latest: bool | None,
    end_of_life_date: str | None,
) -> None:
    """Change a version's target regions, replica count, excludeFromLatest or end-of-life date."""
    resource_id = version_id(
        subscription, resource_group, gallery_name, gallery_image_definition, gallery_image_version
    )
    galleries = Galleries(Store.open(store))
    regions = None
    if target_regions or replica_count is not None:
        current = galleries.resolve(resource_id)
        if current is None:
            raise UsageError(f"no image version {resource_id} in the local store")
        named = [r.split("=", 1) for item in target_regions for r in item.split()]
        if not named:  # only the count changes
            named = [[r["name"]] for r in current["properties"]["publishingProfile"]["targetRegions"]]
        regions = [{"name": parts[0], "regionalReplicaCount": _count(parts, replica_count)} for parts in named]
    if regions is None and exclude_from_latest is None and end_of_life_date is None:
        raise UsageError("nothing to update: give one of the options (see --help)")
    emit(
        galleries.update_version(
            resource_id,
            target_regions=regions,
            exclude_from_latest=exclude_from_latest,
            end_of_life_date=end_of_life_date,
        )
    )


@image_version.command("delete")
@common
@definition_option
@click.option("--gallery-image-version", "-e", required=True, help="Version.")
def version_delete(
    subscription: str,
    resource_group: str,
    gallery_name: str,
    store: Path | None,
    gallery_image_definition: str,
    gallery_image_version: str,
) -> None:
    """Delete an image version (its local Docker image stays: docker image rm removes it)."""
    resource_id = version_id(
        subscription, resource_group, gallery_name, gallery_image_definition, gallery_image_version
    )
    record = Galleries(Store.open(store)).delete_version(resource_id)
    local = record.get("aibLocal") or {}
    image = local.get("reference") or local.get("dockerImage")
    if image:
        click.echo(f"deleted {resource_id}; its image {image} stays (docker image rm {image})", err=True)
    elif local.get("disk"):
        click.echo(f"deleted {resource_id}; its disk {local['disk']} stays (rm it to free the space)", err=True)
