"""The validate phase: AIB's in-VM validators (properties.validate.inVMValidations).

They run on the build machine after the customizers and before it is deprovisioned
(generalized), captured and distributed; with sourceValidationOnly they run on the
source image as it is, and nothing is customized or distributed. A validator is a
Shell, PowerShell or File step with the customizer's fields and rules, so it is planned
and run the same way. A failed validator fails the run (exit 1, lastRunStatus Failed)
whatever happens next: by default nothing is distributed; with
continueDistributeOnFailure the build goes on to distribute, then fails all the same.
errorHandling.onValidationError (or --on-error) decides whether the target stays.
"""

from __future__ import annotations

from engine.errors import BuildFailed, BuildTimeout, ValidationFailed
from engine.pipeline.context import BuildContext
from engine.pipeline.customize import run_in_order
from engine.pipeline.steps import StepRunner

PHASE = "validate"


def validate(ctx: BuildContext, steps: StepRunner) -> None:
    if ctx.source_validation_only and ctx.options.validate_disk is None:
        ctx.events.info(
            "validate.sourceValidationOnly: the source image is validated as it is; "
            "no customizer runs and nothing is distributed",
            step=PHASE,
        )
    try:
        run_in_order(ctx, steps, ctx.validation_plans, offset=len(ctx.customizers))
    except BuildTimeout:
        raise
    except BuildFailed as exc:
        failed = ValidationFailed(f"validation failed: {exc.message}", step=exc.step, exit_code=exc.step_exit_code)
        if not ctx.continue_distribute_on_failure or ctx.source_validation_only:
            raise failed from None
        ctx.failed_validation = failed
        ctx.events.warning(
            f"{failed}; distributing all the same (validate.continueDistributeOnFailure), "
            "the run will be reported Failed",
            step=exc.step,
        )


def end(ctx: BuildContext) -> None:
    """After the last phase: a validation that failed earlier fails the run now."""
    if ctx.failed_validation is not None:
        distributed = [o.name for o in ctx.run_outputs if o.provisioning_state == "Succeeded"]
        failed = ctx.failed_validation
        if distributed:
            failed.message += f" (distributed all the same: {', '.join(distributed)})"
        raise failed
