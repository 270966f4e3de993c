"""The command line: parse options, call the engine, report once.

Exit codes: 0 success; 1 the build failed; 2 invalid template or command line;
3 the environment lacks something; 130 interrupted (after cleanup).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, NoReturn

import click

from engine import signals
from engine.cli.boot import boot
from engine.cli.build import build_commands
from engine.cli.cache import cache
from engine.cli.collector import short_lived
from engine.cli.gallery import sig
from engine.cli.options import (
    any_destination_option,
    junit_option,
    load_options,
    store_option,
    template_options,
)
from engine.errors import AibLocalError, TemplateError, UsageError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


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
@junit_option
@click.argument("templates", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--output",
    type=click.Choice(["text", "json", "sarif"]),
    default="text",
    show_default=True,
    help="json: machine-readable; sarif: SARIF 2.1.0 for code scanning (file, line and column of each finding).",
)
@any_destination_option
@template_options
@click.option("--strict", is_flag=True, help="Every finding AIB would reject is an error (for CI).")
@store_option
def validate(
    templates: tuple[Path, ...],
    output: str,
    store: Path | None,
    allow_any_destination: bool,
    parameters: tuple[str, ...],
    sets: tuple[str, ...],
    template_name: str | None,
    location: str,
    allow_outside_template_dir: bool,
    map_uri: tuple[str, ...],
    strict: bool,
    junit: Path | None,
) -> None:
    """Check templates as AIB would, before any target starts.

    Every error is listed with its JSON path; each finding says whether AIB would
    reject the template. Sources and galleries are checked against the local store when
    there is one. Exit 0 when all are valid, 2 otherwise.
    """
    from engine import store_rules
    from engine.store import Store
    from engine.template.loading import load_templates

    the_store = Store.existing(store)
    if store is not None and the_store is None:
        raise UsageError(f"--store {store}: no store there", hint="leave --store out to check without one")

    options = load_options(
        parameters,
        sets,
        template_name,
        location,
        allow_outside_template_dir,
        map_uri,
        allow_any_destination=allow_any_destination,
        strict=strict,
    )
    invalid = 0
    results: list[dict[str, Any]] = []
    for path in templates:
        try:
            loaded = load_templates(path, options=options)
            for item in loaded:
                if the_store is not None:
                    item.findings = item.findings + store_rules.check(item, the_store)
                    if any(f.severity == "error" for f in item.findings):
                        raise TemplateError(str(path), item.findings)
        except TemplateError as exc:
            invalid += 1
            findings = placed(path, exc.findings)
            results.append({"template": str(path), "valid": False, "findings": findings})
            if output == "text":
                _echo_err(f"{path}: {sum(f['severity'] == 'error' for f in findings)} error(s)")
                for f in sorted(findings, key=lambda f: f["severity"] != "error"):
                    _echo_err("  " + clickable(path, f))
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
            findings = placed(path, item.findings)
            results.append(
                {
                    "template": str(path),
                    "name": item.name,
                    "apiVersion": item.api_version,
                    "valid": True,
                    "findings": findings,
                }
            )
            if output == "text":
                click.echo(f"{path}: {item.name} is valid (apiVersion {item.api_version})")
                for f in findings:
                    click.echo("  " + clickable(path, f))
    if junit is not None:
        write_validation_junit(junit, results)
    if output == "json":
        click.echo(json.dumps({"valid": invalid == 0, "templates": results}, indent=2))
    if output == "sarif":
        from engine.template.sarif import sarif_log

        click.echo(json.dumps(sarif_log(results), indent=2))
    if invalid:
        sys.exit(2)


def placed(path: Path, findings: list[Any]) -> list[dict[str, Any]]:
    """Findings as dicts, each with the line and column of its JSON path in the file."""
    from engine.template.loading import MAX_TEMPLATE_BYTES
    from engine.template.locations import locate, position

    try:  # a file refused for its size is not read again to place its one finding
        found = locate(path.read_text(errors="replace")) if path.stat().st_size <= MAX_TEMPLATE_BYTES else {}
    except OSError:
        found = {}
    out = []
    for finding in findings:
        line, column = position(found, finding.path)
        out.append({**finding.__dict__, "line": line, "column": column})
    return out


def clickable(path: Path, finding: dict[str, Any]) -> str:
    """`file:line:column: severity: path: message (verdict)`, as compilers write it."""
    from engine.errors import Finding

    text = Finding(finding["path"], finding["message"], finding["severity"], finding["aib_rejects"]).render()
    return f"{path}:{finding['line']}:{finding['column']}: {text}"


def write_validation_junit(path: Path, results: list[dict[str, Any]]) -> None:
    """One test case per template: its errors fail it, its other findings are its output."""
    from engine.junit import JunitReport

    report = JunitReport()
    for result in results:
        lines = [f"{f['severity']}: {f['path'] + ': ' if f['path'] else ''}{f['message']}" for f in result["findings"]]
        errors = [line for line in lines if line.startswith("error:")]
        notes = [line for line in lines if not line.startswith("error:")]
        report.add_validation(str(result.get("name") or result["template"]), 0.0, errors, notes)
    report.write(path)


@cli.command()
@click.argument("templates", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@template_options
@click.option("--write", is_flag=True, help="Update the sha256Checksum values that differ, in place (nothing else).")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def checksums(
    templates: tuple[Path, ...],
    parameters: tuple[str, ...],
    sets: tuple[str, ...],
    template_name: str | None,
    location: str,
    allow_outside_template_dir: bool,
    map_uri: tuple[str, ...],
    write: bool,
    output: str,
) -> None:
    """List every file of every customizer and validator with the template's sha256Checksum
    and the digest of what a build reads (a working copy, a local file, or the download).

    --write updates the values that differ in the template file, leaving every other byte
    as it was (comments, formatting, an ARM deployment); a digest given by a parameter or
    an expression is not written, and the one to change is named. Exit 0 when every
    digest matches (or was written), 1 when some differ, 2 on invalid input.
    """
    from engine import checksums as sums
    from engine.template.loading import load_templates

    options = load_options(parameters, sets, template_name, location, allow_outside_template_dir, map_uri)
    report: list[dict[str, Any]] = []
    stale = 0
    for path in templates:
        for loaded in load_templates(path, options=options):
            found = sums.entries(loaded)
            written, refused = sums.write(path, found) if write else ([], [])
            stale += sum(1 for e in found if e.status == "differs") - len(written)
            report.append(
                {
                    "template": str(path),
                    "name": loaded.name,
                    "files": [e.as_json() for e in found],
                    "written": written,
                    "notWritten": refused,
                }
            )
            if output == "text":
                click.echo(f"{path}: {loaded.name}")
                for entry in found:
                    click.echo(f"  {entry.step}: {entry.shown}")
                    click.echo(
                        f"    template {entry.template or '(none)'}\n    actual   {entry.actual}  [{entry.status}]"
                    )
                for line in written:
                    click.echo(f"  written: {line}")
                for line in refused:
                    click.echo(f"  not written: {line}", err=True)
    if output == "json":
        click.echo(json.dumps(report, indent=2))
    if stale:
        if output == "text" and not write:
            click.echo(f"{stale} digest(s) differ: --write updates them", err=True)
        sys.exit(1)


@cli.command()
@click.option(
    "--for",
    "wanted",
    type=click.Choice(["docker", "vm", "ssh", "reports"]),
    multiple=True,
    help="What you want to run (repeatable; default: container builds). The exit code is 0 when all it needs "
    "is here; every check is said anyway.",
)
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def doctor(wanted: tuple[str, ...], output: str) -> None:
    """Check this machine for every kind of build: the engine, its cgroups, the images,
    QEMU and its accelerator, the fixture disk, free disk; each missing piece with the
    command that fixes it."""
    from engine.doctor import as_json, run_checks, verdict

    checks = run_checks()
    asked = set(wanted) or {"docker"}
    if output == "json":
        click.echo(json.dumps({"for": sorted(asked), "checks": as_json(checks)}, indent=2))
    else:
        for check in checks:
            mark = "ok     " if check.ok else ("MISSING" if check.needed_for in asked else "missing")
            click.echo(f"{mark} {check.name} [{check.needed_for}]: {check.detail}")
            if check.fix:
                click.echo(f"        fix: {check.fix}")
    code = verdict(checks, asked)
    if output == "text":
        click.echo(
            f"\n{'ready' if code == 0 else 'not ready'} for {', '.join(sorted(asked))}"
            + ("" if code == 0 else ": run the fixes above")
        )
    if code:
        raise click.exceptions.Exit(code)


@cli.command(name="export")
@click.argument("template", type=click.Path(path_type=Path))
@template_options
@click.option("--resource-group", "-g", default="myImageBuilderRG", show_default=True, help="For the az commands.")
@click.option("--output-file", "-o", type=click.Path(path_type=Path), help="Write the template here [default: stdout].")
def export_(
    template: Path,
    parameters: tuple[str, ...],
    sets: tuple[str, ...],
    template_name: str | None,
    location: str,
    allow_outside_template_dir: bool,
    map_uri: tuple[str, ...],
    resource_group: str,
    output_file: Path | None,
) -> None:
    """Write the template as AIB takes it (resolved, cleaned for its apiVersion) and the
    az commands that create and run it."""
    from engine.store import atomic_write
    from engine.template.export import az_commands, export
    from engine.template.loading import load_templates

    loaded = load_templates(
        template,
        options=load_options(parameters, sets, template_name, location, allow_outside_template_dir, map_uri),
    )
    if len(loaded) != 1:
        names = ", ".join(t.name for t in loaded)
        raise UsageError(f"{template} holds {len(loaded)} image templates ({names}): pick one with --template-name")
    text = json.dumps(export(loaded[0]), indent=2) + "\n"
    if output_file is None:
        click.echo(text, nl=False)
    else:
        atomic_write(output_file, text.encode())
    commands = az_commands(loaded[0], resource_group, str(output_file or f"{loaded[0].name}.json"))
    click.echo("\n".join(["# create and run it in Azure:", *commands]), err=output_file is None)


@cli.command()
@click.option(
    "--api-version",
    default=None,
    help="The template apiVersion the schema is for [default: the newest aib-local knows].",
)
@click.option("--output-file", "-o", type=click.Path(path_type=Path), help="Write the schema here [default: stdout].")
def schema(api_version: str | None, output_file: Path | None) -> None:
    """Print the JSON Schema of image templates, for editors (VS Code: json.schemas)."""
    from engine.store import atomic_write
    from engine.template import model
    from engine.template.schema import template_schema

    version = api_version or model.LATEST_API_VERSION
    if version not in model.API_VERSIONS:
        raise UsageError(f"--api-version {version}: unknown (known: {', '.join(model.API_VERSIONS)})")
    text = json.dumps(template_schema(version), indent=2) + "\n"
    if output_file is None:
        click.echo(text, nl=False)
    else:
        atomic_write(output_file, text.encode())


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
    from engine import journal
    from engine.records import builds
    from engine.store import Store

    the_store = Store.open(store)
    if kind == "builds":
        for build in builds(the_store):
            status = build.status
            if build.running and not journal.is_running(the_store, build.build_id):
                status = "died (aib-local clean)"
            kept = " (kept)" if build.kept else ""
            click.echo(f"{build.build_id}  {status}{kept}  {build.template}")
    else:
        suffix = LIST_TYPES.get(kind) if kind else None
        for record in the_store.records(suffix):
            if suffix is None or str(record.get("type", "")).lower() == suffix.lower():
                click.echo(f"{record.get('type')}  {record.get('id', '(no id)')}")
    for path, what in the_store.damaged.items():
        _echo_err(f"warning: left out {path}: it is damaged ({what}); aib-local clean --repair moves it aside")
    for path, what in the_store.newer.items():
        _echo_err(f"warning: left out {path}: it was {what}")


cli.add_command(sig)
cli.add_command(cache)
cli.add_command(boot)
for command in build_commands:
    cli.add_command(command)


def run() -> NoReturn:
    """The console script: `main`, with the collector set for a process that lives for
    one command (engine.cli.collector)."""
    short_lived()
    main()


def main(argv: list[str] | None = None) -> NoReturn:
    """The command line: one boundary that turns errors into messages and exit codes
    (the console script is `run`, which calls it)."""
    signals.install()
    os.umask(os.umask(0o022) | 0o002)  # the user's umask, but nothing aib-local makes is world-writable
    show_traceback = "--debug" in (argv if argv is not None else sys.argv[1:])[:1]
    try:
        # Without standalone mode click returns the code of a click.exceptions.Exit.
        code = cli.main(args=argv, prog_name="aib-local", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Abort:
        _echo_err("interrupted")
        sys.exit(signals.exit_code())
    except AibLocalError as exc:
        _echo_err(f"error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _echo_err("interrupted")
        sys.exit(signals.exit_code())
    except Exception:
        if show_traceback:
            raise
        fd, path = tempfile.mkstemp(prefix="aib-local-crash-", suffix=".log")
        with os.fdopen(fd, "w") as out:
            traceback.print_exc(file=out)
        _echo_err(f"internal error: {sys.exc_info()[1]!r} (traceback in {path}; rerun with --debug to show it)")
        sys.exit(1)
    sys.exit(0)
