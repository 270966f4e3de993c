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

With a store's boot snapshots (engine/targets/snapshots.py), a Linux source is booted once:
the first build saves the booted machine before its first customizer, and the next builds
restore it, set its clock and reseed its random generator from the host, and go on. The
step cache keeps a VM the same way, after a customizer, in STORE/step-cache/vm (VmStates).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from engine import disks, failpoints
from engine.errors import AibLocalError, UsageError
from engine.polling import poll
from engine.targets import qemu
from engine.targets.base import KeptStates, OpenRequest, OwnSource, TargetError
from engine.targets.endpoint import TARGET_SPECS, SshEndpoint, SshOptions
from engine.targets.snapshots import FILES, UEFI_FILES, Snapshot, Snapshots, qemu_version
from engine.targets.ssh import SshTarget
from engine.targets.vm_process import QemuProcess
from engine.vmsizes import vm_limits

BUILD_USER = "packer"  # the user AIB's build VM logs in with
BOOT_WITHIN = 600.0  # seconds for a boot to reach SSH (TCG is slow), within the build's deadline
POWER_OFF_WITHIN = 120.0
KVM_PROBE_WITHIN = 10.0  # seconds for a KVM boot to get past firmware and bootloader
# After a restore: the guest's clock is the snapshot's, and its kernel's random generator
# is where the snapshot left it (as in every build restored from it): set the clock, and
# credit random bytes of the host (RNDADDENTROPY) and reseed at once (RNDRESEEDCRNG).
RESEED = (
    "import fcntl, os, struct, sys; seed = bytes.fromhex(sys.argv[1]); "
    "fd = os.open('/dev/urandom', os.O_WRONLY); "
    "fcntl.ioctl(fd, 0x40085203, struct.pack('ii', len(seed) * 8, len(seed)) + seed); fcntl.ioctl(fd, 0x5207)"
)
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


class VmStates(KeptStates):
    """Kept states of VMs: saved machines (memory, devices and disk overlay), as boot
    snapshots are, in the store's step-cache/vm folder."""

    kind = "vm"
    keep_after = 10.0  # a save writes the guest's memory and copies its disk overlay: seconds
    fidelity = (
        "the VM is restored running, as it was (services, /tmp and memory kept), with its clock and "
        "random generator renewed"
    )

    def __init__(self, store: Path) -> None:
        self.snapshots = Snapshots(store / "step-cache" / "vm")

    def identity(self) -> str:
        return f"{qemu_version()} {qemu.choose_accel()[0]}"

    def present(self) -> dict[str, float]:
        """The saved VMs whose files are all there (one missing is no state)."""
        return {
            found.key: found.meta_file.stat().st_mtime
            for found in self.snapshots.all()
            if found.state.is_file() and (found.folder / "disk.qcow2").is_file()
        }

    def remove(self, key: str) -> bool:
        return self.snapshots.remove(key)


