"""End-to-end builds on the real Docker engine, through the real CLI."""

from __future__ import annotations

import hashlib
import http.server
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, SUBSCRIPTION, base_url, http_server, managed_image_id, run_image, template

pytestmark = pytest.mark.docker


def run_in_image(docker_client: Any, image: str, script: str) -> str:
    output = docker_client.containers.run(
        image, ["/bin/sh", "-c", script], remove=True, network_mode="none", entrypoint=[]
    )
    return str(output.decode())


def show(cli: Any, resource_id: str) -> dict[str, Any]:
    result = cli("show", resource_id)
    assert result.code == 0, result.output
    record: dict[str, Any] = json.loads(result.stdout)
    return record


def test_quickstart_fixture_builds_a_managed_image(
    cli: Any, docker_client: Any, base_image: str, leftovers: Any
) -> None:
    result = cli("build", str(ROOT / "fixtures/templates/quickstart.json"), "--network", "none")
    assert result.code == 0, result.output
    assert "setup.sh running as root" in result.stdout
    assert "motd installed by packer" in result.stdout
    # The template keeps its https URLs; fixtures/templates/aib-local.json maps them to the working copies.
    url = "https://raw.githubusercontent.com/example/images/main/scripts/setup.sh"
    assert f"setup.sh, the working copy of {url}" in result.output
    assert "AIB would reject" not in result.output

    image_id = (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/aib-local/providers/Microsoft.Compute/images/quickstart-image"
    )
    image = show(cli, image_id)
    assert image["properties"]["storageProfile"]["osDisk"] == {"osType": "Linux", "osState": "Generalized"}
    assert image["tags"] == {"source": "aib-local-quickstart"}
    run_output = show(
        cli,
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/aib-local/providers/"
        "Microsoft.VirtualMachineImages/imageTemplates/quickstart/runOutputs/quickstart-image",
    )
    assert run_output["properties"] == {"provisioningState": "Succeeded", "artifactId": image_id}
    status = show(
        cli,
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/aib-local/providers/"
        "Microsoft.VirtualMachineImages/imageTemplates/quickstart",
    )["properties"]["lastRunStatus"]
    assert status["runState"] == "Succeeded"

    docker_image = image["aibLocal"]["dockerImage"]
    out = run_in_image(
        docker_client,
        docker_image,
        "/opt/hello/hello.sh; cat /etc/motd; "
        "id packer >/dev/null 2>&1 && echo USER-LEFT; test -e /etc/sudoers.d/zz-aib-local && echo SUDOERS-LEFT; "
        "ls /tmp/aib-local-script-* 2>/dev/null; echo end",
    )
    assert out.splitlines() == [
        "hello from an aib-local image",
        "Built by aib-local from the quickstart template.",
        "end",
    ]
    # The committed image keeps the source image's own command, not the build's keep-alive:
    # it runs what it is given, and ends.
    config = docker_client.api.inspect_image(docker_image)["Config"]
    assert config["Cmd"] == ["/bin/bash"] and not config["Entrypoint"]
    assert run_image(docker_client, docker_image, ["echo", "hi"]) == "hi\n"
    assert not any(v for k, v in (config.get("Labels") or {}).items() if k.startswith("io.aib-local"))
    assert leftovers() == []


def test_failing_step_stops_the_build(
    cli: Any, write_template: Any, base_image: str, leftovers: Any, store: Path
) -> None:
    path = write_template(
        template(
            "fails",
            [
                {"type": "Shell", "name": "first", "inline": ["echo first ran"]},
                {"type": "Shell", "name": "breaks", "inline": ["echo about to fail", "exit 7"]},
                {"type": "Shell", "name": "never", "inline": ["echo NEVER-RUNS"]},
            ],
        )
    )
    result = cli("build", str(path), "--network", "none")
    assert result.code == 1, result.output
    assert "customize[1] breaks failed with exit code 7" in result.stderr
    assert "customization.log" in result.stderr
    assert "first ran" in result.stdout and "about to fail" in result.stdout
    assert "NEVER-RUNS" not in result.output
    log = next(store.glob("builds/*/customization.log")).read_text()
    assert "customize[1] breaks: failed, exit code 7" in log
    assert "NEVER-RUNS" not in log
    assert leftovers() == []


