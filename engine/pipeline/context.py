"""The state of one build, shared by its phases: what it was given, what it has made."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import customizers
from customizers.base import Customizer, Step
from distributors.base import Distributor, RunOutput
from engine.errors import AibLocalError, BuildFailed, UsageError, ValidationFailed
from engine.events import BuildLog, Events, Redactor, Reporter, utc_now
from engine.journal import Journal
from engine.pipeline.options import LOG_NAME, BuildOptions, Continuation, Deadline, new_build_id
from engine.records import TEMPLATE_TYPE
from engine.store import Store
from engine.targets.base import Target
from engine.template import model as m
from engine.template.loading import LoadedTemplate

if TYPE_CHECKING:
    from engine.images import Client
    from engine.step_cache import Entry, StepCache


@dataclass
class Source:
    """Where the build starts from: a local image (and its ID), or a target that is its own."""

    record: dict[str, Any] = field(default_factory=dict)  # as the build record keeps it
    image_ref: str = ""
    image_id: str = ""
    os_type: str | None = None  # when the source says it (a stored image's osType)


@dataclass
class BuildContext:
    """One build of one template: its inputs, its target, and what it has done so far."""

    loaded: LoadedTemplate
    options: BuildOptions
    store: Store
    build_id: str
    template_id: str
    events: Events
    log: BuildLog
    redact: Redactor
    deadline: Deadline
    journal: Journal
    continuation: Continuation | None = None
    customizers: list[tuple[str, Customizer[Any]]] = field(default_factory=list)
    validators: list[tuple[str, Customizer[Any]]] = field(default_factory=list)  # validate.inVMValidations
    distributors: list[Distributor[Any]] = field(default_factory=list)
    target: Target | None = None
    source: Source = field(default_factory=Source)
    os_type: str = "Linux"
    has_pwsh: bool = False
    fetched: dict[str, Path] = field(default_factory=dict)
    fingerprints: list[str] = field(default_factory=list)
    plans: list[tuple[str, list[Step]]] = field(default_factory=list)
    validation_plans: list[tuple[str, list[Step]]] = field(default_factory=list)
    failed_validation: ValidationFailed | None = None  # kept for the end when distribution went on
    completed: list[int] = field(default_factory=list)
    # The step cache (engine.pipeline.cache): each customizer's key, the index from which
    # states are kept again (--cache-from), the entry the target started from, and the
    # seconds of customizer work since the last kept or restored point.
    cache: StepCache | None = None
    cache_keys: list[str] = field(default_factory=list)
    cache_from: int = 0
    restored: Entry | None = None
    unkept: float = 0.0
    generalized: bool = False
    run_outputs: list[RunOutput] = field(default_factory=list)
    current: str = "validate"  # the phase or step under way, for messages and statuses
    keep_target: bool = False  # the user asked to keep it (--debug abort, --on-error ask)
    cancelled: bool = False
    engine_silent: bool = False  # the Docker engine timed out: teardown asks nothing more of it
    started_at: str = field(default_factory=utc_now)
    _docker: Client | None = None

    @classmethod
    def create(
        cls,
        loaded: LoadedTemplate,
        options: BuildOptions,
        store: Store,
        reporter: Reporter,
        *,
        build_id: str | None = None,
        continuation: Continuation | None = None,
    ) -> BuildContext:
        build_id = build_id or new_build_id(loaded.name)
        log = BuildLog(store.build_dir(build_id) / LOG_NAME, build_id)
        redact = Redactor(options.secrets.values())
        template_id = (
            f"/subscriptions/{options.subscription}/resourceGroups/{options.resource_group}"
            f"/providers/{TEMPLATE_TYPE}/{loaded.name}"
        )
        return cls(
            loaded=loaded,
            options=options,
            store=store,
            build_id=build_id,
            template_id=template_id,
            events=Events(log, reporter, redact=redact),
            log=log,
            redact=redact,
            deadline=Deadline(loaded.properties.timeout_minutes),
            journal=Journal(store, build_id, template_id),
            continuation=continuation,
            customizers=[
                (customizer_name(i, c), customizers.create(c)) for i, c in enumerate(loaded.properties.customize)
            ],
            validators=[
                (validator_name(i, v), customizers.create(v)) for i, v in enumerate(validations(loaded.properties))
            ],
            os_type=loaded.os_type,
        )

    @property
    def props(self) -> m.Properties:
        return self.loaded.properties

    @property
    def on_kept_target(self) -> bool:
        return self.continuation is not None  # a rerun

    @property
    def source_validation_only(self) -> bool:
        """validate.sourceValidationOnly (or `boot --validate`): the source is validated as
        it is, nothing is built."""
        section = self.props.validate_
        return bool(section and section.source_validation_only) or self.options.validate_disk is not None

    @property
    def continue_distribute_on_failure(self) -> bool:
        section = self.props.validate_
        return bool(section and section.continue_distribute_on_failure)

    def on_error(self, error: AibLocalError | None = None) -> str:
        """cleanup | abort | ask after `error`: the command line's, else the template's
        errorHandling (onValidationError for a failed validation, onCustomizerError else)."""
        if self.options.on_error:
            return self.options.on_error
        handling = self.props.error_handling
        if handling is None:
            return "cleanup"
        if isinstance(error, ValidationFailed):
            return str(handling.on_validation_error)
        return str(handling.on_customizer_error)

    @property
    def step_names(self) -> list[str]:
        """Customizers, then validators: the steps rerun --from/--only and failedIndex count."""
        return [name for name, _ in self.customizers] + [name for name, _ in self.validators]

    def require_target(self) -> Target:
        if self.target is None:
            raise BuildFailed("no target is running", step=self.current)
        return self.target

    def docker(self) -> Client:
        """The local Docker engine, connected on first use (SSH builds may never need it)."""
        if self._docker is None:
            from engine import images

            self._docker = images.connect()
        return self._docker


def customizer_name(index: int, section: Any) -> str:
    return f"customize[{index}] {section.name or section.type}"


def validator_name(index: int, section: Any) -> str:
    return f"validate[{index}] {section.name or section.type}"


def step_index(loaded: LoadedTemplate, name: str) -> int:
    """The index of a customizer or validator (validators count on after the customizers),
    given by its name, 'customize[N]', 'validate[N]', or N (a customizer)."""
    customize, validators = loaded.properties.customize, validations(loaded.properties)
    names = [c.name for c in customize] + [v.name for v in validators]
    if name in names:
        return names.index(name)
    text = name.removeprefix("customize[").removesuffix("]")
    if text.isdigit() and int(text) < len(customize):
        return int(text)
    text = name.removeprefix("validate[").removesuffix("]")
    if name.startswith("validate[") and text.isdigit() and int(text) < len(validators):
        return len(customize) + int(text)
    known = ", ".join(f"{i}:{c.name or c.type}" for i, c in enumerate(customize))
    if validators:
        known += "; validators: " + ", ".join(f"validate[{i}]:{v.name or v.type}" for i, v in enumerate(validators))
    raise UsageError(f"no customizer or validator {name!r} in {loaded.name} (customizers: {known})")


def validations(props: m.Properties) -> list[Any]:
    return list(props.validate_.in_vm_validations) if props.validate_ else []
