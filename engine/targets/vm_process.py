"""The QEMU process of one VM folder: launched (booting, or loading a saved machine),
watched over QMP, saved, and stopped. The VM target (engine/targets/vm.py) decides what
runs on it; this knows only the process, its monitor and its files (`qemu.log`,
`serial.log`, `qemu.pid`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from engine.polling import poll
from engine.targets import qemu
from engine.targets.base import TargetError

MONITOR_WITHIN = 20.0  # seconds for a new QEMU's monitor to answer
MIGRATION_WITHIN = 120.0  # seconds to save or load a machine's memory


class QemuProcess:
    """QEMU for the VM in `folder`: this process's child, or (kept VMs) found by its pid file."""

    def __init__(self, folder: Path, ssh_port: int) -> None:
        self.folder = folder
        self.ssh_port = ssh_port
        self.cpus, self.memory_mib = 2, 4096
        self.network = True
        self.uefi = False  # Gen2: UEFI firmware (OVMF) with the VM's own variables
        self.process: subprocess.Popen[bytes] | None = None
        self.monitor = qemu.Monitor(qemu.monitor_socket(folder))

    @property
    def serial_log(self) -> Path:
        return self.folder / "serial.log"

    @property
    def efi_vars(self) -> Path | None:
        return self.folder / "efivars.fd" if self.uefi else None

    def prepare_firmware(self) -> None:
        """A Gen2 VM's UEFI variables: a fresh copy of the firmware's template."""
        if self.efi_vars is not None:
            shutil.copyfile(qemu.ovmf()[1], self.efi_vars)

    def machine(self, accel: str, incoming: int | None = None) -> qemu.Machine:
        return qemu.Machine(
            disk=self.folder / "disk.qcow2",
            seed=self.folder / "seed.iso",
            qmp=qemu.monitor_socket(self.folder),
            serial=self.serial_log,
            pidfile=self.folder / "qemu.pid",
            ssh_port=self.ssh_port,
            cpus=self.cpus,
            memory_mib=self.memory_mib,
            network=self.network,
            accel=accel,
            incoming=incoming,
            efi_vars=self.efi_vars,
        )

    def shape(self, accel: str) -> list[str]:
        """The command line without its paths and port: what a saved machine fits."""
        nowhere = Path("-")
        firmware = nowhere if self.uefi else None
        machine = qemu.Machine(
            nowhere, nowhere, nowhere, nowhere, nowhere, 0, self.cpus, self.memory_mib, accel=accel, efi_vars=firmware
        )
        return machine.argv()[1:]

    def launch(self, accel: str, incoming: int | None = None) -> None:
        """Start QEMU (booting the disk, or loading the saved machine open at `incoming`)."""
        log = (self.folder / "qemu.log").open("wb")
        try:
            # Its own session: a Ctrl-C at the terminal reaches aib-local, which stops QEMU itself.
            self.process = subprocess.Popen(
                self.machine(accel, incoming).argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                pass_fds=() if incoming is None else (incoming,),
            )
        finally:
            log.close()
        self.monitor.wait_ready(within=MONITOR_WITHIN, alive=self.check_alive)

    def status(self) -> str:
        """QMP's run state ("" when the monitor does not answer)."""
        try:
            return str(self.monitor.command("query-status").get("status", ""))
        except TargetError:
            return ""

    def check_exited(self, settle: float = 0.0) -> None:
        """TargetError naming QEMU's exit when this process's QEMU has exited (a VM killed
        under the build), with the last lines of the guest's console and of QEMU's log;
        `settle`: seconds to wait for an exit that may be under way."""
        if self.process is None:
            return
        if settle:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=settle)
        if self.process.poll() is None:
            return
        code = self.process.returncode
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        console = _tail(self.serial_log, 5) or "(nothing)"
        log = _tail(self.folder / "qemu.log", 5) or "(nothing)"
        raise TargetError(
            f"the VM's QEMU (pid {self.process.pid}) {how} during the build, a fault of the machine underneath, "
            f"not of the step\n  its console's last lines:\n{console}\n  qemu.log:\n{log}"
        )

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            tail = (self.folder / "qemu.log").read_text(errors="replace").strip()[-400:]
            raise TargetError(f"QEMU exited ({self.process.returncode}): {tail or 'no message'}")

    def kvm_runs(self, end: float) -> bool:
        """Boot under KVM: whether the guest gets past its firmware and bootloader (its
        kernel prints, or it still runs when the probe's time is up). When it does not,
        later boots use TCG (qemu.kvm_failed)."""
        try:
            self.launch("kvm")

            def kernel_speaks() -> bool | None:
                self.check_alive()
                if self.status() == "internal-error":
                    raise TargetError("KVM stopped the guest with an emulation failure")
                with contextlib.suppress(OSError):
                    if b"Linux version" in self.serial_log.read_bytes():
                        return True
                return None

            poll(kernel_speaks, within=end - time.monotonic(), every=0.2)
            return True  # the kernel spoke, or the guest still runs when the probe's time is up
        except TargetError as exc:
            qemu.kvm_failed(f"KVM does not run a VM here: {exc.message.splitlines()[-1][:160]}")
            return False

    def halt(self) -> None:
        """Stop this QEMU at once (what it ran is not used again)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        for name in ("qemu.pid", "serial.log"):
            (self.folder / name).unlink(missing_ok=True)
        qemu.monitor_socket(self.folder).unlink(missing_ok=True)

    def save(self, path: Path) -> None:
        """Write the paused machine's memory and devices to `path` (QEMU's migration)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            self.monitor.command("migrate", fd=("snapshot", fd), uri="fd:snapshot")
        finally:
            os.close(fd)

        def migrated() -> bool | None:
            status = self.monitor.command("query-migrate", timeout=MIGRATION_WITHIN)
            if status.get("status") in ("failed", "cancelled"):
                raise TargetError(f"QEMU did not save the machine: {status.get('error-desc', status['status'])}")
            return True if status.get("status") == "completed" else None

        if poll(migrated, within=MIGRATION_WITHIN, every=0.1) is None:
            raise TargetError(f"QEMU did not save the machine within {MIGRATION_WITHIN:.0f}s")

    def run(self) -> None:
        """Let a paused machine (just saved, or just loaded) run."""

        def loaded() -> str | None:
            status = self.status()
            if status in ("inmigrate", ""):
                self.check_alive()
                return None
            return status

        status = poll(loaded, within=MIGRATION_WITHIN, every=0.05)
        if status is None:
            raise TargetError(f"QEMU did not load the saved machine within {MIGRATION_WITHIN:.0f}s")
        if status != "running":
            self.monitor.command("cont")

    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else qemu.running_pid(self.folder)

    def wait_exit(self, within: float) -> bool:
        """Whether QEMU is gone within `within` seconds."""
        process = self.process
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, within))
            return process.poll() is not None
        return bool(poll(lambda: qemu.running_pid(self.folder) is None or None, within=within, every=0.2))

    def quit(self, within: float) -> None:
        """Wait `within` seconds for the guest to power off, then have QEMU quit."""
        if not self.wait_exit(within):
            with contextlib.suppress(TargetError):
                self.monitor.command("quit")
            self.wait_exit(10)

    def kill(self) -> None:
        """End QEMU: SIGTERM, then SIGKILL."""
        pid = self.pid()
        if pid is not None and not self.wait_exit(0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not self.wait_exit(10):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self.wait_exit(10)
        qemu.monitor_socket(self.folder).unlink(missing_ok=True)


def _tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a text file, indented ("" when it is missing or empty)."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(f"    {line}" for line in text.strip().splitlines()[-lines:])
