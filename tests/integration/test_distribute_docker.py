"""Distributions on the real engine: VHD, managed image, gallery version, chained builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from engine.images import short_ref
from tests.support import GALLERY, SUBSCRIPTION, make_gallery, managed_image_id, run_image, template

pytestmark = pytest.mark.docker

GIB = 1 << 30


def vhd_path(uri: str) -> Path:
    return Path(urlsplit(uri).path)


def run_outputs(cli: Any, name: str) -> dict[str, dict[str, Any]]:
    outputs = {}
    base = (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/aib-local/providers"
        f"/Microsoft.VirtualMachineImages/imageTemplates/{name}"
    )
    for output in ("disk", "image", "gallery"):
        shown = cli("show", f"{base}/runOutputs/{output}")
        if shown.code == 0:
            outputs[output] = json.loads(shown.stdout)["properties"]
    return outputs


def test_one_build_writes_all_three_and_a_second_builds_from_them(
    cli: Any, write_template: Any, docker_client: Any, base_image: str, leftovers: Any, store: Path
) -> None:
    definition = make_gallery(cli)
    image_id = managed_image_id("all-three")
    first = write_template(
        template(
            "all-three",
            [
                {"type": "Shell", "name": "mark", "inline": ["echo from-the-first-build | sudo tee /etc/marker"]},
            ],
            distribute=[
                {"type": "VHD", "runOutputName": "disk"},
                {
                    "type": "ManagedImage",
                    "runOutputName": "image",
                    "imageId": image_id,
                    "location": "westeurope",
                    "artifactTags": {"kind": "managed"},
                },
                {
                    "type": "SharedImage",
                    "runOutputName": "gallery",
                    "galleryImageId": definition,
                    "targetRegions": [{"name": "westeurope", "replicaCount": 2}, {"name": "northeurope"}],
                    "versioning": {"scheme": "Latest", "major": 1},
                },
            ],
            vmProfile={"osDiskSizeGB": 2},
        ),
        "first.json",
    )
    result = cli("build", str(first), "--network", "none")
    assert result.code == 0, result.output

    outputs = run_outputs(cli, "all-three")
    assert outputs["image"] == {"provisioningState": "Succeeded", "artifactId": image_id}
    assert outputs["gallery"] == {"provisioningState": "Succeeded", "artifactId": f"{definition}/versions/1.0.0"}
    disk = vhd_path(outputs["disk"]["artifactUri"])

    # The VHD: a fixed VHD of osDiskSizeGB, sparse, with the customizer's file in its partition.
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-f", "vpc", "--output", "json", str(disk)], check=True, capture_output=True, text=True
        ).stdout
    )
    assert info["format"] == "vpc" and info["virtual-size"] == 2 * GIB
    assert disk.stat().st_size == 2 * GIB + 512
    assert disk.stat().st_blocks * 512 < GIB  # only the used blocks are on disk
    cat = subprocess.run(
        ["debugfs", "-R", "cat /etc/marker", f"{disk}?offset={1 << 20}"], check=True, capture_output=True, text=True
    )
    assert cat.stdout.strip() == "from-the-first-build"
    assert not list(disk.parent.glob(".*.partial"))

    version = json.loads(
        cli(
            "sig", "image-version", "show", "-g", "rg", "-r", "gal", "-i", "debian", "--gallery-image-version", "latest"
        ).stdout
    )
    assert version["name"] == "1.0.0"
    assert [r["region"] for r in version["properties"]["replicationStatus"]["summary"]] == ["westeurope", "northeurope"]
    assert version["properties"]["publishingProfile"]["targetRegions"][0]["regionalReplicaCount"] == 2
    # The gallery version's image runs what it is given and ends (the build's keep-alive is not its entrypoint).
    assert run_image(docker_client, version["aibLocal"]["dockerImage"], ["cat", "/etc/marker"]) == (
        "from-the-first-build\n"
    )

    # A second template builds from the managed image, a third from the gallery's latest version.
    for name, source in (
        ("from-image", {"type": "ManagedImage", "imageId": image_id}),
        ("from-gallery", {"type": "SharedImageVersion", "imageVersionId": f"{definition}/versions/latest"}),
    ):
        path = write_template(
            template(name, [{"type": "Shell", "inline": ["cat /etc/marker"]}], source=source), f"{name}.json"
        )
        chained = cli("build", str(path), "--network", "none")
        assert chained.code == 0, chained.output
        assert "from-the-first-build" in chained.stdout
    assert leftovers() == []


def test_gallery_must_exist_before_a_build_distributes_to_it(
    cli: Any, write_template: Any, base_image: str, leftovers: Any
) -> None:
    path = write_template(
        template(
            "nogallery",
            [{"type": "Shell", "inline": ["true"]}],
            distribute=[
                {
                    "type": "SharedImage",
                    "runOutputName": "g",
                    "galleryImageId": f"{GALLERY}/images/none",
                    "targetRegions": [{"name": "westeurope"}],
                },
            ],
        )
    )
    result = cli("build", str(path), "--network", "none")
    assert result.code == 2, result.output
    assert "aib-local sig create" in result.stderr
    assert leftovers() == []


def test_gallery_region_must_be_a_target_region(cli: Any, write_template: Any, base_image: str) -> None:
    definition = make_gallery(cli)
    data = template(
        "wrongregion",
        [{"type": "Shell", "inline": ["true"]}],
        distribute=[
            {
                "type": "SharedImage",
                "runOutputName": "g",
                "galleryImageId": definition,
                "replicationRegions": ["eastus"],
            },
        ],
    )
    data["apiVersion"] = "2022-02-14"
    result = cli("build", str(write_template(data)), "--network", "none")
    assert result.code == 2, result.output
    assert "the gallery is in westeurope, which must be among the target regions (eastus)" in result.stderr


def test_two_builds_at_once_get_distinct_versions(
    write_template: Any, cli: Any, base_image: str, store: Path, leftovers: Any
) -> None:
    definition = make_gallery(cli)
    paths = [
        write_template(
            template(
                f"parallel{i}",
                [{"type": "Shell", "inline": ["true"]}],
                distribute=[
                    {
                        "type": "SharedImage",
                        "runOutputName": "g",
                        "galleryImageId": definition,
                        "targetRegions": [{"name": "westeurope"}],
                    },
                ],
            ),
            f"p{i}.json",
        )
        for i in range(2)
    ]
    env = {**os.environ, "AIB_LOCAL_STORE": str(store)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "engine", "build", str(p), "--network", "none"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for p in paths
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    versions = json.loads(cli("sig", "image-version", "list", "-g", "rg", "-r", "gal", "-i", "debian").stdout)
    names = [v["name"] for v in versions]
    assert len(names) == 2 and len(set(names)) == 2
    assert leftovers() == []


def test_vhd_smallest_fit_is_whole_mib(cli: Any, write_template: Any, base_image: str) -> None:
    path = write_template(
        template(
            "smallvhd", [{"type": "Shell", "inline": ["true"]}], distribute=[{"type": "VHD", "runOutputName": "disk"}]
        )
    )
    result = cli("build", str(path), "--network", "none")
    assert result.code == 0, result.output
    uri = next(line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("run output disk"))
    size = vhd_path(uri).stat().st_size - 512
    assert size % (1 << 20) == 0
    progress = [line for line in result.stdout.splitlines() if "filesystem export:" in line]
    assert progress and progress[-1].endswith("(done)")  # long operations show bytes and rate
    assert 64 << 20 < size < 1 << 30


def test_building_the_same_managed_image_again_leaves_one_image_of_it(
    cli: Any, write_template: Any, docker_client: Any, base_image: str, leftovers: Any
) -> None:
    """A record replaced by the next build of the same image ID takes its Docker image with
    it: a template built over and over (an edit loop, CI) does not pile up images."""
    image_id = managed_image_id("again")
    distribute = [{"type": "ManagedImage", "imageId": image_id, "location": "westeurope", "runOutputName": "img"}]
    path = write_template(template("again", [{"type": "Shell", "inline": ["echo again"]}], distribute=distribute))
    references = []
    for _ in range(2):
        assert cli("build", str(path), "--network", "none").code == 0
        references.append(json.loads(cli("show", image_id).stdout)["aibLocal"]["reference"])
    first, second = references
    repository = second.split(":")[0]
    # Only this test's two tags are looked at: other runs may hold images of the same name.
    tags = {short_ref(tag) for image in docker_client.images.list(name=repository) for tag in image.tags}
    assert second in tags and first not in tags and first != second
    assert leftovers() == []
