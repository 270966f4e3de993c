"""`aib-local build`, and coming back to a build: rerun, shell, logs, clean.

Thin: options are parsed into `BuildOptions`, the engine runs, results are reported
once. The prompts of --debug and --on-error ask live here, since only the command line
talks to the user.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from engine import signals
from engine.cli.collector import settled
from engine.cli.options import (
    any_destination_option,
    junit_option,
    load_options,
    map_uri_option,
    output_option,
    secret_option,
    store_option,
    template_options,
)
from engine.errors import AibLocalError, Interrupted, UsageError

DEBUG_CHOICES = {"c": "continue", "s": "shell", "r": "rerun", "k": "skip", "a": "abort"}


def parse_secrets(values: tuple[str, ...]) -> dict[str, str]:
    """NAME=VALUE, or NAME taken from this environment."""
    secrets = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise UsageError(f"--secret {name!r}: expected NAME=VALUE or NAME (a shell variable name)")
        if not sep:
            if name not in os.environ:
                raise UsageError(f"--secret {name}: {name} is not set in this environment")
            value = os.environ[name]
        secrets[name] = value
    return secrets


def debug_prompt(step: str) -> str:
    """--debug: what to do before `step`."""
    click.echo(
        f"\n--debug: next is {step}\n"
        "  [c]ontinue  [s]hell in the target  [r]erun the previous customizer  s[k]ip it  [a]bort (keep the target)",
        err=True,
    )
    try:
        answer = click.prompt(
            "choice", default="c", show_choices=False, type=click.Choice(list(DEBUG_CHOICES)), err=True
        )
    except click.exceptions.Abort:
        raise KeyboardInterrupt from None  # Ctrl-C at the prompt: the build's own cleanup runs
    return DEBUG_CHOICES[answer]


def confirm_keep(question: str) -> bool:
    try:
        return click.confirm(question, default=True, err=True)
    except click.exceptions.Abort:
        return False  # Ctrl-C at the question: remove the target, as cleanup would


def make_reporter(output: str, prefix: str = "") -> Any:
    from engine.events import JsonReporter, RichReporter, TextReporter

    if output == "json":
        return JsonReporter()
    if not prefix and sys.stdout.isatty() and os.environ.get("TERM") != "dumb":
        return RichReporter()
    return TextReporter(prefix=prefix)


def report_outcome(results: list[Any], output: str) -> None:
    """One line per build's outcome; exit with the worst exit code."""
    worst = 0
    for result in results:
        if result.error is not None:
            worst = max(worst, result.error.exit_code)
            if output == "json":
                click.echo(
                    json.dumps(
                        {
                            "event": "error",
                            "buildId": result.build_id,
                            "exitCode": result.error.exit_code,
                            "message": str(result.error),
                        }
                    )
                )
            click.echo(f"error: {result.error}", err=True)
        elif output == "text":
            for out in result.run_outputs:
                click.echo(f"run output {out.name}: {out.artifact_id or out.artifact_uri}")
            click.echo(f"log: {result.log_path}")
    if len(results) > 1 and output == "text":
        click.echo("\nsummary:")
        for result in results:
            click.echo(f"  {result.build_id}: {result.status}" + (" (kept)" if result.kept else ""))
    interrupted = [r.error for r in results if isinstance(r.error, Interrupted)]
    if interrupted or signals.received():  # a signal during the cleanup decides the exit code too
        raise click.exceptions.Exit(interrupted[0].exit_code if interrupted else signals.exit_code())
    if worst:
        raise click.exceptions.Exit(worst)


