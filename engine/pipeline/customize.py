"""The plan and customize phases: each customizer's steps, run in order on the target.

With --debug the user is asked before each customizer (and validator: they run the same
way, see engine.pipeline.validate): continue, shell, rerun the previous one, skip, abort.
The customizers the step cache restored are told as cached, and the state after those
worth keeping is kept (engine.pipeline.cache).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from customizers.base import Customizer, PlanContext, PlanError, Step
from engine.errors import BuildFailed
from engine.pipeline.cache import keep, report_cached
from engine.pipeline.context import BuildContext
from engine.pipeline.steps import StepRunner


def plan(ctx: BuildContext, steps: StepRunner) -> None:
    """Every customizer's and validator's steps, before any of them runs."""
    ctx.plans = plans_of(ctx, ctx.customizers)
    ctx.validation_plans = plans_of(ctx, ctx.validators)


def plans_of(ctx: BuildContext, entries: list[tuple[str, Customizer[Any]]]) -> list[tuple[str, list[Step]]]:
    known = PlanContext(ctx.os_type, ctx.fetched, ctx.has_pwsh, ctx.options.powershell_strict)
    plans: list[tuple[str, list[Step]]] = []
    for name, customizer in entries:
        try:
            plans.append((name, customizer.plan(known)))
        except PlanError as exc:
            raise BuildFailed(f"{name} cannot run here: {exc}", step=name) from None
    return plans


def customize(ctx: BuildContext, steps: StepRunner) -> None:
    first = report_cached(ctx)
    run_in_order(ctx, steps, ctx.plans[first:], offset=first, done=customizer_done)


def run_in_order(
    ctx: BuildContext,
    steps: StepRunner,
    plans: list[tuple[str, list[Step]]],
    *,
    offset: int,
    done: Callable[[BuildContext, int, str], None] | None = None,
) -> None:
    """Run planned entries in order: those the continuation selects (their index is
    `offset` + their place), each after --debug's question, then `done`."""
    previous: int | None = None
    for place, (name, planned) in enumerate(plans):
        index = offset + place
        if ctx.continuation is not None and not ctx.continuation.selects(index):
            continue
        ctx.current = name
        if ctx.options.pause is not None and not pause(ctx, steps, name, previous, plans, offset):
            ctx.events.info(f"{name} skipped (--debug)", step=name)
            continue
        started = time.monotonic()
        run_planned(steps, index, name, planned)
        ctx.unkept += time.monotonic() - started
        if done is not None:
            done(ctx, index, name)
        previous = place


def run_planned(steps: StepRunner, index: int, name: str, planned: list[Step]) -> None:
    for number, step in enumerate(planned):
        steps.execute(name, step, index=index, number=number)


def pause(
    ctx: BuildContext,
    steps: StepRunner,
    name: str,
    previous: int | None,
    plans: list[tuple[str, list[Step]]],
    offset: int,
) -> bool:
    """--debug: ask before `name` until the user continues (True) or skips (False)."""
    assert ctx.options.pause is not None
    while True:
        answer = ctx.options.pause(name)
        if answer == "continue":
            return True
        if answer == "skip":
            return False
        if answer == "shell":
            ctx.require_target().interactive_shell()
        elif answer == "rerun" and previous is not None:
            before, planned = plans[previous]
            run_planned(steps, offset + previous, before, planned)
        elif answer == "rerun":
            ctx.events.info("there is no previous step to rerun", step=name)
        elif answer == "abort":
            ctx.keep_target = True
            raise BuildFailed(f"aborted before {name} (--debug); the target is kept", step=name)


def customizer_done(ctx: BuildContext, index: int, name: str) -> None:
    ctx.completed.append(index)
    keep(ctx, index, name)
