"""Guarantee 8: builds at once, distributing to the same gallery image definition and the
same managed-image resource group, get distinct versions, lose no run output, and every
record a reader sees meanwhile is whole JSON. Under load: the customizers keep both
cores busy while the distributions are written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    Reader,
    Running,
    build_ids,
    containers_of,
    make_gallery,
    managed_image_id,
    record,
    store_problems,
    template,
    template_id,
)

pytestmark = pytest.mark.docker

BUILDS = 4
BUSY = {"type": "Shell", "name": "busy", "inline": ["timeout 3 sh -c 'while :; do :; done' || true", "echo busy done"]}


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
    assert made_by == {template_id(f"load-{number}") for number in range(BUILDS)}
    for number in range(BUILDS):
        image = record(store, managed_image_id(f"img-{number}"))
        assert image is not None and image["properties"]["provisioningState"] == "Succeeded"
        for output in ("sig", "managed"):
            run_output = record(store, f"{template_id(f'load-{number}')}/runOutputs/{output}")
            assert run_output is not None, (number, output)
            assert run_output["properties"]["provisioningState"] == "Succeeded"
        status = record(store, template_id(f"load-{number}"))
        assert status is not None and status["properties"]["lastRunStatus"]["runState"] == "Succeeded"
    assert reader.torn == [] and reader.reads > 0
    assert store_problems(store) == []
    for build_id in build_ids(store):  # this test's builds only: another may be building meanwhile
        helpers = {"label": ["io.aib-local.template=vhd-helper", f"io.aib-local.build-id={build_id}"]}
        assert docker_client.containers.list(all=True, filters=helpers) == []
    for number in range(BUILDS):
        assert containers_of(docker_client, f"load-{number}") == []


@pytest.mark.parametrize("how", ["processes", "parallel"])
def test_four_builds_distributing_to_one_gallery_and_resource_group(
    how: str, cli: Any, store: Path, write_template: Any, docker_client: Any, base_image: str, tmp_path: Path
) -> None:
    paths = templates(write_template, make_gallery(cli))
    go = tmp_path / "go"
    # All four reach the gallery write, then are let go at the same moment.
    env = {"AIB_LOCAL_FAILPOINTS": f"image:committed=wait-file:{go}"}
    with Reader(store) as reader:
        if how == "processes":
            running = [Running(["build", str(path), "--network", "none"], store, env) for path in paths]
            waiting = running
        else:  # --parallel: one process, four threads
            running = [Running(["build", *map(str, paths), "--network", "none", "--parallel", str(BUILDS)], store, env)]
            waiting = running * BUILDS
        for build in waiting:
            build.wait_for("failpoint image:committed reached")
        go.touch()
        results = [build.finish(within=300) for build in running]
    for code, output in results:
        assert code == 0, output
    check_outcome(cli, store, docker_client, reader)
