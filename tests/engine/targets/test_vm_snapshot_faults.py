"""Saving and restoring a booted VM when QEMU's monitor fails, with a stand-in for the QEMU
process (no boot): the build goes on connected to a running VM, and no half snapshot is
kept. The real save and restore are tested on QEMU in tests/integration/test_vm.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.targets.base import TargetError
from engine.targets.qemu import ACCEL_ENV
from engine.targets.snapshots import FILES, Snapshots
from engine.targets.vm import VmTarget

pytestmark = pytest.mark.needs("qemu-system-x86_64", "qemu-system-x86")  # snapshot keys name its version


class StandInMonitor:
    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.calls: list[str] = []

    def command(self, name: str, **_arguments: Any) -> dict[str, Any]:
        self.calls.append(name)
        if name in self.failing:
            raise TargetError(f"QMP {name} failed")
        return {}


class StandInQemu:
    """What VmTarget asks of its QemuProcess when saving or restoring."""

    def __init__(self, failing: set[str]) -> None:
        self.monitor = StandInMonitor(failing)
        self.resumed = 0
        self.launched: list[str] = []
        self.uefi = False

    def shape(self, accel: str) -> list[str]:
        return ["-smp", "1", "-m", "512", "-accel", accel]

    def save(self, path: Path) -> None:
        if "migrate" in self.monitor.failing:
            raise TargetError("QEMU did not save the machine: migrate failed")
        path.write_bytes(b"memory and devices")

    def run(self) -> None:
        self.resumed += 1

    def launch(self, accel: str, incoming: int | None = None) -> None:
        if "incoming" in self.monitor.failing:
            raise TargetError("QEMU exited (1): the saved machine does not fit")
        self.launched.append(accel)

    def halt(self) -> None:
        pass


class StandInLink:
    def __init__(self) -> None:
        self.connected = 0
        self.closed = 0

    def close(self) -> None:
        self.closed += 1

    def connect(self, _within: float) -> None:
        self.connected += 1


def booted(tmp_path: Path, failing: set[str]) -> tuple[VmTarget, StandInQemu, StandInLink]:
    tmp_path.mkdir(exist_ok=True)
    source = tmp_path / "source.qcow2"
    source.write_bytes(b"disk")
    target = VmTarget(tmp_path / "vm", 2222, build_id="b", source=source)
    target.folder.mkdir()
    for name in FILES:
        (target.folder / name).write_bytes(name.encode())
    qemu, link = StandInQemu(failing), StandInLink()
    target.machine, target.link = qemu, link  # type: ignore[assignment]
    return target, qemu, link


@pytest.mark.parametrize("failing", ["stop", "migrate"])
def test_a_failed_save_leaves_the_vm_running_and_connected_and_no_snapshot(tmp_path: Path, failing: str) -> None:
    target, qemu, link = booted(tmp_path, {failing})
    snapshots = Snapshots(tmp_path / "snapshots")
    target._save(snapshots)
    assert qemu.resumed == 1 and link.connected == 1  # the build goes on, on a running VM
    assert any("could not be saved" in w for w in target.warnings)
    assert [p.name for p in snapshots.root.iterdir() if not p.name.endswith(".lock")] == []


def test_a_good_save_is_kept_whole_and_the_vm_goes_on(tmp_path: Path) -> None:
    target, qemu, link = booted(tmp_path, set())
    snapshots = Snapshots(tmp_path / "snapshots")
    target._save(snapshots)
    assert qemu.monitor.calls == ["stop"] and qemu.resumed == 1 and link.connected == 1
    key = snapshots.key(target.source, qemu.shape(target.accel))
    found = snapshots.find(key)
    assert found is not None and (found.folder / "state").read_bytes() == b"memory and devices"
    assert {p.name for p in found.folder.iterdir()} >= {*FILES, "state", "meta.json"}


def test_a_restore_that_qemu_refuses_boots_instead_and_drops_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The restore looks for the snapshot of the accelerator it would boot with: the one the
    # save used (TCG), whether or not /dev/kvm opens on this machine.
    monkeypatch.setenv(ACCEL_ENV, "tcg")
    saving, _qemu, _link = booted(tmp_path / "first", set())
    snapshots = Snapshots(tmp_path / "snapshots")
    saving._save(snapshots)
    target, qemu, _link = booted(tmp_path / "second", {"incoming"})
    target.source = saving.source
    assert target._restore(snapshots) is False
    assert any("did not restore" in w for w in target.warnings)
    assert snapshots.find(snapshots.key(target.source, qemu.shape("tcg"))) is None


def test_a_qemu_that_was_killed_is_named_with_its_signal_and_the_last_lines_it_left(tmp_path: Path) -> None:
    import signal
    import subprocess

    from engine.targets.vm_process import QemuProcess

    machine = QemuProcess(tmp_path, 2222)
    machine.check_exited()  # not started: nothing to say
    (tmp_path / "serial.log").write_text("".join(f"console line {i}\n" for i in range(20)))
    (tmp_path / "qemu.log").write_text("qemu-system-x86_64: terminating on signal 9\n")
    machine.process = subprocess.Popen(["sleep", "60"])
    machine.check_exited()  # running: nothing to say
    machine.process.send_signal(signal.SIGKILL)
    machine.process.wait()
    with pytest.raises(TargetError) as caught:
        machine.check_exited()
    message = caught.value.message
    assert f"the VM's QEMU (pid {machine.process.pid}) was killed by SIGKILL during the build" in message
    assert "console line 19" in message and "console line 14" not in message
    assert "terminating on signal 9" in message
