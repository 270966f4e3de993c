"""Azure VM sizes as the build machine's limits: the sizes AIB templates use most.

A container target takes its CPU and memory limits from the template's vmSize; an
unknown size is guessed from its name, and validation says so with the closest size
this table knows.
"""

from __future__ import annotations

import difflib
import re

# vmSize -> (CPUs, memory in GiB): the sizes AIB templates use most, as Azure spells them.
VM_SIZES: dict[str, tuple[float, float]] = {
    "Standard_B1s": (1, 1),
    "Standard_B1ms": (1, 2),
    "Standard_B2s": (2, 4),
    "Standard_B2ms": (2, 8),
    "Standard_D1_v2": (1, 3.5),
    "Standard_DS1_v2": (1, 3.5),
    "Standard_D2_v2": (2, 7),
    "Standard_DS2_v2": (2, 7),
    "Standard_D2s_v3": (2, 8),
    "Standard_D2_v3": (2, 8),
    "Standard_D2ds_v4": (2, 8),
    "Standard_D2s_v4": (2, 8),
    "Standard_D2ds_v5": (2, 8),
    "Standard_D2s_v5": (2, 8),
    "Standard_D4s_v3": (4, 16),
    "Standard_D4ds_v4": (4, 16),
    "Standard_D4s_v5": (4, 16),
    "Standard_D8s_v3": (8, 32),
    "Standard_D8s_v5": (8, 32),
    "Standard_F2s_v2": (2, 4),
    "Standard_F4s_v2": (4, 8),
    "Standard_A1_v2": (1, 2),
    "Standard_A2_v2": (2, 4),
}
BY_LOWER = {name.lower(): name for name in VM_SIZES}  # Azure compares sizes case-insensitively
DEFAULT_VM_SIZE = "Standard_D1_v2"


def vm_limits(vm_size: str) -> tuple[float, float, str]:
    """(CPUs, memory GiB, note) for a vmSize; unknown sizes are guessed from the name."""
    size = vm_size or DEFAULT_VM_SIZE
    if size.lower() in BY_LOWER:
        cpus, mem = VM_SIZES[BY_LOWER[size.lower()]]
        return cpus, mem, f"{size}: {cpus:g} CPU, {mem:g} GiB"
    match = re.search(r"_[a-z]+(\d+)", size.lower())
    cpus = float(match.group(1)) if match else 2.0
    return cpus, cpus * 4, f"{size}: not in the size table, using {cpus:g} CPU, {cpus * 4:g} GiB"


def known(vm_size: str) -> bool:
    return vm_size.lower() in BY_LOWER


def closest(vm_size: str) -> str | None:
    """The known size most like `vm_size` (None when none is close)."""
    match = difflib.get_close_matches(vm_size.lower(), BY_LOWER, n=1, cutoff=0.6)
    return BY_LOWER[match[0]] if match else None
