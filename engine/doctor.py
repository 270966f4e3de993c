"""`aib-local doctor`: what this machine has for each kind of build, and the command
that fixes what it lacks.

Each check says ok, or what is missing and how to get it. A check belongs to what needs
it (container builds, VM builds, SSH builds, reports): the exit code is 0 when everything
the asked-for builds need is there (by default container builds), and the other checks
are said all the same, as information.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.errors import AibLocalError

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
BASE_IMAGE = "debian:12"
SSHD_IMAGE = "aib-local/sshd:12"
DISK = "debian-12.qcow2"
FREE_WARNING = 5 << 30  # bytes: below this a VHD or an image may not fit


@dataclass
class Check:
    name: str
    needed_for: str  # docker | vm | ssh | reports
    ok: bool
    detail: str
    fix: str = ""  # the command that fixes it ("" when ok)


def _script(path: str, *args: str) -> str:
    return " ".join([str(FIXTURES / path), *args])


def engine_checks() -> list[Check]:
    """The Docker (or Podman) engine, its cgroups, and the images builds start from."""
    from engine import images
    from engine.targets.docker_systemd import engine_cgroup

    try:
        client = images.connect()
        about = images.engine_about(client)
    except AibLocalError as exc:
        podman = _script("ensure-podman.sh")
        fix = _script("ensure-docker.sh") + f"   (or, for Podman, {podman}; or set DOCKER_HOST)"
        return [Check("container engine", "docker", False, str(exc.message), fix)]
    found = [Check("container engine", "docker", True, about.describe())]
    try:
        setup = engine_cgroup(client)
        if setup.blocked:
            found.append(
                Check(
                    "systemd in containers",
                    "docker",
                    True,
                    f"cgroup v{setup.version}: builds run with a keep-alive PID 1 ({setup.blocked})",
                    "",
                )
            )
        else:
            found.append(Check("systemd in containers", "docker", True, f"cgroup v{setup.version}: {setup.grants}"))
    except AibLocalError as exc:
        found.append(Check("systemd in containers", "docker", False, str(exc.message)))
    found.append(_image_check(client, BASE_IMAGE, "docker", "the PlatformImage sources' base image"))
    found.append(_image_check(client, SSHD_IMAGE, "ssh", "the sshd test image (SSH build tests)"))
    found += _free_space(client)
    return found


def _image_check(client: Any, ref: str, needed_for: str, what: str) -> Check:
    from engine import images

    fix = _script("images/build-image.sh", ref)
    try:
        image = client.images.get(ref)
    except Exception:  # docker's NotFound, or any engine error: the image is not usable
        return Check(f"image {ref}", needed_for, False, f"{what} is missing", fix)
    old = images.older_recipe(client, str(image.id))
    if old is not None:
        return Check(f"image {ref}", needed_for, False, f"made by an older recipe ({old})", f"FORCE=1 {fix}")
    return Check(f"image {ref}", needed_for, True, f"{what} ({str(image.id)[7:19]})")


def _free_space(client: Any) -> list[Check]:
    from engine import images
    from engine.store import Store

    found = []
    places = {"the store": Store.open(None).root}
    if images.engine_is_local(client):
        root = str(client.info().get("DockerRootDir") or "")
        if root:
            places["the engine's data root"] = Path(root)
    for what, path in places.items():
        existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
        free = shutil.disk_usage(existing).free
        ok = free >= FREE_WARNING
        detail = f"{free / (1 << 30):.1f} GiB free at {existing}"
        found.append(Check(f"free disk ({what})", "docker", ok, detail, "" if ok else f"free space under {existing}"))
    return found


def vm_checks() -> list[Check]:
    """QEMU, its accelerator, UEFI firmware and the fixture disk."""
    from engine.catalogue import disks_folder
    from engine.targets import qemu

    found = []
    binary = shutil.which("qemu-system-x86_64")
    if binary is None:
        found.append(Check("QEMU", "vm", False, "qemu-system-x86_64 is missing", "apt-get install -y qemu-system-x86"))
    else:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False, timeout=30)
        found.append(Check("QEMU", "vm", True, done.stdout.splitlines()[0] if done.stdout else binary))
        accel, why = qemu.choose_accel()
        speed = "VMs run at native speed" if accel == "kvm" else "VMs run under emulation: a boot takes tens of seconds"
        found.append(Check("accelerator", "vm", True, f"{accel.upper()} ({why}); {speed}"))
    for tool, package in (("qemu-img", "qemu-utils"),):
        if shutil.which(tool) is None:
            found.append(Check(tool, "vm", False, f"{tool} is missing", f"apt-get install -y {package}"))
    try:
        code, _variables = qemu.ovmf()
        found.append(Check("UEFI firmware (Gen2 sources)", "vm", True, str(code)))
    except AibLocalError:
        found.append(Check("UEFI firmware (Gen2 sources)", "vm", False, "OVMF is missing", "apt-get install -y ovmf"))
    disk = disks_folder() / DISK
    made = _script("images/build-disk.sh")
    recipe = _disk_recipe()
    if not disk.is_file():
        found.append(Check("fixture disk", "vm", False, f"{disk} is missing", f"sudo {made}"))
    elif recipe and (disk.parent / f"{DISK}.recipe").read_text().strip() != recipe:
        found.append(Check("fixture disk", "vm", False, f"{disk} was made by an older recipe", f"sudo FORCE=1 {made}"))
    else:
        found.append(Check("fixture disk", "vm", True, str(disk)))
    return found


def _disk_recipe() -> str:
    script = FIXTURES / "images" / "build-disk.sh"
    for line in script.read_text().splitlines() if script.is_file() else []:
        if line.startswith("RECIPE="):
            return line.split("=", 1)[1].split()[0]
    return ""


def other_checks() -> list[Check]:
    found = []
    browser = next(
        (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None
    )
    found.append(
        Check("headless browser", "reports", True, browser)
        if browser
        else Check(
            "headless browser",
            "reports",
            False,
            "chromium is missing (the HTML report's tests load it)",
            "apt-get install -y chromium",
        )
    )
    return found


CHECKS: tuple[Callable[[], list[Check]], ...] = (engine_checks, vm_checks, other_checks)


def run_checks() -> list[Check]:
    return [check for group in CHECKS for check in group()]


def verdict(checks: list[Check], wanted: set[str]) -> int:
    """0 when every check of what is wanted passed, else 1."""
    return 0 if all(c.ok for c in checks if c.needed_for in wanted) else 1


def as_json(checks: list[Check]) -> list[dict[str, object]]:
    return [asdict(check) for check in checks]
