"""Writes a root filesystem (a tar stream) as ext4 into a disk image file, for VHDs.

Whatever the target was, the filesystem is written the same way: in a short-lived
helper container on the Docker engine, so that aib-local itself never needs root. A
local engine writes the disk image straight into the store through a bind mount; a
remote one (tcp://, ssh://) writes it in the helper, whence it is streamed back as a
sparse tar (only the written blocks travel) into the file on this machine.
"""

from __future__ import annotations

import io
import os
import shlex
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.errors
from docker.models.containers import Container

from engine import failpoints
from engine.errors import EnvironmentProblem
from engine.frames import STDERR, FrameSplitter
from engine.images import KEEPALIVE, close_socket, container_defaults, engine_is_local, labels, reason
from engine.polling import poll
from engine.targets.base import TargetError

HELPER_IMAGES_ENV = "AIB_LOCAL_HELPER_IMAGE"
FALLBACK_HELPER = "debian:12"


class Ext4Writer:
    """Writes an ext4 filesystem holding a tar stream into a disk image file.

    The privileged part (unpacking a root filesystem with its owners and device nodes,
    then `mke2fs -d`) happens in a short-lived helper container: the Docker engine
    unpacks the stream (`put_archive`), so the engine itself never needs root. The
    image file is written through a bind mount of its folder, sparse, and handed back
    to the calling user.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        candidates: list[str],
        *,
        build_id: str,
        report: Callable[[str], None] = lambda _message: None,
    ) -> None:
        self.client = client
        self.report = report
        env = os.environ.get(HELPER_IMAGES_ENV)
        self.candidates = [env] if env else [*candidates, FALLBACK_HELPER]
        self.build_id = build_id

    def _start(self, folder: str | None) -> Container:
        mounts = {folder: {"bind": "/out", "mode": "rw"}} if folder else {}
        # Streaming the disk back needs GNU tar's --sparse (busybox tar has none).
        probe = "command -v mke2fs && mke2fs -V 2>&1 | grep -q 'mke2fs 1.4[3-9]'"
        probe += "" if folder else " && tar --version | grep -q GNU && mkdir -p /out"
        for image in dict.fromkeys(self.candidates):
            try:
                container = self.client.containers.run(
                    image,
                    entrypoint=KEEPALIVE,
                    command=[],
                    detach=True,
                    network_mode="none",
                    user="root",
                    labels=labels(self.build_id, "vhd-helper"),
                    volumes=mounts,
                    **container_defaults(self.client),
                )
            except docker.errors.ImageNotFound:
                continue
            except docker.errors.DockerException as exc:
                raise TargetError(f"cannot start the disk helper from {image}: {reason(exc)}") from None
            if self._exec(container, probe)[0] == 0:
                return container
            container.remove(force=True)
        needs = "mke2fs (e2fsprogs 1.43 or newer)" + ("" if folder else " and GNU tar")
        raise EnvironmentProblem(
            f"no image with {needs} to write the VHD's filesystem: tried {', '.join(dict.fromkeys(self.candidates))}",
            hint=f"make one: fixtures/images/build-image.sh debian:12, or set {HELPER_IMAGES_ENV}=IMAGE",
        )

    def _exec(self, container: Container, script: str) -> tuple[int, str]:
        try:
            code, output = container.exec_run(["/bin/sh", "-c", script], user="root")
        except docker.errors.DockerException as exc:
            raise TargetError(f"the disk helper failed: {reason(exc)}") from None
        return int(code), output.decode("utf-8", "replace")

    def write(self, stream: Iterator[bytes], image: str, *, offset: int, size: int | None) -> tuple[int, int]:
        """Write the filesystem of `stream` at `offset` in `image` (a path on this machine).

        `size` is the whole disk in bytes, or None for the smallest fit. Returns
        (disk size, bytes of files).
        """
        folder, _, name = image.rpartition("/")
        local = engine_is_local(self.client)
        container = self._start(folder if local else None)
        try:
            self._exec(container, "mkdir -p /rootfs")
            try:
                container.put_archive("/rootfs", stream)
            except docker.errors.DockerException as exc:
                raise TargetError(f"cannot unpack the filesystem in the disk helper: {reason(exc)}") from None
            failpoints.hit("vhd:unpacked")
            code, out = self._exec(container, "du -sk -x /rootfs | cut -f1; find /rootfs -xdev | wc -l")
            if code != 0:
                raise TargetError(f"cannot measure the filesystem: {out.strip()}")
            used_kib, files = (int(x) for x in out.split())
            inodes = files + files // 5 + 1024
            # ext4 metadata (inode tables at 256 bytes each, journal, reserve) on top of the data.
            needed = used_kib * 1024 * 6 // 5 + inodes * 256 + 64 * 1024 * 1024
            disk = size if size is not None else offset + needed
            disk = -(-disk // (1 << 20)) * (1 << 20)
            if disk - offset < needed * 9 // 10:
                raise TargetError(
                    f"osDiskSizeGB is too small: the files take {used_kib // 1024} MiB, "
                    f"the filesystem needs about {needed // (1 << 20)} MiB"
                )
            fs_kib = (disk - offset) // 1024
            out_file = f"/out/{shlex.quote(name)}"
            handover = f" && chown {os.getuid()}:{os.getgid()} {out_file}" if local else " && rm -rf /rootfs"
            code, out = self._exec(
                container,
                f"mke2fs -q -F -t ext4 -L rootfs -N {inodes} -d /rootfs -E offset={offset} {out_file} {fs_kib}k"
                + handover,
            )
            if code != 0 and "No space left" in out:
                where = folder if local else "the remote engine's data root"
                raise TargetError(f"the disk holding {where} is full: mke2fs could not write the VHD there")
            if code != 0:
                raise TargetError(f"mke2fs failed: {out.strip()[-500:]}")
            if not local:
                self._fetch(container, name, image)
                written = Path(image).stat().st_blocks * 512
                self.report(
                    f"the disk image came back from the remote engine: {written >> 20} MiB of data "
                    f"in a {disk >> 20} MiB disk (the holes do not travel)"
                )
            return disk, used_kib * 1024
        finally:
            _remove_quietly(container)

    def _fetch(self, container: Container, name: str, image: str) -> None:
        """Stream /out/NAME from the helper into `image` on this machine, holes kept.

        The exec's raw socket is read (and on any error closed, unread): closing a
        response stream may drain it to its end first, gigabytes when interrupted early."""
        api = self.client.api
        errors: list[bytes] = []
        try:
            exec_id = api.exec_create(
                container.id, ["tar", "--sparse", "-cf", "-", "-C", "/out", name], user="root", stderr=True
            )["Id"]
            sock = api.exec_start(exec_id, socket=True)
        except docker.errors.DockerException as exc:
            raise TargetError(f"cannot copy the disk image from the remote engine: {reason(exc)}") from None
        raw = getattr(sock, "_sock", sock)
        try:
            reader = _Frames(raw.recv, errors)
            with tarfile.open(fileobj=reader, mode="r|") as archive:
                member = archive.next()
                if member is None or not member.isfile():
                    raise TargetError("the disk helper sent no disk image")
                failpoints.hit("vhd:fetching")  # the disk image is on its way from the remote engine
                _extract_image(archive, member, image)
            reader.drain()
        except (OSError, tarfile.TarError) as exc:
            raise TargetError(f"cannot copy the disk image from the remote engine: {exc}") from None
        finally:
            close_socket(sock)
        code = self._exit_code(exec_id)
        if code != 0:
            detail = b"".join(errors).decode("utf-8", "replace").strip()[-300:]
            raise TargetError(f"cannot copy the disk image from the remote engine: tar exited {code}: {detail}")

    def _exit_code(self, exec_id: str) -> int | None:
        """The exit code of an exec whose output has ended (it may take a moment to be reaped)."""
        last: list[dict[str, Any]] = [{}]

        def ended() -> dict[str, Any] | None:
            try:
                last[0] = self.client.api.exec_inspect(exec_id)
            except docker.errors.DockerException as exc:
                raise TargetError(f"cannot ask the disk helper how tar ended: {reason(exc)}") from None
            return None if last[0].get("Running") else last[0]

        code = (poll(ended, within=10, every=0.05) or last[0]).get("ExitCode")
        return None if code is None else int(code)


class _Frames(io.RawIOBase):
    """The stdout of a Docker exec's multiplexed stream as a readable file; stderr is kept."""

    def __init__(self, receive: Callable[[int], bytes], errors: list[bytes]) -> None:
        self.receive = receive
        self.errors = errors
        self.frames = FrameSplitter()
        self.pending = bytearray()  # stdout received and not read yet

    def readable(self) -> bool:
        return True

    def readinto(self, out: Any) -> int:
        while not self.pending:
            chunk = self.receive(1 << 16)
            if not chunk:
                if self.frames.inside_frame:
                    raise TargetError("the disk helper's stream ended inside a frame")
                return 0
            for stream, piece in self.frames.feed(chunk):
                if stream == STDERR:
                    self.errors.append(piece)
                else:
                    self.pending += piece
        size = min(len(out), len(self.pending))
        out[:size] = self.pending[:size]
        del self.pending[:size]
        return size

    def drain(self) -> None:
        while self.readinto(bytearray(1 << 16)):
            pass


def _extract_image(archive: tarfile.TarFile, member: tarfile.TarInfo, image: str) -> None:
    """Write `member` (the disk image, read from a stream-mode archive) to `image`: the
    standard library seeks over a sparse member's holes, so they stay holes."""
    member.name = Path(image).name
    try:
        archive.extract(member, path=Path(image).parent, set_attrs=False, filter="data")
    except tarfile.ReadError as exc:
        raise TargetError(f"the disk image from the remote engine ended early ({exc})") from None


def _remove_quietly(container: Container) -> None:
    """Remove a helper container; one already gone (or going) is fine, and an error here
    must not hide the one that brought the caller to its `finally`."""
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # 409: its removal is already in progress
            raise TargetError(f"cannot remove the helper container {container.short_id}: {reason(exc)}") from None