def test_inline_lines_fail_fast(cli: Any, write_template: Any, base_image: str, leftovers: Any) -> None:
    path = write_template(
        template(
            "failfast",
            [
                {"type": "Shell", "name": "lines", "inline": ["false", "echo AFTER-FALSE"]},
            ],
        )
    )
    result = cli("build", str(path), "--network", "none")
    assert result.code == 1
    assert "exit code 1" in result.stderr
    assert "AFTER-FALSE" not in result.output


def test_a_download_with_a_wrong_sha256_starts_no_container(
    cli: Any, write_template: Any, docker_client: Any, tmp_path: Path, base_image: str
) -> None:
    """A downloaded file must match its checksum before anything starts (a local working
    copy that differs runs instead, with a warning: tests/engine/test_uri_map.py)."""
    body = b"echo hi\n"
    actual = hashlib.sha256(body).hexdigest()
    wrong = "0" * 64

    class Served(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    with http_server(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Served)) as server:
        step = {"type": "Shell", "name": "checked", "scriptUri": f"{base_url(server)}/s.sh", "sha256Checksum": wrong}
        path = write_template(template("badsum", [step]))
        since = int(time.time()) - 1
        result = cli("build", str(path), "--network", "none")
        until = int(time.time()) + 1
    assert result.code == 1, result.output
    assert f"expected {wrong}, got {actual}" in result.stderr
    created = list(
        docker_client.events(
            since=since,
            until=until,
            decode=True,
            filters={"type": "container", "event": "create", "label": "io.aib-local.template=badsum"},
        )
    )
    assert created == []


def test_build_timeout_stops_a_long_step(cli: Any, write_template: Any, base_image: str, leftovers: Any) -> None:
    path = write_template(
        template(
            "timeout",
            [
                {"type": "Shell", "name": "forever", "inline": ["echo sleeping", "sleep 600"]},
                {"type": "Shell", "name": "after", "inline": ["echo NEVER-RUNS"]},
            ],
            buildTimeoutInMinutes=1,
        )
    )
    started = time.monotonic()
    result = cli("build", str(path), "--network", "none")
    elapsed = time.monotonic() - started
    assert result.code == 1, result.output
    assert "buildTimeoutInMinutes (1) expired during customize[0] forever" in result.stderr
    assert "AIB needs at least 6" in result.stdout  # the 1-5 minute warning
    assert 55 < elapsed < 90, elapsed
    assert "NEVER-RUNS" not in result.output
    assert leftovers() == []


def test_chained_build_sees_first_build_and_deprovision_override(
    cli: Any, write_template: Any, docker_client: Any, base_image: str, leftovers: Any
) -> None:
    first_id = managed_image_id("chain-base")
    first = write_template(
        template(
            "chain-first",
            [
                {
                    "type": "Shell",
                    "name": "mark",
                    "inline": ["echo first > /tmp/mark", "sudo cp /tmp/mark /etc/first-build"],
                },
                {
                    "type": "Shell",
                    "name": "override",
                    "inline": [
                        "printf 'touch /etc/deprovisioned-by-override\\n' > /tmp/DeprovisioningScript.sh",
                    ],
                },
            ],
            distribute=[
                {
                    "type": "ManagedImage",
                    "imageId": first_id,
                    "location": "westeurope",
                    "runOutputName": "base",
                }
            ],
        ),
        "first.json",
    )
    result = cli("build", str(first), "--network", "none")
    assert result.code == 0, result.output
    assert "running the deprovision override /tmp/DeprovisioningScript.sh" in result.stdout
    assert "generic deprovision" not in result.stdout

    second_id = managed_image_id("chain-second")
    second = write_template(
        template(
            "chain-second",
            [
                {
                    "type": "Shell",
                    "name": "check",
                    "inline": [
                        "cat /etc/first-build",
                        "test -f /etc/deprovisioned-by-override",
                        "echo CHAIN-OK",
                    ],
                },
            ],
            source={"type": "ManagedImage", "imageId": first_id},
            distribute=[
                {
                    "type": "ManagedImage",
                    "imageId": second_id,
                    "location": "westeurope",
                    "runOutputName": "second",
                }
            ],
        ),
        "second.json",
    )
    result = cli("build", str(second), "--network", "none")
    assert result.code == 0, result.output
    assert "CHAIN-OK" in result.stdout
    record = show(cli, second_id)
    assert record["aibLocal"]["source"]["id"] == first_id
    assert leftovers() == []