@click.command()
@click.argument("templates", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--target",
    default="docker",
    show_default=True,
    help="docker (DOCKER_HOST honoured), vm (a local QEMU VM booted from the source disk), "
    "or ssh://USER@HOST[:PORT] for a host or VM you run.",
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
    "--network", help="Container network: host, none, bridge or a name [default: bridge where it exists, else host]."
)
@click.option(
    "--init",
    "init",
    type=click.Choice(["auto", "systemd", "none"]),
    default="auto",
    show_default=True,
    help="Container builds: systemd as PID 1, like the build VM (auto: where the image has systemd); "
    "none: a keep-alive process (no services, no real reboots).",
)
@click.option(
    "--on-error",
    type=click.Choice(["cleanup", "abort", "ask"]),
    help="abort keeps the target for inspection, ask asks (on a terminal) "
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
    "--download-timeout",
    type=click.FloatRange(0.1),
    default=60,
    show_default=True,
    metavar="SECONDS",
    help="A download attempt that receives nothing for this long fails (and is retried, within the build's time).",
)
@click.option(
    "--powershell-strict",
    is_flag=True,
    help="PowerShell customizers stop on the first error ($ErrorActionPreference='Stop') "
    "instead of AIB's exit-$LastExitCode behaviour.",
)
@secret_option
@click.option(
    "--no-cache",
    is_flag=True,
    help="Run every customizer: neither start from the step cache nor keep states in it.",
)
@click.option(
    "--cache-from",
    metavar="STEP",
    help="Run again from this customizer (its name, customize[N] or N): the step cache is used before it only, "
    "and what is kept from it on replaces what was.",
)
@click.option(
    "--cache-limit",
    metavar="SIZE",
    default="20G",
    show_default=True,
    help="The store's step cache keeps states up to this size (e.g. 500M, 20G); the least recently used go first.",
)
@click.option(
    "--checkpoint",
    is_flag=True,
    help="Keep the state after every customizer in the step cache, not only after those worth it "
    "(2 s of work on a container).",
)
@click.option(
    "--boot-test",
    is_flag=True,
    help="VM builds: boot the VHD (else the image) just made in a throw-away VM; fail if it does not come up.",
)
@click.option(
    "--vm-boot",
    type=click.Choice(["snapshot", "cold"]),
    default="snapshot",
    show_default=True,
    help="VM builds: restore the booted source saved by its first build in this store (snapshot), "
    "or boot the source every time (cold).",
)
@click.option(
    "--resume",
    "resume_id",
    metavar="BUILD_ID",
    help="Build BUILD_ID's template again with its options (every build now starts from the step cache).",
)
@click.option(
    "--debug", "debug", is_flag=True, help="Pause before each customizer: continue, shell, rerun previous, skip, abort."
)
@click.option(
    "--watch",
    is_flag=True,
    help="After each build, wait until the template or a file it reads here (a script, a mapped working copy, "
    "aib-local.json) changes, then build again (with the step cache); Ctrl-C stops.",
)
@click.option(
    "--parallel", type=click.IntRange(1, 32), default=1, show_default=True, help="Build this many templates at once."
)
@click.option(
    "--resource-group",
    default="aib-local",
    show_default=True,
    help="Resource group of the image template's local resource ID.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse the template when AIB would (every finding AIB would reject is an error), for CI.",
)
@template_options
@output_option
@junit_option
@click.option(
    "--report",
    "report_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write an HTML report of the build here (several builds: one file each, NAME in its name).",
)
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
    init: str,
    on_error: str | None,
    deprovision: str,
    allow_any_destination: bool,
    download_timeout: float,
    powershell_strict: bool,
    secrets: tuple[str, ...],
    no_cache: bool,
    cache_from: str | None,
    cache_limit: str,
    checkpoint: bool,
    boot_test: bool,
    vm_boot: str,
    resume_id: str | None,
    debug: bool,
    watch: bool,
    parallel: int,
    resource_group: str,
    strict: bool,
    parameters: tuple[str, ...],
    sets: tuple[str, ...],
    template_name: str | None,
    location: str,
    allow_outside_template_dir: bool,
    map_uri: tuple[str, ...],
    output: str,
    junit: Path | None,
    report_file: Path | None,
) -> None:
    """Build templates: customize, deprovision and distribute, as AIB would."""
    from engine.pipeline import BuildOptions, BuildRun
    from engine.pipeline.revisit import resume
    from engine.step_cache import parse_size
    from engine.store import Store
    from engine.targets.endpoint import SshOptions
    from engine.targets.registry import for_spec
    from engine.template.loading import load_templates

    settled()  # what the imports made lives until exit
    if for_spec(target).source_kind != "disk" and boot_test:  # a malformed target is refused first
        raise UsageError("--boot-test boots a disk: it needs --target vm")
    if not templates and not resume_id:
        raise UsageError("give one or more TEMPLATE files (or --resume BUILD_ID)")
    interactive = sys.stdin.isatty()
    if debug and (not interactive or output == "json" or parallel > 1):
        raise UsageError("--debug needs a terminal, text output and one build at a time")
    if no_cache and (cache_from or checkpoint):
        raise UsageError("--no-cache turns the step cache off: --cache-from and --checkpoint use it")
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
        init=init,
        on_error=on_error,
        deprovision=deprovision,
        allow_any_destination=allow_any_destination,
        download_timeout=download_timeout,
        powershell_strict=powershell_strict,
        secrets=parse_secrets(secrets),
        checkpoint=checkpoint,
        cache=not no_cache,
        cache_from=cache_from,
        cache_limit=parse_size(cache_limit),
        boot_test=boot_test,
        vm_boot=vm_boot,
        pause=debug_prompt if debug else None,
        confirm_keep=confirm_keep if interactive and output == "text" else None,
        resource_group=resource_group,
    )
    the_store = Store.open(store)
    if resume_id:
        if watch:
            raise UsageError("--watch builds TEMPLATE files: give them instead of --resume")
        builds = [resume(the_store, resume_id, options, make_reporter(output), list(templates))]
        report_outcome(run_builds(the_store, builds, parallel, junit, report_file), output)
        return
    reading = load_options(
        parameters,
        sets,
        template_name,
        location,
        allow_outside_template_dir,
        map_uri,
        allow_any_destination=allow_any_destination,
        strict=strict,
        resource_group=resource_group,
    )

    def loaded_builds() -> list[BuildRun]:
        loaded = [item for path in templates for item in load_templates(path, options=reading)]
        several = len(loaded) > 1 and output == "text"
        return [
            BuildRun(item, options, the_store, make_reporter(output, f"[{item.name}] " if several else ""))
            for item in loaded
        ]

    if watch:
        watch_builds(list(templates), loaded_builds, lambda b: run_builds(the_store, b, parallel, junit, report_file))
        return
    report_outcome(run_builds(the_store, loaded_builds(), parallel, junit, report_file), output)


