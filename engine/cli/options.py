"""Command-line options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

store_option = click.option(
    "--store",
    type=click.Path(path_type=Path),
    help="Local resource store [default: $AIB_LOCAL_STORE, else the user data dir].",
)
output_option = click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: machine-readable output on stdout (one JSON event per line for builds).",
)
any_destination_option = click.option(
    "--allow-any-destination",
    is_flag=True,
    help="Allow File destinations outside /tmp on Linux (AIB does not).",
)
secret_option = click.option(
    "--secret",
    "secrets",
    multiple=True,
    metavar="NAME[=VALUE]",
    help="Export NAME to the customizers (VALUE, or NAME's value in this environment); shown as *** everywhere.",
)


map_uri_option = click.option(
    "--map-uri",
    "map_uri",
    multiple=True,
    metavar="PREFIX=DIR",
    help="Read an https scriptUri/sourceUri that starts with PREFIX from DIR plus the rest of its path (the working "
    "copy), so the template keeps the URLs it is submitted with; repeatable, the longest prefix wins. Also from "
    'AIB_LOCAL_MAP_URI and an aib-local.json beside the template ({"mapUri": {PREFIX: DIR}}).',
)


def template_options(func: Any) -> Any:
    """--parameters, --set, --template-name, --location: how a template file is read."""
    options = [
        click.option(
            "--parameters",
            "-p",
            "parameters",
            multiple=True,
            metavar="FILE|NAME=VALUE",
            help="ARM deployment parameters: a parameters file, or NAME=VALUE (as az deployment takes them).",
        ),
        click.option(
            "--set",
            "sets",
            multiple=True,
            metavar="NAME=VALUE",
            help="Fill the placeholder <NAME> everywhere in the template.",
        ),
        click.option("--template-name", help="Of a deployment with several image templates, only this one."),
        click.option(
            "--location",
            default="eastus",
            show_default=True,
            help="The region resourceGroup().location stands for in ARM expressions.",
        ),
        click.option(
            "--allow-outside-template-dir",
            is_flag=True,
            help="Allow local scriptUri/sourceUri files outside the template's folder (refused by default).",
        ),
        map_uri_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def load_options(
    parameters: tuple[str, ...],
    sets: tuple[str, ...],
    template_name: str | None,
    location: str,
    allow_outside_template_dir: bool = False,
    map_uri: tuple[str, ...] = (),
    *,
    allow_any_destination: bool = False,
    strict: bool = False,
    resource_group: str | None = None,
) -> Any:
    """The LoadOptions these command-line values describe."""
    from engine.errors import UsageError
    from engine.template.arm import read_parameters
    from engine.template.loading import LoadOptions

    filled = {}
    for item in sets:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--set {item!r}: expected NAME=VALUE")
        filled[name] = value
    options = LoadOptions(
        allow_any_destination=allow_any_destination,
        allow_outside_template_dir=allow_outside_template_dir,
        map_uri=tuple(map_uri),
        parameters=read_parameters(parameters),
        sets=filled,
        template_name=template_name,
        strict=strict,
        location=location,
    )
    if resource_group:
        options.resource_group = resource_group
    return options


def junit_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--junit",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Also write a JUnit XML report here (one test case per step, or per template for validate).",
    )(function)
