"""One build, as data: the phase list, one loop, one deadline, teardown at the end.

fetch → resolve source → look up the step cache → start target (or attach to a kept one)
→ plan → customize → validate → deprovision → capture → distribute. Each phase is a function of the build's context;
AIB's runSubState changes with them. Whatever happens, the end is the same: the target
is kept or removed, what no record took is removed, the outcome is recorded and told.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from engine import failpoints, signals
from engine.errors import (
    AibLocalError,
    BuildFailed,
    EnvironmentProblem,
    Interrupted,
    UsageError,
    ValidationFailed,
    engine_fault,
)
from engine.events import Reporter
from engine.pipeline.boottest import boot_test
from engine.pipeline.cache import look_up
from engine.pipeline.context import BuildContext
from engine.pipeline.customize import customize, plan
from engine.pipeline.deprovision import deprovision
from engine.pipeline.distribute import capture, distribute
from engine.pipeline.inputs import fetch_inputs
from engine.pipeline.machine import attach_target, start_target
from engine.pipeline.options import BuildOptions, BuildResult, Continuation
from engine.pipeline.recording import build_ended, build_running, template_status
from engine.pipeline.source import resolve_source
from engine.pipeline.steps import StepRunner
from engine.pipeline.teardown import claim, discard_pending, teardown
from engine.pipeline.validate import end as validation_end
from engine.pipeline.validate import validate
from engine.store import Store
from engine.template.loading import LoadedTemplate


def _always(_: BuildContext) -> bool:
    return True


def _fresh(ctx: BuildContext) -> bool:
    return not ctx.on_kept_target


def _rerun(ctx: BuildContext) -> bool:
    return ctx.on_kept_target


def _customizing(ctx: BuildContext) -> bool:
    return not ctx.source_validation_only


def _fresh_customizing(ctx: BuildContext) -> bool:
    return _fresh(ctx) and _customizing(ctx)


def _validating(ctx: BuildContext) -> bool:
    return bool(ctx.validators)


def _finishing(ctx: BuildContext) -> bool:
    """Deprovision, capture and distribute: not for a rerun without --finish, nor when
    only the source is validated."""
    finish = ctx.continuation is None or ctx.continuation.finish
    return finish and not ctx.source_validation_only


def _boot_testing(ctx: BuildContext) -> bool:
    return _finishing(ctx) and ctx.options.boot_test


@dataclass(frozen=True)
class Phase:
    """A phase of a build: its name (events, fault points, messages), AIB's runSubState
    while it runs, what it does, and whether a build (fresh, rerun, resume, what the
    template asks) runs it."""

    name: str
    sub_state: str | None  # AIB's runSubState while it runs (None: it stays as it was)
    action: Callable[[BuildContext, StepRunner], None]
    runs: Callable[[BuildContext], bool] = _always  # whether it runs in this build


def _fetch(ctx: BuildContext, _: StepRunner) -> None:
    fetch_inputs(ctx)


def _resolve(ctx: BuildContext, _: StepRunner) -> None:
    resolve_source(ctx)


PHASES: tuple[Phase, ...] = (
    Phase("fetch", "Queued", _fetch),
    Phase("attach-target", "Building", attach_target, _rerun),
    Phase("resolve-source", "Building", _resolve, _fresh),
    Phase("look-up-cache", "Building", look_up, _fresh_customizing),
    Phase("start-target", "Building", start_target, _fresh),
    Phase("plan", "Building", plan),
    Phase("customize", "Customizing", customize, _customizing),
    Phase("validate", "Validating", validate, _validating),
    Phase("deprovision", None, deprovision, _finishing),  # the end of customizing (or validating)
    Phase("capture", "Distributing", capture, _finishing),
    Phase("distribute", "Distributing", distribute, _finishing),
    Phase("boot-test", "Distributing", boot_test, _boot_testing),
)


def status_of(error: AibLocalError | None, ctx: BuildContext) -> str:
    """AIB's runState for how the build ended."""
    if isinstance(error, Interrupted):
        return "Canceled"
    if error is None:
        return "Succeeded"
    if isinstance(error, ValidationFailed) or ctx.failed_validation is not None:
        return "Failed"  # a failed validation fails the run, distributed or not
    ok = [o for o in ctx.run_outputs if o.provisioning_state == "Succeeded"]
    return "PartiallySucceeded" if ok and ctx.current == "distribute" else "Failed"


