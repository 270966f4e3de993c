"""VHD: a fixed-format VHD file, as Azure accepts it.

A VM build's VHD is its whole disk, flattened from the VM's overlay: the source's own
partition table and bootloader, so it boots as the VM did. A container or SSH build's
has no bootloader: an MBR with one Linux partition starting at 1 MiB and an ext4
filesystem in it (written by the engine's filesystem writer from the exported
filesystem stream). Either way the 512-byte VHD footer follows; the virtual size is
`osDiskSizeGB` when given (a VM's disk can only grow: its partition is grown at first
boot, as Azure does), else the disk's own or the smallest fit, rounded up to a whole
MiB as Azure requires. The file is sparse, written under a temporary name and renamed
into place.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
import uuid
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from urllib.request import url2pathname

from pydantic import Field

from distributors.base import DistributeContext, DistributeError, Distributor, RunOutput
from engine import disks, failpoints
from engine.store import file_mode
from engine.template.sections import Check, DistributeSection, since

SECTOR = 512
PARTITION_OFFSET = 1 << 20
VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z
MAX_SIZE = 4095 << 30  # Azure's limit for a page-blob VHD disk


def mbr(disk_size: int, signature: int) -> bytes:
    """A master boot record with one Linux (0x83) partition from 1 MiB to the end."""
    start = PARTITION_OFFSET // SECTOR
    sectors = min(disk_size // SECTOR - start, 0xFFFFFFFF)
    entry = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", start, sectors)
    return bytes(440) + struct.pack("<IH", signature, 0) + entry + bytes(48) + b"\x55\xaa"


def geometry(size: int) -> tuple[int, int, int]:
    """(cylinders, heads, sectors per track) by the algorithm of the VHD specification."""
    total = min(size // SECTOR, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def footer(size: int, unique_id: bytes, timestamp: float) -> bytes:
    """The 512-byte footer of a fixed VHD of `size` bytes.

    The creator application is "qem2", the marker that tells readers (qemu, Azure
    tooling) to take the size from `current size` rather than from the CHS geometry,
    which cannot express every MiB-aligned size.
    """
    cylinders, heads, spt = geometry(size)
    fields = struct.pack(
        ">8sIIQI4sI4sQQHBBII16sB",
        b"conectix",
        2,  # features: reserved bit, always set
        0x00010000,  # format version 1.0
        0xFFFFFFFFFFFFFFFF,  # data offset: none for a fixed disk
        int(timestamp) - VHD_EPOCH,
        b"qem2",
        0x00050003,
        b"Wi2k",
        size,
        size,
        cylinders,
        heads,
        spt,
        2,  # disk type: fixed
        0,  # checksum, filled below
        unique_id,
        0,
    )
    checksum = ~sum(fields) & 0xFFFFFFFF
    fields = fields[:64] + struct.pack(">I", checksum) + fields[68:]
    return fields + bytes(512 - len(fields))


class VhdDistribute(DistributeSection):
    type: Literal["VHD"]
    uri: str | None = Field(None, json_schema_extra=since("2022-07-01"))

    def check(self, here: str, check: Check) -> None:
        if self.uri and urlsplit(self.uri).scheme in ("http", "https"):
            check.not_local(
                f"{here}.uri",
                "AIB writes the VHD to this storage blob",
                "locally it is written to the store, under STORE/artifacts/BUILD_ID/",
            )


class Vhd(Distributor[VhdDistribute]):
    type_name = "VHD"
    schema = VhdDistribute
    needs_export = True

    def destination(self, ctx: DistributeContext) -> Path:
        uri = self.section.uri
        if uri and urlsplit(uri).scheme == "file":
            return Path(url2pathname(urlsplit(uri).path))
        return ctx.store.root / "artifacts" / ctx.build_id / f"{self.section.run_output_name}.vhd"

    def distribute(self, ctx: DistributeContext) -> RunOutput:
        if ctx.captured.disk() is None and ctx.write_filesystem is None:
            raise DistributeError("this target cannot write a filesystem image")
        final = self.destination(ctx)
        size = ctx.os_disk_size_gb << 30 if ctx.os_disk_size_gb else None
        if size is not None and size > MAX_SIZE:
            raise DistributeError(f"osDiskSizeGB {ctx.os_disk_size_gb} is over Azure's VHD limit of 4095 GiB")
        partial = final.with_name(f".{final.name}.partial")
        ctx.pending("files", str(partial))
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._write(ctx, partial, final, size)
        except OSError as exc:
            raise DistributeError(
                f"cannot write {final}: {exc.strerror or exc}",
                hint="free space on that filesystem, or set osDiskSizeGB / the VHD uri elsewhere",
            ) from None
        finally:
            partial.unlink(missing_ok=True)
            ctx.settled("files", str(partial))
            if not final.exists() and final.parent == ctx.store.root / "artifacts" / ctx.build_id:
                with contextlib.suppress(OSError):
                    final.parent.rmdir()  # the build's own folder, empty
        return RunOutput(self.section.run_output_name, artifact_uri=final.as_uri())

    def _write(self, ctx: DistributeContext, partial: Path, final: Path, size: int | None) -> None:
        """The disk (the VM's whole disk, or a filesystem behind a new MBR), then the
        footer, then the rename that publishes it."""
        whole = ctx.captured.disk()
        if whole is not None:
            disks.flatten(whole, partial, "raw")
            own = partial.stat().st_size
            if size is not None and size < own:
                raise DistributeError(
                    f"osDiskSizeGB {ctx.os_disk_size_gb} is smaller than the VM's disk ({own / (1 << 30):.1f} GiB)"
                )
            disk = -(-(size or own) // (1 << 20)) * (1 << 20)
        else:
            assert ctx.write_filesystem is not None
            disk, _used = ctx.write_filesystem(ctx.captured.export(), str(partial), PARTITION_OFFSET, size)
        with partial.open("r+b") as out:
            if whole is None:
                out.write(mbr(disk, int.from_bytes(os.urandom(4), "little")))
            out.truncate(disk)
            out.seek(disk)
            out.write(footer(disk, uuid.uuid4().bytes, time.time()))
            out.flush()
            os.fsync(out.fileno())
        partial.chmod(file_mode())
        failpoints.hit("vhd:written")
        partial.replace(final)
