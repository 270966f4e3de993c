"""Validation beyond the error corpus: versions, forms, warnings, defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.errors import TemplateError
from engine.template.loading import load_templates
from engine.template.model import ShellCustomizer
from tests.support import template


def findings(loaded: Any) -> list[str]:
    return [f"{f.severity} {f.path}: {f.message}" for f in loaded.findings]


def load(tmp_path: Path, data: Any, **kw: Any) -> Any:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    return load_templates(path, **kw)


def test_unknown_field_is_a_warning_where_aib_ignores_it(tmp_path: Path) -> None:
    data = template("old", [{"type": "Shell", "inline": ["x"], "validExitCodes": [0]}])
    data["apiVersion"] = "2022-02-14"
    [loaded] = load(tmp_path, data)
    [finding] = [f for f in loaded.findings if f.path.endswith("validExitCodes")]
    assert finding.severity == "warning" and not finding.aib_rejects
    assert "ignored by AIB in apiVersion 2022-02-14" in finding.message


def test_miscased_field_is_honoured_where_aib_reads_it_case_insensitively(tmp_path: Path) -> None:
    data = template("old", [{"type": "Shell", "Inline": ["echo hi"]}])
    data["apiVersion"] = "2022-07-01"
    [loaded] = load(tmp_path, data)
    customizer = loaded.properties.customize[0]
    assert isinstance(customizer, ShellCustomizer) and customizer.inline == ["echo hi"]
    assert any("mis-cased field; the name is 'inline'" in f for f in findings(loaded))


def test_short_timeout_warns_that_aib_rejects_it(tmp_path: Path) -> None:
    [loaded] = load(tmp_path, template("t", [], buildTimeoutInMinutes=3))
    [finding] = [f for f in loaded.findings if f.path == "properties.buildTimeoutInMinutes"]
    assert finding.severity == "warning" and finding.aib_rejects
    assert loaded.properties.timeout_minutes == 3


def test_zero_timeout_means_240_minutes(tmp_path: Path) -> None:
    [loaded] = load(tmp_path, template("t", [], buildTimeoutInMinutes=0))
    assert loaded.properties.timeout_minutes == 240


def test_uppercase_checksum_warns(tmp_path: Path) -> None:
    (tmp_path / "a.sh").write_text("true\n")
    [loaded] = load(tmp_path, template("t", [{"type": "Shell", "scriptUri": "a.sh", "sha256Checksum": "AB" * 32}]))
    assert any("upper-case digest" in f for f in findings(loaded))


def test_bare_properties_paths_have_no_prefix(tmp_path: Path) -> None:
    bare = template("t", [{"type": "PowerShell", "inline": ["x"], "validExitCodes": "0"}])["properties"]
    with pytest.raises(TemplateError) as caught:
        load(tmp_path, bare)
    assert any(f.path == "customize[0].validExitCodes" for f in caught.value.findings)


def test_deployment_paths_name_the_resource(tmp_path: Path) -> None:
    good = template("good", [])
    bad = template("bad", [{"type": "Shell"}])
    deployment = {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "resources": [{"type": "Microsoft.ManagedIdentity/userAssignedIdentities", "name": "id"}, good, bad],
    }
    with pytest.raises(TemplateError) as caught:
        load(tmp_path, deployment)
    paths = [f.path for f in caught.value.findings if f.severity == "error"]
    assert paths == ["resources[2].properties.customize[0]"]
    notes = [f for f in caught.value.findings if f.severity == "note"]
    assert notes and notes[0].path == "resources[0]"


def test_deployment_with_two_templates_loads_both(tmp_path: Path) -> None:
    deployment = {"resources": [template("one", []), template("two", [])]}
    assert [t.name for t in load(tmp_path, deployment)] == ["one", "two"]


def test_not_json_is_reported_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('{"properties": {,}}')
    with pytest.raises(TemplateError, match=r"not valid JSON: .* line 1 column 17"):
        load_templates(path)


def test_windows_file_destination_is_not_limited_to_tmp(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a\n")
    data = template("win", [{"type": "File", "sourceUri": "a.txt", "destination": "C:\\buildArtifacts\\a.txt"}])
    data["properties"]["source"] = {
        "type": "PlatformImage",
        "publisher": "MicrosoftWindowsServer",
        "offer": "WindowsServer",
        "sku": "2022-datacenter",
        "version": "latest",
    }
    [loaded] = load(tmp_path, data)
    assert loaded.os_type == "Windows"


def test_allow_any_destination_downgrades_to_a_warning(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a\n")
    data = template("t", [{"type": "File", "sourceUri": "a.txt", "destination": "/etc/a.txt"}])
    [loaded] = load(tmp_path, data, allow_any_destination=True)
    [finding] = [f for f in loaded.findings if f.path.endswith("destination")]
    assert finding.severity == "warning" and finding.aib_rejects


def test_defaults_are_aibs(tmp_path: Path) -> None:
    data = template("t", [{"type": "PowerShell", "inline": ["x"]}, {"type": "WindowsRestart"}])
    [loaded] = load(tmp_path, data)
    powershell, restart = loaded.properties.customize
    assert powershell.valid_exit_codes == [0] and powershell.run_elevated is False
    assert restart.restart_command == 'shutdown /r /f /t 0 /c "packer restart"'
    assert restart.restart_timeout == "5m"
    assert loaded.properties.vm_profile.vm_size == ""


def test_exit_codes_a_linux_target_cannot_return_are_pointed_out(tmp_path: Path) -> None:
    data = template("t", [{"type": "PowerShell", "inline": ["exit 3010"], "validExitCodes": [0, 3010]}])
    [loaded] = load(tmp_path, data)
    [finding] = [f for f in loaded.findings if f.path.endswith("validExitCodes")]
    assert finding.severity == "warning" and not finding.aib_rejects
    assert "3010 cannot occur on a Linux target" in finding.message and "arrive as 194" in finding.message


def test_the_models_unions_are_the_registries_sections() -> None:
    import typing

    import customizers
    import distributors
    from engine.template import model as m
    from engine.template.rules import TAGS_BY_LIST, WINDOWS_ONLY

    def members(annotation: Any) -> set[type]:
        return set(typing.get_args(typing.get_args(annotation)[0]))

    assert members(m.Customizer) == {c.schema for c in customizers.REGISTRY.values()}
    assert members(m.Distribute) == {d.schema for d in distributors.REGISTRY.values()}
    assert members(m.Validator) == {c.schema for c in customizers.REGISTRY.values() if c.validates}
    assert TAGS_BY_LIST["customize"] == list(customizers.REGISTRY)
    assert {"PowerShell", "WindowsRestart", "WindowsUpdate"} == WINDOWS_ONLY


def test_a_sections_own_rules_still_run_when_another_part_is_invalid(tmp_path: Path) -> None:
    customize = [
        {"type": "PowerShell", "inline": ["exit 300"], "validExitCodes": [300], "runAsSystem": True},
        {"type": "File", "sourceUri": "https://example.com/f", "destination": "/etc/f"},
    ]
    document = template("rules", customize, distribute=[{"type": "VHD", "runOutputName": 5}])
    path = tmp_path / "t.json"
    path.write_text(json.dumps(document))
    with pytest.raises(TemplateError) as caught:
        load_templates(path)
    found = {(f.path, f.severity) for f in caught.value.findings}
    assert ("properties.distribute[0].runOutputName", "error") in found  # the part that breaks parsing
    assert ("properties.customize[0].runAsSystem", "error") in found  # a field rule of the section
    assert ("properties.customize[0].validExitCodes", "warning") in found  # its rule on the OS: still run
    assert ("properties.customize[1].destination", "error") in found  # another section's rule


NOT_LOCAL = {
    "properties.optimize.vmBoot": "AIB optimizes the image's boot; not done locally",
    "properties.autoRun": "locally a build runs when aib-local build runs",
    "properties.stagingResourceGroup": "nothing is staged locally",
    "properties.managedResourceTags": "there are none locally",
    "properties.vmProfile.userAssignedIdentities": "the local build has none",
    "properties.vmProfile.vnetConfig": "the local build uses the container network of --network",
    "properties.vmProfile.vnetConfig.proxyVmSize": "there is none locally",
    "properties.distribute[0].uri": "locally it is written to the store",
    "properties.source.version": "locally the catalogue maps the URN to an image",
}


def azure_only_template() -> dict[str, Any]:
    subnet = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/v/subnets/n"
    identity = "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/i"
    document = template(
        "azure-only",
        [{"type": "Shell", "inline": ["true"]}],
        distribute=[{"type": "VHD", "runOutputName": "vhd", "uri": "https://account.blob.core.windows.net/c/x.vhd"}],
        optimize={"vmBoot": {"state": "Enabled"}},
        autoRun={"state": "Enabled"},
        stagingResourceGroup="/subscriptions/s/resourceGroups/staging",
        managedResourceTags={"team": "images"},
        vmProfile={
            "userAssignedIdentities": [identity],
            "vnetConfig": {"subnetId": subnet, "proxyVmSize": "Standard_A1_v2"},
        },
    )
    document["properties"]["source"]["version"] = "12.20240101.1"
    return document


def test_fields_that_mean_something_in_azure_only_each_get_a_note(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(azure_only_template()))
    (loaded,) = load_templates(path)
    notes = {f.path: f for f in loaded.findings if f.severity == "note"}
    for where, text in NOT_LOCAL.items():
        assert where in notes and text in notes[where].message, where
        assert notes[where].aib_rejects is False
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(template("plain", [{"type": "Shell", "inline": ["true"]}])))
    (loaded,) = load_templates(plain)
    assert [f for f in loaded.findings if f.severity == "note"] == []
