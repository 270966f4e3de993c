"""What outlives a build: its kept target (for `aib-local shell`), and what `aib-local
clean` removes (dead builds' leftovers, kept targets, checkpoint images of older
versions, step cache states without their entry, partial files)."""

from __future__ import annotations

import sys

from engine import images, journal
from engine.errors import UsageError
from engine.records import builds, require_build, write_build
from engine.step_cache import StepCache, all_entries
from engine.store import Store
from engine.targets import registry
from engine.targets.base import Target
from engine.targets.snapshots import FOLDER as SNAPSHOTS
from engine.targets.snapshots import Snapshots


def kept_target(store: Store, build_id: str) -> Target:
    """The kept target of a build, connected."""
    record = require_build(store, build_id)
    if not record.kept or not record.target:
        raise UsageError(f"build {build_id} kept no target", hint="keep one with --on-error abort")
    return registry.attach(record.target, build_id)


def _warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


def sweep(store: Store, build_id: str | None = None) -> list[str]:
    """Remove what builds killed outright left (see engine.journal); what was removed."""

    def containers(dead_id: str, keep: list[str]) -> list[str]:
        return images.remove_labelled(images.connect(), dead_id, keep)[0]

    return journal.sweep(
        store,
        containers,
        images.remove_images,
        build_id=build_id,
        release_target=registry.releaser(store, _warn),
    )


def clean(store: Store, build_id: str | None = None) -> tuple[list[str], list[str]]:
    """Remove the containers, checkpoint images and partial files that this store's dead
    and kept builds left: (what was removed, containers of running builds left alone)."""
    live_ids = set(journal.live_builds(store))
    if build_id is not None and build_id in live_ids:
        raise UsageError(f"build {build_id} is still running", hint="stop it (Ctrl-C) or wait for it to end")
    removed = sweep(store, build_id)
    records = [require_build(store, build_id)] if build_id else list(builds(store))
    known = {record.build_id for record in records}
    # Only this store's builds: another store's kept targets are its own to clean (the
    # containers of its dead builds are found by its journal).
    names, live = images.remove_labelled(images.connect(), build_id, ended=known - live_ids, among=known)
    removed += [f"container {name}" for name in names]
    for record in records:
        if record.build_id in live_ids:
            continue
        kind = str((record.target or {}).get("kind", ""))
        if record.kept and kind in registry.TARGETS:
            removed += registry.lookup(kind).remove_kept(dict(record.target or {}), record.build_id)
        removed += [f"checkpoint image {image}" for image in images.remove_images(list(record.checkpoints.values()))]
        if record.kept or record.running or record.checkpoints:
            status = "cleaned" if record.running else record.status
            write_build(store, record.model_copy(update={"kept": False, "checkpoints": {}, "status": status}))
    removed += Snapshots(store.root / SNAPSHOTS).sweep()
    removed += cache_orphans(store)  # a half-made one's lock is held while it is made
    if not live_ids:  # a running build's partial files are its own
        for partial in sorted(store.root.rglob("*.partial")):
            partial.unlink(missing_ok=True)
            removed.append(f"partial file {partial}")
    return removed, live


def cache_orphans(store: Store) -> list[str]:
    """Step cache states without their entry (a build killed while keeping) and entries
    whose state is gone, of every kind that has any (containers always: their images are
    found by name)."""
    removed = []
    for kind in sorted({e.kind for e in all_entries(store.root)} | {"docker"}):
        states = registry.lookup(kind).kept_states(store.root)
        if states is not None:
            removed += StepCache(store.root, states).orphans()
    return removed
