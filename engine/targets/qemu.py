"""QEMU for the VM target: the machine's command line, its cloud-init seed, its keys, and
its monitor (QMP). Nothing here knows of builds; engine/targets/vm.py drives it.

- The disk is a copy-on-write overlay of the source (`qemu-img create -b`), so the
  source is never written; the overlay is flattened when the VM is captured.
- The SSH key and the host key reach the guest through a cloud-init NoCloud seed: an ISO
  9660 volume labelled `cidata` (made with pycdlib), so the host key is known before
  the first connection and is verified, never accepted blindly.
- QEMU is controlled over QMP (status, power-down, quit), one short connection per command.
- KVM is used when /dev/kvm opens and a VM actually runs under it: where KVM only
  half works (nested virtualization), QEMU starts and the guest then stops with an
  emulation failure (QMP's status: internal-error) before its kernel prints a line. The
  first boot tells; the machine is then booted again under TCG, QEMU's emulator, and
  the answer is kept (in the runtime folder, until this machine boots again) so that
  later boots go straight to TCG. AIB_LOCAL_ACCEL=kvm|tcg decides it outright.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import io
import json
import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.disks import need
from engine.errors import EnvironmentProblem
from engine.polling import poll
from engine.targets.base import TargetError

QEMU = "qemu-system-x86_64"


def monitor_socket(folder: Path) -> Path:
    """Where the QMP socket of the VM in `folder` listens: a short path of its own under
    the runtime folder (a unix socket's path has at most 107 bytes; a store's may be longer)."""
    runtime = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    return runtime / f"aib-local-qmp-{digest}.sock"


@dataclass(frozen=True)
class KeyPair:
    private: str  # OpenSSH PEM
    public: str  # "ssh-ed25519 AAAA..."


def new_key() -> KeyPair:
    """A fresh Ed25519 key pair."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return KeyPair(private, public.decode())


def user_data(user: str, login: KeyPair, host: KeyPair) -> str:
    """cloud-config: the build user with passwordless sudo and the login key, and the host
    key the client will expect (JSON is YAML, so it is written as JSON)."""
    config = {
        "users": [
            {
                "name": user,
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "shell": "/bin/bash",
                "lock_passwd": True,
                "ssh_authorized_keys": [login.public],
            }
        ],
        "ssh_keys": {"ed25519_private": host.private, "ed25519_public": host.public},
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
    }
    return "#cloud-config\n" + json.dumps(config, indent=2) + "\n"


def seed_iso(path: Path, *, instance_id: str, hostname: str, user_data: str) -> None:
    """A NoCloud seed: an ISO 9660 volume `cidata` with user-data and meta-data."""
    import pycdlib

    files = {
        "user-data": user_data.encode(),
        "meta-data": f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n".encode(),
    }
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for name, data in files.items():
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            f"/{name.replace('-', '').upper()}.;1",
            rr_name=name,
            joliet_path=f"/{name}",
        )
    iso.write(str(path))
    iso.close()


@dataclass(frozen=True)
class Machine:
    """What one QEMU process is given."""

    disk: Path
    seed: Path
    qmp: Path
    serial: Path
    pidfile: Path
    ssh_port: int
    cpus: int
    memory_mib: int
    network: bool = True  # False: the guest reaches nothing outside (SSH still comes in)
    accel: str = "tcg"  # kvm or tcg
    incoming: int | None = None  # a file descriptor of a saved machine to restore (engine/targets/snapshots.py)
    efi_vars: Path | None = None  # UEFI firmware (OVMF), as a Gen2 VM boots, with this copy of its variables

    def firmware(self) -> list[str]:
        if self.efi_vars is None:
            return []  # SeaBIOS, as a Gen1 VM boots
        code, _vars = ovmf()
        return [
            "-drive",
            f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
            "-drive",
            f"if=pflash,format=raw,unit=1,file={self.efi_vars}",
        ]

    def argv(self) -> list[str]:
        netdev = f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22" + ("" if self.network else ",restrict=on")
        return [
            need(QEMU, "qemu-system-x86"),
            "-name",
            "aib-local",
            "-machine",
            "pc",
            "-accel",
            self.accel,
            *self.firmware(),
            "-smp",
            str(self.cpus),
            "-m",
            str(self.memory_mib),
            "-drive",
            f"file={self.disk},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
            "-drive",
            f"file={self.seed},if=virtio,format=raw,readonly=on",
            "-netdev",
            netdev,
            "-device",
            "virtio-net-pci,netdev=n0",
            "-device",
            "virtio-rng-pci",
            "-serial",
            f"file:{self.serial}",
            "-qmp",
            f"unix:{self.qmp},server=on,wait=off",
            "-pidfile",
            str(self.pidfile),
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-user-config",
            "-nodefaults",
            *(["-incoming", f"fd:{self.incoming}"] if self.incoming is not None else []),
        ]


OVMF_PLACES = (  # (firmware code, variables template): Debian and Ubuntu, older Debian, Fedora
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
)


