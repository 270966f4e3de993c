"""The VM target's pieces that need no boot: the NoCloud seed, the keys, QEMU's command
line, the size cap, disks through qemu-img, and a VM's disk written as a VHD."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from distributors.base import DistributeContext
from distributors.vhd import Vhd, VhdDistribute
from engine import disks
from engine.errors import EnvironmentProblem
from engine.store import Store
from engine.targets import qemu
from engine.targets.vm import _cap
from tests.support import unavailable

needs_qemu_img = pytest.mark.needs("qemu-img", "qemu-utils")


def test_the_seed_is_a_cidata_volume_with_user_data_and_meta_data(tmp_path: Path) -> None:
    import pycdlib

    login, host = qemu.new_key(), qemu.new_key()
    seed = tmp_path / "seed.iso"
    qemu.seed_iso(seed, instance_id="i-1", hostname="box", user_data=qemu.user_data("packer", login, host))
    iso = pycdlib.PyCdlib()
    iso.open(str(seed))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"  # what NoCloud looks for
        read = {}
        for name in ("user-data", "meta-data"):
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            read[name] = out.getvalue().decode()
    finally:
        iso.close()
    assert read["meta-data"] == "instance-id: i-1\nlocal-hostname: box\n"
    assert read["user-data"].startswith("#cloud-config\n")
    config = json.loads(read["user-data"].split("\n", 1)[1])
    (user,) = config["users"]
    assert user["name"] == "packer" and user["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert user["ssh_authorized_keys"] == [login.public]
    # The host key is given, so the client verifies the guest from its first connection.
    assert config["ssh_keys"] == {"ed25519_private": host.private, "ed25519_public": host.public}


def test_keys_are_fresh_ed25519_pairs_paramiko_reads() -> None:
    import paramiko

    first, second = qemu.new_key(), qemu.new_key()
    assert first.public.startswith("ssh-ed25519 ") and first.public != second.public
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(first.private))
    assert f"{key.get_name()} {key.get_base64()}" == first.public


def test_the_command_line_boots_the_overlay_with_ssh_forwarded_and_no_network_when_asked(tmp_path: Path) -> None:
    machine = qemu.Machine(
        disk=tmp_path / "disk.qcow2",
        seed=tmp_path / "seed.iso",
        qmp=tmp_path / "qmp.sock",
        serial=tmp_path / "serial.log",
        pidfile=tmp_path / "qemu.pid",
        ssh_port=2222,
        cpus=2,
        memory_mib=2048,
    )
    if shutil.which(qemu.QEMU) is None:
        unavailable("needs qemu-system-x86_64 (apt-get install qemu-system-x86)")
    argv = machine.argv()
    assert argv[argv.index("-accel") + 1] == "tcg"
    kvm = qemu.Machine(**{**machine.__dict__, "accel": "kvm"}).argv()
    assert kvm[kvm.index("-accel") + 1] == "kvm"
    assert f"file={tmp_path / 'disk.qcow2'},if=virtio,format=qcow2,cache=unsafe,discard=unmap" in argv
    assert "user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22" in argv
    assert f"file:{tmp_path / 'serial.log'}" in argv and "-pidfile" in argv
    offline = qemu.Machine(**{**machine.__dict__, "network": False}).argv()
    assert "user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22,restrict=on" in offline
    assert not [arg for arg in argv if "pflash" in arg]  # Gen1: BIOS
    restoring = qemu.Machine(**{**machine.__dict__, "incoming": 7}).argv()
    assert restoring[-2:] == ["-incoming", "fd:7"]


def test_a_gen2_vm_boots_ovmf_with_variables_of_its_own(tmp_path: Path) -> None:
    try:
        code, template = qemu.ovmf()
    except EnvironmentProblem:
        unavailable("needs OVMF (apt-get install ovmf)")
    if shutil.which(qemu.QEMU) is None:
        unavailable("needs qemu-system-x86_64 (apt-get install qemu-system-x86)")
    nowhere = tmp_path / "x"
    machine = qemu.Machine(nowhere, nowhere, nowhere, nowhere, nowhere, 2222, 1, 1024, efi_vars=tmp_path / "vars.fd")
    argv = machine.argv()
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={code}" in argv
    assert f"if=pflash,format=raw,unit=1,file={tmp_path / 'vars.fd'}" in argv
    assert template.is_file() and template != code


def test_vm_size_is_capped_to_this_machine() -> None:
    cpus, mib, note = _cap(64, 512)
    assert cpus == (os.cpu_count() or 1) and mib < 512 * 1024 and "capped to this machine" in note
    assert _cap(1, 1) == (1, 1024, "")


@needs_qemu_img
def test_an_overlay_leaves_its_source_alone_and_flattens_to_the_whole_disk(tmp_path: Path) -> None:
    source = tmp_path / "source.raw"
    with source.open("wb") as out:
        out.seek(3 << 20)
        out.write(b"source-data")
        out.truncate(8 << 20)
    before = source.read_bytes()
    layer = tmp_path / "overlay.qcow2"
    disks.overlay(source, layer)
    subprocess.run(["qemu-io", "-c", "write -P 0x61 5M 4k", str(layer)], check=True, capture_output=True)
    assert source.read_bytes() == before
    flat = tmp_path / "flat.raw"
    disks.flatten(layer, flat, "raw")
    data = flat.read_bytes()
    assert data[3 << 20 : (3 << 20) + 11] == b"source-data" and data[5 << 20 : (5 << 20) + 4096] == b"a" * 4096
    assert disks.virtual_size(layer) == 8 << 20


class StoppedVm:
    """A captured VM as distributors see it: only its disk."""

    def __init__(self, disk: Path) -> None:
        self._disk = disk

    def disk(self) -> Path:
        return self._disk

    def export(self) -> Any:
        raise AssertionError("a VM's VHD is its disk, not an exported filesystem")

    def commit(self, repository: str, tag: str, base_image: str) -> str:
        raise AssertionError("not a container")


def vm_context(store: Store, disk: Path, size_gb: int) -> DistributeContext:
    """What a distributor gets from a stopped VM build with this disk."""
    return DistributeContext(
        captured=StoppedVm(disk),
        store=store,
        build_id="b1",
        template_id="t",
        base_image="",
        os_type="Linux",
        generalized=True,
        os_disk_size_gb=size_gb,
    )


@needs_qemu_img
@pytest.mark.parametrize("size_gb", [0, 1])
def test_a_vms_vhd_is_its_whole_disk_with_a_footer_grown_to_os_disk_size(tmp_path: Path, size_gb: int) -> None:
    source = tmp_path / "disk.raw"
    with source.open("wb") as out:
        out.write(b"\xeb\x63\x90" + bytes(507) + b"\x55\xaa")  # a boot sector: it must stay the VHD's first
        out.seek(2 << 20)
        out.write(b"partition")
        out.truncate(16 << 20)
    layer = tmp_path / "overlay.qcow2"
    disks.overlay(source, layer)
    store = Store(tmp_path / "store")
    ctx = vm_context(store, layer, size_gb)
    output = Vhd(VhdDistribute(type="VHD", runOutputName="disk")).distribute(ctx)
    vhd = store.root / "artifacts" / "b1" / "disk.vhd"
    assert output.artifact_uri == vhd.as_uri()
    size = (size_gb << 30) or (16 << 20)
    assert vhd.stat().st_size == size + 512
    with vhd.open("rb") as data:
        assert data.read(512) == source.read_bytes()[:512]
        data.seek(2 << 20)
        assert data.read(9) == b"partition"
        data.seek(size)
        tail = data.read()
    assert tail[:8] == b"conectix" and struct.unpack(">Q", tail[48:56])[0] == size
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-f", "vpc", "--output", "json", str(vhd)], check=True, capture_output=True
        ).stdout.decode()
    )
    assert info["virtual-size"] == size


@needs_qemu_img
def test_a_vms_vhd_cannot_be_smaller_than_its_disk(tmp_path: Path) -> None:
    source = tmp_path / "disk.raw"
    source.write_bytes(b"x")
    os.truncate(source, 2 << 30)
    store = Store(tmp_path / "store")
    ctx = vm_context(store, source, 1)
    from distributors.base import DistributeError

    with pytest.raises(DistributeError, match="osDiskSizeGB 1 is smaller than the VM's disk"):
        Vhd(VhdDistribute(type="VHD", runOutputName="disk")).distribute(ctx)
    assert not list(store.root.rglob("*.partial")) and not list(store.root.rglob("*.vhd"))