class BuildRun:
    """A build of one template: `run()` it (once), or `cancel()` it from another thread."""

    def __init__(
        self,
        loaded: LoadedTemplate,
        options: BuildOptions,
        store: Store,
        reporter: Reporter,
        *,
        build_id: str | None = None,
        continuation: Continuation | None = None,
    ) -> None:
        self.ctx = BuildContext.create(loaded, options, store, reporter, build_id=build_id, continuation=continuation)
        self.steps = StepRunner(self.ctx)
        self.timings: dict[str, float] = {}  # seconds each phase took, in the order run

    @property
    def build_id(self) -> str:
        return self.ctx.build_id

    def phases(self) -> list[Phase]:
        """The phases this build runs (a rerun attaches; one without --finish stops after customize)."""
        return [phase for phase in PHASES if phase.runs(self.ctx)]

    def run(self) -> BuildResult:
        ctx = self.ctx
        started = time.monotonic()
        try:
            claim(ctx)
        except UsageError as exc:
            ctx.log.close()
            return BuildResult(ctx.build_id, "Failed", [], ctx.log.path, False, exc)
        error: AibLocalError | None = None
        try:
            self._start()
            sub_state = "Queued"
            for phase in self.phases():
                ctx.current = phase.name
                self.steps.check_deadline()
                if phase.sub_state not in (None, sub_state):  # AIB's runSubState changes a few times a build
                    sub_state = phase.sub_state
                    template_status(ctx, "Running", sub_state)
                failpoints.hit(f"phase:{phase.name}")
                begun = time.monotonic()
                try:
                    phase.action(ctx, self.steps)
                finally:
                    self.timings[phase.name] = round(time.monotonic() - begun, 3)
            validation_end(ctx)
        except KeyboardInterrupt:
            error = Interrupted(f"interrupted during {ctx.current}")
        except AibLocalError as exc:
            error = Interrupted(f"interrupted during {ctx.current}") if ctx.cancelled else exc
        except BaseException as exc:
            if not engine_fault(exc):  # a defect: still nothing left behind (a rerun's target stays)
                with signals.held():
                    kept = teardown(ctx, Interrupted("stopped by an internal error"))
                    discard_pending(ctx)
                    self._end(BuildFailed(f"internal error: {exc!r}", step=ctx.current), kept, started)
                raise
            # The Docker engine went away (stopped, crashed, its socket gone): a fault underneath, named.
            error = Interrupted(f"interrupted during {ctx.current}") if ctx.cancelled else engine_gone(exc, ctx.current)
            ctx.engine_silent = "Timeout" in type(exc).__name__  # requests' ReadTimeout, ConnectTimeout
        with signals.held():  # from here on, a signal cannot break into the cleanup
            failpoints.hit("teardown")
            begun = time.monotonic()
            kept = teardown(ctx, error)
            discard_pending(ctx)
            self.timings["teardown"] = round(time.monotonic() - begun, 3)
            error = self._end(error, kept, started)
        if isinstance(error, BuildFailed) and error.log_path is None:
            error.log_path = ctx.log.path
        if error is not None:
            error.message = ctx.redact(error.message)
        return BuildResult(ctx.build_id, status_of(error, ctx), ctx.run_outputs, ctx.log.path, kept, error)

    def _start(self) -> None:
        ctx = self.ctx
        ctx.events.emit(
            "build-started",
            buildId=ctx.build_id,
            template=str(ctx.loaded.path),
            templateId=ctx.template_id,
            target=ctx.options.target,
            logPath=str(ctx.log.path),
            timeoutMinutes=ctx.props.timeout_minutes,
        )
        for finding in ctx.loaded.findings:
            if finding.severity == "warning":
                ctx.events.warning(finding.describe())
            elif finding.severity == "note":
                ctx.events.info(f"note: {finding.describe()}")
        build_running(ctx)
        template_status(ctx, "Running", "Queued")

    def _end(self, error: AibLocalError | None, kept: bool, started: float) -> AibLocalError | None:
        """Record the outcome, report it, close the log and the journal entry."""
        ctx = self.ctx
        rejected = [f for f in ctx.loaded.findings if f.severity == "warning" and f.aib_rejects]
        if rejected:
            ctx.events.warning(
                f"AIB would reject this template: {len(rejected)} finding(s); "
                f"aib-local validate --strict {ctx.loaded.path} lists them (build --strict refuses it)"
            )
        status = status_of(error, ctx)
        message = "" if error is None else str(error)
        try:
            template_status(ctx, status, None, message)
            build_ended(ctx, status.lower(), error, kept)
        except AibLocalError as exc:  # the store's disk is full, say: the build's own error comes first
            ctx.events.warning(f"could not record the outcome: {exc}")
            error = error or exc
        ctx.events.emit(
            "build-finished",
            buildId=ctx.build_id,
            status=status,
            duration=round(time.monotonic() - started, 3),
            phases=self.timings,
            message=message,
            kept=kept,
            runOutputs=[{"name": o.name, **o.properties()} for o in ctx.run_outputs],
        )
        ctx.log.close()
        ctx.journal.close()
        return error

    def cancel(self) -> None:
        """Stop the build from another thread: its target goes, and the build ends Canceled."""
        self.ctx.cancelled = True
        target = self.ctx.target
        if target is not None:
            with contextlib.suppress(AibLocalError):
                target.remove()


def engine_gone(exc: BaseException, phase: str) -> EnvironmentProblem:
    text = str(getattr(exc, "explanation", None) or exc).splitlines()
    return EnvironmentProblem(
        f"the Docker engine failed during {phase}: {(text[0] if text else type(exc).__name__)[:300]} "
        "(a fault of the engine, not of the build)",
        hint="is the engine still running? (docker info; sudo systemctl start docker, or fixtures/ensure-docker.sh); "
        "then aib-local clean removes what this build left in it",
    )


def run_all(builds: list[BuildRun], parallel: int = 1) -> list[BuildResult]:
    """Run builds, `parallel` at a time; Ctrl-C cancels the running ones (their cleanup runs)."""
    if parallel <= 1 or len(builds) <= 1:
        return [build.run() for build in builds]
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="build") as pool:
        futures = [pool.submit(build.run) for build in builds]
        try:
            return [future.result() for future in futures]
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            for build in builds:
                build.cancel()
            wait(futures)
            raise
