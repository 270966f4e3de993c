"""Benchmarks: aib-local against the docker-SDK floor and Packer, on this machine.

    python bench/run.py [--runs 5] [--write bench/RESULTS.md]

Workloads (each run alternates the tools, so they see the same machine state):
  BOOT  `docker run` of the base image with systemd as PID 1, until systemd says "running"
  W1  20 Shell inline steps + one 5 MB File + ManagedImage (systemd as PID 1, and --init none)
  W2  100 Shell inline steps + ManagedImage
  W3  one step writing 200 MB + VHD distribution (throughput and peak memory)
  W4  `aib-local validate` of 50 templates
  W5  `aib-local --help`
  VMBOOT  `aib-local boot` of the fixture disk: QEMU started to SSH answering (cloud-init done)
  W6  20 Shell inline steps + one 5 MB File + ManagedImage on --target vm (the fixture disk),
      against Packer's QEMU builder on the same disk with the same steps: the first build
      (boots and saves the booted VM), later builds (restore it), and --vm-boot cold
  W7  the edit loop: steps of 20 s and 10 s, three short ones, then app.sh; the first build
      (an empty step cache), and the rebuild after app.sh is edited (the cache restores the
      state after the 10 s step); Packer's rebuild runs every step again. W2 is also timed
      with --no-cache: the cache's own cost on a template it keeps nothing of
  W7VM  W7 on --target vm (the fixture disk); run only when asked (--only W7VM)
W1 and W2 build as a user's default build does: systemd as PID 1 and waagent's deprovision.

    python bench/run.py --profile W1|W2

prints where one build spends its time: each phase and the time outside the build's clock,
the imports that cost most (-X importtime), aib-local's functions by cumulative time and
all functions by their own time (cProfile).

Packer (apt-get install packer: 1.6.6, docker builder, commit; qemu builder for W6) runs
when it is installed. Needs the Docker engine and the debian:12 image
(fixtures/images/build-image.sh debian:12); VMBOOT and W6 need the fixture disk
(fixtures/images/build-disk.sh) and run only when asked (--only VMBOOT W6).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Python keeps compiled modules on a user's machine; where the environment says not to
# (PYTHONDONTWRITEBYTECODE, set on some CI images), every run would compile aib-local's
# source again (0.15 s here) and measure that instead. Every tool runs without it.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
IMAGE = "debian:12"
PYTHON = sys.executable
BASELINE = "baseline: export + mke2fs -d + copy"


# workload: (Shell steps, with the 5 MB File)
BUILD_WORKLOADS = {"W1": (20, True), "W2": (100, False)}


def template(name: str, customize: list[dict[str, object]], distribute: list[dict[str, object]]) -> dict[str, object]:
    return {
        "type": "Microsoft.VirtualMachineImages/imageTemplates",
        "apiVersion": "2024-02-01",
        "name": name,
        "location": "westeurope",
        "identity": {"type": "None"},
        "properties": {
            "source": {
                "type": "PlatformImage",
                "publisher": "Debian",
                "offer": "debian-12",
                "sku": "12",
                "version": "latest",
            },
            "customize": customize,
            "distribute": distribute,
        },
    }


def managed(name: str) -> list[dict[str, object]]:
    group = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/bench"
    image_id = f"{group}/providers/Microsoft.Compute/images/{name}"
    return [{"type": "ManagedImage", "imageId": image_id, "location": "westeurope", "runOutputName": "image"}]


def steps(count: int) -> list[dict[str, object]]:
    return [{"type": "Shell", "name": f"step-{i}", "inline": [f"echo step {i}"]} for i in range(count)]


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return elapsed


def peak_rss_mb(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, stdout) of one command, measured in a fresh wrapper process."""
    code = (
        "import resource, subprocess, sys, time, json; t=time.perf_counter();"
        "r=subprocess.run(sys.argv[1:], capture_output=True, text=True);"
        "print(json.dumps([time.perf_counter()-t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024,"
        " r.returncode, r.stdout]))"
    )
    out = subprocess.run([PYTHON, "-c", code, *argv], capture_output=True, text=True, env=env, check=True).stdout
    seconds, rss, returncode, stdout = json.loads(out)
    if returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{stdout[-2000:]}")
    return seconds, rss, stdout


