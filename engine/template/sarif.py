"""`validate --output sarif`: the findings as SARIF 2.1.0, for GitHub code scanning and
editors. Each result has a rule id (the kind of finding), a level ("error" when AIB would
reject the template), the message, and the file, line and column of its JSON path. Files
are named relative to SRCROOT (the repository the current folder is in, else the current
folder), as code scanning wants them; the tool says its version, and every rule has the
descriptions and help that GitHub requires (its GH2012 rule)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path
from typing import Any

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://learn.microsoft.com/azure/virtual-machines/linux/image-builder-json"
BASE = "SRCROOT"
HELP = (
    "aib-local checks an image template as Azure VM Image Builder would, before any cloud round trip. "
    "A finding at level error is one AIB would reject the template for; a warning one AIB accepts. "
    "The message names the JSON path; the template reference says what the field takes."
)


# Every kind of finding: its stable id (set where the finding is made, whatever its
# message says) and what it means. A value of the wrong type or out of range is
# aib/value-KIND, KIND being pydantic's name for the error (aib/value-missing, ...).
RULES = {
    "aib/api-version-absent": "The template has no apiVersion: it is checked against the newest one.",
    "aib/api-version-type": "apiVersion is not a string.",
    "aib/api-version-unknown": "apiVersion is none of the versions of Microsoft.VirtualMachineImages.",
    "aib/arm-deployment": "The file is an ARM deployment; the image template inside it is what is checked.",
    "aib/arm-expression": "An ARM template expression that does not evaluate.",
    "aib/arm-no-image-template": "An ARM deployment without an imageTemplates resource.",
    "aib/arm-parameter-missing": "An ARM parameter without a default and without a value.",
    "aib/arm-parameter-not-allowed": "An ARM parameter's value is not among its allowedValues.",
    "aib/arm-parameter-unknown": "A value for an ARM parameter the template does not declare.",
    "aib/bare-namespace": "The resource type is the bare namespace (az resource create --is-full-object style).",
    "aib/build-timeout-too-short": "buildTimeoutInMinutes below AIB's minimum.",
    "aib/checksum-stale": "A file's sha256 differs from the template's sha256Checksum: AIB would fail that step.",
    "aib/checksum-upper-case": "sha256Checksum in upper case: AIB expects lower case.",
    "aib/checksum-with-inline": "sha256Checksum on a customizer with inline commands has no effect.",
    "aib/customizer-os": "A customizer for one OS on a source image of the other.",
    "aib/definition-generation": "The gallery image definition's Hyper-V generation is not the source's.",
    "aib/definition-specialized": "The gallery image definition is Specialized; AIB's images are Generalized.",
    "aib/duplicate-name": "Two customizers, distributions or validators with the same name or runOutputName.",
    "aib/exit-code-out-of-range": "A valid exit code that cannot occur on the target's OS.",
    "aib/field-mis-cased": "A field name in the wrong case (case-sensitive from apiVersion 2024-02-01).",
    "aib/field-read-only": "A read-only field AIB returns from a GET; it is ignored.",
    "aib/field-too-new": "A field that arrived in a later apiVersion than the template's.",
    "aib/field-unknown": "A field the template's apiVersion does not have.",
    "aib/file-destination": "A File customizer's destination is not an absolute path to a file.",
    "aib/file-destination-outside-tmp": "On Linux, AIB's File customizer writes under /tmp only.",
    "aib/file-over-limit": "A file over AIB's size limit for its customizer.",
    "aib/identity-absent": "No identity: AIB requires one from apiVersion 2020-02-14.",
    "aib/identity-count": "More than one user-assigned identity: AIB takes one.",
    "aib/identity-id": "A user-assigned identity that is not a resource ID.",
    "aib/iso-source-removed": "The ISO source, which AIB no longer builds from.",
    "aib/json-invalid": "The file is not valid JSON (comments allowed).",
    "aib/json-too-deep": "JSON nested deeper than any template.",
    "aib/local-file-missing": "A local scriptUri or sourceUri file that does not exist.",
    "aib/local-file-outside-folder": "A local file outside the template's folder (refused by default).",
    "aib/local-file-unreadable": "A local file that cannot be read.",
    "aib/local-path-not-url": "A path on this machine where AIB fetches from an http(s) URL.",
    "aib/location-absent": "No location: ARM requires one.",
    "aib/location-unknown": "An Azure region that does not exist.",
    "aib/no-distribution": "No distribution: AIB needs at least one.",
    "aib/not-an-image-template": "The file holds no image template.",
    "aib/not-evaluated-locally": "An ARM function that needs Azure: its value is not known locally.",
    "aib/not-local": "A field that means something in Azure only: what happens locally instead.",
    "aib/nul-character": "A NUL character in a string or a property name.",
    "aib/placeholder-unfilled": "A <placeholder> left in the template (fill it with --set).",
    "aib/proxy-vm-size": "proxyVmSize without subnetId, or with containerInstanceSubnetId.",
    "aib/region-unknown": "An Azure region that does not exist.",
    "aib/replication-and-target-regions": "replicationRegions and targetRegions together.",
    "aib/replication-regions-deprecated": "replicationRegions, deprecated for targetRegions.",
    "aib/replication-regions-required": "replicationRegions missing in an apiVersion before targetRegions.",
    "aib/resource-type": "The resource type is not Microsoft.VirtualMachineImages/imageTemplates.",
    "aib/resource-type-absent": "No resource type: the file is read as an image template.",
    "aib/run-as-system-needs-elevated": "runAsSystem without runElevated.",
    "aib/script-uri-or-inline": "A customizer needs exactly one of scriptUri and inline.",
    "aib/source-not-in-store": "A managed image or gallery version source the local store does not hold.",
    "aib/source-region": "A managed image source outside the template's region.",
    "aib/source-specialized": "A Specialized gallery image as the source.",
    "aib/source-version-region": "A gallery version source not replicated to the template's region.",
    "aib/storage-account-type": "storageAccountType without replicationRegions.",
    "aib/template-name": "The template's name breaks ARM's naming rule.",
    "aib/template-name-not-found": "--template-name names no image template in the file.",
    "aib/template-too-large": "The file is over the 4 MiB ARM accepts for a template.",
    "aib/uri-scheme": "A URI scheme aib-local cannot fetch.",
    "aib/vm-size-unknown": "A vmSize aib-local does not know.",
    "aib/vnet-field-deprecated": "A deprecated vnetConfig field.",
    "aib/working-copy-missing": "A mapped URL whose working copy does not exist.",
    "aib/working-copy-outside-folder": "A mapped URL whose working copy would be outside its folder.",
}


def rule_id(finding: dict[str, Any]) -> str:
    """The finding's rule id, as it was made (a finding from before ids: aib/finding)."""
    return str(finding.get("rule") or "aib/finding")


