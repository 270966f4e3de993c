"""The start and the end of a build's life: claiming it, and whether its target stays.

`claim` clears what dead builds left and refuses a second live run of a template;
`decide_keep` is the whole keep/remove policy, as a pure function; `teardown` applies it.
"""

from __future__ import annotations

import contextlib

from engine import images, journal
from engine.errors import AibLocalError, EngineSilent, EnvironmentProblem, Interrupted, UsageError, engine_fault
from engine.pipeline.context import BuildContext
from engine.targets.base import TargetError
from engine.targets.registry import releaser

ABORT = "on-error abort"
KEPT = "kept"


def decide_keep(
    error: AibLocalError | None, *, on_error: str, rerun: bool, finishing: bool, user_keeps: bool
) -> str | None:
    """Why the target stays after the build, or None when it is removed.

    `on_error` is cleanup | abort | ask (asked already: `user_keeps` holds the answer, or
    --debug's abort); `rerun` means the build went on in an earlier build's kept target,
    which stays unless this rerun finished the build (`finishing`, and no error).
    """
    failed = error is not None and not isinstance(error, Interrupted)
    if failed and on_error == "abort":
        return ABORT
    if user_keeps or (failed and rerun):
        return KEPT
    if rerun and not (finishing and error is None):
        return KEPT
    return None


def teardown(ctx: BuildContext, error: AibLocalError | None) -> bool:
    """Keep or remove the target, as `decide_keep` says; whether it was kept."""
    target = ctx.target
    if target is None:
        return False
    failed = error is not None and not isinstance(error, Interrupted)
    on_error = ctx.on_error(error)
    if failed and on_error == "ask" and ctx.options.confirm_keep is not None:
        ctx.keep_target = ctx.options.confirm_keep(f"{error}\nKeep {target.describe()} for inspection?")
    continuation = ctx.continuation
    why = decide_keep(
        error,
        on_error=on_error,
        rerun=ctx.on_kept_target,
        finishing=continuation is not None and continuation.finish,
        user_keeps=ctx.keep_target,
    )
    if why is not None:
        ctx.events.info(
            f"keeping {target.describe()} ({why}). Next:\n"
            f"  aib-local shell {ctx.build_id}      # a shell in it\n"
            f"  aib-local logs {ctx.build_id}       # its customization.log\n"
            f"  aib-local rerun {ctx.build_id} [--from NAME | --only NAME] [--finish]"
            "   # after editing the template or its scripts\n"
            f"  aib-local clean --build {ctx.build_id}   # remove it",
            keptBuildId=ctx.build_id,
        )
        with contextlib.suppress(AibLocalError, OSError):  # the machine stays: only this process lets go
            target.detach()
        return True
    if ctx.engine_silent or isinstance(error, EngineSilent):  # each call would wait out the client's timeout
        ctx.events.warning(
            f"left {target.describe()}: the Docker engine does not answer; aib-local clean removes it once it does"
        )
        return False
    try:
        target.remove()
    except AibLocalError as exc:
        ctx.events.warning(f"could not remove {target.describe()}: {exc}")
    except Exception as exc:
        if not engine_fault(exc):
            raise
        ctx.events.warning(
            f"could not remove {target.describe()}: the Docker engine does not answer ({type(exc).__name__}); "
            "aib-local clean removes it once the engine is back"
        )
    return False


def claim(ctx: BuildContext) -> None:
    """Clear what dead builds left, refuse a second live run of this template, and open
    this build's journal entry (all before anything is made)."""
    # Outside the store lock (reaching a dead build's SSH host may take seconds); two
    # builds sweeping the same dead build at once remove the same things harmlessly.
    removed = journal.sweep(
        ctx.store,
        lambda build_id, keep: remove_containers(ctx, build_id, keep),
        lambda refs: remove_images(ctx, refs),
        release_target=releaser(ctx.store, ctx.events.warning),
    )
    if removed:
        ctx.events.info("removed what builds that died left: " + ", ".join(removed))
    with ctx.store.lock():
        for other in journal.live_builds(ctx.store).values():
            if other.get("templateId") == ctx.template_id and other.get("buildId") != ctx.build_id:
                raise UsageError(
                    f"the image template {ctx.loaded.name} is being built by build {other['buildId']} "
                    f"(pid {journal.owner_pid(other)})",
                    hint="wait for it to end (AIB runs one build of a template at a time), "
                    "or give a copy another 'name'",
                )
            if ctx.continuation is not None and other.get("buildId") == ctx.build_id:
                raise UsageError(f"build {ctx.build_id} is already being rerun by another aib-local")
        ctx.journal.open()


def remove_containers(ctx: BuildContext, build_id: str, keep: list[str]) -> list[str]:
    try:
        client = ctx.docker()
    except EnvironmentProblem:
        return []  # no engine here now: `aib-local clean` finds them by label later
    return images.remove_labelled(client, build_id, keep)[0]


def remove_images(ctx: BuildContext, refs: list[str]) -> list[str]:
    try:
        return images.remove_images(refs)
    except (EnvironmentProblem, TargetError) as exc:
        ctx.events.warning(f"could not remove {', '.join(refs)}: {exc}")
        return []


def discard_pending(ctx: BuildContext) -> None:
    """Images and files this build began but no record took (it was interrupted or failed)."""
    try:
        for item in ctx.journal.discard(lambda refs: remove_images(ctx, refs)):
            ctx.events.info(f"removed {item}: the build did not finish it")
    except Exception as exc:
        if not engine_fault(exc):
            raise
        ctx.events.warning(
            "the Docker engine does not answer: aib-local clean removes this build's images once it is back"
        )
