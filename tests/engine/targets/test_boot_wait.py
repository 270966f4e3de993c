"""The wait for systemd's boot (engine.targets.systemd.wait_until_up): its one shell
command run by the real /bin/sh, against a stand-in `systemctl` on PATH that answers as
a given systemd would (NOT systemd; the real one is in tests/integration/test_systemd.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from engine.targets.systemd import wait_until_up

# $STATES: the state said by each call that answers, in turn (the last one for ever
# after); "bus": the manager does not answer yet. OLD=1 rejects --wait, as a systemd
# before 232 does; "calls" counts the calls that answered, "waits" the --wait ones.
STAND_IN = r"""#!/bin/sh
case " $* " in *" --wait "*)
  echo "$*" >> "$DIR/waits"
  [ -n "$OLD" ] && { echo "systemctl: unrecognized option '--wait'" >&2; exit 1; } ;;
esac
n=$(cat "$DIR/calls" 2>/dev/null || echo 0); echo $((n + 1)) > "$DIR/calls"
set -- $STATES; shift $(( n < $# ? n : $# - 1 )); state=$1
[ "$state" = bus ] && { echo "Failed to connect to bus: No such file or directory" >&2; exit 1; }
echo "$state"; [ "$state" = running ]
"""


def asker(tmp_path: Path, states: str, *, old: bool = False, with_timeout: bool = True) -> tuple[object, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(STAND_IN)
    (bin_dir / "systemctl").chmod(0o755)
    if with_timeout:
        (bin_dir / "timeout").symlink_to(shutil.which("timeout") or "/usr/bin/timeout")
    for tool in ("cat", "sh"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/bin/{tool}")
    env = {"PATH": str(bin_dir), "DIR": str(tmp_path), "STATES": states, "OLD": "1" if old else ""}

    def ask(argv: list[str]) -> tuple[int, str]:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=30)
        return done.returncode, done.stdout + done.stderr

    return ask, tmp_path


def calls(folder: Path) -> int:
    return int((folder / "calls").read_text())


def test_a_systemd_with_wait_is_asked_once_it_answers_on_its_bus(tmp_path: Path) -> None:
    ask, folder = asker(tmp_path, "bus bus running")
    assert wait_until_up(ask, within=10) == ("running", [])
    assert calls(folder) == 3  # two before its bus answered, then the one that waited
    assert all("is-system-running --wait" in line for line in (folder / "waits").read_text().splitlines())


def test_a_degraded_boot_is_said_with_its_failed_units(tmp_path: Path) -> None:
    ask, _folder = asker(tmp_path, "degraded")
    state, failed = wait_until_up(ask, within=10)
    assert state == "degraded"
    assert failed == []  # the stand-in lists no units: what matters is the state, once


def test_a_systemd_without_wait_is_polled_with_the_plain_question(tmp_path: Path) -> None:
    ask, folder = asker(tmp_path, "starting starting running", old=True)
    assert wait_until_up(ask, within=10) == ("running", [])
    assert calls(folder) == 3  # each poll: --wait refused, then the plain question answered
    assert len((folder / "waits").read_text().splitlines()) == 3


def test_an_image_without_timeout_is_polled_with_the_plain_question(tmp_path: Path) -> None:
    ask, folder = asker(tmp_path, "starting running", with_timeout=False)
    assert wait_until_up(ask, within=10) == ("running", [])
    assert calls(folder) == 2


def test_a_boot_that_never_ends_times_out_naming_its_state(tmp_path: Path) -> None:
    ask, _folder = asker(tmp_path, "starting", old=True)
    with pytest.raises(TimeoutError, match=r"within 1s \(state starting\)"):
        wait_until_up(ask, within=1)
