"""The runner's output framing: lines stream at once, the end marker is found in any chunking."""

from __future__ import annotations

import pytest

from engine.targets.runner import StepOutput, request

MARKER = b"\n\x1eAIB-END 7 3\n"


def feed(chunks: list[bytes]) -> tuple[list[str], int | None]:
    lines: list[str] = []
    output = StepOutput("stdout", "7", lambda _name, line: lines.append(line))
    for chunk in chunks:
        output.feed(chunk)
    return lines, output.exit_code


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"abc\n", MARKER], ["abc"]),
        ([b"abc\nno newline", MARKER], ["abc", "no newline"]),
        ([b"a\n\nb\n", MARKER], ["a", "", "b"]),
        ([b"", MARKER], []),
        ([b"\n", MARKER], [""]),
        ([b"a\n\x1eAIB-END 8 1\nb\n", MARKER], ["a", "\x1eAIB-END 8 1", "b"]),  # another step's marker is output
        ([b"crlf\r\n", MARKER], ["crlf"]),
    ],
)
def test_lines_and_exit_code(chunks: list[bytes], expected: list[str]) -> None:
    assert feed(chunks) == (expected, 3)


@pytest.mark.parametrize("text", [b"one\ntwo\n", b"no newline at the end", b"\n\n"])
def test_any_chunking_gives_the_same_lines(text: bytes) -> None:
    whole = feed([text, MARKER])
    data = text + MARKER
    assert feed([bytes([b]) for b in data]) == whole
    assert feed([data[:5], data[5:11], data[11:]]) == whole


def test_a_line_is_streamed_before_the_step_ends() -> None:
    lines, code = feed([b"waiting\n"])
    assert (lines, code) == (["waiting"], None)


def test_request_frames_script_and_command() -> None:
    assert request("ab", "run it", ("/tmp/s.sh", b"#!/bin/sh\n")) == b"ab 10 -1 /tmp/s.sh\n#!/bin/sh\nrun it\n"
    assert request("ab", "true") == b"ab 0 -1 -\ntrue\n"
    assert request("ab", "a\nb") == b"ab 0 3 -\na\nb"  # a command with newlines goes by length