def packer_template(step_count: int, payload: Path | None) -> dict[str, object]:
    provisioners: list[dict[str, object]] = [{"type": "shell", "inline": [f"echo step {i}"]} for i in range(step_count)]
    if payload is not None:
        provisioners.append({"type": "file", "source": str(payload), "destination": "/tmp/payload.bin"})
    return {
        "builders": [
            {
                "type": "docker",
                "image": IMAGE,
                "pull": False,
                "commit": True,
                "run_command": ["-d", "-i", "-t", "--network", "none", "--entrypoint=/bin/sh", "--", "{{.Image}}"],
            }
        ],
        "provisioners": provisioners,
    }


def packer_qemu_template(work: Path, disk: Path, step_count: int, payload: Path) -> dict[str, object]:
    """Packer's QEMU builder on the fixture disk: the same NoCloud seed (the build user and
    its key), the same accelerator, vCPUs and memory, the same steps. Packer copies the
    disk as its output (its use_backing_file runs `qemu-img create -b` without the backing
    format, which today's qemu-img refuses)."""
    from engine.targets import qemu

    login = qemu.new_key()
    (work / "packer-key").write_text(login.private)
    (work / "packer-key").chmod(0o600)
    seed = work / "packer-seed.iso"
    config = qemu.user_data("packer", login, qemu.new_key())
    qemu.seed_iso(seed, instance_id="packer-bench", hostname="packer", user_data=config)
    accel = os.environ.get(qemu.ACCEL_ENV, "tcg")  # aib-local is given the same one (Bench.vm_env)
    output = work / "packer-out"
    provisioners: list[dict[str, object]] = [{"type": "shell", "inline": [f"echo step {i}"]} for i in range(step_count)]
    provisioners.append({"type": "file", "source": str(payload), "destination": "/tmp/payload.bin"})
    return {
        "builders": [
            {
                "type": "qemu",
                "iso_url": str(disk),
                "iso_checksum": "none",
                "disk_image": True,
                "use_backing_file": False,
                "format": "qcow2",
                "accelerator": accel,
                "headless": True,
                "cpus": 1,
                "memory": 3584,
                "net_device": "virtio-net",
                "disk_interface": "virtio",
                "output_directory": str(output),
                "vm_name": "disk.qcow2",
                "ssh_username": "packer",
                "ssh_private_key_file": str(work / "packer-key"),
                "ssh_timeout": "15m",
                "shutdown_command": "sudo shutdown -P now",
                "qemuargs": [
                    ["-drive", f"file={output / 'disk.qcow2'},if=virtio,cache=unsafe,format=qcow2"],
                    ["-drive", f"file={seed},if=virtio,format=raw,readonly=on"],
                ],
            }
        ],
        "provisioners": provisioners,
    }


