"""The container step runner's session, without an engine: what it makes of its socket."""

from __future__ import annotations

import socket

import pytest

from engine.frames import FrameSplitter
from engine.targets import runner
from engine.targets.docker import _DockerSession


def session_over(sock: socket.socket) -> _DockerSession:
    session = _DockerSession.__new__(_DockerSession)
    session.raw = sock
    session._socket_io = sock
    session.frames = FrameSplitter()
    return session


def test_a_socket_closed_by_a_cancel_is_the_runner_gone_not_a_defect() -> None:
    """--parallel builds cancelled from the main thread close their sessions' sockets
    while a worker may be about to select() on one: the worker sees the runner gone."""
    ours, theirs = socket.socketpair()
    session = session_over(ours)
    theirs.sendall(bytes([1, 0, 0, 0, 0, 0, 0, 3]) + b"out")
    assert session.poll(1.0) == [("stdout", b"out")]
    session.close()
    with pytest.raises(runner.RunnerGone):
        session.poll(0.1)
    theirs.close()


def test_the_runner_stream_ending_is_the_runner_gone() -> None:
    ours, theirs = socket.socketpair()
    session = session_over(ours)
    theirs.close()
    with pytest.raises(runner.RunnerGone, match="stream closed"):
        session.poll(1.0)
    session.close()
