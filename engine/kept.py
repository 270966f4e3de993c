"""Coming back to a build: rerun customizers on its kept target, resume it from a
checkpoint, open a shell in it, or clean up what dead and kept builds left."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from engine import journal
from engine.errors import UsageError
from engine.pipeline import Build, BuildOptions, Continuation
from engine.store import Store
from engine.targets import docker as docker_target
from engine.targets.base import Target
from engine.validation import LoadedTemplate, LoadOptions, load_templates


def build_record(store: Store, build_id: str) -> dict[str, Any]:
    record = store.get_build(build_id)
    if record is None:
        raise UsageError(f"no build {build_id!r} in the store {store.root}", hint="aib-local list --type builds")
    return record


def reload_template(record: dict[str, Any], allow_any_destination: bool = False) -> LoadedTemplate:
    """The build's template file, read again (so edits are picked up) and validated."""
    path = Path(record["template"])
    reading = LoadOptions(**record["reading"]) if record.get("reading") else LoadOptions()
    reading.allow_any_destination = reading.allow_any_destination or allow_any_destination
    for loaded in load_templates(path, options=reading):
        if loaded.name == record["templateName"]:
            return loaded
    raise UsageError(f"{path} no longer holds the image template {record['templateName']!r}")


def customizer_index(loaded: LoadedTemplate, name: str) -> int:
    """The index of a customizer given by its name, 'customize[N]', or N."""
    names = [c.name for c in loaded.properties.customize]
    if name in names:
        return names.index(name)
    text = name.removeprefix("customize[").removesuffix("]")
    if text.isdigit() and int(text) < len(names):
        return int(text)
    known = ", ".join(
        f"{i}:{n or c.type}" for i, (n, c) in enumerate(zip(names, loaded.properties.customize, strict=True))
    )
    raise UsageError(f"no customizer {name!r} in {loaded.name} (customizers: {known})")


def options_from(record: dict[str, Any], base: BuildOptions) -> BuildOptions:
    """The earlier build's options, with what the command line gives now on top."""
    saved = record.get("options") or {}
    catalogue = saved.get("catalogue")
    return replace(
        base,
        target=saved.get("target", base.target),
        network=base.network or saved.get("network"),
        deprovision=saved.get("deprovision", base.deprovision),
        allow_any_destination=base.allow_any_destination or bool(saved.get("allowAnyDestination")),
        powershell_strict=base.powershell_strict or bool(saved.get("powershellStrict")),
        subscription=saved.get("subscription", base.subscription),
        resource_group=saved.get("resourceGroup", base.resource_group),
        catalogue=base.catalogue or (Path(catalogue) if catalogue else None),
        checkpoint=base.checkpoint or bool(saved.get("checkpoint")),
    )


def rerun(
    store: Store,
    build_id: str,
    base: BuildOptions,
    reporter: Any,
    *,
    start: str | None = None,
    only: str | None = None,
    finish: bool = False,
) -> Build:
    """A Build that runs customizers again on the kept target of `build_id`."""
    record = build_record(store, build_id)
    options = options_from(record, base)
    loaded = reload_template(record, options.allow_any_destination)
    if start and only:
        raise UsageError("give --from or --only, not both")
    # By default: from the step that failed (the one being debugged).
    first = customizer_index(loaded, start or only or "") if start or only else int(record.get("failedIndex", 0))
    going_on = Continuation(record, first=first, only=bool(only), finish=finish)
    return Build(loaded, options, store, reporter, build_id=build_id, continuation=going_on)


def resume(store: Store, build_id: str, base: BuildOptions, reporter: Any, templates: list[Path]) -> Build:
    """A new Build that starts from the last usable checkpoint of `build_id`."""
    record = build_record(store, build_id)
    if not record.get("checkpoints"):
        raise UsageError(f"build {build_id} has no checkpoints", hint="build with --checkpoint to take them")
    options = options_from(record, base)
    if templates and Path(templates[0]).resolve() != Path(record["template"]):
        raise UsageError(f"build {build_id} built {record['template']}, not {templates[0]}")
    loaded = reload_template(record, options.allow_any_destination)
    return Build(loaded, options, store, reporter, continuation=Continuation(record, resume=True))


def attach(store: Store, build_id: str) -> Target:
    """The kept target of a build, connected."""
    record = build_record(store, build_id)
    info = record.get("target")
    if not record.get("kept") or not info:
        raise UsageError(f"build {build_id} kept no target", hint="keep one with --on-error abort")
    if info["kind"] == "docker":
        return docker_target.DockerTarget.attach(docker_target.connect(), info)
    from engine.targets.ssh import SshTarget

    return SshTarget.attach(info, build_id)


def sweep(store: Store, build_id: str | None = None) -> list[str]:
    """Remove what builds killed outright left (see engine.journal); what was removed."""

    def containers(dead_id: str, keep: list[str]) -> list[str]:
        return docker_target.remove_labelled(docker_target.connect(), dead_id, keep)[0]

    return journal.sweep(
        store, containers, docker_target.remove_images, build_id=build_id, release_host=journal.release_host(store)
    )


def clean(store: Store, build_id: str | None = None) -> tuple[list[str], list[str]]:
    """Remove the containers, checkpoint images and partial files that dead and kept
    builds left: (what was removed, containers of running builds that were left alone)."""
    live_ids = set(journal.live_builds(store))
    if build_id is not None and build_id in live_ids:
        raise UsageError(f"build {build_id} is still running", hint="stop it (Ctrl-C) or wait for it to end")
    removed = sweep(store, build_id)
    names, live = docker_target.remove_labelled(docker_target.connect(), build_id)
    removed += [f"container {name}" for name in names]
    records = [build_record(store, build_id)] if build_id else list(store.builds())
    for record in records:
        if record["buildId"] in live_ids:
            continue
        images = (record.get("checkpoints") or {}).values()
        removed += [f"checkpoint image {image}" for image in docker_target.remove_images(list(images))]
        if record.get("kept") or record.get("status") == "running" or record.get("checkpoints"):
            store.put_build(
                record["buildId"],
                {
                    **record,
                    "kept": False,
                    "checkpoints": {},
                    "status": "cleaned" if record.get("status") == "running" else record["status"],
                },
            )
    if not live_ids:  # a running build's partial files are its own
        for partial in sorted(store.root.rglob("*.partial")):
            partial.unlink(missing_ok=True)
            removed.append(f"partial file {partial}")
    return removed, live
