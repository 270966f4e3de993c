"""engine.polling.poll: the one wait-until helper the targets use."""

from __future__ import annotations

import time

import pytest

from engine.polling import poll


def test_the_answer_comes_as_soon_as_the_check_has_one() -> None:
    answers = iter([None, None, "up"])
    started = time.monotonic()
    assert poll(lambda: next(answers), within=5, every=0.01) == "up"
    assert time.monotonic() - started < 1


def test_none_when_time_runs_out_after_asking_more_than_once() -> None:
    asked: list[float] = []
    started = time.monotonic()
    assert poll(lambda: asked.append(time.monotonic()), within=0.3, every=0.05) is None
    assert 0.3 <= time.monotonic() - started < 1.5 and len(asked) > 2


def test_no_time_at_all_still_asks_once() -> None:
    asked: list[int] = []
    assert poll(lambda: asked.append(1), within=0, every=1) is None and asked == [1]
    assert poll(lambda: False, within=0, every=1) is False  # a falsy answer is an answer


def test_what_the_check_raises_ends_the_wait_at_once() -> None:
    def check() -> None:
        raise OSError("gone")

    started = time.monotonic()
    with pytest.raises(OSError, match="gone"):
        poll(check, within=10, every=1)
    assert time.monotonic() - started < 1
