"""Writes a root filesystem (a tar stream) as ext4 into a disk image file, for VHDs.

Whatever the target was, the filesystem is written the same way: in a short-lived
helper container on the local Docker engine, so that aib-local itself never needs root.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator

import docker.errors
from docker.models.containers import Container

from engine import failpoints
from engine.errors import EnvironmentProblem
from engine.images import KEEPALIVE, labels, reason
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

    def __init__(self, client: docker.DockerClient, candidates: list[str], *, build_id: str) -> None:
        self.client = client
        env = os.environ.get(HELPER_IMAGES_ENV)
        self.candidates = [env] if env else [*candidates, FALLBACK_HELPER]
        self.build_id = build_id

    def _start(self, folder: str) -> Container:
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
                    volumes={folder: {"bind": "/out", "mode": "rw"}},
                )
            except docker.errors.ImageNotFound:
                continue
            except docker.errors.DockerException as exc:
                raise TargetError(f"cannot start the disk helper from {image}: {reason(exc)}") from None
            if self._exec(container, "command -v mke2fs && mke2fs -V 2>&1 | grep -q 'mke2fs 1.4[3-9]'")[0] == 0:
                return container
            container.remove(force=True)
        raise EnvironmentProblem(
            "no image with mke2fs (e2fsprogs 1.43 or newer) to write the VHD's filesystem: "
            f"tried {', '.join(dict.fromkeys(self.candidates))}",
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
        host = os.environ.get("DOCKER_HOST", "")
        if host and not host.startswith("unix://"):
            raise EnvironmentProblem(
                f"a VHD needs the Docker engine on this machine (DOCKER_HOST is {host}): "
                "its helper writes the disk through a bind mount of the store",
                hint="build VHDs with a local engine, or distribute a ManagedImage instead",
            )
        folder, _, name = image.rpartition("/")
        container = self._start(folder)
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
            code, out = self._exec(
                container,
                f"mke2fs -q -F -t ext4 -L rootfs -N {inodes} -d /rootfs -E offset={offset} "
                f"/out/{shlex.quote(name)} {fs_kib}k && chown {os.getuid()}:{os.getgid()} /out/{shlex.quote(name)}",
            )
            if code != 0 and "No space left" in out:
                raise TargetError(f"the disk holding {folder} is full: mke2fs could not write the VHD there")
            if code != 0:
                raise TargetError(f"mke2fs failed: {out.strip()[-500:]}")
            return disk, used_kib * 1024
        finally:
            _remove_quietly(container)


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
