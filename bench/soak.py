"""Soak run: many container builds, then whether anything grew or was left behind.

    python bench/soak.py [--builds 200] [--parallel-templates 50] [--write bench/RESULTS.md]

Builds one small template (two Shell steps, a managed image) BUILDS times in a row, each
a new `aib-local build` process, then PARALLEL templates in one `build --parallel 4`.
Before and after, it reads the local Docker engine's process (open files, threads,
resident memory) and counts what the builds could leave: containers and images of this
run's store, QEMU processes, temporary files, and the store's records, which must be
exactly the builds made and one managed image per template. Needs the local engine and
the debian:12 image (fixtures/images/build-image.sh debian:12).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import managed  # noqa: E402 - the benchmarks' own template helpers
from run import template as bench_template  # noqa: E402


def engine_process() -> dict[str, int]:
    pid = int(subprocess.run(["pidof", "dockerd"], capture_output=True, text=True, check=True).stdout.split()[0])
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {
        "open files": len(list(Path(f"/proc/{pid}/fd").iterdir())),
        "threads": int(status["Threads"].strip()),
        "memory (RSS, MiB)": int(status["VmRSS"].split()[0]) // 1024,
    }


def template(name: str) -> dict[str, object]:
    customize: list[dict[str, object]] = [
        {"type": "Shell", "name": "write", "inline": ["echo soak | sudo tee /opt/soak"]},
        {"type": "Shell", "name": "check", "inline": ["test -s /opt/soak"]},
    ]
    image = f"/subscriptions/s/resourceGroups/soak/providers/Microsoft.Compute/images/{name}"
    return bench_template(name, customize, [{**managed(name)[0], "imageId": image, "runOutputName": "img"}])


def leftovers(store: Path, work: Path, started: float) -> dict[str, int]:
    import docker

    from engine.images import LABEL_BUILD
    from engine.targets.docker import DockerStates

    client = docker.from_env()
    try:
        build_ids = {p.name for p in (store / "builds").iterdir() if p.is_dir()}
        containers = [c for c in client.containers.list(all=True) if (c.labels or {}).get(LABEL_BUILD) in build_ids]
        kept = DockerStates(client, store).present()
        managed = [i for i in client.images.list() if any(t.startswith("aib-local/soak/") for t in i.tags)]
    finally:
        client.close()
    qemu = subprocess.run(["pgrep", "-f", f"qemu-system.*{store}"], capture_output=True, text=True, check=False)
    temporary = [
        p for p in Path(tempfile.gettempdir()).glob("*aib-local*") if p != work and p.stat().st_mtime >= started
    ]
    return {
        "containers of its builds": len(containers),
        "step cache images of its store": len(kept),
        "managed images' Docker images": len(managed),
        "QEMU processes": len(qemu.stdout.split()),
        "temporary files": len(temporary),
        "partial files": len(list(store.rglob("*.partial"))),
    }


def records(store: Path) -> dict[str, int]:
    builds = [json.loads(p.read_text()) for p in store.glob("builds/*/build.json")]
    images = list(store.glob("resources/**/microsoft.compute/images/*/resource.json"))
    return {
        "build records": len(builds),
        "succeeded": sum(1 for b in builds if str(b.get("status", "")).lower() == "succeeded"),
        "managed image records": len(images),
        "in-flight journal entries": len(list((store / "inflight").glob("*.json"))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--builds", type=int, default=200)
    parser.add_argument("--parallel-templates", type=int, default=50)
    parser.add_argument("--write", type=Path, help="append the figures to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aib-local-soak-"))
    store = work / "store"
    env = {**os.environ, "AIB_LOCAL_STORE": str(store), "PYTHONPATH": str(ROOT)}
    one = work / "one.json"
    one.write_text(json.dumps(template("soak")))
    many = []
    for index in range(args.parallel_templates):
        path = work / f"t{index}.json"
        path.write_text(json.dumps(template(f"soak{index}")))
        many.append(str(path))
    started = time.time()
    before = engine_process()
    failures = 0
    for number in range(args.builds):
        done = subprocess.run(
            [sys.executable, "-m", "engine", "build", str(one), "--network", "none"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        failures += done.returncode != 0
        if number % 50 == 49:
            print(f"{number + 1} builds, {failures} failed", file=sys.stderr, flush=True)
    middle = engine_process()
    parallel = subprocess.run(
        [sys.executable, "-m", "engine", "build", *many, "--parallel", "4", "--network", "none"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.time() - started
    time.sleep(2)  # the engine lets go of what the last build closed
    after = engine_process()
    found = {**leftovers(store, work, started), **records(store)}
    lines = [
        f"## Soak run ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, `python bench/soak.py`)",
        "",
        f"{args.builds} builds in a row (each its own process), then {args.parallel_templates} templates "
        f"with `--parallel 4`: {took / 60:.1f} min; {failures} of the builds in a row failed, the parallel "
        f"run exited {parallel.returncode}.",
        "",
        "| the Docker engine's process | before | after the builds in a row | after the parallel run |",
        "| --- | --- | --- | --- |",
        *[f"| {key} | {before[key]} | {middle[key]} | {after[key]} |" for key in before],
        "",
        "| left behind, and the store | found |",
        "| --- | --- |",
        *[f"| {key} | {value} |" for key, value in found.items()],
    ]
    report = "\n".join(lines)
    print(report)
    if args.write:
        with args.write.open("a") as out:
            out.write("\n" + report + "\n")
    subprocess.run([sys.executable, "-m", "engine", "clean"], env=env, capture_output=True, check=False)


if __name__ == "__main__":
    main()
