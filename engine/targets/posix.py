"""Shell snippets every POSIX target uses: pid files, killing a process tree, boot identity."""

from __future__ import annotations

import shlex

from engine.targets.base import Command, Target

# Kills a process and all of its descendants, found through /proc; $1 is the pid file.
KILL_TREE = r"""
tree() { echo "$1"; for p in /proc/[0-9]*; do
  pp=$(sed -n 's/^PPid:[[:space:]]*//p' "$p/status" 2>/dev/null)
  [ "$pp" = "$1" ] && tree "${p#/proc/}"; done; }
root=$(cat "$1" 2>/dev/null) || exit 0
kill -9 $(tree "$root") 2>/dev/null; rm -f "$1"; exit 0
"""
# Changes on every boot of a VM and on every restart of a container (PID 1's start time).
BOOT_IDENTITY = "cat /proc/sys/kernel/random/boot_id; cut -d' ' -f22 /proc/1/stat"


def kill_tree(pidfile: str) -> list[str]:
    return ["/bin/sh", "-c", KILL_TREE, "kill-tree", pidfile]


def join(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def command_line(command: Command) -> str:
    """A Command as one POSIX shell line: its directory, environment and argv."""
    argv = command.argv
    if command.env:
        argv = ["env", *(f"{k}={v}" for k, v in command.env.items()), *argv]
    line = f"exec {join(argv)}"  # one shell fewer per step
    if command.workdir:
        line = f"cd {shlex.quote(command.workdir)} && {line}"
    return line


def run_script(target: Target, script: str, timeout: float = 120) -> tuple[int, list[str]]:
    """A short shell script as root on `target`, its output kept: (exit code, lines)."""
    lines: list[str] = []
    code = target.run(Command(["/bin/sh", "-c", script], as_root=True), lambda _s, line: lines.append(line), timeout)
    return code, lines
