"""Templates in the shapes real AIB users submit, built unchanged on the default image:
tests/corpus/builds/NAME/ holds the template and the files its URLs name, served here
byte for byte from a local HTTP server; only placeholders get values (--set)."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import SUBSCRIPTION, base_url, http_server, managed_image_id, run_image, template

pytestmark = pytest.mark.docker

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "builds"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def served() -> Iterator[Any]:
    """serve(folder) -> the base URL of `folder` on a local HTTP server."""
    servers: list[Any] = []

    def serve(folder: Path) -> str:
        handler = functools.partial(QuietHandler, directory=str(folder))
        context = http_server(ThreadingHTTPServer(("127.0.0.1", 0), handler))
        servers.append(context)
        return base_url(context.__enter__())

    yield serve
    for context in servers:
        context.__exit__(None, None, None)


def build(cli: Any, folder: Path, tmp_path: Path, sets: dict[str, str], *extra: str) -> Any:
    """Build folder/template.json with the Ubuntu URNs mapped to the default image, as a
    user without an Ubuntu image would."""
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps({"Canonical:UbuntuServer:18.04-LTS:latest": "debian:12"}))
    args = [arg for name, value in sets.items() for arg in ("--set", f"{name}={value}")]
    return cli(
        "build", str(folder / "template.json"), "--catalogue", str(catalogue), "--network", "none", *args, *extra
    )


def test_quickstart_script_writes_system_files_without_sudo(
    cli: Any, docker_client: Any, base_image: str, served: Any, tmp_path: Path, leftovers: Any
) -> None:
    folder = CORPUS / "quickstart-linux"
    sets = {
        "region": "westeurope",
        "imgBuilderId": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/"
        "Microsoft.ManagedIdentity/userAssignedIdentities/aib",
        "subscriptionID": SUBSCRIPTION,
        "rgName": "tests",
        "imageName": "quickstart-linux",
        "runOutputName": "quickstart-linux",
        "scriptsBase": served(folder),
    }
    result = build(cli, folder, tmp_path, sets)
    assert result.code == 0, result.output
    # As in AIB: the downloaded script ran as root, the inline lines as the build user.
    assert "customizeScript.sh ran as root" in result.stdout
    assert "inline ran as packer" in result.stdout
    assert "unattended-upgrades is already the newest version" in result.stdout
    record = json.loads(cli("show", managed_image_id("quickstart-linux")).stdout)
    out = run_image(
        docker_client,
        record["aibLocal"]["dockerImage"],
        ["sh", "-c", "cat /etc/motd; ls /myfiles; cat /buildArtifacts/index.html"],
    )
    assert "This VM was built by an image template" in out
    assert "somethingElevated.txt" in out
    assert "built by an image template</body>" in out
    assert leftovers() == []


def test_inline_without_sudo_fails_as_in_aib(cli: Any, write_template: Any, base_image: str, leftovers: Any) -> None:
    path = write_template(
        template("nosudo-inline", [{"type": "Shell", "name": "motd", "inline": ["echo hi >> /etc/motd"]}])
    )
    result = cli("build", str(path), "--network", "none")
    assert result.code == 1, result.output
    assert "Permission denied" in result.stdout
    assert "customize[0] motd failed with exit code" in result.stderr
    assert "inline Shell commands run as the build user, as in AIB: prefix what needs root with sudo" in result.stderr
    assert leftovers() == []


def test_arm_deployment_with_mixed_case_and_functions_builds(
    cli: Any, docker_client: Any, base_image: str, tmp_path: Path, leftovers: Any
) -> None:
    folder = CORPUS / "arm-deployment"
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps({"Canonical:0001-com-ubuntu-server-jammy:22_04-lts:latest": "debian:12"}))
    result = cli(
        "build",
        str(folder / "azuredeploy.json"),
        "--catalogue",
        str(catalogue),
        "--network",
        "none",
        "-p",
        "IMAGETEMPLATENAME=web-arm",
        "--parameters",
        "environment=prod",
    )
    assert result.code == 0, result.output
    assert "install.sh ran as root" in result.stdout
    correlation = next(line for line in result.stdout.splitlines() if "correlation " in line)
    assert re.search(r"correlation [0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-", correlation), correlation
    record = json.loads(cli("show", managed_image_id("web-image").replace("/tests/", "/aib-local/")).stdout)
    assert record["tags"] == {"owner": "platform", "template": "azuredeploy"}
    stamp = run_image(
        docker_client, record["aibLocal"]["dockerImage"], ["cat", "/etc/image-stamp", "/var/www/site/version.txt"]
    )
    assert re.fullmatch(r"build \d{8} of PROD\nrelease unset\n", stamp), stamp
    assert leftovers() == []
