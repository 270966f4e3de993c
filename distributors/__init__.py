"""Distributors, one module per AIB distribute type, and their registry."""

from __future__ import annotations

from typing import Any

from distributors.base import Distributor
from distributors.managed_image import ManagedImage
from distributors.shared_image import SharedImage
from distributors.vhd import Vhd

REGISTRY: dict[str, type[Distributor[Any]]] = {
    "ManagedImage": ManagedImage,
    "SharedImage": SharedImage,
    "VHD": Vhd,
}


def lookup(type_name: str) -> type[Distributor[Any]]:
    """The distributor class for an AIB `type`, or KeyError naming the known types."""
    try:
        return REGISTRY[type_name]
    except KeyError:
        raise KeyError(
            f"distribution type {type_name!r} is not supported locally yet; supported: {', '.join(REGISTRY)}"
        ) from None
