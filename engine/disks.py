"""Disk image files through qemu-img: their format and size, copy-on-write overlays, and
flattening into one file. Shared by the VM target (its overlay) and the distributors
(a VM build's VHD, managed image and gallery version)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from engine.errors import EnvironmentProblem
from engine.targets.base import TargetError

DISK_FORMATS = {".qcow2": "qcow2", ".raw": "raw", ".img": "raw", ".vhd": "vpc", ".vhdx": "vhdx"}


def need(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise EnvironmentProblem(f"{tool} is not installed: VM builds need it", hint=f"apt-get install {package}")
    return found


def disk_format(path: Path) -> str:
    """The format of a disk file: by its extension, else as qemu-img reads it."""
    known = DISK_FORMATS.get(path.suffix.lower())
    if known:
        return known
    out = run([need("qemu-img", "qemu-utils"), "info", "--output", "json", str(path)], "read the disk")
    return str(json.loads(out)["format"])


def run(argv: list[str], what: str, timeout: float = 600) -> str:
    """Run a QEMU tool; TargetError with its message when it fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TargetError(f"cannot {what}: {argv[0]} did not finish within {timeout:.0f}s") from None
    if done.returncode != 0:
        raise TargetError(f"cannot {what}: {(done.stderr or done.stdout).strip()[-400:]}")
    return done.stdout


def overlay(source: Path, path: Path) -> None:
    """A copy-on-write qcow2 over `source`, which is only ever read."""
    run(
        [
            need("qemu-img", "qemu-utils"),
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            disk_format(source),
            "-b",
            str(source.resolve()),  # the overlay may be copied elsewhere (a saved booted VM's is)
            str(path),
        ],
        f"make an overlay of {source}",
    )


def flatten(disk: Path, out: Path, fmt: str) -> None:
    """The whole disk (overlay and backing file) as one file of format `fmt`."""
    run(
        [need("qemu-img", "qemu-utils"), "convert", "-q", "-f", disk_format(disk), "-O", fmt, str(disk), str(out)],
        f"write {out.name}",
        timeout=3600,
    )


def virtual_size(disk: Path) -> int:
    out = run([need("qemu-img", "qemu-utils"), "info", "--output", "json", str(disk)], f"read {disk}")
    return int(json.loads(out)["virtual-size"])