def test_image_without_sudo_gets_root_and_pass_through_sudo(
    cli: Any, write_template: Any, docker_client: Any, no_sudo_image: str, tmp_path: Path, leftovers: Any
) -> None:
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps({"Test:nosudo:12:latest": no_sudo_image}))
    image_id = managed_image_id("nosudo")
    path = write_template(
        template(
            "nosudo",
            [
                {
                    "type": "Shell",
                    "name": "uses-sudo",
                    "inline": ["sudo -E touch /etc/made-with-sudo", "echo uid=$(id -u)"],
                },
            ],
            source={
                "type": "PlatformImage",
                "publisher": "Test",
                "offer": "nosudo",
                "sku": "12",
                "version": "latest",
            },
            distribute=[
                {
                    "type": "ManagedImage",
                    "imageId": image_id,
                    "location": "westeurope",
                    "runOutputName": "img",
                }
            ],
        )
    )
    result = cli("build", str(path), "--network", "none", "--catalogue", str(catalogue))
    assert result.code == 0, result.output
    assert "uid=0" in result.stdout
    assert "pass-through 'sudo'" in result.stdout
    docker_image = show(cli, image_id)["aibLocal"]["dockerImage"]
    out = run_in_image(
        docker_client,
        docker_image,
        "test -f /etc/made-with-sudo && echo made; command -v sudo || echo no-sudo",
    )
    assert out.split() == ["made", "no-sudo"]


def test_missing_base_image_exits_3_with_the_command(
    cli: Any, write_template: Any, tmp_path: Path, docker_client: Any
) -> None:
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps({"Debian:debian-12:12:latest": "aib-local-test/absent:1"}))
    path = write_template(template("absent", [{"type": "Shell", "inline": ["true"]}]))
    result = cli("build", str(path), "--catalogue", str(catalogue))
    assert result.code == 3, result.output
    assert "aib-local-test/absent:1 is not present locally" in result.stderr
    assert "docker import - aib-local-test/absent:1" in result.stderr
    assert "Traceback" not in result.output


def test_json_output_is_one_event_per_line(cli: Any, write_template: Any, base_image: str) -> None:
    path = write_template(template("jsonout", [{"type": "Shell", "name": "hello", "inline": ["echo hello json"]}]))
    result = cli("build", str(path), "--network", "none", "--output", "json")
    assert result.code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "build-started" and kinds[-1] == "build-finished"
    assert {
        "event": "output",
        "step": "customize[0] hello",
        "stream": "stdout",
        "line": "hello json",
    }.items() <= next(e for e in events if e["event"] == "output" and e["step"].startswith("customize")).items()
    finished = next(e for e in events if e["event"] == "step-finished" and e["step"] == "customize[0] hello")
    assert finished["exitCode"] == 0
    assert events[-1]["status"] == "Succeeded"


def test_on_error_abort_keeps_the_container(
    cli: Any, write_template: Any, base_image: str, leftovers: Any, tmp_path: Path
) -> None:
    path = write_template(
        template(
            "keepme",
            [{"type": "Shell", "name": "boom", "inline": ["touch /tmp/evidence", "exit 3"]}],
            errorHandling={"onCustomizerError": "abort"},
        )
    )
    result = cli("build", str(path), "--network", "none")
    assert result.code == 1
    kept = leftovers()
    assert len(kept) == 1
    assert kept[0].status == "running"
    assert kept[0].exec_run(["test", "-f", "/tmp/evidence"]).exit_code == 0
    build_id = kept[0].labels["io.aib-local.build-id"]
    assert f"aib-local clean --build {build_id}" in result.stdout
    elsewhere = cli("clean", env={"AIB_LOCAL_STORE": str(tmp_path / "another-store")})
    assert elsewhere.code == 0 and len(leftovers()) == 1  # another store's clean leaves this build's target
    cleaned = cli("clean", "--build", build_id)
    assert cleaned.code == 0 and f"aib-local-{build_id}" in cleaned.stdout
    assert leftovers() == []
