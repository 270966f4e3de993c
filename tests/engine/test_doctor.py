"""`aib-local doctor`: every missing piece is named with the command that fixes it, and
the exit code says whether what was asked for can run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT


def checks_of(result: Any) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in json.loads(result.stdout)["checks"]}


def test_a_machine_without_an_engine_qemu_or_disk_is_told_each_fix(cli: Any, tmp_path: Path) -> None:
    bare_path = tmp_path / "bin"
    bare_path.mkdir()
    env = {
        "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock",
        "AIB_LOCAL_DISKS": str(tmp_path / "disks"),
        "PATH": str(bare_path),  # no qemu, no chromium
    }
    result = cli("doctor", "--output", "json", env=env)
    assert result.code == 1, result.output
    found = checks_of(result)
    engine = found["container engine"]
    assert not engine["ok"] and "no Docker engine answers" in engine["detail"]
    assert engine["fix"].startswith(str(ROOT / "fixtures/ensure-docker.sh"))
    assert engine["fix"].endswith(f"(or, for Podman, {ROOT / 'fixtures/ensure-podman.sh'}; or set DOCKER_HOST)")
    assert not found["QEMU"]["ok"] and found["QEMU"]["fix"] == "apt-get install -y qemu-system-x86"
    disk = found["fixture disk"]
    assert not disk["ok"] and disk["fix"].startswith("sudo ") and disk["fix"].endswith("build-disk.sh")
    assert not found["headless browser"]["ok"]

    text = cli("doctor", "--for", "vm", env=env)
    assert text.code == 1
    assert "MISSING QEMU [vm]" in text.stdout and "missing container engine [docker]" in text.stdout
    assert "fix: apt-get install -y qemu-system-x86" in text.stdout and "not ready for vm" in text.stdout


def test_a_stale_fixture_disk_is_told_to_be_remade(cli: Any, tmp_path: Path) -> None:
    disks = tmp_path / "disks"
    disks.mkdir()
    (disks / "debian-12.qcow2").write_bytes(b"")
    (disks / "debian-12.qcow2.recipe").write_text("0\n")
    found = checks_of(cli("doctor", "--output", "json", env={"AIB_LOCAL_DISKS": str(disks)}))
    assert "older recipe" in found["fixture disk"]["detail"] and "FORCE=1" in found["fixture disk"]["fix"]


@pytest.mark.docker
def test_this_machine_is_ready_for_container_builds(cli: Any, base_image: str) -> None:
    result = cli("doctor")
    assert result.code == 0, result.output
    assert "ok      container engine [docker]" in result.stdout and "ready for docker" in result.stdout
    assert f"ok      image {base_image} [docker]" in result.stdout
    assert os.environ.get("PATH")  # the real PATH was used
