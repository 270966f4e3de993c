"""The VHD footer and MBR, byte by byte (VHD specification 1.0)."""

from __future__ import annotations

import struct

from distributors.vhd import footer, geometry, mbr

GIB = 1 << 30


def test_footer_fields() -> None:
    data = footer(2 * GIB, bytes(range(16)), 946684800 + 1000)
    assert len(data) == 512
    assert data[:8] == b"conectix"
    assert struct.unpack(">I", data[8:12])[0] == 2
    assert struct.unpack(">I", data[12:16])[0] == 0x00010000
    assert struct.unpack(">Q", data[16:24])[0] == 0xFFFFFFFFFFFFFFFF
    assert struct.unpack(">I", data[24:28])[0] == 1000
    assert struct.unpack(">QQ", data[40:56]) == (2 * GIB, 2 * GIB)
    assert struct.unpack(">I", data[60:64])[0] == 2  # fixed disk
    assert data[68:84] == bytes(range(16))
    assert data[85:] == bytes(427)


def test_footer_checksum_is_the_ones_complement_of_the_byte_sum() -> None:
    data = footer(30 * GIB, b"\x01" * 16, 1_700_000_000)
    stored = struct.unpack(">I", data[64:68])[0]
    zeroed = data[:64] + bytes(4) + data[68:]
    assert stored == ~sum(zeroed) & 0xFFFFFFFF


def test_geometry_follows_the_specification() -> None:
    # Values computed by the algorithm in the VHD specification's appendix.
    assert geometry(127 * GIB) == (65278, 16, 255)
    assert geometry(30 * GIB) == (62415, 16, 63)
    assert geometry(20 * (1 << 20)) == (602, 4, 17)
    assert geometry(4000 * GIB) == (65535, 16, 255)  # capped


def test_mbr_has_one_linux_partition_from_1_mib() -> None:
    data = mbr(2 * GIB, 0x12345678)
    assert len(data) == 512 and data[510:] == b"\x55\xaa"
    status, ptype, start, sectors = data[446], data[450], *struct.unpack("<II", data[454:462])
    assert (status, ptype, start, sectors) == (0x80, 0x83, 2048, 2 * GIB // 512 - 2048)
    assert struct.unpack("<I", data[440:444])[0] == 0x12345678
