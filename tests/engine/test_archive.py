"""The tars aib-local copies into containers (put_archive): whole for Docker and Podman,
and nothing after the end-of-archive blocks, where Podman's copier stops reading and a
writer still sending record padding fails the copy now and then (containers/buildah#6573)."""

from __future__ import annotations

import io
import tarfile

from engine.images import archive


def test_an_archive_ends_right_after_its_two_end_blocks_and_reads_whole() -> None:
    folder = tarfile.TarInfo("etc/x.d")
    folder.type = tarfile.DIRTYPE
    member = tarfile.TarInfo("etc/x.d/file")
    member.size = 5
    data = archive([(folder, None), (member, b"hello")])
    assert len(data) == 3 * tarfile.BLOCKSIZE + 2 * tarfile.BLOCKSIZE  # two headers, one data block, the end
    assert data.endswith(bytes(2 * tarfile.BLOCKSIZE))
    with tarfile.open(fileobj=io.BytesIO(data)) as read:
        assert read.getnames() == ["etc/x.d", "etc/x.d/file"]
        extracted = read.extractfile("etc/x.d/file")
        assert extracted is not None and extracted.read() == b"hello"
