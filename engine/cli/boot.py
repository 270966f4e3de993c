"""The `boot` command: does what a build made boot?"""

from __future__ import annotations

import json
from pathlib import Path

import click

from engine.cli.options import store_option


@click.command()
@click.argument("artifact")
@click.option("--expect", metavar="TEXT", help="Also wait for TEXT on the serial console (a unit that reports).")
@click.option("--vm-size", default="", help="vmSize of the throw-away VM [default: Standard_D2s_v3, capped].")
@click.option(
    "--timeout", "timeout", type=click.FloatRange(min=10), default=600, show_default=True, help="Seconds for the boot."
)
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@store_option
def boot(artifact: str, expect: str | None, vm_size: str, timeout: float, output: str, store: Path | None) -> None:
    """Boot ARTIFACT in a throw-away VM and report whether it came up.

    ARTIFACT: a VHD (path or file:// URI, as the VHD run output gives it), or the ID of
    a managed image or gallery version made by a `--target vm` build. The artifact is
    never written (the VM boots an overlay of it). Booted means: SSH answered as the
    build user once the image's cloud-init had provisioned it (and --expect's text was
    on the serial console). Exit 0 when it booted, 1 when it did not.
    """
    from engine.boot import boot as boot_artifact
    from engine.store import Store

    def say(message: str) -> None:
        if output == "text":
            click.echo(message, err=True)

    result = boot_artifact(Store.open(store), artifact, expect=expect, vm_size=vm_size, within=timeout, report=say)
    if output == "json":
        click.echo(json.dumps(result.as_json(), indent=2))
    elif result.booted:
        click.echo(
            f"{artifact} booted: SSH after {result.seconds_to_ssh}s"
            + (f", {expect!r} on the console after {result.seconds_to_expected}s" if expect else "")
        )
    else:
        click.echo(f"{artifact} did not boot: {result.error}", err=True)
    if not result.booted:
        raise click.exceptions.Exit(1)
