"""`aib-local checksums`: both digests of every file, and --write changing exactly the
digests that differ (plain JSON, JSON with comments, ARM deployments), never other bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tests.support import template

OLD = "ab" * 32
SCRIPT = b"echo edited\n"
NEW = hashlib.sha256(SCRIPT).hexdigest()
URL = "https://raw.githubusercontent.com/me/images/main/"


def folder(tmp_path: Path) -> Path:
    (tmp_path / "setup.sh").write_bytes(SCRIPT)
    (tmp_path / "motd.txt").write_bytes(b"hello\n")
    return tmp_path


def test_lists_both_digests_and_exits_1_when_one_differs(cli: Any, tmp_path: Path) -> None:
    folder(tmp_path)
    motd = hashlib.sha256(b"hello\n").hexdigest()
    steps = [
        {"type": "Shell", "name": "setup", "scriptUri": URL + "setup.sh", "sha256Checksum": OLD},
        {"type": "File", "name": "motd", "sourceUri": "motd.txt", "destination": "/tmp/m", "sha256Checksum": motd},
        {"type": "Shell", "name": "inline", "inline": ["true"]},
    ]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(template("t", steps, distribute=[{"type": "VHD", "runOutputName": "v"}])))
    result = cli("checksums", str(path), "--map-uri", f"{URL}={tmp_path}", "--output", "json")
    assert result.code == 1, result.output
    (report,) = json.loads(result.stdout)
    files = {f["step"]: f for f in report["files"]}
    assert files["customize[0] setup"]["status"] == "differs"
    assert (files["customize[0] setup"]["template"], files["customize[0] setup"]["actual"]) == (OLD, NEW)
    assert "the working copy of" in files["customize[0] setup"]["read"]
    assert files["customize[1] motd"]["status"] == "ok"
    assert len(files) == 2  # inline steps fetch nothing


def test_write_changes_only_the_digest_in_json_with_comments(cli: Any, tmp_path: Path) -> None:
    folder(tmp_path)
    text = (
        "// my template\r\n{\r\n"
        '  "type": "Microsoft.VirtualMachineImages/imageTemplates", "apiVersion": "2024-02-01",\r\n'
        '  "location": "westeurope", "identity": {"type": "None"},\r\n'
        '  "properties": {\r\n'
        '    "source": {"type": "PlatformImage", "publisher": "Debian", "offer": "debian-12", "sku": "12", '
        '"version": "latest"},\r\n'
        '    "customize": [ /* first */ {"type": "Shell", "name": "setup", "scriptUri": "setup.sh",\r\n'
        f'        "sha256Checksum" /* pinned */ :   "{OLD.upper()}"  }}],\r\n'
        '    "distribute": [{"type": "VHD", "runOutputName": "v"}]\r\n'
        "  }\r\n}\r\n"
    )
    path = tmp_path / "t.json"
    path.write_bytes(text.encode())
    result = cli("checksums", str(path), "--write")
    assert result.code == 0, result.output
    assert path.read_bytes() == text.replace(OLD.upper(), NEW).encode()
    assert cli("checksums", str(path)).code == 0  # now they match


def test_write_in_an_arm_deployment_names_the_parameter_it_cannot_write(cli: Any, tmp_path: Path) -> None:
    folder(tmp_path)
    image = template(
        "t",
        [
            {"type": "Shell", "name": "literal", "scriptUri": "setup.sh", "sha256Checksum": OLD},
            {"type": "Shell", "name": "param", "scriptUri": "setup.sh", "sha256Checksum": "[parameters('digest')]"},
        ],
        distribute=[{"type": "VHD", "runOutputName": "v"}],
    )
    deployment = {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {"digest": {"type": "string", "defaultValue": OLD}},
        "resources": [{"type": "Microsoft.Storage/storageAccounts", "name": "x"}, image],
    }
    text = json.dumps(deployment, indent=4)
    path = tmp_path / "azuredeploy.json"
    path.write_text(text)
    result = cli("checksums", str(path), "--write")
    assert result.code == 1, result.output  # the parameter's digest still differs
    assert "the parameter 'digest' gives its sha256Checksum; set it to " + NEW in result.output
    written = path.read_text()
    assert written == text.replace(f'"sha256Checksum": "{OLD}"', f'"sha256Checksum": "{NEW}"', 1)
    assert json.loads(written)["parameters"]["digest"]["defaultValue"] == OLD
