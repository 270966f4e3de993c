"""The command line: parse options, call the engine, report once.

Exit codes: 0 success; 1 the build failed; 2 invalid template or command line;
3 the environment lacks something; 130 interrupted (after cleanup).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import click

from engine.errors import AibLocalError, TemplateError, UsageError
from engine.sig_cli import sig

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

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
    help="json: machine-readable output on stdout.",
)
any_destination_option = click.option(
    "--allow-any-destination",
    is_flag=True,
    help="Allow File destinations outside /tmp on Linux (AIB does not).",
)


def _echo_err(text: str) -> None:
    click.echo(text, err=True)


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="aib-local")
@click.option("--debug", "show_traceback", is_flag=True, help="Show Python tracebacks of internal errors.")
@click.pass_context
def cli(ctx: click.Context, show_traceback: bool) -> None:
    """Run Azure VM Image Builder templates locally, against Docker containers.

    \b
    aib-local validate template.json      will AIB accept it? (exit 0 valid, 2 invalid)
    aib-local build template.json         customize, generalize, distribute
    aib-local show RESOURCE_ID            a stored resource (image, template, run output)
    """
    ctx.obj = {"traceback": show_traceback}


@cli.command()
@click.argument("templates", nargs=-1, required=True, type=click.Path(path_type=Path))
@output_option
@any_destination_option
def validate(templates: tuple[Path, ...], output: str, allow_any_destination: bool) -> None:
    """Check templates as AIB would, before any target starts.

    Every error is listed with its JSON path; each finding says whether AIB would
    reject the template. Exit 0 when all are valid, 2 otherwise.
    """
    from engine.validation import load_templates

    invalid = 0
    results: list[dict[str, Any]] = []
    for path in templates:
        try:
            loaded = load_templates(path, allow_any_destination=allow_any_destination)
        except TemplateError as exc:
            invalid += 1
            findings = exc.findings
            results.append({"template": str(path), "valid": False, "findings": [f.__dict__ for f in findings]})
            if output == "text":
                _echo_err(str(exc))
                for f in findings:
                    if f.severity != "error":
                        _echo_err("  " + f.render())
            continue
        except UsageError as exc:
            invalid += 1
            results.append(
                {
                    "template": str(path),
                    "valid": False,
                    "findings": [{"path": "", "message": str(exc), "severity": "error"}],
                }
            )
            if output == "text":
                _echo_err(f"error: {exc}")
            continue
        for item in loaded:
            results.append(
                {
                    "template": str(path),
                    "name": item.name,
                    "apiVersion": item.api_version,
                    "valid": True,
                    "findings": [f.__dict__ for f in item.findings],
                }
            )
            if output == "text":
                click.echo(f"{path}: {item.name} is valid (apiVersion {item.api_version})")
                for f in item.findings:
                    click.echo("  " + f.render())
    if output == "json":
        click.echo(json.dumps({"valid": invalid == 0, "templates": results}, indent=2))
    if invalid:
        sys.exit(2)


@cli.command()
@click.argument("templates", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--target",
    default="docker",
    show_default=True,
    help="docker (DOCKER_HOST honoured), or ssh://USER@HOST[:PORT] for a host or VM you run.",
)
@click.option(
    "--ssh-key", type=click.Path(path_type=Path), help="Private key for the SSH target [default: agent, ~/.ssh keys]."
)
@click.option("--known-hosts", type=click.Path(path_type=Path), help="known_hosts file [default: ~/.ssh/known_hosts].")
@click.option("--ssh-insecure-accept-host-key", is_flag=True, help="Accept an unknown or changed SSH host key.")
@click.option("--ssh-password-env", metavar="VAR", help="Take the SSH password from this environment variable.")
@click.option("--ssh-start-command", help="Command that starts the VM before connecting (virsh, vagrant, ...).")
@click.option("--ssh-stop-command", help="Command that stops it after the build.")
@store_option
@click.option(
    "--catalogue",
    type=click.Path(path_type=Path),
    help="PlatformImage catalogue override [default: $AIB_LOCAL_CATALOGUE].",
)
@click.option(
    "--network",
    help="Container network: host, none, bridge or a name [default: bridge where it exists, else host].",
)
@click.option(
    "--on-error",
    type=click.Choice(["cleanup", "abort"]),
    help="abort keeps the target for inspection "
    "[default: the template's errorHandling.onCustomizerError, else cleanup].",
)
@click.option(
    "--deprovision",
    type=click.Choice(["generic", "skip"]),
    default="generic",
    show_default=True,
    help="For images without waagent: run a generic deprovision, or skip it (the image stays specialized).",
)
@any_destination_option
@click.option(
    "--powershell-strict",
    is_flag=True,
    help="PowerShell customizers stop on the first error ($ErrorActionPreference='Stop') "
    "instead of AIB's exit-$LastExitCode behaviour.",
)
@click.option(
    "--resource-group",
    default="aib-local",
    show_default=True,
    help="Resource group of the image template's local resource ID.",
)
@output_option
def build(
    templates: tuple[Path, ...],
    target: str,
    ssh_key: Path | None,
    known_hosts: Path | None,
    ssh_insecure_accept_host_key: bool,
    ssh_password_env: str | None,
    ssh_start_command: str | None,
    ssh_stop_command: str | None,
    store: Path | None,
    catalogue: Path | None,
    network: str | None,
    on_error: str | None,
    deprovision: str,
    allow_any_destination: bool,
    powershell_strict: bool,
    resource_group: str,
    output: str,
) -> None:
    """Build templates: customize, deprovision and distribute, as AIB would."""
    from engine.events import JsonReporter, TextReporter
    from engine.pipeline import Build, BuildOptions
    from engine.store import Store
    from engine.targets.ssh import SshOptions, parse_target
    from engine.validation import load_templates

    if target != "docker":
        parse_target(target)  # refuse a malformed target before anything else
    loaded = [item for path in templates for item in load_templates(path, allow_any_destination=allow_any_destination)]
    options = BuildOptions(
        target=target,
        ssh=SshOptions(
            key_file=ssh_key,
            known_hosts=known_hosts,
            insecure_accept_host_key=ssh_insecure_accept_host_key,
            password_env=ssh_password_env,
            start_command=ssh_start_command,
            stop_command=ssh_stop_command,
        ),
        store=store,
        catalogue=catalogue,
        network=network,
        on_error=on_error,
        deprovision=deprovision,
        allow_any_destination=allow_any_destination,
        powershell_strict=powershell_strict,
        resource_group=resource_group,
    )
    the_store = Store.open(store)
    reporter = JsonReporter() if output == "json" else TextReporter()
    worst = 0
    for item in loaded:
        result = Build(item, options, the_store, reporter).run()
        if result.error is not None:
            if isinstance(result.error, AibLocalError) and result.error.exit_code == 130:
                raise result.error
            _report(result.error, output)
            worst = max(worst, result.error.exit_code)
        elif output == "text":
            for out in result.run_outputs:
                click.echo(f"run output {out.name}: {out.artifact_id or out.artifact_uri}")
            click.echo(f"log: {result.log_path}")
    if worst:
        sys.exit(worst)


@cli.command()
@click.argument("resource_id")
@store_option
def show(resource_id: str, store: Path | None) -> None:
    """Print a stored resource as JSON (also .../imageTemplates/T/runOutputs/NAME)."""
    from engine.store import Store

    record = Store.open(store).get(resource_id)
    if record is None:
        raise UsageError(f"{resource_id}: not found in the local store", hint="aib-local list shows what is stored")
    click.echo(json.dumps(record, indent=2))


LIST_TYPES = {
    "images": "Microsoft.Compute/images",
    "templates": "Microsoft.VirtualMachineImages/imageTemplates",
    "galleries": "Microsoft.Compute/galleries",
    "versions": "Microsoft.Compute/galleries/images/versions",
}


@cli.command(name="list")
@click.option("--type", "kind", type=click.Choice([*LIST_TYPES, "builds"]), help="Only this kind.")
@store_option
def list_(kind: str | None, store: Path | None) -> None:
    """List stored resources (or builds)."""
    from engine.store import Store

    the_store = Store.open(store)
    if kind == "builds":
        for build_record in the_store.builds():
            kept = " (kept)" if build_record.get("kept") else ""
            click.echo(f"{build_record['buildId']}  {build_record['status']}{kept}  {build_record['template']}")
        return
    suffix = LIST_TYPES.get(kind) if kind else None
    for record in the_store.records(suffix):
        if suffix is None or str(record.get("type", "")).lower() == suffix.lower():
            click.echo(f"{record.get('type')}  {record['id']}")


@cli.command()
@click.argument("build_id")
@store_option
def logs(build_id: str, store: Path | None) -> None:
    """Print a build's customization.log."""
    from engine.pipeline import LOG_NAME
    from engine.store import Store

    path = Store.open(store).build_dir(build_id) / LOG_NAME
    if not path.exists():
        raise UsageError(f"no build {build_id!r} in the store", hint="aib-local list --type builds")
    click.echo(path.read_text(), nl=False)


