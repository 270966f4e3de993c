"""What tests share: test templates, the CLI's result, an sshd in a container, a CLI
process to signal or kill, store and engine checks. Constants come from the engine."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

from engine.images import LABEL_BUILD
from engine.records import TEMPLATE_TYPE
from engine.store import DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION

ROOT = Path(__file__).resolve().parents[1]
REQUIRE = "AIB_LOCAL_REQUIRE_DOCKER"  # set by CI: what a test needs and lacks fails it instead of skipping


def unavailable(reason: str) -> NoReturn:
    """A test that cannot run on this machine: skipped with the reason locally, a failure
    in CI (AIB_LOCAL_REQUIRE_DOCKER=1), where a missing tool must not pass in silence.
    Every such skip goes through here (or the `needs` marker, which calls it)."""
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{reason} ({REQUIRE}=1)")
    pytest.skip(reason)


BASE_IMAGE = "debian:12"
NO_SUDO_IMAGE = "aib-local-test/nosudo:12"
PWSH_STAND_IN_IMAGE = "aib-local-test/pwsh-stand-in:12"
SUBSCRIPTION = DEFAULT_SUBSCRIPTION


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def template(
    name: str,
    customize: list[dict[str, Any]],
    *,
    source: dict[str, Any] | None = None,
    distribute: list[dict[str, Any]] | None = None,
    **properties: Any,
) -> dict[str, Any]:
    """A Linux image template built on Debian 12, for tests."""
    return {
        "type": "Microsoft.VirtualMachineImages/imageTemplates",
        "apiVersion": "2024-02-01",
        "name": name,
        "location": "westeurope",
        "identity": {"type": "None"},
        "properties": {
            "source": source
            or {
                "type": "PlatformImage",
                "publisher": "Debian",
                "offer": "debian-12",
                "sku": "12",
                "version": "latest",
            },
            "customize": customize,
            "distribute": distribute if distribute is not None else [],
            **properties,
        },
    }


def managed_image_id(name: str) -> str:
    return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/tests/providers/Microsoft.Compute/images/{name}"


GALLERY = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.Compute/galleries/gal"


def make_gallery(cli: Any, definition: str = "debian", location: str = "westeurope") -> str:
    assert cli("sig", "create", "-g", "rg", "--gallery-name", "gal", "--location", location).code == 0
    created = cli(
        "sig",
        "image-definition",
        "create",
        "-g",
        "rg",
        "-r",
        "gal",
        "-i",
        definition,
        "--publisher",
        "tests",
        "--offer",
        definition,
        "--sku",
        "12",
        "--os-type",
        "Linux",
    )
    assert created.code == 0, created.output
    return f"{GALLERY}/images/{definition}"


def managed_image(name: str) -> dict[str, Any]:
    """A ManagedImage distribution of the image named `name`."""
    image_id = managed_image_id(name)
    return {"type": "ManagedImage", "runOutputName": "image", "imageId": image_id, "location": "westeurope"}


def all_three(cli: Any, name: str) -> list[dict[str, Any]]:
    """The three distributions (a VHD, a managed image and a gallery version, its gallery
    made first), named after `name`."""
    definition = make_gallery(cli, name)  # the store's records only: no engine involved
    return [
        {"type": "VHD", "runOutputName": "vhd"},
        managed_image(name),
        {
            "type": "SharedImage",
            "runOutputName": "version",
            "galleryImageId": definition,
            "replicationRegions": ["westeurope"],
        },
    ]


def assert_all_three_made(cli: Any, store: Path, name: str, env: dict[str, str]) -> str:
    """The build of all_three(name) left its VHD, managed image and gallery version; the
    managed image's engine image."""
    vhd = list((store / "artifacts").glob("*/*.vhd"))
    assert len(vhd) == 1 and vhd[0].stat().st_size > 100 << 20
    shown = cli("show", managed_image_id(name), env=env)
    assert shown.code == 0, shown.output
    versions = cli("list", "--type", "versions", env=env)
    assert versions.code == 0 and name in versions.stdout
    return str(json.loads(shown.stdout)["aibLocal"]["dockerImage"])


SSHD_IMAGE = "aib-local/sshd:12"
SSHD_SETUP = r"""
set -e
id builder >/dev/null 2>&1 || useradd -m -s /bin/bash builder
echo 'builder ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/builder
echo 'builder:pass-for-aib-local-tests' | chpasswd
install -d -m 700 -o builder -g builder /home/builder/.ssh
install -m 600 -o builder -g builder /keys/authorized_keys /home/builder/.ssh/authorized_keys
[ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -A >/dev/null
mkdir -p /run/sshd
exec /usr/sbin/sshd -D -e -p "$PORT" -o ListenAddress=127.0.0.1 -o PasswordAuthentication=yes
"""