def _folder_size(folder: Path) -> int:
    return sum(path.stat().st_blocks * 512 for path in folder.iterdir() if path.is_file())


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
        self.machine = QemuProcess(folder, port)
        self.within = BOOT_WITHIN
        self.progress: Any = lambda _message: None
        self.stopped = False
        self.accel = "tcg"
        self.snapshots: Snapshots | None = None  # boot snapshots to restore and add to (Linux guests)
        self.restore_from: tuple[VmStates, str] | None = None  # the step cache's state to start from

    @property
    def name(self) -> str:
        return f"vm {self.folder.name}"

    def describe(self) -> str:
        size = f"{self.machine.cpus} vCPU, {self.machine.memory_mib} MiB"
        return f"VM from {self.source.name} ({size}, ssh port {self.endpoint.port})"

    @property
    def overlay(self) -> Path:
        return self.folder / "disk.qcow2"

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
        target.machine.cpus, target.machine.memory_mib, cap_note = _cap(cpus, memory)
        target.notes.append(f"VM size {size_note}{cap_note}")
        target.machine.network = request.network != "none"
        target.machine.uefi = request.generation == "V2"
        if target.machine.uefi:
            target.notes.append("UEFI firmware (OVMF), as a Gen2 VM boots")
        target.within = min(BOOT_WITHIN, request.within)
        target.progress = request.progress
        target.os_type = request.os_type
        if request.snapshots and request.os_type == "Linux":
            target.snapshots = Snapshots(Path(request.snapshots))
        if request.restore:
            target.restore_from = (VmStates(Path(request.store)), request.restore)
        return target

    @classmethod
    def kept_states(cls, store: Path) -> VmStates:
        return VmStates(store)

    def keep_state(self, states: KeptStates, key: str, base_image: str) -> int:
        assert isinstance(states, VmStates)
        if not self._snapshot(states.snapshots, key, prune=False):
            raise TargetError(f"another build is saving the same state ({key[:16]})")
        found = states.snapshots.find(key)
        return _folder_size(found.folder) if found else 0

    # --- starting ------------------------------------------------------------------

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.restore_from is not None:
            states, key = self.restore_from
            if not self._restore(states.snapshots, key):
                raise TargetError(
                    f"the step cache's saved VM {key[:16]} did not restore (see the warnings); it is removed",
                    hint="build again: the customizers it stood for run",
                )
            return
        if self.snapshots is not None and self._restore(self.snapshots):
            return
        self._boot_cold()
        if self.snapshots is not None:
            self._save(self.snapshots)

    def _boot_cold(self) -> None:
        disks.overlay(self.source, self.overlay)
        self.machine.prepare_firmware()
        login, host = qemu.new_key(), qemu.new_key()
        key_file = self.folder / "id_ed25519"
        key_file.touch(0o600)
        key_file.write_text(login.private)
        (self.folder / "host_key.pub").write_text(host.public + "\n")
        (self.folder / "known_hosts").write_text(f"[127.0.0.1]:{self.endpoint.port} {host.public}\n")
        qemu.seed_iso(
            self.folder / "seed.iso",
            instance_id=f"aib-local-{self.build_id}-{uuid.uuid4().hex[:8]}",
            hostname="aib-local-build",
            user_data=qemu.user_data(BUILD_USER, login, host),
        )
        accel, why = qemu.choose_accel()
        if accel == "kvm" and not self.machine.kvm_runs(time.monotonic() + KVM_PROBE_WITHIN):
            self.machine.halt()
            accel, why = qemu.choose_accel()
        if accel == "tcg":
            self.machine.launch(accel)
        self.accel = accel
        if accel == "tcg":
            self.notes.append(f"the VM runs under TCG, QEMU's emulator ({why}): a boot takes tens of seconds")
        else:
            self.notes.append(f"the VM runs under KVM ({why})")
        self.progress(f"booting {self.source.name} under {accel.upper()}; its console: {self.machine.serial_log}")
        self._wait_for_ssh(time.monotonic() + self.within)
        self._detect()
        _code, out = self.link.capture(
            "sudo -n cloud-init status --wait >/dev/null 2>&1; sudo -n cat /run/cloud-init/result.json", 300
        )
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            errors = json.loads(out)["v1"]["errors"]
            if errors:
                self.warnings.append(f"cloud-init reported errors on first boot: {'; '.join(map(str, errors))[:300]}")

    # --- boot snapshots --------------------------------------------------------------

    def _save(self, snapshots: Snapshots) -> None:
        """Save the booted machine (before any customizer) for the next builds of this source."""
        started = time.monotonic()
        key = snapshots.key(self.source, self.machine.shape(self.accel))
        try:
            if not self._snapshot(snapshots, key):
                return
        except (TargetError, OSError) as exc:
            self.warnings.append(f"the booted VM could not be saved for the next builds: {exc}")
            return
        self.notes.append(
            f"saved the booted VM in {time.monotonic() - started:.1f}s: the next builds of this source restore it "
            f"instead of booting ({snapshots.root / key})"
        )

    def _snapshot(self, snapshots: Snapshots, key: str, *, prune: bool = True) -> bool:
        """Save the running machine as KEY's snapshot, then let it go on: whether it did
        (False: KEY exists or another build is saving it)."""
        with snapshots.making(key, prune=prune) as staging:
            if staging is None:
                return False
            try:
                self._close_sessions()
                self.link.close()
                self.machine.monitor.command("stop")
                self.machine.save(staging / "state")
                failpoints.hit("vm:saving")
                for name in self._kept_files():
                    shutil.copy(self.folder / name, staging / name)  # with its mode: the key is 0600
                meta = {"source": str(self.source), "accel": self.accel, "build": self.build_id}
                meta |= {"made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
            except (TargetError, OSError):  # the build goes on without it (an interrupt does not)
                self._go_on()
                raise
            self._go_on()
        return True

    def _kept_files(self) -> tuple[str, ...]:
        """The files of this VM's folder that a snapshot of it keeps."""
        return UEFI_FILES if self.machine.uefi else FILES

    def _go_on(self) -> None:
        """The paused VM runs again, and the build connects to it again."""
        self.machine.run()
        self.link.connect(30)

    def _restore(self, snapshots: Snapshots, key: str = "") -> bool:
        """Start from KEY's snapshot (by default the booted source's), when there is one:
        whether it did."""
        started = time.monotonic()
        accel, why = qemu.choose_accel()
        explicit = bool(key)
        key = key or snapshots.key(self.source, self.machine.shape(accel))
        with snapshots.locked(key, exclusive=False) as had:
            found = snapshots.find(key) if had else None
            if found is None:
                return False
            try:
                self._load(found, accel)
                found.used()
                restored = True
            except (TargetError, OSError) as exc:  # OSError: a file of it went missing meanwhile
                self.warnings.append(f"the saved VM did not restore ({str(exc)[:300]}): booting instead")
                self.machine.halt()
                shutil.rmtree(self.folder, ignore_errors=True)
                self.folder.mkdir(parents=True)
                restored = False
        if not restored:
            snapshots.remove(key)
            return False
        self.accel = accel
        what = "the VM the step cache kept," if explicit else "the VM"
        self.notes.append(
            f"restored {what} saved by build {found.meta().get('build', '?')} in {time.monotonic() - started:.1f}s, "
            f"under {accel.upper()} ({why})" + ("" if explicit else "; --vm-boot cold boots instead")
        )
        self._freshen()
        self._detect()
        return True

    def _load(self, snapshot: Snapshot, accel: str) -> None:
        what = "the VM the step cache kept" if self.restore_from else f"the booted {self.source.name}"
        self.progress(f"restoring {what} from {snapshot.folder}")
        for name in self._kept_files():
            shutil.copy(snapshot.folder / name, self.folder / name)
        host = (self.folder / "host_key.pub").read_text().strip()
        (self.folder / "known_hosts").write_text(f"[127.0.0.1]:{self.endpoint.port} {host}\n")
        state = os.open(snapshot.state, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.machine.launch(accel, incoming=state)
        finally:
            os.close(state)
        self._go_on()

    def _freshen(self) -> None:
        """A restored guest's clock and random generator are the snapshot's: set and reseed them."""
        seed = os.urandom(64).hex()
        code, out = self.link.capture(
            f"sudo -n date -u -s @{time.time():.3f} >/dev/null && "
            f"sudo -n python3 -c {shlex.quote(RESEED)} {seed} 2>&1 || echo 'sudo date or python3 failed'",
            30,
        )
        if code != 0 or out.strip():
            self.warnings.append(f"the restored VM's clock or random generator was not renewed: {out.strip()[-200:]}")

    def _wait_for_ssh(self, end: float) -> None:
        failed = [""]

        def answers() -> bool | None:
            self.machine.check_alive()
            if self.machine.status() == "internal-error":
                raise TargetError(
                    "the VM stopped with an emulation failure",
                    hint=f"set {qemu.ACCEL_ENV}=tcg; its console is in {self.machine.serial_log}",
                )
            try:
                self.link.connect(5)
                return True
            except AibLocalError as exc:
                failed[0] = str(getattr(exc, "message", exc))
                return None

        if poll(answers, within=end - time.monotonic(), every=0) is None:
            raise TargetError(
                f"the VM did not answer on SSH within {self.within:.0f}s ({failed[0]})",
                hint=f"its console is in {self.machine.serial_log}",
            )

    # --- capture and teardown ------------------------------------------------------

    def stop(self) -> None:
        """Power the guest off (as AIB stops the build VM before capturing its disk)."""
        self._close_sessions()
        with contextlib.suppress(AibLocalError):
            self.link.capture(f"sudo -n systemd-run --quiet --no-block --collect sh -c {shlex.quote(POWER_OFF)}", 30)
        self.link.close()
        self.machine.quit(POWER_OFF_WITHIN)
        self.stopped = True

    def console(self) -> Path:
        return self.machine.serial_log

    def disk(self) -> Path | None:
        """The whole disk of the stopped VM (the overlay over its source)."""
        return self.overlay if self.stopped else None

    def export(self) -> Any:
        raise TargetError("a VM is captured as its whole disk, not as a filesystem stream")

    def commit(self, repository: str, tag: str, base_image: str) -> str:
        raise TargetError("a VM build is captured as its whole disk (disk()), not committed as a Docker image")

    def _after_drop(self, why: str, timeout: float | None, reboots: bool = False) -> str:
        """The link dropped: when QEMU itself is gone, say so at once (what it exited with, and
        the last lines of the console and of qemu.log) instead of waiting to reconnect."""
        self.machine.check_exited(settle=2.0)  # the link may drop a moment before QEMU's exit is seen
        said = super()._after_drop(why, timeout, reboots)
        self.machine.check_exited()  # it died while the build tried to reconnect
        return said

    def remove(self) -> None:
        self._close_sessions()
        self.link.close()
        self.machine.kill()
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
        target.machine.monitor.wait_ready(within=5)
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
