"""`aib-local sig`: updating and deleting galleries, definitions and versions as Azure does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.gallery import Galleries, definition_id
from engine.store import Store
from tests.support import SUBSCRIPTION

WHERE = ["-g", "rg", "-r", "gal"]


@pytest.fixture
def gallery(cli: Any) -> Any:
    assert cli("sig", "create", *WHERE, "--location", "westeurope").code == 0
    return cli


def make_definition(cli: Any, name: str = "debian", *extra: str) -> Any:
    return cli(
        "sig", "image-definition", "create", *WHERE, "-i", name,
        "--publisher", "p", "--offer", "o", "--sku", name, "--os-type", "Linux", *extra,
    )  # fmt: skip


def add_version(store: Path, name: str = "debian", version: str = "1.0.0") -> str:
    return Galleries(Store(store)).add_version(
        definition_id(SUBSCRIPTION, "rg", "gal", name),
        version=version,
        major=None,
        location="westeurope",
        target_regions=[{"name": "westeurope"}],
        exclude_from_latest=False,
        source={},
        local={"dockerImage": "sha256:0", "reference": "aib-local/rg/debian:build-x"},
        tags={},
    )


def test_a_definition_takes_azs_descriptive_and_recommended_fields(gallery: Any) -> None:
    created = make_definition(
        gallery, "debian",
        "--eula", "https://example.org/eula", "--privacy-statement-uri", "https://example.org/privacy",
        "--release-note-uri", "https://example.org/notes", "--minimum-cpu-core", "2", "--maximum-cpu-core", "8",
        "--minimum-memory", "4", "--disallowed-disk-types", "Standard_LRS", "--hyper-v-generation", "V2",
        "--features", "SecurityType=TrustedLaunch IsAcceleratedNetworkSupported=true",
    )  # fmt: skip
    assert created.code == 0, created.output
    properties = json.loads(created.stdout)["properties"]
    assert properties["eula"] == "https://example.org/eula" and properties["hyperVGeneration"] == "V2"
    assert properties["recommended"] == {"vCPUs": {"min": 2, "max": 8}, "memory": {"min": 4}}
    assert properties["disallowed"] == {"diskTypes": ["Standard_LRS"]}
    assert properties["features"] == [
        {"name": "SecurityType", "value": "TrustedLaunch"},
        {"name": "IsAcceleratedNetworkSupported", "value": "true"},
    ]
    bad = make_definition(gallery, "other", "--minimum-cpu-core", "8", "--maximum-cpu-core", "2")
    assert bad.code == 2 and "the minimum 8 is above the maximum 2" in bad.stderr


def test_a_definition_is_updated_and_deleted_only_without_versions(gallery: Any, store: Path) -> None:
    assert make_definition(gallery).code == 0
    updated = gallery("sig", "image-definition", "update", *WHERE, "-i", "debian", "--end-of-life-date", "2030-01-01")
    assert updated.code == 0 and json.loads(updated.stdout)["properties"]["endOfLifeDate"] == "2030-01-01"
    assert gallery("sig", "image-definition", "update", *WHERE, "-i", "debian").code == 2  # nothing to update
    add_version(store)
    refused = gallery("sig", "image-definition", "delete", *WHERE, "-i", "debian")
    assert refused.code == 2 and "has 1 version(s)" in refused.stderr
    deleted = gallery("sig", "image-version", "delete", *WHERE, "-i", "debian", "-e", "1.0.0")
    assert deleted.code == 0 and "its image aib-local/rg/debian:build-x stays" in deleted.stderr
    assert gallery("sig", "image-definition", "delete", *WHERE, "-i", "debian").code == 0
    assert gallery("sig", "image-definition", "show", *WHERE, "-i", "debian").code == 2


def test_a_gallery_is_deleted_only_without_definitions(gallery: Any) -> None:
    assert make_definition(gallery).code == 0
    refused = gallery("sig", "delete", *WHERE)
    assert refused.code == 2 and "has 1 image definition(s)" in refused.stderr
    assert gallery("sig", "image-definition", "delete", *WHERE, "-i", "debian").code == 0
    assert gallery("sig", "delete", *WHERE).code == 0
    assert gallery("sig", "show", *WHERE).code == 2


def test_a_version_updates_what_azure_lets_it(gallery: Any, store: Path) -> None:
    assert make_definition(gallery).code == 0
    add_version(store)
    version = ["sig", "image-version", "update", *WHERE, "-i", "debian", "-e", "1.0.0"]
    updated = gallery(*version, "--target-regions", "westeurope=2 northeurope", "--exclude-from-latest", "true")
    assert updated.code == 0, updated.output
    profile = json.loads(updated.stdout)["properties"]["publishingProfile"]
    assert profile["targetRegions"] == [
        {"name": "westeurope", "regionalReplicaCount": 2},
        {"name": "northeurope", "regionalReplicaCount": 1},
    ]
    assert profile["excludeFromLatest"] is True
    latest = gallery("sig", "image-version", "show", *WHERE, "-i", "debian", "-e", "latest")
    assert latest.code == 2  # excluded from latest, and the only version
    refused = gallery(*version, "--target-regions", "northeurope")
    assert refused.code == 2 and "must include the gallery's region (westeurope)" in refused.stderr
    counted = gallery(*version, "--replica-count", "3", "--end-of-life-date", "2030-01-01")
    profile = json.loads(counted.stdout)["properties"]["publishingProfile"]
    assert [r["regionalReplicaCount"] for r in profile["targetRegions"]] == [3, 3]
    assert profile["endOfLifeDate"] == "2030-01-01"
    assert gallery(*version).code == 2  # nothing to update
    for bad in ("westeurope=two", "westeurope=0"):
        refused = gallery(*version, "--target-regions", bad)
        assert refused.code == 2 and "expected REGION or REGION=COUNT, COUNT at least 1" in refused.stderr
    missing = gallery("sig", "image-version", "delete", *WHERE, "-i", "debian", "-e", "9.9.9")
    assert missing.code == 2 and "does not exist" in missing.stderr