@dataclass
class Sshd:
    """A real sshd in a container (host network, 127.0.0.1:port, restarts always)."""

    container: Any
    port: int
    key_file: Path
    known_hosts: Path
    user: str = "builder"

    @property
    def target(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def cli_args(self) -> list[str]:
        return ["--target", self.target, "--ssh-key", str(self.key_file), "--known-hosts", str(self.known_hosts)]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_sshd(port: int, within: float = 60) -> str:
    """Poll until sshd answers with its banner; returns the banner."""
    import socket

    from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

    @retry(retry=retry_if_exception_type(OSError), stop=stop_after_delay(within), wait=wait_fixed(0.2), reraise=True)
    def banner() -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            data = sock.recv(64)
            if not data.startswith(b"SSH-"):
                raise OSError("no banner yet")
            return data.decode()

    return banner()


def start_sshd(docker_client: Any, image: str, folder: Path) -> Sshd:
    import io
    import tarfile

    import paramiko

    folder.mkdir(parents=True, exist_ok=True)
    key = paramiko.RSAKey.generate(2048)
    key_file = folder / "id_rsa"
    key.write_private_key_file(str(key_file))
    port = _free_port()
    container = docker_client.containers.create(
        image,
        ["/bin/sh", "-c", SSHD_SETUP],
        environment={"PORT": str(port)},
        network_mode="host",
        restart_policy={"Name": "always"},
        labels={"io.aib-local.test": "sshd"},
    )
    public = f"{key.get_name()} {key.get_base64()} test\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("keys/authorized_keys")
        info.size = len(public)
        archive.addfile(info, io.BytesIO(public))
    container.put_archive("/", buffer.getvalue())
    container.start()
    wait_for_sshd(port)
    # known_hosts from the server's own host key, read inside the container.
    host_key = container.exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).output.decode().split()
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    return Sshd(container, port, key_file, known_hosts)


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
        """Until a line containing `text` appears (fails if the process ends first). An
        engine in an emulated VM (AIB_LOCAL_TEST_SLOW=N) gets N times as long to get there."""
        end = time.monotonic() + within * float(os.environ.get("AIB_LOCAL_TEST_SLOW", "1"))
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
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
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
    return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{DEFAULT_RESOURCE_GROUP}/providers/{TEMPLATE_TYPE}/{name}"


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


S = TypeVar("S", bound=ThreadingHTTPServer)


