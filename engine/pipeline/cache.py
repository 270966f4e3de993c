"""The step cache in a build (see engine.step_cache): before the target starts, the
longest prefix of customizers whose state was kept is found and the target starts from
it; those customizers are told as cached; after a customizer worth keeping, the state
is kept for the next builds.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from engine import failpoints
from engine.errors import UsageError
from engine.pipeline.context import BuildContext, step_index
from engine.pipeline.steps import StepRunner
from engine.step_cache import Entry, StepCache, chain, human
from engine.targets.base import KeptStates, TargetError
from engine.targets.registry import for_spec


def look_up(ctx: BuildContext, _steps: StepRunner) -> None:
    """Find the longest kept prefix of this build's customizers (the look-up-cache phase)."""
    if not ctx.options.cache or ctx.source_validation_only or not ctx.customizers:
        return
    kind = for_spec(ctx.options.target)
    states = kind.kept_states(ctx.store.root)
    if states is None:
        ctx.events.info(
            f"no step cache on a {kind.kind} target: it cannot keep a machine's state, so every customizer runs",
            step="look-up-cache",
        )
        return
    ctx.cache = StepCache(ctx.store.root, states)
    ctx.cache_keys = chain(base_of(ctx, states), ctx.fingerprints)
    ctx.cache_from = len(ctx.cache_keys)
    if ctx.options.cache_from is not None:
        ctx.cache_from = step_index(ctx.loaded, ctx.options.cache_from)
        if ctx.cache_from >= len(ctx.customizers):
            raise UsageError(f"--cache-from {ctx.options.cache_from}: a validator is not kept; name a customizer")
    index, entry = ctx.cache.longest(ctx.cache_keys[: ctx.cache_from])
    if entry is None:
        return
    ctx.restored = entry
    ctx.cache.used(entry.key)
    steps = "customize[0] is" if index == 0 else f"customize[0] to [{index}] are"
    ctx.events.info(
        f"{steps} cached: the build starts from the state kept after {entry.step} by build {entry.build}; "
        f"{states.fidelity}. --no-cache runs every customizer",
        step="look-up-cache",
    )


def base_of(ctx: BuildContext, states: KeptStates) -> dict[str, Any]:
    """What the first key is made of: the source, and the settings that change what steps see."""
    source: Any = ctx.source.image_id
    path = Path(ctx.source.image_id)
    if for_spec(ctx.options.target).source_kind == "disk" and path.is_file():
        status = path.stat()
        source = [str(path.resolve()), status.st_size, status.st_mtime_ns, status.st_ino]
    secrets = sorted(ctx.options.secrets.items())
    return {
        "kind": states.kind,
        "states": states.identity(),
        "source": source,
        "os": ctx.os_type,
        "init": ctx.options.init,
        "network": ctx.options.network or "",
        "vmSize": ctx.props.vm_profile.vm_size,
        "generation": str(ctx.source.record.get("hyperVGeneration", "V1")),
        "secrets": hashlib.sha256(json.dumps(secrets).encode()).hexdigest(),
    }


def report_cached(ctx: BuildContext) -> int:
    """Tell the customizers the restored state stands for; the index of the first to run."""
    entry = ctx.restored
    if entry is None:
        return 0
    for index, (name, _) in enumerate(ctx.customizers[: entry.index + 1]):
        ctx.events.emit("step-started", step=name, detail="restored from the step cache")
        ctx.events.emit(
            "step-finished", step=name, status="cached", exitCode=None, duration=0.0, cachedFrom=entry.build
        )
        ctx.completed.append(index)
    return entry.index + 1


def keep(ctx: BuildContext, index: int, name: str) -> None:
    """After customizer `index` succeeded: keep the state when it is worth it."""
    cache, target = ctx.cache, ctx.target
    if cache is None or target is None or ctx.continuation is not None:
        return
    if not (ctx.options.checkpoint or ctx.unkept >= cache.states.keep_after):
        return
    key = ctx.cache_keys[index]
    started = time.monotonic()
    try:
        with cache.keeping(key, replace=index >= ctx.cache_from) as mine:
            if not mine:  # kept already, or another build is keeping it right now
                ctx.unkept = 0.0
                return
            failpoints.hit("cache:keeping")
            size = target.keep_state(cache.states, key, ctx.source.image_id)
            failpoints.hit("cache:kept")  # the state is written, its entry not yet
            cache.record(Entry(key, cache.states.kind, name, index, ctx.build_id, ctx.loaded.name, time.time(), size))
    except TargetError as exc:
        ctx.events.warning(f"the state after {name} could not be kept for the next builds: {exc}")
        return
    ctx.unkept = 0.0
    ctx.events.info(
        f"state kept for the next builds ({human(size)} in {time.monotonic() - started:.1f}s)",
        step=name,
    )
    for gone in cache.prune(ctx.options.cache_limit, spare=set(ctx.cache_keys)):
        ctx.events.info(
            f"the step cache is over {human(ctx.options.cache_limit)}: removed the least recently used, "
            f"{gone.describe()}",
            step=name,
        )
