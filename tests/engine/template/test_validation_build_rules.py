"""What a build would refuse (or AIB would), caught by validate with its JSON path."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.errors import Finding, TemplateError
from engine.template.loading import load_templates
from tests.support import template

WINDOWS = {
    "type": "PlatformImage",
    "publisher": "MicrosoftWindowsServer",
    "offer": "WindowsServer",
    "sku": "2022-datacenter",
    "version": "latest",
}
IDENTITY = "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/"


def findings_of(folder: Path, change: Callable[[dict[str, Any]], None]) -> list[Finding]:
    document = template("rules", [{"type": "Shell", "inline": ["true"]}])
    change(document)
    path = folder / "template.json"
    path.write_text(json.dumps(document))
    try:
        (loaded,) = load_templates(path)
    except TemplateError as exc:
        return exc.findings
    return loaded.findings


def props(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda document: document["properties"].update(values)


def customize(*steps: dict[str, Any], source: dict[str, Any] | None = None) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document["properties"]["customize"] = list(steps)
        if source is not None:
            document["properties"]["source"] = source

    return change


def identity(*names: str) -> Callable[[dict[str, Any]], None]:
    return lambda document: document.update(
        identity={"type": "UserAssigned", "userAssignedIdentities": {name: {} for name in names}}
    )


CASES = [
    (
        props(source={"type": "ManagedImage", "imageId": "/subscriptions/s/images/x"}),
        "properties.source.imageId",
        "expected /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Compute/images/NAME",
        "error",
    ),
    (
        props(source={"type": "SharedImageVersion", "imageVersionId": "/subscriptions/s/galleries/g/images/d"}),
        "properties.source.imageVersionId",
        "expected /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Compute/galleries/GALLERY/images/",
        "error",
    ),
    (identity("not-an-id"), "identity.userAssignedIdentities.not-an-id", "expected /subscriptions/SUB", "error"),
    (
        identity(IDENTITY + "one", IDENTITY + "two"),
        "identity.userAssignedIdentities",
        "AIB takes one user-assigned identity, got 2",
        "error",
    ),
    (identity(), "identity.userAssignedIdentities", "type UserAssigned needs the identity's resource ID", "error"),
    (
        props(stagingResourceGroup="staging-rg"),
        "properties.stagingResourceGroup",
        "expected /subscriptions/SUB/resourceGroups/RG",
        "error",
    ),
    (
        props(vmProfile={"vnetConfig": {"subnetId": "/subscriptions/s/resourceGroups/g/subnets/x"}}),
        "properties.vmProfile.vnetConfig.subnetId",
        "expected /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Network/virtualNetworks/VNET/subnets/",
        "error",
    ),
    (
        props(vmProfile={"userAssignedIdentities": ["build-identity"]}),
        "properties.vmProfile.userAssignedIdentities[0]",
        "expected /subscriptions/SUB",
        "error",
    ),
    (
        customize({"type": "Shell", "scriptUri": "scripts/missing.sh"}),
        "properties.customize[0].scriptUri",
        "'scripts/missing.sh': no such file",
        "error",
    ),
    (
        customize({"type": "File", "sourceUri": "s3://bucket/a", "destination": "/tmp/a"}),
        "properties.customize[0].sourceUri",
        "unsupported URI scheme 's3'",
        "error",
    ),
    (
        customize({"type": "PowerShell", "inline": ["Get-Date"]}),
        "properties.customize[0].type",
        "AIB runs PowerShell customizers on Windows images, and the source is a Linux image",
        "warning",
    ),
    (
        customize({"type": "WindowsRestart"}),
        "properties.customize[0].type",
        "AIB runs WindowsRestart customizers on Windows images",
        "warning",
    ),
    (
        customize({"type": "WindowsUpdate"}),
        "properties.customize[0].type",
        "AIB runs WindowsUpdate customizers on Windows images",
        "warning",
    ),
    (
        customize({"type": "Shell", "inline": ["true"]}, source=WINDOWS),
        "properties.customize[0].type",
        "a Shell customizer needs a Linux image, and the source is Windows",
        "error",
    ),
    (
        customize({"type": "WindowsUpdate", "updateLimit": 2**31}, source=WINDOWS),
        "properties.customize[0].updateLimit",
        "must be at most 2147483647",
        "error",
    ),
    (
        customize({"type": "WindowsUpdate", "filters": ["include:$true", "install:$_.Title"]}, source=WINDOWS),
        "properties.customize[0].filters[1]",
        "expected include:EXPRESSION or exclude:EXPRESSION",
        "error",
    ),
    (
        props(vmProfile={"vmSize": "Standard_D2s_v9"}),
        "properties.vmProfile.vmSize",
        "'Standard_D2s_v9' is not a size aib-local knows; did you mean 'Standard_D2s_v5'?",
        "warning",
    ),
]


@pytest.mark.parametrize(("change", "path", "message", "severity"), CASES, ids=[c[1] + ":" + c[2][:30] for c in CASES])
def test_validate_catches_it_with_its_path(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], path: str, message: str, severity: str
) -> None:
    found = [(f.path, f.severity) for f in findings_of(tmp_path, change) if message in f.message]
    assert found == [(path, severity)]


def test_a_file_over_aibs_20_mb_is_warned_at_validate(tmp_path: Path) -> None:
    with (tmp_path / "big.bin").open("wb") as big:
        big.truncate(21 * 1024 * 1024)  # sparse: nothing is written
    change = customize({"type": "File", "sourceUri": "big.bin", "destination": "/tmp/big.bin"})
    [finding] = [f for f in findings_of(tmp_path, change) if "20 MB" in f.message]
    assert finding.path == "properties.customize[0].sourceUri" and finding.severity == "warning"
    assert finding.aib_rejects


def test_a_local_script_is_read_here_and_would_be_refused_by_aib(tmp_path: Path) -> None:
    (tmp_path / "setup.sh").write_text("true\n")
    found = findings_of(tmp_path, customize({"type": "Shell", "scriptUri": "setup.sh"}))
    [finding] = [f for f in found if f.path == "properties.customize[0].scriptUri"]
    assert finding.severity == "warning" and finding.aib_rejects
    assert "is a path on this machine: AIB fetches from an http(s) URL" in finding.message


def test_the_same_rules_hold_where_nothing_is_wrong(tmp_path: Path) -> None:
    subnet = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/n"

    def good(document: dict[str, Any]) -> None:
        document["identity"] = {"type": "UserAssigned", "userAssignedIdentities": {IDENTITY + "one": {}}}
        document["properties"]["customize"] = [{"type": "Shell", "scriptUri": "https://example.org/setup.sh"}]
        document["properties"]["vmProfile"] = {"vmSize": "standard_d2s_v3", "vnetConfig": {"subnetId": subnet}}
        document["properties"]["stagingResourceGroup"] = "/subscriptions/s/resourceGroups/staging"
        document["properties"]["distribute"] = [{"type": "VHD", "runOutputName": "disk"}]

    assert [f for f in findings_of(tmp_path, good) if f.severity != "note"] == []
