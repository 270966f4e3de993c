"""`aib-local cache`: what the step cache keeps (list) and making room (prune)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from engine.cli.options import store_option

LIMIT_HELP = "Keep the most recently used states up to this size (e.g. 500M, 20G)."


def _caches(store: Path | None, extra: tuple[str, ...] = ()) -> list:  # type: ignore[type-arg]
    from engine.step_cache import StepCache, all_entries
    from engine.store import Store
    from engine.targets.registry import lookup

    root = Store.open(store).root
    found = []
    for kind in sorted({e.kind for e in all_entries(root)} | set(extra)):
        states = lookup(kind).kept_states(root)
        if states is not None:
            found.append(StepCache(root, states))
    return found


@click.group()
def cache() -> None:
    """The step cache: the machine states builds kept after their customizers.

    \b
    A build starts from the longest kept prefix of its customizers (same source, same
    settings, same customizers and files, in the same order) and runs the rest;
    build --no-cache runs them all, --cache-from STEP from that one on.
    """


@cache.command("list")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@store_option
def list_entries(output: str, store: Path | None) -> None:
    """The kept states, the most recently used first."""
    from dataclasses import asdict

    from engine.step_cache import all_entries, human
    from engine.store import Store

    entries = all_entries(Store.open(store).root)
    if output == "json":
        click.echo(json.dumps([asdict(e) for e in entries], indent=2))
        return
    if not entries:
        click.echo("the step cache is empty")
        return
    now = time.time()
    for e in entries:
        ago = (
            f"{(now - e.used) / 60:.0f} min ago"
            if now - e.used < 7200
            else time.strftime("%Y-%m-%d %H:%M", time.localtime(e.used))
        )
        click.echo(
            f"{e.key[:12]}  {e.kind:6}  {human(e.size):>9}  used {ago:16}  {e.template}: {e.step} (build {e.build})"
        )
    click.echo(f"{len(entries)} state(s), {human(sum(e.size for e in entries))}")


@cache.command()
@click.option("--all", "everything", is_flag=True, help="Remove every state no build is using.")
@click.option("--limit", metavar="SIZE", default="20G", show_default=True, help=LIMIT_HELP)
@store_option
def prune(everything: bool, limit: str, store: Path | None) -> None:
    """Remove the least recently used states beyond --limit (or all of them), and what
    builds killed while keeping left."""
    from engine.step_cache import parse_size

    size = 0 if everything else parse_size(limit)
    removed: list[str] = []
    for found in _caches(store, ("docker",)):
        removed += [e.describe() for e in found.prune(size)]
        removed += found.orphans()
    click.echo("\n".join(f"removed {item}" for item in removed) or "nothing to remove")
