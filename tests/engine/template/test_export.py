"""export: what it writes is what AIB takes, checked against the typed models of the
azure-mgmt-imagebuilder SDK (2.0.0), without any network."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.template.export import az_commands, export
from engine.template.loading import LoadOptions, load_templates
from tests.support import ROOT

models = pytest.importorskip("azure.mgmt.imagebuilder.models", reason="pip install azure-mgmt-imagebuilder")

GALLERY = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/d"
IDENTITY = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id"
EVERYTHING = {
    "type": "Microsoft.VirtualMachineImages/imageTemplates",
    "apiVersion": "2024-02-01",
    "location": "westeurope",
    "tags": {"team": "images"},
    "identity": {
        "type": "UserAssigned",
        "userAssignedIdentities": {
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id": {}
        },
    },
    "properties": {
        "buildTimeoutInMinutes": 120,
        "vmProfile": {
            "vmSize": "Standard_D2s_v3",
            "osDiskSizeGB": 64,
            "vnetConfig": {
                "subnetId": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/x"
            },
        },
        "source": {
            "type": "PlatformImage",
            "publisher": "MicrosoftWindowsServer",
            "offer": "WindowsServer",
            "sku": "2022-datacenter-azure-edition",
            "version": "latest",
        },
        "customize": [
            {
                "type": "PowerShell",
                "name": "ps",
                "inline": ["Write-Host hi"],
                "runElevated": True,
                "runAsSystem": True,
                "validExitCodes": [0, 3010],
            },
            {
                "type": "File",
                "name": "file",
                "sourceUri": "https://example.org/a.txt",
                "destination": "C:\\\\a.txt",
                "sha256Checksum": "ab" * 32,
            },
            {"type": "WindowsRestart", "name": "restart", "restartTimeout": "10m", "restartCheckCommand": "echo back"},
            {
                "type": "WindowsUpdate",
                "name": "updates",
                "searchCriteria": "IsInstalled=0",
                "filters": ["exclude:$_.Title -like '*Preview*'", "include:$true"],
                "updateLimit": 20,
            },
        ],
        "validate": {
            "continueDistributeOnFailure": False,
            "sourceValidationOnly": False,
            "inVMValidations": [{"type": "PowerShell", "name": "check", "inline": ["exit 0"]}],
        },
        "optimize": {"vmBoot": {"state": "Enabled"}},
        "errorHandling": {"onCustomizerError": "abort", "onValidationError": "cleanup"},
        "stagingResourceGroup": "/subscriptions/s/resourceGroups/staging",
        "distribute": [
            {
                "type": "ManagedImage",
                "runOutputName": "mi",
                "imageId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/images/i",
                "location": "westeurope",
                "artifactTags": {"k": "v"},
            },
            {
                "type": "SharedImage",
                "runOutputName": "sig",
                "galleryImageId": GALLERY,
                "excludeFromLatest": True,
                "targetRegions": [{"name": "westeurope", "replicaCount": 2, "storageAccountType": "Standard_ZRS"}],
                "versioning": {"scheme": "Latest", "major": 1},
            },
            {"type": "VHD", "runOutputName": "vhd"},
        ],
    },
}
TYPED = {
    "Shell": "ImageTemplateShellCustomizer",
    "PowerShell": "ImageTemplatePowerShellCustomizer",
    "File": "ImageTemplateFileCustomizer",
    "WindowsRestart": "ImageTemplateRestartCustomizer",
    "WindowsUpdate": "ImageTemplateWindowsUpdateCustomizer",
    "PlatformImage": "ImageTemplatePlatformImageSource",
    "ManagedImage": ("ImageTemplateManagedImageSource", "ImageTemplateManagedImageDistributor"),
    "SharedImage": "ImageTemplateSharedImageDistributor",
    "VHD": "ImageTemplateVhdDistributor",
}


def known_fields(obj: Any, data: Any, where: str) -> list[str]:
    """Paths in `data` that the SDK model `obj` has no field for."""
    unknown = []
    if isinstance(data, dict) and hasattr(obj, "_attr_to_rest_field"):
        names = {field._rest_name for field in obj._attr_to_rest_field.values()}
        for key, value in data.items():
            if key not in names:
                unknown.append(f"{where}.{key}")
            else:
                attribute = next(a for a, f in obj._attr_to_rest_field.items() if f._rest_name == key)
                unknown += known_fields(getattr(obj, attribute), value, f"{where}.{key}")
    elif isinstance(data, list):
        for index, (item, value) in enumerate(zip(obj, data, strict=True)):
            unknown += known_fields(item, value, f"{where}[{index}]")
    return unknown


def round_trip(body: dict[str, Any]) -> Any:
    template = models.ImageTemplate(body)
    assert template.as_dict() == body  # every field survives
    assert known_fields(template, body, "") == []  # and each is a field of the typed model
    return template


def exported(tmp_path: Path, data: Any, options: LoadOptions | None = None) -> dict[str, Any]:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    [loaded] = load_templates(path, options=options)
    return export(loaded)


def test_every_type_maps_to_its_typed_class(tmp_path: Path) -> None:
    body = exported(tmp_path, EVERYTHING)
    template = round_trip(body)
    kinds = [type(c).__name__ for c in template.properties.customize]
    assert kinds == [TYPED[c["type"]] for c in body["properties"]["customize"]]
    assert type(template.properties.source).__name__ == TYPED["PlatformImage"]
    assert [type(d).__name__ for d in template.properties.distribute] == [
        "ImageTemplateManagedImageDistributor",
        "ImageTemplateSharedImageDistributor",
        "ImageTemplateVhdDistributor",
    ]
    assert type(template.properties.validate.in_vm_validations[0]).__name__ == "ImageTemplatePowerShellValidator"


@pytest.mark.parametrize(
    "source",
    [
        {"type": "ManagedImage", "imageId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/images/i"},
        {"type": "SharedImageVersion", "imageVersionId": f"{GALLERY}/versions/latest"},
    ],
)
def test_other_sources(tmp_path: Path, source: dict[str, Any]) -> None:
    data = json.loads(json.dumps(EVERYTHING))
    data["properties"]["source"] = source
    round_trip(exported(tmp_path, data))


def test_fields_aib_ignores_or_returns_are_left_out(tmp_path: Path) -> None:
    data = json.loads((ROOT / "tests/corpus/realistic/typos-old-api.json").read_text())
    body = exported(tmp_path, data)
    round_trip(body)
    text = json.dumps(body)
    for left_out in ("aritfactTags", "sourceURI", '"script"', "exactVersion", "provisioningState"):
        assert left_out not in text


REALISTIC = [
    ("arm-deployment.json", LoadOptions(parameters={"imageTemplateName": "ubuntu"}, location="westeurope")),
    (
        "quickstart-filled.json",
        LoadOptions(
            sets={
                "region": "westus2",
                "subscriptionID": "s",
                "rgName": "rg",
                "imageName": "i",
                "runOutputName": "o",
                "imgBuilderId": IDENTITY,
            }
        ),
    ),
    ("bare-namespace.json", None),
]


@pytest.mark.parametrize(("name", "options"), REALISTIC, ids=[n for n, _ in REALISTIC])
def test_realistic_templates_export_for_the_sdk(name: str, options: LoadOptions | None) -> None:
    [loaded] = load_templates(ROOT / "tests/corpus/realistic" / name, options=options)
    body = export(loaded)
    round_trip(body)
    assert body["type"] == "Microsoft.VirtualMachineImages/imageTemplates"


def test_quickstart_fixture_and_az_commands() -> None:
    [loaded] = load_templates(ROOT / "fixtures/templates/quickstart.json")
    round_trip(export(loaded))
    commands = az_commands(loaded, "my-rg", "quickstart.json")
    assert commands[0].startswith("az resource create --resource-group my-rg --name quickstart")
    assert "--api-version 2024-02-01 --is-full-object --properties @quickstart.json" in commands[0]
    assert commands[1] == "az image builder run --resource-group my-rg --name quickstart --no-wait"


def test_export_cli(cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "exported.json"
    result = cli(
        "export",
        str(ROOT / "tests/corpus/realistic/arm-deployment.json"),
        "-p",
        "imageTemplateName=cli",
        "--location",
        "westeurope",
        "-o",
        str(out),
    )
    assert result.code == 0, result.output
    assert json.loads(out.read_text())["location"] == "westeurope"
    assert "az image builder run --resource-group myImageBuilderRG --name cli --no-wait" in result.stdout
