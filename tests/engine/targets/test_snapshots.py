"""The store's boot snapshots without a boot: what a snapshot is keyed by, that one is
added whole or not at all, that a build restoring one keeps it from being removed, the
pruning of the least recently used, and `clean --snapshots`."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from engine.targets import qemu
from engine.targets.snapshots import Snapshots

needs_qemu = pytest.mark.needs("qemu-system-x86_64", "qemu-system-x86")
SHAPE = ["-smp", "1", "-m", "3584", "-accel", "tcg"]


def add(snapshots: Snapshots, key: str, source: str = "/disks/a.qcow2") -> Path:
    with snapshots.making(key) as staging:
        assert staging is not None
        for name in ("disk.qcow2", "state", "seed.iso", "id_ed25519", "host_key.pub"):
            (staging / name).write_bytes(name.encode())
        (staging / "meta.json").write_text(json.dumps({"source": source, "accel": "tcg"}))
    return snapshots.root / key


@needs_qemu
def test_a_snapshot_fits_one_source_file_and_one_machine_shape(tmp_path: Path) -> None:
    source = tmp_path / "a.qcow2"
    source.write_bytes(b"disk")
    key = Snapshots.key(source, SHAPE)
    assert Snapshots.key(source, SHAPE) == key
    assert Snapshots.key(source, [*SHAPE[:-1], "kvm"]) != key  # another accelerator
    assert Snapshots.key(source, ["-smp", "2", *SHAPE[2:]]) != key  # another size
    os.utime(source, ns=(1, 1))
    assert Snapshots.key(source, SHAPE) != key  # the source changed


def test_a_snapshot_is_added_whole_or_not_at_all(tmp_path: Path) -> None:
    snapshots = Snapshots(tmp_path / "vm-snapshots")
    with pytest.raises(RuntimeError), snapshots.making("k1") as staging:
        assert staging is not None
        assert stat.S_IMODE(staging.stat().st_mode) == 0o700  # it holds a private key
        (staging / "state").write_bytes(b"half")
        raise RuntimeError("QEMU died while saving")
    assert snapshots.find("k1") is None
    assert [p.name for p in snapshots.root.iterdir() if not p.name.endswith(".lock")] == []

    folder = add(snapshots, "k1")
    found = snapshots.find("k1")
    assert found is not None and found.folder == folder and found.state.read_bytes() == b"state"
    with snapshots.making("k1") as staging:  # there is one: nothing to make
        assert staging is None


def test_only_one_build_makes_a_snapshot_and_none_removes_one_being_restored(tmp_path: Path) -> None:
    snapshots = Snapshots(tmp_path / "vm-snapshots")
    with snapshots.making("k1") as first:
        assert first is not None
        with snapshots.making("k1") as second:  # another build booted the same source meanwhile
            assert second is None
        (first / "meta.json").write_text("{}")
    with snapshots.locked("k1", exclusive=False) as restoring:
        assert restoring
        with snapshots.locked("k1", exclusive=False) as another:
            assert another  # restores share it
        assert not snapshots.remove("k1")
        assert snapshots.clear() == ([], [f"the boot snapshot of ? (?, 0 MiB, {snapshots.root / 'k1'})"])
    assert snapshots.find("k1") is not None
    assert snapshots.remove("k1") and snapshots.find("k1") is None


def test_a_lock_is_waited_for_within_the_time_given(tmp_path: Path) -> None:
    snapshots = Snapshots(tmp_path / "vm-snapshots")
    with snapshots.locked("k1", exclusive=True):
        started = time.monotonic()
        with snapshots.locked("k1", exclusive=False, within=0.5) as had:
            assert not had
        assert 0.4 < time.monotonic() - started < 5


def test_the_least_recently_used_beyond_keep_are_removed(tmp_path: Path) -> None:
    snapshots = Snapshots(tmp_path / "vm-snapshots")
    for number in range(3):
        add(snapshots, f"k{number}")
        os.utime(snapshots.root / f"k{number}" / "meta.json", (1000 + number, 1000 + number))
    found = snapshots.find("k0")
    assert found is not None
    found.used()  # restored just now: the most recently used
    assert snapshots.prune(keep=2) == ["k1"]
    assert sorted(s.key for s in snapshots.all()) == ["k0", "k2"]
    assert snapshots.prune(keep=1, spare="k2") == ["k0"]  # the one just made stays


def test_making_more_than_keep_prunes_the_oldest(tmp_path: Path) -> None:
    snapshots = Snapshots(tmp_path / "vm-snapshots")
    for number in range(6):
        add(snapshots, f"k{number}")
        os.utime(snapshots.root / f"k{number}" / "meta.json", (1000 + number, 1000 + number))
    assert sorted(s.key for s in snapshots.all()) == ["k2", "k3", "k4", "k5"]


def test_clear_removes_every_snapshot_and_what_a_killed_making_left(tmp_path: Path) -> None:
    snapshots = Snapshots(tmp_path / "vm-snapshots")
    add(snapshots, "k1", source="/disks/debian.qcow2")
    leftover = snapshots.root / ".new-k2-0123abcd"
    leftover.mkdir()
    (leftover / "state").write_bytes(b"x")
    removed, busy = snapshots.clear()
    assert busy == []
    assert removed[0].startswith("the boot snapshot of /disks/debian.qcow2 (tcg, 0 MiB")
    assert removed[1] == f"a saved VM left half-made ({leftover})"
    assert snapshots.all() == [] and not leftover.exists()
    assert Snapshots(tmp_path / "none").clear() == ([], [])


def test_a_kvm_verdict_holds_until_this_machine_boots_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv(qemu.ACCEL_ENV, raising=False)
    monkeypatch.setattr(qemu, "_kvm_verdict", {})
    monkeypatch.setattr(qemu, "kvm_usable", lambda: True)
    assert qemu.choose_accel() == ("kvm", "/dev/kvm opens")
    qemu.kvm_failed("KVM stopped the guest")
    monkeypatch.setattr(qemu, "_kvm_verdict", {})  # another process
    accel, why = qemu.choose_accel()
    assert accel == "tcg" and why.startswith("KVM stopped the guest, as an earlier boot here found")
    kept = tmp_path / "aib-local-kvm-verdict.json"
    kept.write_text(json.dumps({"boot": "an-earlier-boot", "why": "stale"}))
    monkeypatch.setattr(qemu, "_kvm_verdict", {})
    assert qemu.choose_accel() == ("kvm", "/dev/kvm opens")
    monkeypatch.setenv(qemu.ACCEL_ENV, "kvm")
    assert qemu.choose_accel()[0] == "kvm"
