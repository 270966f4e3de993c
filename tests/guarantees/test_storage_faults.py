"""Guarantee 5: a store on a filesystem that fills up gives a clear error, no partial VHD,
and records that are intact (old ones unchanged, new ones whole or absent)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    GALLERY,
    build_ids,
    containers_of,
    make_gallery,
    record,
    store_problems,
    template,
    template_id,
    unavailable,
)

pytestmark = pytest.mark.docker


@pytest.fixture
def small_store(tmp_path: Path, store: Path) -> Iterator[Path]:
    """The test's store on a 48 MiB tmpfs (the base image's filesystem is over 100 MiB)."""
    if os.geteuid() != 0:
        unavailable("mounting a size-limited tmpfs needs root (CI runs as root)")
    store.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(store)], check=True)
    yield store
    subprocess.run(["umount", "-l", str(store)], check=False)


def test_a_disk_that_fills_during_vhd_writing_leaves_no_vhd_and_intact_records(
    cli: Any, write_template: Any, small_store: Path, docker_client: Any, base_image: str
) -> None:
    make_gallery(cli)  # records that exist before the build
    gallery_before = record(small_store, GALLERY)
    step = {"type": "Shell", "name": "step", "inline": ["echo step ran"]}
    path = write_template(template("full", [step], distribute=[{"type": "VHD", "runOutputName": "disk"}]))
    result = cli("build", str(path), "--network", "none")

    assert result.code == 1, result.output
    assert "distribute[0] disk (VHD): the disk holding" in result.stderr
    assert "is full: mke2fs could not write the VHD there" in result.stderr
    assert list(small_store.rglob("*.vhd")) == []
    assert store_problems(small_store) == []
    assert record(small_store, GALLERY) == gallery_before
    (build_id,) = build_ids(small_store)
    assert containers_of(docker_client, build_id) == []  # the VHD helper too
    full_id = template_id("full")
    status = record(small_store, full_id)
    assert status is not None and status["properties"]["lastRunStatus"]["runState"] == "Failed"
    output = record(small_store, f"{full_id}/runOutputs/disk")
    assert output is not None and output["properties"]["provisioningState"] == "Failed"


def test_a_full_store_refuses_a_record_cleanly_and_keeps_the_old_one(cli: Any, small_store: Path) -> None:
    make_gallery(cli)
    before = record(small_store, GALLERY)
    filler = small_store / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    for size in (1 << 20, 4096, 1):  # fill the filesystem to the last byte
        try:
            while True:
                os.write(fd, b"\0" * size)
        except OSError:
            pass
    os.close(fd)
    result = cli(
        "sig",
        "image-definition",
        "create",
        "-g",
        "rg",
        "-r",
        "gal",
        "-i",
        "another",
        "--publisher",
        "tests",
        "--offer",
        "another",
        "--sku",
        "1",
        "--os-type",
        "Linux",
    )

    assert result.code == 3, result.output
    assert "No space left on device; the record is unchanged" in result.stderr
    assert "Traceback" not in result.output
    filler.unlink()
    assert record(small_store, GALLERY) == before
    assert record(small_store, f"{GALLERY}/images/another") is None
    assert store_problems(small_store) == []