def describe_rule(identifier: str) -> str:
    if identifier in RULES:
        return RULES[identifier]
    if identifier.startswith("aib/value-"):
        kind = identifier.removeprefix("aib/value-")
        return f"A value of the wrong type, or out of range (pydantic's {kind})."
    return "A template finding."


def level(finding: dict[str, Any]) -> str:
    if finding.get("severity") == "note":
        return "note"
    return "error" if finding.get("aib_rejects", True) else "warning"


def source_root(start: Path | None = None) -> Path:
    """SRCROOT: the repository `start` (the current folder) is in, else `start` itself."""
    here = (start or Path.cwd()).resolve()
    return next((folder for folder in (here, *here.parents) if (folder / ".git").exists()), here)


def artifact(template: str, root: Path) -> dict[str, str]:
    """A template file's artifactLocation: relative to SRCROOT, else an absolute file URI."""
    path = Path(template).resolve()
    if path.is_relative_to(root):
        return {"uri": path.relative_to(root).as_posix(), "uriBaseId": BASE}
    return {"uri": path.as_uri()}


def rule(identifier: str, message: str) -> dict[str, Any]:
    kind = identifier.removeprefix("aib/")
    description = describe_rule(identifier)
    return {
        "id": identifier,
        "name": "".join(word.capitalize() for word in re.findall(r"[a-z]+", kind)) or "Finding",
        "shortDescription": {"text": description},
        "fullDescription": {"text": f"{description} For example: {message}"},
        "help": {"text": HELP, "markdown": f"{HELP} See [the template reference]({INFORMATION_URI})."},
        "helpUri": INFORMATION_URI,
    }


def sarif_log(results: list[dict[str, Any]], root: Path | None = None) -> dict[str, Any]:
    """The SARIF log of `validate`'s results (one per template file or image template)."""
    root = root or source_root()
    rules: dict[str, dict[str, Any]] = {}
    found: list[dict[str, Any]] = []
    for result in results:
        location_of_file = artifact(result["template"], root)
        for finding in result["findings"]:
            rule_name = rule_id(finding)
            rules.setdefault(rule_name, rule(rule_name, finding["message"]))
            verdict = "AIB would reject this" if finding.get("aib_rejects", True) else "AIB would accept this"
            where = f"{finding['path']}: " if finding.get("path") else ""
            location: dict[str, Any] = {
                "physicalLocation": {
                    "artifactLocation": location_of_file,
                    "region": {"startLine": finding.get("line", 1), "startColumn": finding.get("column", 1)},
                }
            }
            if finding.get("path"):
                location["logicalLocations"] = [{"fullyQualifiedName": finding["path"], "kind": "member"}]
            found.append(
                {
                    "ruleId": rule_name,
                    "level": level(finding),
                    "message": {"text": f"{where}{finding['message']} ({verdict})"},
                    "locations": [location],
                }
            )
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "aib-local",
                        "version": _version(),
                        "semanticVersion": _version(),
                        "informationUri": INFORMATION_URI,
                        "rules": list(rules.values()),
                    }
                },
                "originalUriBaseIds": {BASE: {"uri": root.as_uri() + "/"}},
                "results": found,
            }
        ],
    }


def _version() -> str:
    try:
        return metadata.version("aib-local")
    except metadata.PackageNotFoundError:
        return "0.0.0"
