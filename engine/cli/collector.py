"""The garbage collector in the console script's process.

A command lives for seconds and makes few reference cycles, yet Python collects its
youngest generation every 700 allocations: while a build's modules load (pydantic's
models, docker-py, requests) that is hundreds of collections, each walking what the
imports made. `short_lived` spaces them out, and `settled` moves what the imports made
out of the collector's reach (`gc.freeze`), so that neither the collections during the
build nor the one at exit walk it again. Only the console script asks for this: `main`,
which the tests call in-process, keeps its caller's settings.
"""

from __future__ import annotations

import gc

YOUNG = 10_000  # allocations between two collections of the youngest generation


def short_lived() -> None:
    """Collect the youngest generation every YOUNG allocations instead of 700."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, oldest)


def settled() -> None:
    """A command's imports are done: what they made lives until the process ends, so the
    collector need not walk it again. Nothing is done where `short_lived` was not asked
    for (a caller that keeps its own settings)."""
    if gc.get_threshold()[0] == YOUNG:
        gc.freeze()
