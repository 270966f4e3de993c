"""The `boot` command: does what a build made boot?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from engine.cli.options import map_uri_option, store_option
from engine.errors import UsageError


@click.command()
@click.argument("artifact")
@click.option("--expect", metavar="TEXT", help="Also wait for TEXT on the serial console (a unit that reports).")
@click.option(
    "--validate",
    "template",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Then run this template's in-VM validators in the booted image (a build that only validates).",
)
@click.option("--vm-size", default="", help="vmSize of the throw-away VM [default: Standard_D2s_v3, capped].")
@click.option(
    "--generation",
    type=click.Choice(["V1", "V2"]),
    help="Boot by BIOS (V1) or UEFI (V2) [default: an image's hyperVGeneration; V1 for a VHD].",
)
@click.option(
    "--timeout", "timeout", type=click.FloatRange(min=10), default=600, show_default=True, help="Seconds for the boot."
)
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@map_uri_option
@store_option
def boot(
    artifact: str,
    expect: str | None,
    template: Path | None,
    vm_size: str,
    generation: str | None,
    timeout: float,
    output: str,
    map_uri: tuple[str, ...],
    store: Path | None,
) -> None:
    """Boot ARTIFACT in a throw-away VM and report whether it came up.

    ARTIFACT: a VHD (path or file:// URI, as the VHD run output gives it), or the ID of
    a managed image or gallery version made by a `--target vm` build. The artifact is
    never written (the VM boots an overlay of it). Booted means: SSH answered as the
    build user once the image's cloud-init had provisioned it (and --expect's text was
    on the serial console). Exit 0 when it booted, 1 when it did not.

    With --validate TEMPLATE, TEMPLATE's inVMValidations run in the booted image, as
    validate.sourceValidationOnly runs them on a template's source: its source and
    customizers are not used and nothing is distributed. The output is a build's (its
    steps, its log is kept; the template's lastRunStatus is not changed), and the
    template's buildTimeoutInMinutes bounds it instead of --timeout. Exit 1 when a
    validator fails.
    """
    from engine.boot import boot as boot_artifact
    from engine.store import Store

    if template is not None:
        if expect is not None:
            raise UsageError("--validate reports as a build does: give it without --expect")
        validate_in(Store.open(store), artifact, template, vm_size, generation, output, map_uri)
        return

    def say(message: str) -> None:
        if output == "text":
            click.echo(message, err=True)

    result = boot_artifact(
        Store.open(store), artifact, expect=expect, vm_size=vm_size, generation=generation, within=timeout, report=say
    )
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


def validate_in(
    the_store: Any,
    artifact: str,
    template: Path,
    vm_size: str,
    generation: str | None,
    output: str,
    map_uri: tuple[str, ...] = (),
) -> None:
    """`boot --validate`: a build of TEMPLATE that only runs its validators, in ARTIFACT booted."""
    from engine.boot import disk_of, generation_of
    from engine.cli.build import make_reporter, report_outcome
    from engine.pipeline import BuildOptions, BuildRun, run_all
    from engine.template.loading import LoadOptions, load_templates

    disk = disk_of(the_store, artifact)
    loaded = load_templates(template, options=LoadOptions(map_uri=map_uri))
    if len(loaded) != 1:
        raise UsageError(f"{template} holds {len(loaded)} image templates: --validate takes one")
    section = loaded[0].template.properties.validate_
    if section is None or not section.in_vm_validations:
        raise UsageError(f"{template} has no validators (properties.validate.inVMValidations)")
    if vm_size:
        loaded[0].template.properties.vm_profile.vm_size = vm_size
    options = BuildOptions(
        target="vm", vm_boot="cold", validate_disk=disk, generation=generation or generation_of(the_store, artifact)
    )
    results = run_all([BuildRun(loaded[0], options, the_store, make_reporter(output))])
    report_outcome(results, output)