class Bench:
    def __init__(self, runs: int) -> None:
        self.runs = runs
        self.work = Path(tempfile.mkdtemp(prefix="aib-local-bench-"))
        self.env = {**os.environ, "AIB_LOCAL_STORE": str(self.work / "store"), "PYTHONPATH": str(ROOT)}
        self.payload = self.work / "payload.bin"
        self.payload.write_bytes(os.urandom(5 << 20))
        self.packer = shutil.which("packer")
        # VM workloads: one accelerator for both tools (TCG unless AIB_LOCAL_ACCEL=kvm is set).
        self.vm_env = {**self.env, "AIB_LOCAL_ACCEL": os.environ.get("AIB_LOCAL_ACCEL", "tcg")}
        self.results: dict[str, dict[str, list[float]]] = {}
        self.notes: list[str] = []

    def write(self, name: str, data: dict[str, object]) -> Path:
        path = self.work / name
        path.write_text(json.dumps(data))
        return path

    def aib(self, *args: str) -> list[str]:
        return [PYTHON, "-m", "engine", *args]

    def record(self, workload: str, tool: str, seconds: float) -> None:
        self.results.setdefault(workload, {}).setdefault(tool, []).append(seconds)

    def alternate(self, workload: str, tools: dict[str, Callable[[], float]]) -> None:
        for _ in range(self.runs):
            for tool, run in tools.items():
                self.record(workload, tool, run())

    def workload_template(self, workload: str) -> Path:
        """W1's or W2's template, written to the work folder."""
        step_count, with_file = BUILD_WORKLOADS[workload]
        customize = steps(step_count)
        if with_file:
            customize.append(
                {"type": "File", "name": "payload", "sourceUri": str(self.payload), "destination": "/tmp/payload.bin"}
            )
        return self.write(f"{workload}.json", template(workload.lower(), customize, managed(workload.lower())))

    def build_argv(self, path: Path, *extra: str) -> list[str]:
        """A default build of PATH (systemd as PID 1, waagent's deprovision), no network."""
        return self.aib("build", str(path), "--network", "none", *extra)

    def build_workload(self, workload: str) -> None:
        step_count, with_file = BUILD_WORKLOADS[workload]
        path = self.workload_template(workload)
        tools: dict[str, Callable[[], float]] = {
            "aib-local": lambda: timed(self.build_argv(path), self.env),
            "aib-local --init none": lambda: timed(self.build_argv(path, "--init", "none"), self.env),
            "aib-local --no-cache": lambda: timed(self.build_argv(path, "--no-cache"), self.env),
            "docker SDK floor": lambda: timed(
                [PYTHON, str(ROOT / "bench" / "sdk_floor.py"), IMAGE, str(step_count), "5" if with_file else "0"]
            ),
        }
        if self.packer:
            packer_file = self.write(
                f"{workload}-packer.json", packer_template(step_count, self.payload if with_file else None)
            )
            tools["packer"] = lambda: timed([self.packer or "packer", "build", "-color=false", str(packer_file)])
        self.alternate(workload, tools)

    def phases(self) -> None:
        """Where a W1 and a W2 build's time goes: each phase (the build's own clock, from its
        build-finished event), and the time outside that clock (interpreter start, imports,
        reading the template, what runs after the build's end), from the process's wall time."""
        columns: dict[str, dict[str, list[float]]] = {}
        for workload in BUILD_WORKLOADS:
            path = self.workload_template(workload)
            for _ in range(self.runs):
                column = columns.setdefault(workload, {})
                for name, seconds in self.clocked(path).items():
                    column.setdefault(name, []).append(seconds)
        names = list(dict.fromkeys(name for column in columns.values() for name in column))
        self.notes += ["", "Where the time goes (medians, seconds; W1 and W2 as above, --output json):", ""]
        self.notes += ["| phase | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
        for name in names:
            cells = [f"{statistics.median(c[name]):.3f}" if name in c else "-" for c in columns.values()]
            self.notes.append(f"| {name} | " + " | ".join(cells) + " |")

    def clocked(self, path: Path) -> dict[str, float]:
        """One default build of PATH: the seconds of each phase (from its build-finished
        event), of the build's own clock, outside it, and of the whole process."""
        started = time.monotonic()
        done = subprocess.run(
            self.build_argv(path, "--output", "json"), env=self.env, capture_output=True, text=True, check=True
        )
        wall = time.monotonic() - started
        finished = next(json.loads(line) for line in done.stdout.splitlines() if '"build-finished"' in line)
        return {
            **finished["phases"],
            "the build's own clock": finished["duration"],
            "outside the build's clock": wall - finished["duration"],
            "process wall time": wall,
        }

    def profile(self, workload: str) -> str:
        """Where one build of WORKLOAD spends its time: phases, imports, functions."""
        path = self.workload_template(workload)
        timed(self.build_argv(path), self.env)  # warm: the systemd verdict, the page cache
        lines = [f"# {workload}: one default build, profiled", "", "## Phases (seconds; a plain run)", ""]
        lines += [f"{seconds:8.3f}  {name}" for name, seconds in self.clocked(path).items()]
        imports = subprocess.run(
            [PYTHON, "-X", "importtime", *self.build_argv(path)[1:]],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        costs: list[tuple[int, str]] = []
        for line in imports.splitlines():
            if line.startswith("import time:") and "|" in line and "cumulative" not in line:
                _, cumulative, name = line.split("|", 2)
                if not name.startswith("   "):  # the top-level imports (each counts what it imports)
                    costs.append((int(cumulative), name.strip()))
        lines += ["", "## Top-level imports by cumulative time (ms; -X importtime)", ""]
        lines += [f"{micros / 1000:8.1f}  {name}" for micros, name in sorted(costs, reverse=True)[:15]]
        stats_file = self.work / f"{workload}.prof"
        subprocess.run(
            [PYTHON, "-m", "cProfile", "-o", str(stats_file), *self.build_argv(path)[1:]],
            env=self.env,
            capture_output=True,
            check=True,
        )
        out = io.StringIO()
        stats = pstats.Stats(str(stats_file), stream=out)
        stats.sort_stats("cumulative").print_stats(f"^{ROOT}/(engine|customizers|distributors)/", 25)
        stats.sort_stats("tottime").print_stats(20)
        lines += ["", "## Functions (cProfile): aib-local's by cumulative time, then all by own time", ""]
        noise = ("   Ordered", "   List reduced", str(stats_file))
        lines += [line for line in out.getvalue().splitlines() if line.strip() and not any(n in line for n in noise)]
        return "\n".join(lines)

    def w7(self, vm: bool = False) -> None:
        """The edit loop; on a container, or on --target vm (W7VM: its first build restores the
        booted source the store saved, as a user's do after their first VM build)."""
        workload = "W7VM" if vm else "W7"
        script = self.work / "app.sh"
        customize: list[dict[str, object]] = [
            {"type": "Shell", "name": "install", "inline": ["sleep 20", "echo installed | sudo tee /opt/installed"]},
            {"type": "Shell", "name": "compile", "inline": ["sleep 10", "echo built > /var/tmp/built"]},
            *[{"type": "Shell", "name": f"short{i}", "inline": [f"echo short {i}"]} for i in range(3)],
            {"type": "Shell", "name": "app", "scriptUri": str(script)},
        ]
        path = self.write(f"{workload}.json", template(workload.lower(), customize, managed(workload.lower())))
        target = ["--target", "vm"] if vm else ["--network", "none"]
        env = self.vm_env if vm else self.env
        build = self.aib("build", str(path), *target, "--allow-outside-template-dir")
        one = self.write("W7-fixed.json", template("w7f", [{"type": "Shell", "inline": ["true"]}], managed("w7f")))
        fixed = self.aib("build", str(one), *target, "--no-cache")
        if vm:
            timed(fixed, env)  # the store's first VM build boots the source and saves it
        for run in range(self.runs):
            timed(self.aib("cache", "prune", "--all"), env)
            script.write_text(f"#!/bin/sh\ncat /opt/installed /var/tmp/built\necho app {run}\n")
            self.record(workload, "aib-local first build", timed(build, env))
            script.write_text(f"#!/bin/sh\ncat /opt/installed /var/tmp/built\necho app {run} edited\n")
            started = time.monotonic()
            out = subprocess.run([*build, "--output", "json"], env=env, capture_output=True, text=True, check=True)
            self.record(workload, "aib-local rebuild after the edit", time.monotonic() - started)
            events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
            app_step = next(e for e in events if e["event"] == "step-finished" and e["step"].endswith("app"))
            self.record(workload, "the edited step itself", app_step["duration"])
            self.record(workload, "fixed cost: a build of one short step", timed(fixed, env))
        timed(self.aib("cache", "prune", "--all"), env)
        if self.packer:
            self.notes.append(f"{workload}: Packer has no step cache: its rebuild is its first build")

    def w7vm(self) -> None:
        self.w7(vm=True)

    def w3(self) -> None:
        customize = [{"type": "Shell", "name": "big", "inline": ["head -c 200M /dev/urandom > /var/tmp/big.bin"]}]
        path = self.write("W3.json", template("w3", customize, [{"type": "VHD", "runOutputName": "disk"}]))
        throughput, memory = [], []
        for _ in range(self.runs):
            seconds, rss, stdout = peak_rss_mb(
                self.aib("build", str(path), "--network", "none", "--deprovision", "skip", "--output", "json"), self.env
            )
            events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
            vhd = next(e for e in events if e["event"] == "step-finished" and "VHD" in e["step"])
            self.record("W3", "aib-local VHD step", vhd["duration"])
            self.record("W3", "aib-local whole build", seconds)
            memory.append(rss)
            uri = next(e["artifactUri"] for e in events if e["event"] == "artifact")
            throughput.append(Path(uri.removeprefix("file://")).stat().st_blocks * 512 / vhd["duration"] / 1e6)
            self.record("W3", BASELINE, self.vhd_baseline())
        self.notes.append(
            f"W3: aib-local peak memory {max(memory):.0f} MB (target < 150 MB); VHD written at "
            f"{statistics.median(throughput):.0f} MB/s of allocated blocks"
        )

    def vhd_baseline(self) -> float:
        """Export the same filesystem, mke2fs -d it into a sparse file, copy the file: the disk's floor."""
        script = (
            "set -e; mkdir /r; cd /r; head -c 200M /dev/urandom > /r/big.bin; "
            "s=$(date +%s.%N); "
            "tar -C / --one-file-system -cf - --exclude=./proc --exclude=./sys --exclude=./r . | tar -C /r -xf -; "
            "mke2fs -q -F -t ext4 -d /r /out/base.raw 1G; cp --sparse=always /out/base.raw /out/copy.raw; sync; "
            "e=$(date +%s.%N); echo $s $e; rm -f /out/base.raw /out/copy.raw"
        )
        out = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", "-v", f"{self.work}:/out", IMAGE, "sh", "-c", script],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        return float(out[-1]) - float(out[-2])

    def boot(self) -> None:
        """From `docker run` (systemd's container settings, as a build uses them) to systemd
        saying "running"."""
        import docker

        from engine.targets import systemd
        from engine.targets.docker_systemd import engine_cgroup

        client = docker.from_env()
        settings = systemd.container_settings(systemd.INIT_PATHS[0], engine_cgroup(client))
        for _ in range(self.runs):
            started = time.monotonic()
            container = client.containers.run(IMAGE, detach=True, network_mode="none", **settings)
            try:
                state = ""
                while state not in systemd.UP:
                    result = container.exec_run(["systemctl", "is-system-running"])
                    state = result.output.decode().strip()
                self.record("BOOT", "docker run -> systemd running", time.monotonic() - started)
            finally:
                container.remove(force=True)

    def vmboot(self) -> None:
        from engine.catalogue import disks_folder

        disk = disks_folder() / "debian-12.qcow2"
        for _ in range(self.runs):
            seconds, _rss, out = peak_rss_mb(self.aib("boot", str(disk), "--output", "json"), self.env)
            self.record(
                "VMBOOT", "aib-local boot: QEMU start -> SSH (cloud-init done)", json.loads(out)["secondsToSsh"]
            )
            self.record("VMBOOT", "aib-local boot: whole command", seconds)

    def w6(self) -> None:
        from engine.catalogue import disks_folder

        disk = disks_folder() / "debian-12.qcow2"
        customize = steps(20)
        customize.append(
            {"type": "File", "name": "payload", "sourceUri": str(self.payload), "destination": "/tmp/payload.bin"}
        )
        path = self.write("W6.json", template("w6", customize, managed("w6")))
        build = self.aib("build", str(path), "--target", "vm", "--deprovision", "skip")
        # The store's first VM build of the source boots it and saves the booted machine;
        # the later ones restore it (the default). --vm-boot cold boots every time.
        shutil.rmtree(self.work / "store" / "vm-snapshots", ignore_errors=True)
        self.record("W6", "aib-local --target vm, first build (boot + save)", timed(build, self.vm_env))
        tools: dict[str, Callable[[], float]] = {
            "aib-local --target vm": lambda: timed(build, self.vm_env),
            "aib-local --target vm --vm-boot cold": lambda: timed([*build, "--vm-boot", "cold"], self.vm_env),
        }
        if self.packer:
            packer_file = self.write("W6-packer.json", packer_qemu_template(self.work, disk, 20, self.payload))

            def packer() -> float:
                shutil.rmtree(self.work / "packer-out", ignore_errors=True)
                # Its cache (QEMU's port locks) in the work folder, not wherever the bench is run from.
                env = {**os.environ, "PACKER_CACHE_DIR": str(self.work / "packer_cache")}
                return timed([self.packer or "packer", "build", "-color=false", str(packer_file)], env)

            tools["packer qemu builder"] = packer
        self.alternate("W6", tools)

    def w4(self) -> None:
        files = [str(self.write(f"v{i}.json", template(f"v{i}", steps(5), managed(f"v{i}")))) for i in range(50)]
        self.alternate("W4", {"aib-local validate x50": lambda: timed(self.aib("validate", *files), self.env)})

    def w5(self) -> None:
        self.alternate("W5", {"aib-local --help": lambda: timed(self.aib("--help"), self.env)})

    def report(self) -> str:
        lines = [
            f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {self.runs} alternating runs each",
            f"packer: {'installed' if self.packer else 'not installed (apt-get install packer)'}",
            "",
            "| workload | tool | median s | min-max s |",
            "| --- | --- | --- | --- |",
        ]
        for workload, tools in self.results.items():
            for tool, values in tools.items():
                lines.append(
                    f"| {workload} | {tool} | {statistics.median(values):.3f} | {min(values):.3f}-{max(values):.3f} |"
                )
        lines.append("")
        for workload in ("W1", "W2"):
            tools = self.results.get(workload, {})
            if not tools:
                continue
            ours = statistics.median(tools["aib-local"])
            floor = statistics.median(tools["docker SDK floor"])
            text = f"{workload}: aib-local/SDK floor = {ours / floor:.2f}"
            if "packer" in tools:
                text += f"; Packer/aib-local = {statistics.median(tools['packer']) / ours:.1f}x"
            lines.append(text)
        w6 = self.results.get("W6", {})
        if "packer qemu builder" in w6:
            packer = statistics.median(w6["packer qemu builder"])
            for tool in ("aib-local --target vm", "aib-local --target vm --vm-boot cold"):
                lines.append(f"W6: Packer qemu / {tool} = {packer / statistics.median(w6[tool]):.2f}x")
        if "aib-local --no-cache" in self.results.get("W2", {}):
            w2 = self.results["W2"]
            ratio = statistics.median(w2["aib-local"]) / statistics.median(w2["aib-local --no-cache"])
            lines.append(f"W2: step cache on / --no-cache = {ratio:.3f} (target at most 1.05)")
        for workload, target in (("W7", 0.15), ("W7VM", 0.3)):
            if workload not in self.results:
                continue
            w7 = {tool: statistics.median(values) for tool, values in self.results[workload].items()}
            first, again = w7["aib-local first build"], w7["aib-local rebuild after the edit"]
            over = again - w7["the edited step itself"] - w7["fixed cost: a build of one short step"]
            lines.append(
                f"{workload}: rebuild / first build = {again / first:.3f} (target at most {target}); rebuild - edited "
                f"step - fixed cost = {over:.2f} s (the restore and the short steps; containers: at most 1.5 s)"
            )
        if "W3" in self.results:
            w3 = self.results["W3"]
            lines.append(
                f"W3: VHD step / (mke2fs -d + copy) = "
                f"{statistics.median(w3['aib-local VHD step']) / statistics.median(w3[BASELINE]):.2f}"
                " (1.0 = as fast as the disk's floor; the target is at most 1.25)"
            )
        lines += self.notes
        return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=["BOOT", "W1", "W2", "W3", "W4", "W5"])
    parser.add_argument("--write", type=Path, help="also write the report to this file")
    parser.add_argument(
        "--profile", choices=sorted(BUILD_WORKLOADS), help="print where one build of this workload spends its time"
    )
    args = parser.parse_args()
    if args.profile and args.write:
        parser.error("--profile prints one build's profile; --write is for the results table")
    bench = Bench(args.runs)
    try:
        if args.profile:
            report = bench.profile(args.profile)
        else:
            for workload in args.only:
                print(f"running {workload} ...", file=sys.stderr, flush=True)
                if workload in BUILD_WORKLOADS:
                    bench.build_workload(workload)
                else:
                    getattr(bench, workload.lower())()
            report = bench.report()
    finally:
        subprocess.run(bench.aib("cache", "prune", "--all"), env=bench.env, capture_output=True, check=False)
        shutil.rmtree(bench.work, ignore_errors=True)
    print(report)
    if args.write:
        args.write.write_text("# Benchmark results\n\n" + report + "\n")


if __name__ == "__main__":
    main()
