"""The capture and distribute phases: the target's disk made quiescent, then each
distribution written to the store, with its run output recorded as AIB records it."""

from __future__ import annotations

import time
from collections.abc import Iterator

from distributors.base import DistributeContext, DistributeError, FilesystemWriter, RunOutput
from engine.errors import BuildFailed
from engine.pipeline.context import BuildContext
from engine.pipeline.steps import StepRunner
from engine.records import TEMPLATE_TYPE
from engine.targets.base import TargetError


def capture(ctx: BuildContext, steps: StepRunner) -> None:
    if not ctx.distributors:
        ctx.events.info("no distributions: nothing to capture")
        return
    target = ctx.require_target()
    if not target.export_needs_stop:
        ctx.events.info(f"capture: the live filesystem of {target.describe()} is exported as it is", step="capture")
    elif target.captures_disk or any(d.needs_export for d in ctx.distributors):
        steps.action("capture", target.stop, detail=f"stop {target.describe()} so its disk is quiescent")
    else:
        detail = f"stop {target.describe()} at once: its filesystem is committed as it stands (as a paused commit)"
        steps.action("capture", target.halt, detail=detail)


def distribute(ctx: BuildContext, steps: StepRunner) -> None:
    target = ctx.require_target()
    failures = []
    for index, distributor in enumerate(ctx.distributors):
        section = distributor.section
        name = f"distribute[{index}] {section.run_output_name} ({section.type})"
        ctx.current = name
        steps.check_deadline()
        context = DistributeContext(
            captured=target,
            store=ctx.store,
            build_id=ctx.build_id,
            template_id=ctx.template_id,
            base_image=ctx.source.image_id,
            os_type=ctx.os_type,
            generalized=ctx.generalized,
            source=ctx.source.record,
            os_disk_size_gb=ctx.props.vm_profile.os_disk_size_gb,
            location=ctx.loaded.template.location,
            write_filesystem=filesystem_writer(ctx),
            journal=ctx.journal,
        )
        started = time.monotonic()
        ctx.events.emit("step-started", step=name)
        try:
            output = distributor.distribute(context)
        except (DistributeError, TargetError) as exc:
            output = RunOutput(section.run_output_name, provisioning_state="Failed")
            hint = getattr(exc, "hint", None)
            failures.append(f"{name}: {exc}" + (f" ({hint})" if hint else ""))
            steps.finished(name, started, "failed", message=str(exc))
        else:
            steps.finished(name, started, "succeeded")
            ctx.events.emit(
                "artifact",
                runOutputName=output.name,
                artifactId=output.artifact_id,
                artifactUri=output.artifact_uri,
                type=section.type,
            )
        ctx.run_outputs.append(output)
        ctx.store.put(
            f"{ctx.template_id}/runOutputs/{output.name}",
            {"name": output.name, "type": f"{TEMPLATE_TYPE}/runOutputs", "properties": output.properties()},
        )
    ctx.current = "distribute"  # some distributed and some failed: PartiallySucceeded
    if failures:
        raise BuildFailed(
            f"Failed in distributing {len(failures)} images out of total {len(ctx.distributors)}: "
            + "; ".join(failures),
            step="distribute",
        )


def filesystem_writer(ctx: BuildContext) -> FilesystemWriter:
    """Writes the captured filesystem as ext4 into a disk image, whatever the target was."""

    def write(stream: Iterator[bytes], image: str, offset: int, size: int | None) -> tuple[int, int]:
        from engine.ext4 import Ext4Writer

        candidates = [ctx.source.image_id] if ctx.source.image_id else []
        step = ctx.current
        writer = Ext4Writer(
            ctx.docker(), candidates, build_id=ctx.build_id, report=lambda message: ctx.events.info(message, step=step)
        )
        metered = ctx.events.metered(stream, step=ctx.current, label="filesystem export")
        return writer.write(metered, image, offset=offset, size=size)

    return write
