"""A second, real Docker engine for the tests: its own dockerd (data root, exec root,
pidfile, containerd namespace), listening on 127.0.0.1 with TLS certificates made here,
so that nothing it does shares a filesystem path with the client's store."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CERTS = r"""
set -e
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 2 -subj /CN=aib-local-test-ca 2>/dev/null
issue() {  # NAME CN EXTENSIONS
  openssl req -newkey rsa:2048 -nodes -keyout "$1-key.pem" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
    -extfile "$1.ext" -out "$1-cert.pem" 2>/dev/null
}
issue server 127.0.0.1 'subjectAltName=IP:127.0.0.1
extendedKeyUsage=serverAuth'
issue client aib-local-test 'extendedKeyUsage=clientAuth'
mkdir -p client && cp ca.pem client/ca.pem && cp client-cert.pem client/cert.pem && cp client-key.pem client/key.pem
"""


def tls_client(port: int, certs: Path) -> Any:
    """A client of the engine on 127.0.0.1:`port`, verified with the client certificates in `certs`."""
    import docker.tls

    from engine.images import engine_client

    tls = docker.tls.TLSConfig(
        client_cert=(str(certs / "cert.pem"), str(certs / "key.pem")), ca_cert=str(certs / "ca.pem"), verify=True
    )
    return engine_client(base_url=f"https://127.0.0.1:{port}", tls=tls, timeout=300)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RemoteEngine:
    folder: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def certs(self) -> Path:
        return self.folder / "certs" / "client"

    @property
    def env(self) -> dict[str, str]:
        """What a user sets to point aib-local at this engine."""
        return {"DOCKER_HOST": self.host, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(self.certs)}

    def client(self) -> Any:
        return tls_client(self.port, self.certs)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # dockerd unmounts its layers on a clean stop; anything left is unmounted here.
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(str(self.folder))), reverse=True):
            subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_engine(folder: Path | None = None) -> RemoteEngine:
    """Start a dockerd of its own (root needed); RuntimeError when it does not come up. With
    `folder`, the engine that ran there before starts again, its containers and images kept."""
    # Short paths: containerd's socket lives under the exec root (a 108-byte limit).
    folder = folder or Path(tempfile.mkdtemp(prefix="aibre-", dir="/tmp"))
    certs = folder / "certs"
    if not certs.is_dir():
        certs.mkdir()
        subprocess.run(["sh", "-c", CERTS], cwd=certs, check=True)
    (folder / "daemon.json").write_text("{}")
    port = _free_port()
    namespace = f"aib-local-test-{os.getpid()}"
    with (folder / "dockerd.log").open("wb") as log:  # dockerd writes to its own copy
        process = subprocess.Popen(
            [
                "dockerd",
                f"--config-file={folder / 'daemon.json'}",
                f"--data-root={folder / 'data'}",
                f"--exec-root={folder / 'x'}",
                f"--pidfile={folder / 'dockerd.pid'}",
                f"--host=tcp://127.0.0.1:{port}",
                "--tlsverify",
                f"--tlscacert={certs / 'ca.pem'}",
                f"--tlscert={certs / 'server-cert.pem'}",
                f"--tlskey={certs / 'server-key.pem'}",
                f"--containerd-namespace={namespace}",
                f"--containerd-plugins-namespace={namespace}-plugins",
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    engine = RemoteEngine(folder, port, process)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if process.poll() is not None:
            break
        with contextlib.suppress(Exception):
            client = engine.client()
            try:
                client.ping()
            finally:
                client.close()
            return engine
        time.sleep(0.5)
    tail = (folder / "dockerd.log").read_text(errors="replace")[-2000:]
    engine.stop()
    raise RuntimeError(f"the second dockerd did not come up:\n{tail}")


def copy_image(source: Any, target: Any, ref: str) -> None:
    """Copy an image from one engine to another, as `docker save | docker load` would."""
    image = source.images.get(ref)
    target.api.load_image(image.save(named=True, chunk_size=1 << 20))


class Forwarder:
    """A TCP path to the engine that the test can cut, as a network drop does: connections
    on 127.0.0.1:`port` are relayed to `target_port`; `cut()` closes every one of them and
    refuses new ones, the engine running on."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", port or 0))
        self.port = int(self.listener.getsockname()[1])
        self.links: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def env(self, engine: RemoteEngine) -> dict[str, str]:
        return {**engine.env, "DOCKER_HOST": f"tcp://127.0.0.1:{self.port}"}

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return  # cut
            far = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.links += [near, far]
            for source, sink in ((near, far), (far, near)):
                threading.Thread(target=_relay, args=(source, sink), daemon=True).start()

    def cut(self) -> None:
        self.listener.close()
        with self.lock:
            for link in self.links:
                with contextlib.suppress(OSError):
                    link.shutdown(socket.SHUT_RDWR)
                link.close()
            self.links.clear()


def _relay(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(1 << 16):
            sink.sendall(data)
