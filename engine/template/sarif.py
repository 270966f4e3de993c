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


def rule_id(message: str) -> str:
    """A stable id for the kind of a finding: its message without the values it names."""
    if "not evaluated locally" in message:
        return "aib/not-evaluated-locally"
    message = re.sub(r"^(variable|parameter) '[^']*': ", "", message)
    text = re.sub(r"'[^']*'|\"[^\"]*\"|<[^>]*>|\[[^\]]*\]|\d+", " ", message.lower())
    text = re.split(r"[:;(]", text)[0]
    words = re.findall(r"[a-z][a-z-]*", text)[:6]
    return "aib/" + ("-".join(words) or "finding")


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
    kind = identifier.removeprefix("aib/").replace("-", " ")
    return {
        "id": identifier,
        "name": "".join(word.capitalize() for word in re.findall(r"[a-z]+", kind)) or "Finding",
        "shortDescription": {"text": f"Template finding: {kind}"},
        "fullDescription": {"text": f"A finding of this kind, for example: {message}"},
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
            rule_name = rule_id(finding["message"])
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
