"""The boot-test phase (`build --boot-test`): boot what a VM build just made, in a
throw-away VM, before anyone uploads it. The first VHD run output is booted, else the
first managed image or gallery version; the build fails when it does not come up. The
template's in-VM validators then run again in the booted image (`boot-test validate[N]
...` steps): what AIB checked on the build VM must still hold after deprovisioning,
capture and a first boot of its own."""

from __future__ import annotations

from engine.boot import boot
from engine.errors import BuildFailed, ValidationFailed
from engine.pipeline.context import BuildContext
from engine.pipeline.customize import run_planned
from engine.pipeline.steps import StepRunner
from engine.targets.base import Target

PHASE = "boot-test"


def boot_test(ctx: BuildContext, steps: StepRunner) -> None:
    outputs = [o for o in ctx.run_outputs if o.provisioning_state == "Succeeded"]
    artifact = next((o.artifact_uri for o in outputs if o.artifact_uri), None) or next(
        (o.artifact_id for o in outputs if o.artifact_id), None
    )
    if artifact is None:
        ctx.events.info("boot test: no distribution made a disk to boot", step=PHASE)
        return

    def validate(booted: Target) -> None:
        built, ctx.target = ctx.target, booted
        try:
            for place, (name, planned) in enumerate(ctx.validation_plans):
                ctx.current = f"{PHASE} {name}"
                run_planned(steps, len(ctx.customizers) + place, ctx.current, planned)
        except BuildFailed as exc:
            raise ValidationFailed(
                f"the booted image failed its validation: {exc.message}", step=exc.step, exit_code=exc.step_exit_code
            ) from None
        finally:
            ctx.target, ctx.current = built, PHASE

    def run() -> None:
        report = boot(
            ctx.store,
            artifact,
            vm_size=ctx.props.vm_profile.vm_size,
            generation=str(ctx.source.record.get("hyperVGeneration", "V1")),
            within=min(600.0, ctx.deadline.remaining()),
            report=lambda message: ctx.events.info(message, step=PHASE),
            on_booted=validate if ctx.validation_plans else None,
        )
        if not report.booted:
            raise BuildFailed(f"the image did not boot: {report.error}", step=PHASE)
        ctx.events.info(f"{artifact} boots: SSH answered after {report.seconds_to_ssh}s", step=PHASE)

    steps.action(PHASE, run, detail=f"boot {artifact} in a throw-away VM")
