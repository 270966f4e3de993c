"""The store's own records, each declared once: a build, its stored options, and the
image template's record with its lastRunStatus.

They are read and written only through these models (camelCase on disk, as before), so
a field is named in one place. Fields a newer aib-local wrote are kept on a round trip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from engine.errors import StoreDamaged, UsageError
from engine.events import utc_now
from engine.store import DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION, Store

TEMPLATE_TYPE = "Microsoft.VirtualMachineImages/imageTemplates"
RUNNING = "running"


class _Record(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StoredOptions(_Record):
    """The command-line options a rerun or resume reuses (never the secrets)."""

    target: str = "docker"
    network: str | None = None
    init: str = "auto"
    deprovision: str = "generic"
    allow_any_destination: bool = False
    powershell_strict: bool = False
    subscription: str = DEFAULT_SUBSCRIPTION
    resource_group: str = DEFAULT_RESOURCE_GROUP
    catalogue: str | None = None
    checkpoint: bool = False


class BuildRecord(_Record):
    """STORE/builds/BUILD_ID/build.json: one build, as `list`, `rerun` and `clean` see it."""

    build_id: str
    status: str  # running | succeeded | partiallysucceeded | failed | canceled | cleaned
    template: str  # the template file
    template_name: str
    template_id: str = ""
    log_path: str = ""
    kept: bool = False
    target: dict[str, Any] | None = None  # the target's info(), to attach to it again
    source: dict[str, Any] = Field(default_factory=dict)
    options: StoredOptions = Field(default_factory=StoredOptions)
    reading: dict[str, Any] = Field(default_factory=dict)  # how the template was read (LoadOptions)
    customizers: list[str] = Field(default_factory=list)
    validators: list[str] = Field(default_factory=list)
    fingerprints: list[str] = Field(default_factory=list)
    completed: list[int] = Field(default_factory=list)
    checkpoints: dict[str, str] = Field(default_factory=dict)  # customizer index -> image
    started_at: str = ""
    updated_at: str = ""
    continues: str | None = None  # the build a rerun or resume picked up
    failed_step: str | None = None
    failed_index: int | None = None  # among the customizers, then the validators
    message: str | None = None

    @property
    def running(self) -> bool:
        return self.status == RUNNING


def read_build(store: Store, build_id: str) -> BuildRecord | None:
    raw = store.get_build(build_id)
    return None if raw is None else _parse_build(raw, store.build_dir(build_id) / "build.json")


def require_build(store: Store, build_id: str) -> BuildRecord:
    """The record of `build_id`; UsageError when the store has none."""
    record = read_build(store, build_id)
    if record is None:
        raise UsageError(f"no build {build_id!r} in the store {store.root}", hint="aib-local list --type builds")
    return record


def write_build(store: Store, record: BuildRecord) -> None:
    store.put_build(record.build_id, record.dump())


def builds(store: Store) -> Iterator[BuildRecord]:
    """Every readable build record (one that is damaged or not a build record is noted in
    the store's `damaged` and passed over)."""
    for path, raw in store.builds():
        try:
            yield _parse_build(raw, path)
        except StoreDamaged as exc:
            store.note_damaged(exc)


def _parse_build(raw: dict[str, Any], path: Path) -> BuildRecord:
    try:
        return BuildRecord.model_validate(raw)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(p) for p in problem["loc"]) or "the record"
        raise StoreDamaged(path, f"not a build record ({field}: {problem['msg']})") from None


class RunStatus(_Record):
    """An image template's lastRunStatus, as AIB reports it."""

    run_state: str  # Running | Succeeded | PartiallySucceeded | Failed | Canceled
    run_sub_state: str | None = None  # Queued | Building | Customizing | Distributing
    message: str = ""
    start_time: str = ""
    end_time: str | None = None


class TemplateLocal(_Record):
    template_file: str = ""
    last_build_id: str = ""


class TemplateRecord(_Record):
    """The image template's resource record (what `aib-local show` prints)."""

    name: str
    type: str = TEMPLATE_TYPE
    location: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    properties: dict[str, Any] = Field(default_factory=dict)  # as Azure keeps them, plus lastRunStatus
    aib_local: TemplateLocal = Field(default_factory=TemplateLocal)

    @property
    def last_run(self) -> RunStatus | None:
        raw = self.properties.get("lastRunStatus")
        try:
            return RunStatus.model_validate(raw) if raw else None
        except ValidationError:
            return None

    def set_last_run(self, status: RunStatus) -> None:
        self.properties["lastRunStatus"] = status.dump()


def read_template(store: Store, template_id: str) -> TemplateRecord | None:
    raw = store.get(template_id) if template_id else None
    try:
        return TemplateRecord.model_validate(raw) if raw else None
    except ValidationError:
        return None


def write_template(store: Store, template_id: str, record: TemplateRecord) -> None:
    store.put(template_id, record.dump())


def mark_failed(store: Store, build_id: str, template_id: str, message: str) -> None:
    """A build whose process died: its record and (if it was the last run) its template's
    lastRunStatus say Failed with `message`, unless they had ended already."""
    with store.lock():
        record = read_build(store, build_id)
        if record is not None and record.running:
            ended = {"status": "failed", "message": message, "updated_at": utc_now()}
            write_build(store, record.model_copy(update=ended))
        template = read_template(store, template_id)
        if template is None or template.aib_local.last_build_id != build_id:
            return
        status = template.last_run
        if status is not None and status.run_state == "Running":
            failed = {"run_state": "Failed", "message": message, "end_time": utc_now(), "run_sub_state": None}
            template.set_last_run(status.model_copy(update=failed))
            write_template(store, template_id, template)
