"""`build --watch`: after each run, wait until the template or a file on this machine it
reads (a local script, a mapped URL's working copy, the project's aib-local.json) changes.

Polling: a build reads a handful of files, and a stat of each twice a second costs
nothing, where a file-system notification library would add a dependency and miss
editors that replace a file by renaming another over it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import customizers
from engine.errors import AibLocalError
from engine.fetch import local_source
from engine.template.loading import LoadedTemplate
from engine.uri_map import project_file

POLL_SECONDS = 0.5
Stamp = tuple[int, int] | None  # (mtime in ns, size); None: the file does not exist


def watched(templates: Iterable[Path], loaded: Iterable[LoadedTemplate]) -> list[Path]:
    """The files whose change starts a new run: the templates, their project files, and
    every file on this machine their customizers and validators read."""
    found: dict[Path, None] = {}
    for path in templates:
        found[path.resolve()] = None
        project = project_file(path)
        if project is not None:
            found[project.resolve()] = None
    for item in loaded:
        props = item.properties
        sections = [*props.customize, *(props.validate_.in_vm_validations if props.validate_ else [])]
        for section in sections:
            for needed in customizers.create(section).inputs():
                try:
                    source = local_source(needed.uri, item.base_dir, item.uri_map)
                except AibLocalError:
                    continue  # the build said why it cannot read it
                if source is not None:
                    found[source.resolve()] = None
    return list(found)


def stamps(paths: list[Path]) -> dict[Path, Stamp]:
    result: dict[Path, Stamp] = {}
    for path in paths:
        try:
            status = path.stat()
            result[path] = (status.st_mtime_ns, status.st_size)
        except OSError:
            result[path] = None
    return result


def wait_for_change(before: dict[Path, Stamp], poll: float = POLL_SECONDS) -> list[Path]:
    """Block until one of the files changes from its stamp in `before` (taken when the run
    began, so that a save during the run counts): written, replaced, created or removed;
    which did. A burst of writes (an editor saving) is let settle for one more poll."""
    paths = list(before)
    while True:
        now = stamps(paths)
        if now != before:
            time.sleep(poll)
            now = stamps(paths)
            return [path for path in paths if now[path] != before[path]] or paths[:1]
        time.sleep(poll)
