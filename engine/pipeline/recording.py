"""What a build writes about itself: its build record, and the image template's record
with AIB's lastRunStatus (runState, runSubState, message, start and end times)."""

from __future__ import annotations

import dataclasses

from engine.errors import AibLocalError
from engine.events import utc_now
from engine.pipeline.context import BuildContext
from engine.records import BuildRecord, RunStatus, TemplateLocal, TemplateRecord, write_build, write_template


def template_status(ctx: BuildContext, run_state: str, sub_state: str | None, message: str = "") -> None:
    """The image template's record, with lastRunStatus as AIB would show it."""
    if ctx.on_kept_target and ctx.continuation is not None and not ctx.continuation.finish:
        return  # rerunning customizers on a kept target is debugging, not a run of the template
    if ctx.options.validate_disk is not None:
        return  # validating another disk with its validators (`boot --validate`) is not a run of it
    template = ctx.loaded.template
    # As Azure keeps it, but without SAS signatures or secret values: `show` prints it.
    properties = ctx.redact.deep(template.properties.model_dump(mode="json", by_alias=True, exclude_unset=True))
    record = TemplateRecord(
        name=ctx.loaded.name,
        location=template.location,
        tags=dict(template.tags),
        properties=properties,
        aib_local=TemplateLocal(template_file=str(ctx.loaded.path), last_build_id=ctx.build_id),
    )
    record.set_last_run(
        RunStatus(
            run_state=run_state,
            run_sub_state=sub_state or None,
            message=message,
            start_time=ctx.started_at,
            end_time=None if run_state == "Running" else utc_now(),
        )
    )
    record.properties["provisioningState"] = "Succeeded"
    write_template(ctx.store, ctx.template_id, record)


def build_record(
    ctx: BuildContext, status: str, *, error: AibLocalError | None = None, kept: bool = False
) -> BuildRecord:
    """The build record as it stands."""
    record = BuildRecord(
        build_id=ctx.build_id,
        status=status,
        template=str(ctx.loaded.path.resolve()),
        template_name=ctx.loaded.name,
        template_id=ctx.template_id,
        log_path=str(ctx.log.path),
        kept=kept,
        target=ctx.target.info() if ctx.target else None,
        source=ctx.source.record,
        options=ctx.options.stored(),
        reading=dataclasses.asdict(ctx.loaded.options) if ctx.loaded.options else {},
        customizers=[name for name, _ in ctx.customizers],
        validators=[name for name, _ in ctx.validators],
        fingerprints=ctx.fingerprints,
        completed=ctx.completed,
        started_at=ctx.started_at,
        updated_at=utc_now(),
        continues=ctx.continuation.record.build_id if ctx.continuation is not None else None,
    )
    if error is not None:
        step = getattr(error, "step", ctx.current)
        record.failed_step = step
        failed = [i for i, name in enumerate(ctx.step_names) if name == step]
        record.failed_index = failed[0] if failed else None
        record.message = str(error)
    return record


def build_running(ctx: BuildContext) -> None:
    write_build(ctx.store, build_record(ctx, "running"))


def build_ended(ctx: BuildContext, status: str, error: AibLocalError | None, kept: bool) -> None:
    write_build(ctx.store, build_record(ctx, status, error=error, kept=kept))
