"""A step runner that lives in the target for the whole build.

Starting a process per step costs a round trip to the Docker engine (or an SSH
channel) each time, and uploading each script costs another. Instead one small POSIX
shell loop is started per user (the build user, root) and receives each step on its
stdin: a header line, the script to write (if any) and the command. It runs the
command as its own process (stdin from /dev/null, its pid in a file so that a timeout
can kill its tree), then writes an end marker with the exit code on stdout and on
stderr. Output streams straight through, so order and exit codes are as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# The end marker starts with a newline of its own, so a last line without one is kept whole.
MARKER = b"\n\x1eAIB-END "

# Few processes per step: `read` and `echo` are built in; a command without newlines
# comes on the header's next line. The pid file exists only while its step runs, so a
# sweep after a crash kills that step and never a reused pid.
RUNNER = r"""
while IFS=' ' read -r id slen clen path; do
  [ "$slen" -gt 0 ] && head -c "$slen" > "$path"
  if [ "$clen" -lt 0 ]; then IFS= read -r cmd; else cmd=$(head -c "$clen"); fi
  /bin/sh -c "$cmd" </dev/null &
  pid=$!
  echo "$pid" > "/tmp/.aib-local-pid-$id"
  wait "$pid"
  code=$?
  if [ "$slen" -gt 0 ]; then rm -f "$path" "/tmp/.aib-local-pid-$id"; else rm -f "/tmp/.aib-local-pid-$id"; fi
  printf '\n\036AIB-END %s %s\n' "$id" "$code"
  printf '\n\036AIB-END %s %s\n' "$id" "$code" >&2
done
"""


def pidfile(step_id: str) -> str:
    """Where the runner keeps the pid of step `step_id` (see RUNNER)."""
    return f"/tmp/.aib-local-pid-{step_id}"


def request(step_id: str, command: str, script: tuple[str, bytes] | None = None) -> bytes:
    """The bytes that ask the runner to run `command` (after writing `script`).

    Header: id, script length, command length (-1: one line follows), script path.
    """
    path, data = script if script else ("-", b"")
    if "\n" in path or " " in path:
        raise ValueError(f"script paths have no spaces or newlines: {path!r}")
    encoded = command.encode()
    if b"\n" in encoded:
        return f"{step_id} {len(data)} {len(encoded)} {path}\n".encode() + data + encoded
    return f"{step_id} {len(data)} -1 {path}\n".encode() + data + encoded + b"\n"


class Lines:
    """One output stream (stdout or stderr) cut into lines for a sink: each complete line
    goes at once, decoded as UTF-8 (bad bytes replaced) without its line end; `flush`
    gives the rest of a last line that has no newline."""

    def __init__(self, name: str, sink: Callable[[str, str], None]) -> None:
        self.name = name
        self.sink = sink
        self.buffer = b""

    def feed(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        self._emit(lines)

    def flush(self) -> None:
        if self.buffer:
            self._emit([self.buffer])
            self.buffer = b""

    def _emit(self, lines: list[bytes]) -> None:
        for line in lines:
            self.sink(self.name, line.decode("utf-8", "replace").rstrip("\r"))


class StepOutput(Lines):
    """Splits one stream of the runner into the step's lines and its end marker."""

    def __init__(self, name: str, step_id: str, sink: Callable[[str, str], None]) -> None:
        super().__init__(name, sink)
        self.marker = MARKER + step_id.encode() + b" "
        self.exit_code: int | None = None

    @property
    def done(self) -> bool:
        return self.exit_code is not None

    def feed(self, data: bytes) -> None:
        """Take output; complete lines go to the sink at once, the marker sets `exit_code`.

        The marker's own leading newline ends a last line that has none; when the output
        did end with a newline, the marker follows it whole. Only an empty line waits
        for the next byte, since it could be the marker's start.
        """
        self.buffer += data
        while self.buffer:
            for marker in (self.marker, self.marker[1:]):
                if self.buffer.startswith(marker):
                    end = self.buffer.find(b"\n", len(marker))
                    if end < 0:
                        return  # the rest of the marker is on its way
                    self.exit_code = int(self.buffer[len(marker) : end])
                    self.buffer = b""
                    return
                if marker.startswith(self.buffer):
                    return  # may become the marker
            newline = self.buffer.find(b"\n")
            if newline < 0:
                return
            self._emit([self.buffer[:newline]])
            self.buffer = self.buffer[newline + 1 :]


class RunnerGone(Exception):
    """The runner's connection closed (the target restarted, the link dropped)."""


class Session:
    """One runner's two-way stream: what a target provides for `run_step`."""

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def poll(self, timeout: float) -> list[tuple[str, bytes]]:
        """Output that arrived within `timeout`: (stdout|stderr, bytes); RunnerGone at EOF."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class StepTimedOut(Exception):
    """The step outlived its timeout; `kill` has been called."""


def run_step(
    session: Session,
    step_id: str,
    command: str,
    script: tuple[str, bytes] | None,
    sink: Callable[[str, str], None],
    timeout: float | None,
    kill: Callable[[str], None],
) -> int:
    """Send one step to the runner and stream its output until its end marker."""
    outputs = {name: StepOutput(name, step_id, sink) for name in ("stdout", "stderr")}
    session.send(request(step_id, command, script))
    end = None if timeout is None else time.monotonic() + timeout
    killed_at: float | None = None
    while not all(o.done for o in outputs.values()):
        now = time.monotonic()
        if end is not None and now >= end and killed_at is None:
            kill(pidfile(step_id))
            killed_at = now
        if killed_at is not None and now - killed_at > 10:
            raise RunnerGone("the runner did not report the killed step")
        wait = 0.5 if end is None or killed_at is not None else max(0.0, min(0.5, end - now))
        for name, data in session.poll(wait):
            outputs[name].feed(data)
    if killed_at is not None:
        raise StepTimedOut
    code = outputs["stdout"].exit_code
    assert code is not None
    return code
