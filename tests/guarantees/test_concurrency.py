"""Guarantee 8: builds at once, distributing to the same gallery image definition and the
same managed-image resource group, get distinct versions, lose no run output, and every
record a reader sees meanwhile is whole JSON. Under load: the customizers keep both
cores busy while the distributions are written."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import managed_image_id, template
from tests.guarantees.support import Running, containers_of, record, store_problems
from tests.integration.test_distribute_docker import make_gallery

pytestmark = pytest.mark.docker

BUILDS = 4
BUSY = {"type": "Shell", "name": "busy", "inline": ["timeout 3 sh -c 'while :; do :; done' || true", "echo busy done"]}
TEMPLATES = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/aib-local/providers/"
    "Microsoft.VirtualMachineImages/imageTemplates"
)


class Reader(threading.Thread):
    """Reads every record of the store, over and over, until stopped; keeps what it could not parse."""

    def __init__(self, store: Path) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.stop = threading.Event()
        self.torn: list[str] = []
        self.reads = 0

    def run(self) -> None:
        while not self.stop.is_set():
            for path in list(self.store.rglob("*.json")):
                if path.name.endswith(".partial"):
                    continue
                try:
                    json.loads(path.read_text())
                    self.reads += 1
                except FileNotFoundError:
                    continue
                except json.JSONDecodeError as exc:
                    self.torn.append(f"{path}: {exc}")


def templates(write_template: Any, definition: str) -> list[Path]:
    paths = []
    for number in range(BUILDS):
        distribute = [
            {"type": "SharedImage", "galleryImageId": definition, "runOutputName": "sig"},
            {
                "type": "ManagedImage",
                "imageId": managed_image_id(f"img-{number}"),
                "location": "westeurope",
                "runOutputName": "managed",
            },
        ]
        paths.append(write_template(template(f"load-{number}", [BUSY], distribute=distribute), f"t{number}.json"))
    return paths


def check_outcome(cli: Any, store: Path, docker_client: Any, reader: Reader) -> None:
    versions = json.loads(cli("sig", "image-version", "list", "-g", "rg", "-r", "gal", "-i", "debian").stdout)
    names = [v["name"] for v in versions]
    assert len(names) == BUILDS and len(set(names)) == BUILDS, names
    made_by = {v["aibLocal"]["imageTemplate"] for v in versions}
    assert made_by == {f"{TEMPLATES}/load-{number}" for number in range(BUILDS)}
    for number in range(BUILDS):
        image = record(store, managed_image_id(f"img-{number}"))
        assert image is not None and image["properties"]["provisioningState"] == "Succeeded"
        for output in ("sig", "managed"):
            run_output = record(store, f"{TEMPLATES}/load-{number}/runOutputs/{output}")
            assert run_output is not None, (number, output)
            assert run_output["properties"]["provisioningState"] == "Succeeded"
        status = record(store, f"{TEMPLATES}/load-{number}")
        assert status is not None and status["properties"]["lastRunStatus"]["runState"] == "Succeeded"
    assert reader.torn == [] and reader.reads > 0
    assert store_problems(store) == []
    assert docker_client.containers.list(all=True, filters={"label": "io.aib-local.template=vhd-helper"}) == []
    for number in range(BUILDS):
        assert containers_of(docker_client, f"load-{number}") == []


def test_four_processes_distributing_to_one_gallery_and_resource_group(
    cli: Any, store: Path, write_template: Any, docker_client: Any, base_image: str
) -> None:
    paths = templates(write_template, make_gallery(cli))
    reader = Reader(store)
    reader.start()
    running = [Running(["build", str(path), "--network", "none"], store) for path in paths]
    results = [build.finish(within=300) for build in running]
    reader.stop.set()
    reader.join()
    for code, output in results:
        assert code == 0, output
    check_outcome(cli, store, docker_client, reader)


def test_parallel_builds_in_one_process_do_the_same(
    cli: Any, store: Path, write_template: Any, docker_client: Any, base_image: str
) -> None:
    paths = templates(write_template, make_gallery(cli))
    reader = Reader(store)
    reader.start()
    result = cli("build", *map(str, paths), "--network", "none", "--parallel", str(BUILDS))
    reader.stop.set()
    reader.join()
    assert result.code == 0, result.output
    check_outcome(cli, store, docker_client, reader)
