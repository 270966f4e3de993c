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
) -> None:
    """Create an image definition (publisher/offer/sku unique in the gallery)."""
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
        )
    )


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