def run_builds(
    the_store: Any, builds: list[Any], parallel: int, junit: Path | None, report_file: Path | None
) -> list[Any]:
    """Run the builds; then the JUnit report (interrupted builds too) and the HTML reports."""
    from engine.events import read_events
    from engine.pipeline import run_all

    try:
        results = run_all(builds, parallel)
    finally:  # interrupted builds too: their events say so
        if junit is not None:
            from engine.junit import JunitReport  # only when asked: XML is not needed otherwise

            tests = JunitReport()
            for build_run in builds:
                ctx = build_run.ctx
                tests.add_build(ctx.loaded.name, read_events(the_store.build_dir(ctx.build_id)))
            tests.write(junit)
    if report_file is not None:
        for result in results:
            path = report_file
            if len(results) > 1:
                path = report_file.with_name(f"{report_file.stem}-{result.build_id}{report_file.suffix}")
            write_report(the_store, result.build_id, path)
    return results


def watch_builds(templates: list[Path], make: Callable[[], list[Any]], run: Callable[[list[Any]], list[Any]]) -> None:
    """--watch: build, then wait for a file the build reads to change, and build again,
    until Ctrl-C (exit 130, after the running build's own cleanup)."""
    from engine.watch import stamps, wait_for_change, watched

    while True:
        before = stamps(watched(templates, []))
        try:
            builds = make()
            before = stamps(watched(templates, [b.ctx.loaded for b in builds]))
            results = run(builds)
            for result in results:
                said = f"error: {result.error}" if result.error is not None else f"log: {result.log_path}"
                click.echo(f"build {result.build_id} {result.status}; {said}")
        except AibLocalError as exc:  # the template as it is now does not load: wait for the next save
            click.echo(f"error: {exc}", err=True)
        if signals.received():
            raise click.exceptions.Exit(signals.exit_code())
        click.echo(f"watching {len(before)} file(s) for changes (Ctrl-C stops)")
        try:
            changed = wait_for_change(before)
        except KeyboardInterrupt:
            click.echo("stopped watching")
            raise click.exceptions.Exit(signals.exit_code()) from None
        names = ", ".join(_shown(path) for path in changed)
        click.echo(f"{names} changed: building again")


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@click.command()
@click.argument("build_id")
@click.option("--from", "start", metavar="NAME", help="Run from this customizer on (name, N or customize[N]).")
@click.option("--only", metavar="NAME", help="Run just this customizer.")
@click.option("--finish", is_flag=True, help="Then deprovision, capture and distribute, as the build would have.")
@map_uri_option
@secret_option
@store_option
@output_option
def rerun(
    build_id: str,
    start: str | None,
    only: str | None,
    finish: bool,
    map_uri: tuple[str, ...],
    secrets: tuple[str, ...],
    store: Path | None,
    output: str,
) -> None:
    """Run customizers again on a kept build's target, with the template as it is now.

    The template file is read again, so an edited script or inline line is picked up
    (and its sha256 checked again). Without --from/--only it starts at the customizer
    that failed. The target stays kept unless --finish completes the build.
    """
    from engine.pipeline import BuildOptions
    from engine.pipeline.revisit import rerun as rerun_build
    from engine.store import Store

    options = BuildOptions(secrets=parse_secrets(secrets))
    build_ = rerun_build(
        Store.open(store),
        build_id,
        options,
        make_reporter(output),
        start=start,
        only=only,
        finish=finish,
        map_uri=map_uri,
    )
    report_outcome([build_.run()], output)


