"""Rules a template meets against the local store: sources in its region, gallery
versions replicated there, definitions whose OS state and generation fit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine import store_rules
from engine.errors import Finding
from engine.gallery import Galleries, definition_id
from engine.store import Store
from engine.template import model as m
from engine.template.loading import load_templates
from tests.support import SUBSCRIPTION, managed_image_id, template

DEBIAN_GEN2 = {
    "type": "PlatformImage",
    "publisher": "Debian",
    "offer": "debian-12",
    "sku": "12-gen2",
    "version": "latest",
}


@pytest.fixture
def local(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def definition(store: Store, name: str, **kw: Any) -> str:
    galleries = Galleries(store)
    galleries.create_gallery(SUBSCRIPTION, "rg", "gal", "westeurope")
    galleries.create_definition(
        SUBSCRIPTION, "rg", "gal", name, publisher="p", offer="o", sku=name, os_type="Linux", **kw
    )
    return definition_id(SUBSCRIPTION, "rg", "gal", name)


def version(store: Store, definition_id: str, regions: list[str]) -> str:
    return Galleries(store).add_version(
        definition_id,
        version="1.0.0",
        major=None,
        location=regions[0],
        target_regions=[{"name": r} for r in regions],
        exclude_from_latest=False,
        source={},
        local={"dockerImage": "x"},
        tags={},
    )


def findings(tmp_path: Path, store: Store, **parts: Any) -> list[tuple[str, str, str]]:
    document = template("t", [{"type": "Shell", "inline": ["true"]}], **parts)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(document))
    (loaded,) = load_templates(path)
    found: list[Finding] = store_rules.check(loaded, store)
    return [(f.path, f.severity, f.message) for f in found]


def test_a_managed_image_source_must_be_in_the_templates_region(tmp_path: Path, local: Store) -> None:
    image = managed_image_id("base")
    assert findings(tmp_path, local, source={"type": "ManagedImage", "imageId": image}) == [
        (
            "properties.source.imageId",
            "warning",
            f"{image} is not in the local store {local.root}: a build fails until one distributes it",
        )
    ]
    local.put(image, {"name": "base", "location": "eastus", "properties": {}})
    [(path, severity, message)] = findings(tmp_path, local, source={"type": "ManagedImage", "imageId": image})
    assert (path, severity) == ("properties.source.imageId", "error")
    assert message == "AIB takes a managed image from the template's region (westeurope); this one is in eastus"


def test_a_gallery_version_source_must_be_replicated_to_the_templates_region(tmp_path: Path, local: Store) -> None:
    far = version(local, definition(local, "far"), ["eastus"])
    [(path, severity, message)] = findings(
        tmp_path, local, source={"type": "SharedImageVersion", "imageVersionId": far}
    )
    assert (path, severity) == ("properties.source.imageVersionId", "error")
    assert "replicated to the template's region (westeurope); 1.0.0 is in eastus" in message
    near = version(local, definition(local, "near"), ["eastus", "westeurope"])
    assert findings(tmp_path, local, source={"type": "SharedImageVersion", "imageVersionId": near}) == []


def test_a_specialized_gallery_image_is_not_a_source_nor_a_destination(tmp_path: Path, local: Store) -> None:
    specialized = definition(local, "spec", os_state="Specialized")
    source = {"type": "SharedImageVersion", "imageVersionId": version(local, specialized, ["westeurope"])}
    assert ("properties.source.imageVersionId", "error") in [f[:2] for f in findings(tmp_path, local, source=source)]
    into = [
        {
            "type": "SharedImage",
            "galleryImageId": specialized,
            "runOutputName": "g",
            "targetRegions": [{"name": "westeurope"}],
        }
    ]
    [(path, severity, message)] = findings(tmp_path, local, distribute=into)
    assert (path, severity) == ("properties.distribute[0].galleryImageId", "error")
    assert message.startswith("the definition is Specialized, and AIB's images are Generalized")


def test_a_definitions_generation_must_fit_the_source(tmp_path: Path, local: Store) -> None:
    gen2 = definition(local, "gen2", hyper_v_generation="V2")
    into = [
        {"type": "SharedImage", "galleryImageId": gen2, "runOutputName": "g", "targetRegions": [{"name": "westeurope"}]}
    ]
    [(path, _, message)] = findings(tmp_path, local, distribute=into)
    assert path == "properties.distribute[0].galleryImageId"
    assert message == "the definition is Hyper-V generation V2, and the source is V1"
    assert findings(tmp_path, local, distribute=into, source=DEBIAN_GEN2) == []


def test_validate_checks_against_the_store_and_a_build_refuses_before_starting(cli: Any, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")  # the cli fixture's store
    image = managed_image_id("base")
    store.put(image, {"name": "base", "location": "eastus", "properties": {}})
    path = tmp_path / "t.json"
    path.write_text(
        json.dumps(
            template("t", [{"type": "Shell", "inline": ["true"]}], source={"type": "ManagedImage", "imageId": image})
        )
    )
    checked = cli("validate", str(path))
    assert checked.code == 2 and "properties.source.imageId: AIB takes a managed image from" in checked.stderr
    built = cli("build", str(path), "--network", "none")
    assert built.code == 2 and "properties.source.imageId: AIB takes a managed image from" in built.stderr
    assert "start-target" not in built.stdout  # refused before any target starts


def test_validate_refuses_a_store_that_is_not_there(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(template("t", [{"type": "Shell", "inline": ["true"]}])))
    result = cli("validate", str(path), "--store", str(tmp_path / "nowhere"))
    assert result.code == 2 and "no store there" in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_a_sources_generation_is_its_skus_or_its_records(local: Store) -> None:
    gen2 = m.PlatformImageSource.model_validate(DEBIAN_GEN2)
    assert store_rules.source_generation(gen2, local) == "V2"
    plain = m.PlatformImageSource.model_validate({**DEBIAN_GEN2, "sku": "12"})
    assert store_rules.source_generation(plain, local) == "V1"
    image = managed_image_id("uefi")
    local.put(image, {"name": "uefi", "location": "westeurope", "properties": {"hyperVGeneration": "V2"}})
    assert store_rules.source_generation(m.ManagedImageSource(type="ManagedImage", imageId=image), local) == "V2"
    missing = m.ManagedImageSource(type="ManagedImage", imageId=managed_image_id("none"))
    assert store_rules.source_generation(missing, local) == "V1"


def test_boot_takes_an_artifacts_generation_from_its_record(local: Store, tmp_path: Path) -> None:
    from engine.boot import generation_of

    image = managed_image_id("uefi")
    local.put(image, {"name": "uefi", "location": "westeurope", "properties": {"hyperVGeneration": "V2"}})
    assert generation_of(local, image) == "V2"
    gen2 = definition(local, "gen2", hyper_v_generation="V2")
    Galleries(local).add_version(
        gen2,
        version="1.0.0",
        major=None,
        location="westeurope",
        target_regions=[{"name": "westeurope"}],
        exclude_from_latest=False,
        source={},
        local={},
        tags={},
    )
    assert generation_of(local, f"{gen2}/versions/1.0.0") == "V2"
    assert generation_of(local, f"{gen2}/versions/latest") == "V2"
    assert generation_of(local, str(tmp_path / "disk.vhd")) == "V1"  # a VHD says nothing of it
