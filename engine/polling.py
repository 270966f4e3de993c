"""Waiting for a state to come: one helper on tenacity for every place that asks the same
question again until it has its answer or its time is up (a container gone, a monitor
answering, a migration done, a lock free, a line on a console)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

T = TypeVar("T")


def poll(check: Callable[[], T | None], *, within: float, every: float) -> T | None:
    """Call `check` until it returns something other than None, `every` seconds apart, for
    at most `within` seconds (at least once): its answer, or None when time ran out. What
    `check` raises ends the wait at once and is raised here."""
    retrying = Retrying(
        stop=stop_after_delay(max(0.0, within)),
        wait=wait_fixed(every),
        retry=retry_if_result(lambda answer: answer is None),
        retry_error_callback=lambda _state: None,
        sleep=time.sleep,
    )
    return retrying(check)
