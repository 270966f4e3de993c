"""Command-line options shared by several commands."""

from __future__ import annotations

from pathlib import Path

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