@click.command()
@click.argument("build_id")
@store_option
def shell(build_id: str, store: Path | None) -> None:
    """Open an interactive shell in a kept build's target."""
    from engine.cleanup import kept_target
    from engine.store import Store

    if not sys.stdin.isatty():
        raise UsageError("aib-local shell needs a terminal")
    target = kept_target(Store.open(store), build_id)
    click.echo(f"shell in {target.describe()} as {target.build_user} (exit to leave; the target stays kept)", err=True)
    code = target.interactive_shell()
    raise click.exceptions.Exit(code)


@click.command()
@click.argument("build_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing as the build writes, until it ends.")
@store_option
def logs(build_id: str, follow: bool, store: Path | None) -> None:
    """Print a build's customization.log."""
    from engine import journal
    from engine.pipeline.options import LOG_NAME
    from engine.records import read_build, require_build
    from engine.store import Store

    the_store = Store.open(store)
    require_build(the_store, build_id)
    path = the_store.build_dir(build_id) / LOG_NAME
    with path.open(encoding="utf-8") as log:
        while True:
            chunk = log.read()
            if chunk:
                click.echo(chunk, nl=False)
            elif not follow or not getattr(read_build(the_store, build_id), "running", False):
                click.echo(log.read(), nl=False)
                return
            elif not journal.is_running(the_store, build_id):
                click.echo(log.read(), nl=False)
                click.echo(f"(the process of build {build_id} has died; aib-local clean removes what it left)")
                return
            else:
                time.sleep(0.5)  # a follow loop, not a retry: it ends with the build


@click.command()
@click.argument("build_id")
@click.option("--output-file", "-o", type=click.Path(path_type=Path, dir_okay=False), help="[default: stdout]")
@store_option
def report(build_id: str, output_file: Path | None, store: Path | None) -> None:
    """Write a build's HTML report: a timeline of its steps, their output, findings and artifacts."""
    from engine.records import require_build
    from engine.store import Store

    the_store = Store.open(store)
    require_build(the_store, build_id)
    write_report(the_store, build_id, output_file)


def write_report(the_store: Any, build_id: str, output_file: Path | None) -> None:
    from engine.report import report_of
    from engine.store import atomic_write

    record = the_store.get_build(build_id) or {}
    text = report_of(the_store.build_dir(build_id), record)
    if output_file is None:
        click.echo(text, nl=False)
    else:
        atomic_write(output_file, text.encode())


@click.command()
@click.option("--build", "build_id", help="Only this build's leftovers.")
@click.option("--snapshots", is_flag=True, help="Also remove the store's saved booted VMs (see build --vm-boot).")
@click.option(
    "--repair",
    is_flag=True,
    help="Move damaged records (truncated, empty, not JSON, the wrong shape) aside into the store's quarantine "
    "folder, and say which; nothing is deleted.",
)
@store_option
def clean(build_id: str | None, snapshots: bool, repair: bool, store: Path | None) -> None:
    """Remove the containers, images and partial files that dead or kept builds left, and
    step cache states without their entry (or entries without their state)."""
    from engine.cleanup import clean as clean_up
    from engine.records import builds
    from engine.store import Store
    from engine.targets.snapshots import FOLDER, Snapshots

    the_store = Store.open(store)
    if repair:
        list(the_store.records())
        list(builds(the_store))
        for path, what in the_store.damaged.items():
            click.echo(f"moved {path} to {the_store.quarantine(path)}: it was damaged ({what})")
        the_store.damaged.clear()
        for path, what in the_store.newer.items():
            click.echo(f"left {path} where it is: it was {what}")
    removed, live = clean_up(the_store, build_id)
    busy: list[str] = []
    if snapshots:
        gone, busy = Snapshots(the_store.root / FOLDER).clear()
        removed += gone
    click.echo("\n".join(f"removed {item}" for item in removed) or "nothing to remove")
    for name in live:
        click.echo(f"left {name}: its build is still running")
    for what in busy:
        click.echo(f"left {what}: a build is restoring it")


build_commands = [build, rerun, shell, logs, report, clean]