@cli.command()
@click.option("--build", "build_id", help="Only this build's target.")
def clean(build_id: str | None) -> None:
    """Remove every container aib-local started (found by label)."""
    from engine.targets import docker as docker_target

    removed = docker_target.remove_labelled(docker_target.connect(), build_id)
    click.echo("\n".join(f"removed container {name}" for name in removed) or "nothing to remove")


cli.add_command(sig)


def _report(error: AibLocalError, output: str) -> None:
    if output == "json":
        click.echo(json.dumps({"event": "error", "exitCode": error.exit_code, "message": str(error)}))
    _echo_err(f"error: {error}")


def _on_sigterm(_signum: int, _frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> NoReturn:
    """The console script: one boundary that turns errors into messages and exit codes."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    show_traceback = "--debug" in (argv if argv is not None else sys.argv[1:])[:1]
    try:
        cli.main(args=argv, prog_name="aib-local", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Abort:
        _echo_err("interrupted")
        sys.exit(130)
    except AibLocalError as exc:
        _echo_err(f"error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _echo_err("interrupted")
        sys.exit(130)
    except Exception:
        if show_traceback:
            raise
        fd, path = tempfile.mkstemp(prefix="aib-local-crash-", suffix=".log")
        with os.fdopen(fd, "w") as out:
            traceback.print_exc(file=out)
        _echo_err(f"internal error: {sys.exc_info()[1]!r} (traceback in {path}; rerun with --debug to show it)")
        sys.exit(1)
    sys.exit(0)
