"""The PlatformImage catalogue: built-in URNs, overrides, `latest`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.catalogue import Catalogue
from engine.errors import UsageError
from engine.template.model import PlatformImageSource


def source(urn: str) -> PlatformImageSource:
    publisher, offer, sku, version = urn.split(":")
    return PlatformImageSource.model_validate(
        {"type": "PlatformImage", "publisher": publisher, "offer": offer, "sku": sku, "version": version}
    )


@pytest.mark.parametrize(
    ("urn", "image"),
    [
        ("Canonical:UbuntuServer:18.04-LTS:latest", "ubuntu:18.04"),
        ("Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:latest", "ubuntu:22.04"),
        ("canonical:ubuntu-24_04-lts:server:latest", "ubuntu:24.04"),
        ("Debian:debian-12:12:latest", "debian:12"),
        ("Debian:debian-12:12:0.20240211.1654", "debian:12"),
        (
            "MicrosoftWindowsServer:WindowsServer:2022-datacenter-azure-edition:latest",
            "mcr.microsoft.com/windows/servercore:ltsc2022",
        ),
    ],
)
def test_builtin_entries(urn: str, image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIB_LOCAL_CATALOGUE", raising=False)
    assert Catalogue.load().resolve(source(urn)) == image


def test_unknown_urn_resolves_to_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIB_LOCAL_CATALOGUE", raising=False)
    assert Catalogue.load().resolve(source("Acme:Os:1:latest")) is None


def test_override_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps({"Debian:debian-12:12:latest": "mine:12", "Acme:Os:1:2.0": "acme:2"}))
    monkeypatch.setenv("AIB_LOCAL_CATALOGUE", str(path))
    catalogue = Catalogue.load()
    assert catalogue.resolve(source("Debian:debian-12:12:latest")) == "mine:12"
    assert catalogue.resolve(source("Acme:Os:1:2.0")) == "acme:2"
    assert catalogue.resolve(source("Acme:Os:1:3.0")) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1]", "expected a JSON object"),
        ('{"a:b": "x"}', "expected publisher:offer:sku:version"),
        ('{"a:b:c:d": 5}', "expected an image reference"),
        ("{", "not readable JSON"),
    ],
)
def test_bad_override_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "catalogue.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        Catalogue.load(path)


def test_vm_builds_find_debian_12s_disk_in_the_disks_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIB_LOCAL_CATALOGUE", raising=False)
    monkeypatch.setenv("AIB_LOCAL_DISKS", str(tmp_path))
    catalogue = Catalogue.load()
    assert catalogue.resolve_disk(source("Debian:debian-12:12:latest")) == tmp_path / "debian-12.qcow2"
    assert catalogue.resolve(source("Debian:debian-12:12:latest")) == "debian:12"  # containers keep theirs
    assert catalogue.resolve_disk(source("Canonical:UbuntuServer:18.04-LTS:latest")) is None


def test_an_override_maps_a_urn_to_an_image_and_a_disk_relative_to_its_file(tmp_path: Path) -> None:
    override = tmp_path / "catalogue.json"
    override.write_text(
        json.dumps(
            {
                "Canonical:UbuntuServer:18.04-LTS:latest": {"disk": "disks/ubuntu.qcow2"},
                "Debian:debian-12:12:latest": {"image": "my/debian:12", "disk": "/srv/debian.vhd"},
            }
        )
    )
    catalogue = Catalogue.load(override)
    ubuntu = source("Canonical:UbuntuServer:18.04-LTS:latest")
    assert catalogue.resolve_disk(ubuntu) == tmp_path / "disks" / "ubuntu.qcow2"
    assert catalogue.resolve(ubuntu) is None  # the entry replaces the built-in one whole
    assert catalogue.resolve(source("Debian:debian-12:12:latest")) == "my/debian:12"
    assert catalogue.resolve_disk(source("Debian:debian-12:12:latest")) == Path("/srv/debian.vhd")


@pytest.mark.parametrize(
    "entry",
    [{"disk": 3}, {"disks": "x.qcow2"}, {}, {"image": ""}],
)
def test_a_malformed_object_entry_is_a_usage_error(tmp_path: Path, entry: dict[str, object]) -> None:
    override = tmp_path / "catalogue.json"
    override.write_text(json.dumps({"Debian:debian-12:12:latest": entry}))
    with pytest.raises(UsageError, match="expected an image reference, or an object"):
        Catalogue.load(override)
