"""`validate --output sarif`: the findings as SARIF 2.1.0, for GitHub code scanning and
editors. Each result has a rule id (the kind of finding), a level ("error" when AIB would
reject the template), the message, and the file, line and column of its JSON path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://learn.microsoft.com/azure/virtual-machines/linux/image-builder-json"


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


def sarif_log(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The SARIF log of `validate`'s results (one per template file or image template)."""
    rules: dict[str, dict[str, Any]] = {}
    found: list[dict[str, Any]] = []
    for result in results:
        uri = Path(result["template"]).as_posix()
        for finding in result["findings"]:
            rule = rule_id(finding["message"])
            rules.setdefault(rule, {"id": rule, "shortDescription": {"text": finding["message"]}})
            verdict = "AIB would reject this" if finding.get("aib_rejects", True) else "AIB would accept this"
            where = f"{finding['path']}: " if finding.get("path") else ""
            location: dict[str, Any] = {
                "physicalLocation": {
                    "artifactLocation": {"uri": uri},
                    "region": {"startLine": finding.get("line", 1), "startColumn": finding.get("column", 1)},
                }
            }
            if finding.get("path"):
                location["logicalLocations"] = [{"fullyQualifiedName": finding["path"], "kind": "member"}]
            found.append(
                {
                    "ruleId": rule,
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
                        "informationUri": INFORMATION_URI,
                        "rules": list(rules.values()),
                    }
                },
                "results": found,
            }
        ],
    }
