"""Coming back to a build: rerun customizers on its kept target, or build its template
again (`--resume`, which the step cache now does for every build), with the template
file read again so that edits are picked up."""

from __future__ import annotations

from pathlib import Path

from engine.errors import UsageError
from engine.events import Reporter
from engine.pipeline.context import step_index
from engine.pipeline.loop import BuildRun
from engine.pipeline.options import BuildOptions, Continuation
from engine.records import BuildRecord, require_build
from engine.store import Store
from engine.template.loading import LoadedTemplate, LoadOptions, load_templates


def reload_template(
    record: BuildRecord, allow_any_destination: bool = False, map_uri: tuple[str, ...] = ()
) -> LoadedTemplate:
    """The build's template file, read again (so edits are picked up) and validated; with
    the build's --map-uri, after `map_uri` (for the same prefix, the newer wins)."""
    path = Path(record.template)
    reading = LoadOptions(**record.reading) if record.reading else LoadOptions()
    reading.allow_any_destination = reading.allow_any_destination or allow_any_destination
    reading.map_uri = (*map_uri, *reading.map_uri)
    for loaded in load_templates(path, options=reading):
        if loaded.name == record.template_name:
            return loaded
    raise UsageError(f"{path} no longer holds the image template {record.template_name!r}")


def rerun(
    store: Store,
    build_id: str,
    base: BuildOptions,
    reporter: Reporter,
    *,
    start: str | None = None,
    only: str | None = None,
    finish: bool = False,
    map_uri: tuple[str, ...] = (),
) -> BuildRun:
    """A build that runs customizers again on the kept target of `build_id`."""
    record = require_build(store, build_id)
    options = base.with_stored(record.options)
    loaded = reload_template(record, options.allow_any_destination, map_uri)
    if start and only:
        raise UsageError("give --from or --only, not both")
    # By default: from the step that failed (the one being debugged).
    first = step_index(loaded, start or only or "") if start or only else (record.failed_index or 0)
    continuation = Continuation(record, first=first, only=bool(only), finish=finish)
    return BuildRun(loaded, options, store, reporter, build_id=build_id, continuation=continuation)


def resume(store: Store, build_id: str, base: BuildOptions, reporter: Reporter, templates: list[Path]) -> BuildRun:
    """`build --resume BUILD_ID`, from before the step cache: a new build of BUILD_ID's
    template with its options, which starts from what the step cache kept."""
    record = require_build(store, build_id)
    options = base.with_stored(record.options)
    if templates and Path(templates[0]).resolve() != Path(record.template):
        raise UsageError(f"build {build_id} built {record.template}, not {templates[0]}")
    loaded = reload_template(record, options.allow_any_destination)
    run = BuildRun(loaded, options, store, reporter)
    run.ctx.events.warning(
        f"--resume is the step cache now: every build starts from the longest kept prefix of its customizers; "
        f"this is a new build of {record.template} (next time: aib-local build {record.template})"
    )
    return run
