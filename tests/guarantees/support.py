"""What the guarantee tests share: a CLI process to signal or kill, and checks that
nothing was left behind (containers, images, partial files, half-written records)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

LABEL_BUILD = "io.aib-local.build-id"


class Running:
    """`python -m engine ARGS` in the background, its output read line by line as it comes."""

    def __init__(self, args: list[str], store: Path, env: dict[str, str] | None = None) -> None:
        full_env = {**os.environ, "AIB_LOCAL_STORE": str(store), **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (self.proc.stdout, self.proc.stderr)
        ]
        for reader in self._readers:
            reader.start()
        self.signalled_at: float | None = None

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line)

    def wait_for(self, text: str, within: float = 120) -> None:
        """Until a line containing `text` appears (fails if the process ends first)."""
        end = time.monotonic() + within
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.output.append(line)
            if text in line:
                return
        raise AssertionError(f"{text!r} did not appear; output so far:\n{''.join(self.output)}")

    def send(self, signum: int) -> None:
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()
        self.proc.send_signal(signum)

    def finish(self, within: float = 120) -> tuple[int, str]:
        """(exit code, all output) once the process ends."""
        code = self.proc.wait(timeout=within)
        for reader in self._readers:
            reader.join(timeout=10)
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return code, "".join(self.output)

    def seconds_since_signal(self) -> float:
        assert self.signalled_at is not None
        return time.monotonic() - self.signalled_at


def build_ids(store: Path) -> list[str]:
    """The builds the store knows, oldest first."""
    folders = [p for p in (store / "builds").iterdir() if p.is_dir()] if (store / "builds").is_dir() else []
    return [p.name for p in sorted(folders, key=lambda p: p.stat().st_mtime)]


def store_problems(store: Path) -> list[str]:
    """What a reader of the store would trip over: unreadable records, partial files, journal entries."""
    problems = []
    for path in store.rglob("*"):
        if path.name.endswith(".partial"):
            problems.append(f"partial file {path}")
        elif path.suffix == ".json" and path.is_file():
            try:
                json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                problems.append(f"{path}: {exc}")
    problems += [f"journal entry {p.name}" for p in (store / "inflight").glob("*.json")]
    return problems


def template_id(name: str) -> str:
    """The resource ID of a test template built into the default resource group."""
    return (
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/aib-local/providers/"
        f"Microsoft.VirtualMachineImages/imageTemplates/{name}"
    )


class Reader(threading.Thread):
    """Reads every record of the store, over and over, until stopped; keeps what it could not parse."""

    def __init__(self, store: Path) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.stop = threading.Event()
        self.torn: list[str] = []
        self.reads = 0

    def run(self) -> None:
        while not self.stop.is_set():
            for path in list(self.store.rglob("*.json")):
                try:
                    json.loads(path.read_text())
                    self.reads += 1
                except FileNotFoundError:
                    continue
                except json.JSONDecodeError as exc:
                    self.torn.append(f"{path}: {exc}")

    def __enter__(self) -> Reader:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.join()


def containers_of(docker_client: Any, build_id: str) -> list[str]:
    found = docker_client.containers.list(all=True, filters={"label": f"{LABEL_BUILD}={build_id}"})
    return [str(c.name) for c in found]


def images_named(docker_client: Any, fragment: str) -> list[str]:
    return [tag for image in docker_client.images.list() for tag in image.tags if fragment in tag]


def build_record(store: Path, build_id: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((store / "builds" / build_id / "build.json").read_text())
    return record


def record(store: Path, resource_id: str) -> dict[str, Any] | None:
    path = store.joinpath("resources", *(p.lower() for p in resource_id.strip("/").split("/"))) / "resource.json"
    if not path.exists():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


SIGNALS = {"SIGINT": (signal.SIGINT, 130), "SIGTERM": (signal.SIGTERM, 143)}
