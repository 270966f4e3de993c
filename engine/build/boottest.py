"""The boot-test phase (`build --boot-test`): boot what a VM build just made, in a
throw-away VM, before anyone uploads it. The first VHD run output is booted, else the
first managed image or gallery version; the build fails when it does not come up."""

from __future__ import annotations

from engine.boot import boot
from engine.build.context import BuildContext
from engine.build.steps import StepRunner
from engine.errors import BuildFailed


def boot_test(ctx: BuildContext, steps: StepRunner) -> None:
    outputs = [o for o in ctx.run_outputs if o.provisioning_state == "Succeeded"]
    artifact = next((o.artifact_uri for o in outputs if o.artifact_uri), None) or next(
        (o.artifact_id for o in outputs if o.artifact_id), None
    )
    if artifact is None:
        ctx.events.info("boot test: no distribution made a disk to boot", step="boot-test")
        return

    def run() -> None:
        report = boot(
            ctx.store,
            artifact,
            vm_size=ctx.props.vm_profile.vm_size,
            within=min(600.0, ctx.deadline.remaining()),
            report=lambda message: ctx.events.info(message, step="boot-test"),
        )
        if not report.booted:
            raise BuildFailed(f"the image did not boot: {report.error}", step="boot-test")
        ctx.events.info(f"{artifact} boots: SSH answered after {report.seconds_to_ssh}s", step="boot-test")

    steps.action("boot-test", run, detail=f"boot {artifact} in a throw-away VM")
