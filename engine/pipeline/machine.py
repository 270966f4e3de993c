"""The start-target and attach-target phases: the machine the customizers run on.

A new build opens the target its --target names (engine.targets); a rerun attaches to
the target the earlier build kept. Either way the build then knows the target's OS and
whether it has PowerShell.
"""

from __future__ import annotations

import contextlib

from engine.errors import BuildFailed, EnvironmentProblem, UsageError
from engine.pipeline.context import BuildContext
from engine.pipeline.deprovision import place_windows_script
from engine.pipeline.recording import build_running
from engine.pipeline.source import check_distributors
from engine.pipeline.steps import StepRunner
from engine.targets.base import OpenRequest, TargetError
from engine.targets.registry import attach, for_spec
from engine.targets.snapshots import FOLDER as SNAPSHOTS

PWSH_PROBE = "command -v pwsh >/dev/null 2>&1"


def start_target(ctx: BuildContext, steps: StepRunner) -> None:
    try:
        open_target(ctx, steps)
    except (TargetError, BuildFailed, EnvironmentProblem) as exc:
        if ctx.restored is None:
            raise
        # The kept state went between the look-up and the start (removed by hand, a file of
        # it damaged): start from the source instead, and run every customizer.
        ctx.events.warning(
            f"the step cache's state after {ctx.restored.step} did not start ({str(exc)[:300]}): "
            "starting from the source, every customizer runs"
        )
        if ctx.target is not None:
            with contextlib.suppress(TargetError):
                ctx.target.remove()
            ctx.target = None
        if ctx.cache is not None:
            ctx.cache.forget(ctx.restored.key)
        ctx.restored = None
        open_target(ctx, steps)


def open_target(ctx: BuildContext, steps: StepRunner) -> None:
    options = ctx.options
    target = for_spec(options.target).open(
        OpenRequest(
            spec=options.target,
            build_id=ctx.build_id,
            template=ctx.loaded.name,
            image=ctx.source.image_id,
            os_type=ctx.os_type,
            vm_size=ctx.props.vm_profile.vm_size,
            network=options.network,
            init=options.init,
            ssh=options.ssh,
            progress=lambda message: ctx.events.info(message, step="start-target"),
            within=ctx.deadline.remaining(),
            folder=str(ctx.store.build_dir(ctx.build_id)),
            generation=str(ctx.source.record.get("hyperVGeneration", "V1")),
            snapshots=str(ctx.store.root / SNAPSHOTS) if options.vm_boot == "snapshot" else "",
            restore=ctx.restored.key if ctx.restored else "",
            store=str(ctx.store.root),
        )
    )
    ctx.target = target
    try:
        steps.action("start-target", target.start, detail=target.describe())
    finally:
        for note in target.notes:
            ctx.events.info(note, step="start-target")
        for warning in target.warnings:
            ctx.events.warning(warning)
    build_running(ctx)
    ctx.os_type = target.os_type
    if ctx.os_type == "Linux":
        ctx.has_pwsh = steps.probe(PWSH_PROBE) == 0
    else:
        place_windows_script(ctx, steps)


def attach_target(ctx: BuildContext, steps: StepRunner) -> None:
    """Rerun: connect to the kept target of the earlier build."""
    assert ctx.continuation is not None
    record = ctx.continuation.record
    if not record.kept or not record.target:
        raise UsageError(
            f"build {ctx.build_id} kept no target to rerun on",
            hint="keep one with --on-error abort (or --debug, abort); a new build restores what the step cache kept",
        )
    ctx.source.record = dict(record.source)
    ctx.source.image_id = str(record.target.get("image", ""))
    try:
        target = attach(record.target, ctx.build_id)
    except TargetError as exc:
        raise UsageError(str(exc), hint=f"start again with: aib-local build {ctx.loaded.path}") from None
    ctx.target = target
    ctx.journal.keep(target.name)
    ctx.os_type = target.os_type
    ctx.events.info(f"attached to the kept {target.describe()}", step="attach-target")
    if ctx.os_type == "Linux":
        ctx.has_pwsh = steps.probe(PWSH_PROBE) == 0
    if ctx.continuation.finish:
        ctx.distributors = check_distributors(ctx)
