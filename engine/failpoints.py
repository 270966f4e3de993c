"""Named fault-injection points, for proving the engine's guarantees on the real engine.

`AIB_LOCAL_FAILPOINTS="NAME=ACTION[,NAME=ACTION...]"` makes the engine act when it
reaches the point NAME (it is a no-op when the variable is unset):

  kill        SIGKILL this process (a crash: nothing of Python's runs after it)
  sigint      deliver SIGINT to this process (as Ctrl-C would)
  sigterm     deliver SIGTERM to this process
  wait:SECS   print "failpoint NAME reached" on stderr and sleep SECS, so that a test
              can send a real signal or kill a target from outside at that moment
  wait-file:PATH
              print "failpoint NAME reached" and wait (at most 120 s) until PATH exists,
              so that a test can release several builds at the same moment
  error       raise OSError(ENOSPC) as a full disk would

ACTION@N acts on the Nth time the point is reached only (1 is the first).

The points are listed in POINTS; the README's "Guarantees" section says which test
injects which.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import time
from pathlib import Path

ENV_VAR = "AIB_LOCAL_FAILPOINTS"
POINTS = (
    "phase:fetch",
    "phase:attach-target",
    "phase:resolve-source",
    "phase:look-up-cache",
    "phase:start-target",
    "phase:plan",
    "phase:customize",
    "phase:validate",
    "phase:deprovision",
    "phase:capture",
    "phase:distribute",
    "phase:boot-test",
    "target:started",
    "vm:saving",
    "cache:keeping",
    "cache:kept",
    "vhd:unpacked",
    "vhd:fetching",
    "vhd:written",
    "image:committed",
    "store:tmp-written",
    "teardown",
)


_hits: dict[str, int] = {}


def _actions() -> dict[str, str]:
    spec = os.environ.get(ENV_VAR, "")
    actions = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        actions[name.strip()] = action.strip()
    return actions


def hit(name: str) -> None:
    """Act as AIB_LOCAL_FAILPOINTS says when the engine reaches `name`."""
    if ENV_VAR not in os.environ:
        return
    action = _actions().get(name)
    if not action:
        return
    _hits[name] = _hits.get(name, 0) + 1
    action, _, nth = action.partition("@")
    if nth and int(nth) != _hits[name]:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action in ("sigint", "sigterm"):
        os.kill(os.getpid(), signal.SIGINT if action == "sigint" else signal.SIGTERM)
        time.sleep(1)  # the handler runs between bytecodes; give it the chance here
    elif action.startswith("wait:"):
        sys.stderr.write(f"failpoint {name} reached\n")
        sys.stderr.flush()
        end = time.monotonic() + float(action.partition(":")[2])
        while time.monotonic() < end:
            time.sleep(0.05)
    elif action.startswith("wait-file:"):
        sys.stderr.write(f"failpoint {name} reached\n")
        sys.stderr.flush()
        release = Path(action.partition(":")[2])
        end = time.monotonic() + 120
        while not release.exists() and time.monotonic() < end:
            time.sleep(0.01)
    elif action == "error":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