def ovmf() -> tuple[Path, Path]:
    """The UEFI firmware for x86-64 VMs (without Secure Boot) and its variables' template."""
    for code, variables in OVMF_PLACES:
        if Path(code).is_file() and Path(variables).is_file():
            return Path(code), Path(variables)
    raise EnvironmentProblem(
        "OVMF (UEFI firmware for QEMU) is not installed: Gen2 VM builds need it", hint="apt-get install ovmf"
    )


class Monitor:
    """QEMU's monitor (QMP) over its unix socket: one short connection per command, each
    read bounded by a timeout. QEMU serves one monitor client at a time, so a connection
    held open (by a build that kept its VM, say) would leave every other process waiting
    for QMP's greeting; qemu.qmp's synchronous client has no timeout for that wait, hence
    these few lines of JSON over a socket."""

    def __init__(self, socket_path: Path) -> None:
        self.path = socket_path

    def wait_ready(self, within: float, alive: Callable[[], None] = lambda: None) -> None:
        """Until the monitor answers (`within` seconds at most); `alive` raises once QEMU is gone."""
        failed = [""]

        def answers() -> bool | None:
            try:
                self.command("query-status", timeout=2)
                return True
            except TargetError as exc:
                alive()
                failed[0] = str(exc)
                return None

        if poll(answers, within=within, every=0.1) is None:
            raise TargetError(f"QEMU's monitor did not answer at {self.path}: {failed[0]}")

    def command(self, name: str, timeout: float = 5.0, *, fd: tuple[str, int] | None = None, **arguments: Any) -> Any:
        """Run one QMP command; its "return" value (TargetError for an error or no answer).
        With `fd` (name, descriptor), the descriptor is first handed to QEMU under that
        name (getfd, on the same connection: QEMU keeps it for that client only)."""
        messages: list[tuple[dict[str, Any], int | None]] = [({"execute": "qmp_capabilities"}, None)]
        if fd is not None:
            messages.append(({"execute": "getfd", "arguments": {"fdname": fd[0]}}, fd[1]))
        messages.append(({"execute": name, "arguments": arguments}, None))
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(str(self.path))
                with sock.makefile("rb") as stream:  # closed with the socket: QEMU serves one client at a time
                    _reply(stream)  # the greeting
                    for message, passed in messages:
                        data = [json.dumps(message).encode() + b"\n"]
                        rights = (
                            []
                            if passed is None
                            else [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [passed]))]
                        )
                        sock.sendmsg(data, rights)
                        result = _reply(stream)
                return result
        except (OSError, ValueError) as exc:
            raise TargetError(f"QEMU's monitor at {self.path} did not answer {name}: {exc}") from None


def _reply(stream: Any) -> Any:
    """The next reply on a QMP stream (events are skipped)."""
    while True:
        line = stream.readline()
        if not line:
            raise TargetError("QEMU closed its monitor")
        message = json.loads(line)
        if "error" in message:
            raise TargetError(f"QEMU refused: {message['error'].get('desc', message['error'])}")
        if "return" in message:
            return message["return"]
        if "QMP" in message:
            return message


ACCEL_ENV = "AIB_LOCAL_ACCEL"
_kvm_verdict: dict[str, str] = {}  # "kvm" -> why not, once a boot has told


def kvm_usable() -> bool:
    """Whether /dev/kvm can be opened (a VM may still fail under it)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def choose_accel() -> tuple[str, str]:
    """(accelerator, why) for the next boot."""
    forced = os.environ.get(ACCEL_ENV, "").lower()
    if forced in ("kvm", "tcg"):
        return forced, f"{ACCEL_ENV}={forced}"
    if "kvm" not in _kvm_verdict:
        with contextlib.suppress(OSError, ValueError, KeyError):
            kept = json.loads(_verdict_file().read_text())
            if kept["boot"] == _host_boot():
                _kvm_verdict["kvm"] = f"{kept['why']}, as an earlier boot here found; {ACCEL_ENV}=kvm tries it again"
    if "kvm" in _kvm_verdict:
        return "tcg", _kvm_verdict["kvm"]
    if not kvm_usable():
        return "tcg", "/dev/kvm cannot be opened"
    return "kvm", "/dev/kvm opens"


def kvm_failed(why: str) -> None:
    """KVM stopped a guest here: later boots use TCG, in this process and, until this
    machine boots again, in others (the verdict is kept in the runtime folder)."""
    _kvm_verdict["kvm"] = why
    with contextlib.suppress(OSError):
        kept = _verdict_file()
        staged = kept.with_name(f"{kept.name}.{os.getpid()}")
        staged.write_text(json.dumps({"boot": _host_boot(), "why": why}))
        staged.replace(kept)


def _verdict_file() -> Path:
    return Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / "aib-local-kvm-verdict.json"


def _host_boot() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def running_pid(folder: Path) -> int | None:
    """The pid of the QEMU running the VM of `folder` (its pid file, and a command line
    that names the folder, so that a reused pid is never taken for it)."""
    try:
        pid = int((folder / "qemu.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if str(folder).encode() in cmdline else None
