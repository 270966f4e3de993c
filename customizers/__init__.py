"""Customizers, one module per AIB customizer type, and their registry."""

from __future__ import annotations

from typing import Any

from customizers.base import Customizer
from customizers.file import File
from customizers.powershell import PowerShell
from customizers.shell import Shell
from customizers.windows_restart import WindowsRestart
from customizers.windows_update import WindowsUpdate

REGISTRY: dict[str, type[Customizer[Any]]] = {
    "Shell": Shell,
    "PowerShell": PowerShell,
    "File": File,
    "WindowsRestart": WindowsRestart,
    "WindowsUpdate": WindowsUpdate,
}


def lookup(type_name: str) -> type[Customizer[Any]]:
    """The customizer class for an AIB `type`, or KeyError naming the known types."""
    try:
        return REGISTRY[type_name]
    except KeyError:
        raise KeyError(f"unknown customizer type {type_name!r}; known: {', '.join(REGISTRY)}") from None


def create(section: Any) -> Customizer[Any]:
    return lookup(section.type)(section)