@contextlib.contextmanager
def http_server(server: S) -> Iterator[S]:
    """Serve `server` (bound to 127.0.0.1:0) from a thread; its base URL is `base_url(server)`."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def base_url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def run_image(docker_client: Any, image: str, command: list[str], within: float = 60) -> str:
    """Run `command` in a throw-away container of `image` as a user would (the image's own
    entrypoint); its output, or a failure if it does not end within `within` seconds."""
    container = docker_client.containers.run(image, command, detach=True, network_mode="none")
    try:
        status = container.wait(timeout=within)
        return str(container.logs().decode()) + ("" if status["StatusCode"] == 0 else f"(exit {status['StatusCode']})")
    except Exception as exc:  # requests' ReadTimeout: it did not end
        raise AssertionError(f"{command} in {image} did not end within {within}s ({exc})") from None
    finally:
        container.remove(force=True)


def shell_in_kept(store: Path, build_id: str, banner: str, command: str, expected: list[str]) -> None:
    """`aib-local shell BUILD_ID` on a terminal: the banner, then `command` at the prompt
    prints each of `expected` in order, and `exit 0` leaves it with exit code 0."""
    import pexpect

    env = {**os.environ, "AIB_LOCAL_STORE": str(store), "TERM": "dumb"}
    child = pexpect.spawn(sys.executable, ["-m", "engine", "shell", build_id], env=env, encoding="utf-8", timeout=60)
    child.expect(banner)
    child.expect("[$#] ")
    child.sendline(command)
    for text in expected:
        child.expect(text)
    child.sendline("exit 0")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def run_action(
    values: dict[str, str], env: dict[str, str], *, skip: tuple[str, ...] = (), timeout: float = 900
) -> dict[str, str]:
    """action.yml's shell steps, in order, as GitHub runs a composite action: `values` for
    its expressions (inputs.X, github.action_path), which reach a step only through its
    `env:` (a script holding an expression fails here, as the hardening asks), a step's
    `if: inputs.build == 'true'` honoured, GITHUB_OUTPUT and GITHUB_ENV too (under
    RUNNER_TEMP, which `env` must give). Steps named in `skip` are left out. The steps'
    outputs."""
    import yaml

    action = yaml.safe_load((ROOT / "action.yml").read_text())
    temp = Path(env["RUNNER_TEMP"])
    output, github_env = temp / "github-output", temp / "github-env"
    env = dict(env, GITHUB_OUTPUT=str(output), GITHUB_ENV=str(github_env))
    outputs: dict[str, str] = {}
    for step in action["runs"]["steps"]:
        name = step.get("name", step.get("id", ""))
        if "run" not in step or name in skip:
            continue  # the upload is GitHub's own action
        if step.get("if") == "inputs.build == 'true'" and values.get("inputs.build") != "true":
            continue
        assert "${{" not in step["run"], f"step {name} pastes an expression into its script"
        known = {**values, **{f"steps.paths.outputs.{k}": v for k, v in outputs.items()}}
        step_env = {}
        for key, expression in (step.get("env") or {}).items():
            inner = str(expression).removeprefix("${{ ").removesuffix(" }}")
            step_env[key] = known[inner]
        output.write_text("")
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            env={**env, **step_env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"step {name}: {done.stdout}{done.stderr}"
        outputs |= dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
        if github_env.exists():
            env |= dict(line.split("=", 1) for line in github_env.read_text().splitlines() if "=" in line)
    return outputs


# Each way a Shell step asks for a reboot (AIB's documented way to restart Linux is a
# Shell customizer calling one of them); the command returns before the machine goes down.
REBOOTS = {
    "reboot": ["sudo reboot"],
    "shutdown": ["sudo shutdown -r now"],
    "systemctl": ["sudo systemctl reboot"],
    "then-more": ["sudo reboot", "echo AFTER-THE-REBOOT-COMMAND"],
}


# Shell lines that pass only where systemd is PID 1 and has finished booting.
SYSTEMD_UP = [
    'test "$(cat /proc/1/comm)" = systemd',
    "systemctl is-system-running --wait | grep -Ex 'running|degraded'",
]

# A container's boot: PID 1's start (a container shares the host's boot id).
PID1_STARTED = "cut -d' ' -f22 /proc/1/stat"


def reboot_steps(boot_identity: str) -> list[dict[str, Any]]:
    """Two steps per way to reboot: one that notes the boot (`boot_identity`, a command
    printing it) and reboots, and one that proves it runs in a new boot, and runs whole."""
    steps: list[dict[str, Any]] = []
    for name, lines in REBOOTS.items():
        steps.append({"type": "Shell", "name": name, "inline": [f"{boot_identity} > /var/tmp/boot-{name}", *lines]})
        new_boot = f'[ "$({boot_identity})" != "$(cat /var/tmp/boot-{name})" ] && echo NEW-BOOT-{name}'
        steps.append({"type": "Shell", "name": f"after-{name}", "inline": [new_boot, f"echo WHOLE-{name}"]})
    return steps


def assert_each_reboot_ended_its_own_step(result: Result) -> None:
    """The build of reboot_steps (--output json) succeeded; each reboot ended the step that
    asked for it (never the next one), and each next step ran whole in the new boot."""
    assert result.code == 0, result.output
    seen = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    finished = {e["step"]: e["status"] for e in seen if e["event"] == "step-finished"}
    lines = [e["line"] for e in seen if e["event"] == "output"]
    for index, name in enumerate(REBOOTS):
        assert finished[f"customize[{2 * index}] {name}"] == "rebooted", (name, finished)
        assert finished[f"customize[{2 * index + 1}] after-{name}"] == "succeeded", (name, finished)
        assert f"NEW-BOOT-{name}" in lines and f"WHOLE-{name}" in lines, (name, lines)


def unasked_reboot_steps(reboot_later: str) -> list[dict[str, Any]]:
    """Three steps: one whose line `reboot_later` makes the machine reboot a few seconds after
    the step has ended, one that the reboot cuts off (it never asked for one), and one that
    may then never run."""
    return [
        {"type": "Shell", "name": "arm", "inline": [reboot_later]},
        {"type": "Shell", "name": "cut", "inline": ["echo STARTED", "sleep 60", "echo FINISHED"]},
        {"type": "Shell", "name": "last", "inline": ["echo LAST-STEP"]},
    ]


def assert_cut_off_by_an_unasked_reboot(result: Result) -> None:
    """The build of unasked_reboot_steps (--output json) failed at the step the reboot cut
    off, and said so; that step did not finish, and the step after it never ran."""
    assert result.code != 0, result.output
    seen = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    finished = {e["step"]: e["status"] for e in seen if e["event"] == "step-finished"}
    lines = [e["line"] for e in seen if e["event"] == "output"]
    assert finished["customize[0] arm"] == "succeeded", finished
    assert finished["customize[1] cut"] == "failed", finished
    assert "customize[2] last" not in finished, finished
    assert "STARTED" in lines and "FINISHED" not in lines and "LAST-STEP" not in lines, lines
    assert "customize[1] cut was cut off by a reboot it did not ask for" in result.output


# The container suites as they run against this machine's engine, for a second engine
# (the cgroup v2 engine in a VM, Podman): the sshd and VM parts need more than an engine.
SUITES_PYTEST = [
    sys.executable,
    "-m",
    "pytest",
    "-q",
    "-p",
    "no:cacheprovider",
    "--durations=8",
    "-m",
    "docker and not ssh",
]


def assert_suites_pass(args: list[str], env: dict[str, str], basetemp: Path, timeout: float = 1200) -> None:
    """Run the test suites `args` (paths, --deselect) in a fresh pytest against the engine
    `env` names, with what a test lacks failing it; they all pass, none skipped."""
    run = subprocess.run(
        [*SUITES_PYTEST, f"--basetemp={basetemp}", *args],
        env={**os.environ, **env, REQUIRE: "1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    print(run.stdout[-3000:])  # the suites' own report (pytest -s shows it), with their slowest tests
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    failures = run.stdout[run.stdout.find("= FAILURES =") :][:12000] if "= FAILURES =" in run.stdout else ""
    assert run.returncode == 0, failures + run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in summary and "skipped" not in summary, summary
