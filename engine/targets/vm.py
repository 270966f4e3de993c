"""The VM target: a local QEMU machine booted from a disk image, built on over SSH.

The source disk (qcow2, raw, VHD, VHDX) is never written: the build boots a
copy-on-write overlay of it, with vCPUs and memory from vmSize (capped to this machine),
under KVM when it works and TCG otherwise. cloud-init's NoCloud seed gives the guest the
build user, its key and the host key (engine/targets/qemu.py); from there the build is
an SSH build (reboots included: a new boot identity after a drop is a reboot). Capture
powers the guest off and hands over the overlay; distributors flatten it into a
bootable disk. Everything of one VM lives in its folder (the overlay, the seed, the
serial console's log, QEMU's pid file); removing the target stops QEMU and the folder
goes, unless the build keeps the VM.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from engine import disks
from engine.errors import AibLocalError, UsageError
from engine.targets import qemu
from engine.targets.base import OpenRequest, OwnSource, TargetError
from engine.targets.endpoint import TARGET_SPECS, SshEndpoint, SshOptions
from engine.targets.ssh import SshTarget
from engine.vmsizes import vm_limits

BUILD_USER = "packer"  # the user AIB's build VM logs in with
BOOT_WITHIN = 600.0  # seconds for a boot to reach SSH (TCG is slow), within the build's deadline
POWER_OFF_WITHIN = 120.0
KVM_PROBE_WITHIN = 10.0  # seconds for a KVM boot to get past firmware and bootloader
# Run as a service of its own (the SSH session ends under it): take the build user, its
# sudoers entry and cloud-init's state of this boot out of the image, then power off, so
# that the image's next boot provisions afresh as a new Azure VM's does.
POWER_OFF = (
    f"sleep 1; userdel -rf {BUILD_USER} >/dev/null 2>&1; rm -f /etc/sudoers.d/90-cloud-init-users; "
    "cloud-init clean --logs >/dev/null 2>&1; : > /etc/machine-id; sync; systemctl poweroff"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cap(cpus: float, memory_gib: float) -> tuple[int, int, str]:
    """vCPUs and MiB for the VM, capped to this machine (half its memory)."""
    host_cpus = os.cpu_count() or 1
    host_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    want_cpus, want_mib = max(1, int(cpus)), int(memory_gib * 1024)
    got_cpus, got_mib = min(want_cpus, host_cpus), min(want_mib, host_mib // 2)
    note = ""
    if (got_cpus, got_mib) != (want_cpus, want_mib):
        note = f" (capped to this machine: {got_cpus} vCPU, {got_mib} MiB)"
    return got_cpus, got_mib, note


class VmTarget(SshTarget):
    """A QEMU VM booted from an overlay of the source disk; customizers run over SSH."""

    kind = "vm"
    starts_from_image = True
    source_kind = "disk"
    export_needs_stop = True
    captures_disk = True

    def __init__(self, folder: Path, port: int, *, build_id: str, source: Path) -> None:
        endpoint = SshEndpoint(BUILD_USER, "127.0.0.1", port)
        options = SshOptions(
            key_file=folder / "id_ed25519", known_hosts=folder / "known_hosts", connect_timeout=30, keepalive=5
        )
        super().__init__(endpoint, options, build_id=build_id)
        self.folder = folder
        self.source = source
        self.cpus, self.memory_mib = 2, 4096
        self.network = True
        self.within = BOOT_WITHIN
        self.progress: Any = lambda _message: None
        self.process: subprocess.Popen[bytes] | None = None
        self.monitor = qemu.Monitor(qemu.monitor_socket(folder))
        self.stopped = False

    @property
    def name(self) -> str:
        return f"vm {self.folder.name}"

    def describe(self) -> str:
        return f"VM from {self.source.name} ({self.cpus} vCPU, {self.memory_mib} MiB, ssh port {self.endpoint.port})"

    @property
    def overlay(self) -> Path:
        return self.folder / "disk.qcow2"

    @property
    def serial_log(self) -> Path:
        return self.folder / "serial.log"

    @classmethod
    def check_spec(cls, spec: str) -> None:
        if spec.lower() != cls.kind:
            raise UsageError(f"--target {spec!r}: expected {TARGET_SPECS}")

    @classmethod
    def own_source(cls, spec: str) -> OwnSource | None:
        return None  # it starts from a disk

    @classmethod
    def open(cls, request: OpenRequest) -> VmTarget:
        if not request.image:
            raise TargetError("a VM build needs a source disk")
        if not request.folder:
            raise TargetError("a VM build needs a folder for its disk")
        folder = Path(request.folder) / cls.kind
        target = cls(folder, _free_port(), build_id=request.build_id, source=Path(request.image))
        cpus, memory, size_note = vm_limits(request.vm_size)
        target.cpus, target.memory_mib, cap_note = _cap(cpus, memory)
        target.notes.append(f"VM size {size_note}{cap_note}")
        target.network = request.network != "none"
        target.within = min(BOOT_WITHIN, request.within)
        target.progress = request.progress
        target.os_type = request.os_type
        return target

    # --- starting ------------------------------------------------------------------

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        disks.overlay(self.source, self.overlay)
        login, host = qemu.new_key(), qemu.new_key()
        key_file = self.folder / "id_ed25519"
        key_file.touch(0o600)
        key_file.write_text(login.private)
        (self.folder / "known_hosts").write_text(f"[127.0.0.1]:{self.endpoint.port} {host.public}\n")
        qemu.seed_iso(
            self.folder / "seed.iso",
            instance_id=f"aib-local-{self.build_id}-{uuid.uuid4().hex[:8]}",
            hostname="aib-local-build",
            user_data=qemu.user_data(BUILD_USER, login, host),
        )
        accel, why = qemu.choose_accel()
        if accel == "kvm" and not self._kvm_runs(time.monotonic() + KVM_PROBE_WITHIN):
            self._halt()
            accel, why = qemu.choose_accel()
        if accel == "tcg":
            self._launch(accel)
        if accel == "tcg":
            self.notes.append(f"the VM runs under TCG, QEMU's emulator ({why}): a boot takes tens of seconds")
        else:
            self.notes.append(f"the VM runs under KVM ({why})")
        self.progress(f"booting {self.source.name} under {accel.upper()}; its console: {self.serial_log}")
        self._wait_for_ssh(time.monotonic() + self.within)
        self._detect()
        _code, out = self.link.capture(
            "sudo -n cloud-init status --wait >/dev/null 2>&1; sudo -n cat /run/cloud-init/result.json", 300
        )
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            errors = json.loads(out)["v1"]["errors"]
            if errors:
                self.warnings.append(f"cloud-init reported errors on first boot: {'; '.join(map(str, errors))[:300]}")

    def _launch(self, accel: str) -> None:
        machine = qemu.Machine(
            disk=self.overlay,
            seed=self.folder / "seed.iso",
            qmp=qemu.monitor_socket(self.folder),
            serial=self.serial_log,
            pidfile=self.folder / "qemu.pid",
            ssh_port=self.endpoint.port,
            cpus=self.cpus,
            memory_mib=self.memory_mib,
            network=self.network,
            accel=accel,
        )
        log = (self.folder / "qemu.log").open("wb")
        try:
            # Its own session: a Ctrl-C at the terminal reaches aib-local, which stops QEMU itself.
            self.process = subprocess.Popen(
                machine.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        finally:
            log.close()
        self.monitor.wait_ready(within=20, alive=self._check_alive)

    def _status(self) -> str:
        try:
            return str(self.monitor.command("query-status").get("status", ""))
        except TargetError:
            return ""

    def _kvm_runs(self, end: float) -> bool:
        """Boot under KVM: whether the guest gets past its firmware and bootloader (its
        kernel prints, or it still runs when the probe's time is up). When it does not,
        later boots of this process use TCG."""
        try:
            self._launch("kvm")
            while time.monotonic() < end:
                self._check_alive()
                if self._status() == "internal-error":
                    raise TargetError("KVM stopped the guest with an emulation failure")
                with contextlib.suppress(OSError):
                    if b"Linux version" in self.serial_log.read_bytes():
                        return True
                time.sleep(0.2)
            return True
        except TargetError as exc:
            qemu.kvm_failed(f"KVM does not run a VM here: {exc.message.splitlines()[-1][:160]}")
            return False

    def _halt(self) -> None:
        """Stop this QEMU at once (the disk is not used again)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        for name in ("qemu.pid", "serial.log"):
            (self.folder / name).unlink(missing_ok=True)
        qemu.monitor_socket(self.folder).unlink(missing_ok=True)

    def _wait_for_ssh(self, end: float) -> None:
        while True:
            self._check_alive()
            if self._status() == "internal-error":
                raise TargetError(
                    "the VM stopped with an emulation failure",
                    hint=f"set {qemu.ACCEL_ENV}=tcg; its console is in {self.serial_log}",
                )
            try:
                self.link.connect(5)
                return
            except AibLocalError as exc:
                if time.monotonic() > end:
                    raise TargetError(
                        f"the VM did not answer on SSH within {self.within:.0f}s ({getattr(exc, 'message', exc)})",
                        hint=f"its console is in {self.serial_log}",
                    ) from None

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            tail = (self.folder / "qemu.log").read_text(errors="replace").strip()[-400:]
            raise TargetError(f"QEMU exited ({self.process.returncode}): {tail or 'no message'}")

    # --- capture and teardown ------------------------------------------------------

    def stop(self) -> None:
        """Power the guest off (as AIB stops the build VM before capturing its disk)."""
        self._close_sessions()
        with contextlib.suppress(AibLocalError):
            self.link.capture(f"sudo -n systemd-run --quiet --no-block --collect sh -c {shlex.quote(POWER_OFF)}", 30)
        self.link.close()
        if not self._wait_exit(POWER_OFF_WITHIN):
            with contextlib.suppress(TargetError):
                self.monitor.command("quit")
            self._wait_exit(10)
        self.stopped = True

    def _wait_exit(self, within: float) -> bool:
        """Whether QEMU is gone within `within` seconds (a child of this process, or the
        QEMU of a kept VM found by its pid file)."""
        end = time.monotonic() + within
        while True:
            if self.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=0.2)
                if self.process.poll() is not None:
                    return True
            elif qemu.running_pid(self.folder) is None:
                return True
            else:
                time.sleep(0.2)
            if time.monotonic() > end:
                return False

    def console(self) -> Path:
        return self.serial_log

    def disk(self) -> Path | None:
        """The whole disk of the stopped VM (the overlay over its source)."""
        return self.overlay if self.stopped else None

    def export(self) -> Any:
        raise TargetError("a VM is captured as its whole disk, not as a filesystem stream")

    def commit(self, repository: str, tag: str, base_image: str) -> str:
        raise TargetError("a VM build is captured as a disk: managed images of VM builds are not supported yet")

    def remove(self) -> None:
        self._close_sessions()
        self.link.close()
        pid = self.process.pid if self.process is not None else qemu.running_pid(self.folder)
        if pid is not None and not self._wait_exit(0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not self._wait_exit(10):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_exit(10)
        qemu.monitor_socket(self.folder).unlink(missing_ok=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    # --- kept and dead builds --------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {
            **super().info(),
            "kind": self.kind,
            "folder": str(self.folder),
            "source": str(self.source),
        }

    @classmethod
    def attach(cls, info: dict[str, Any], build_id: str, *, within: float | None = None) -> VmTarget:
        folder = Path(info["folder"])
        port = int(str(info["target"]).rsplit(":", 1)[1])
        target = cls(folder, port, build_id=build_id, source=Path(info.get("source", "")))
        if qemu.running_pid(folder) is None:
            raise TargetError(f"the VM of build {build_id} is no longer running", hint="build again")
        target.monitor.wait_ready(within=5)
        target.link.connect(30 if within is None else within)
        target.os_type = info.get("osType", "Linux")
        return target

    @classmethod
    def release(cls, info: dict[str, Any], build_id: str) -> list[str]:
        """Stop the QEMU a dead build left running (found by its pid file, checked against
        its command line), and remove the VM's folder."""
        folder = Path(str(info.get("folder", "")))
        if folder.name != cls.kind or not folder.is_dir():
            return []
        done = []
        pid = qemu.running_pid(folder)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            done.append(f"QEMU (pid {pid}) of build {build_id}")
        qemu.monitor_socket(folder).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        done.append(f"the VM disk of build {build_id} ({folder})")
        return done

    @classmethod
    def remove_kept(cls, info: dict[str, Any], build_id: str) -> list[str]:
        return cls.release(info, build_id)
