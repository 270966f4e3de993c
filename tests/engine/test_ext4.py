"""The disk writer's pieces that need no engine: Docker's multiplexed stream, and a disk
image that comes back from a remote engine as a sparse tar."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from engine.ext4 import _extract_image, _Frames
from engine.frames import FrameSplitter
from engine.targets.base import TargetError


def test_frames_are_split_whatever_pieces_the_socket_gives() -> None:
    stream = multiplexed(1, b"hello ") + multiplexed(2, b"oops") + multiplexed(1, b"") + multiplexed(1, b"world")
    for size in (1, 3, 8, 9, 1000):
        splitter = FrameSplitter()
        pieces = [p for i in range(0, len(stream), size) for p in splitter.feed(stream[i : i + size])]
        stdout = b"".join(data for kind, data in pieces if kind == 1)
        stderr = b"".join(data for kind, data in pieces if kind == 2)
        assert (stdout, stderr) == (b"hello world", b"oops"), size
        assert not splitter.inside_frame
    cut = FrameSplitter()
    cut.feed(multiplexed(1, b"abcdef")[:10])
    assert cut.inside_frame


def multiplexed(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


@pytest.mark.needs("tar", "tar")
@pytest.mark.parametrize("sparse", [True, False])
def test_a_disk_image_streamed_as_a_sparse_tar_comes_back_whole_with_its_holes(tmp_path: Path, sparse: bool) -> None:
    disk = tmp_path / "disk"
    with disk.open("wb") as out:
        out.seek(1 << 20)
        out.write(b"A" * 5000)
        out.seek(50 << 20)
        out.write(bytes(range(256)) * 300)
        out.truncate(200 << 20)
    archive = subprocess.run(
        ["tar", *(["--sparse"] if sparse else []), "-cf", "-", "-C", str(tmp_path), "disk"],
        check=True,
        capture_output=True,
    ).stdout
    # As the engine sends it: frames of odd sizes, a stderr frame among them, read in odd pieces.
    stream = io.BytesIO(
        b"".join(
            multiplexed(2, b"warning") + multiplexed(1, archive[i : i + 7001])
            if i == 7001
            else multiplexed(1, archive[i : i + 7001])
            for i in range(0, len(archive), 7001)
        )
    )
    errors: list[bytes] = []
    copy = tmp_path / "copy"
    with tarfile.open(fileobj=_Frames(lambda n: stream.read(min(n, 5000)), errors), mode="r|") as archive_in:
        member = archive_in.next()
        assert member is not None
        _extract_image(archive_in, member, str(copy))
    assert copy.read_bytes() == disk.read_bytes()
    assert errors == [b"warning"]
    if sparse:
        assert copy.stat().st_blocks * 512 < 1 << 20  # 200 MiB long, a few KiB written


def test_a_stream_that_ends_early_is_an_error(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.write_bytes(b"B" * 100_000)
    archive = subprocess.run(["tar", "-cf", "-", "-C", str(tmp_path), "disk"], check=True, capture_output=True).stdout
    with (
        pytest.raises(TargetError, match="ended early"),
        tarfile.open(fileobj=_Frames(io.BytesIO(multiplexed(1, archive[:20_000])).read, []), mode="r|") as stream,
    ):
        member = stream.next()
        assert member is not None
        _extract_image(stream, member, str(tmp_path / "copy"))
