"""VM builds on a real QEMU (TCG here: no usable KVM), booting the fixture disk made by
fixtures/images/build-disk.sh. Boots are slow under TCG, so each test boots as few
times as what it proves needs, and every wait is bounded."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support import (
    SIGNALS,
    SUBSCRIPTION,
    Running,
    assert_each_reboot_ended_its_own_step,
    build_ids,
    managed_image_id,
    reboot_steps,
    shell_in_kept,
    template,
    template_id,
    unavailable,
)

pytestmark = pytest.mark.vm

MARKER = "vm-built"
# A unit that reports on the serial console at every boot: proof that an image booted by itself.
REPORT_UNIT = [
    "sudo tee /etc/systemd/system/aib-report.service >/dev/null <<'EOF'",
    "[[Unit]",  # "[[" : a literal "[" (a string that starts with "[" is an ARM expression)
    "Description=report on the serial console",
    "After=multi-user.target",
    "[[Service]",
    "Type=oneshot",
    "ExecStart=/bin/sh -c 'echo AIB-LOCAL-UNIT-$(cat /etc/marker) > /dev/ttyS0'",
    "[[Install]",
    "WantedBy=multi-user.target",
    "EOF",
    "sudo systemctl enable aib-report.service",
]


@pytest.fixture(scope="session")
def vm_disk() -> Path:
    from engine.catalogue import disks_folder

    disk = disks_folder() / "debian-12.qcow2"
    if not disk.is_file():
        unavailable(f"no fixture disk {disk}: run fixtures/images/build-disk.sh")
    return disk


def qemu_processes(store: Path) -> list[int]:
    """QEMU processes of this test's store (their command line names a folder in it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmdline and str(store).encode() in cmdline:
            found.append(int(proc.name))
    return found


@pytest.fixture
def host_port() -> Iterator[int]:
    """A port this test listens on, on the host: QEMU's user network takes a guest to it at 10.0.2.2."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


def reach(port: int) -> list[str]:
    """Shell lines saying whether the guest reaches the host's port (REACHED or CUT-OFF)."""
    return [f"if timeout 10 bash -c 'echo > /dev/tcp/10.0.2.2/{port}'; then echo REACHED; else echo CUT-OFF; fi"]


def build_id_of(result: Any) -> str:
    match = re.search(r"build (\S+) (?:Succeeded|Failed|Canceled|PartiallySucceeded)", result.output)
    assert match, result.output
    return match.group(1)


def test_a_vm_build_reboots_and_its_vhd_and_managed_image_boot_by_themselves(
    cli: Any, write_template: Any, store: Path, vm_disk: Path
) -> None:
    image_id = managed_image_id("vm-built")
    before = vm_disk.stat().st_mtime_ns
    path = write_template(
        template(
            "vm-built",
            [
                {"type": "Shell", "name": "mark", "inline": [f"echo {MARKER} | sudo tee /etc/marker", *REPORT_UNIT]},
                {"type": "Shell", "name": "boot-id", "inline": ["cat /proc/sys/kernel/random/boot_id > /var/tmp/b0"]},
                {"type": "Shell", "name": "reboot", "inline": ["sudo systemctl reboot", "sleep 60"]},
                {
                    "type": "Shell",
                    "name": "after",
                    "inline": [
                        'test "$(cat /proc/sys/kernel/random/boot_id)" != "$(cat /var/tmp/b0)"',
                        "echo NEW-BOOT",
                    ],
                },
            ],
            distribute=[
                {"type": "VHD", "runOutputName": "disk"},
                {"type": "ManagedImage", "runOutputName": "image", "imageId": image_id, "location": "westeurope"},
            ],
        )
    )
    result = cli("build", str(path), "--target", "vm", timeout=1800)
    assert result.code == 0, result.output
    assert "NEW-BOOT" in result.stdout
    assert re.search(r"customize\[2\] reboot: rebooted", result.stdout), result.stdout
    assert vm_disk.stat().st_mtime_ns == before  # the source disk is only ever read
    assert qemu_processes(store) == []
    (build_id,) = build_ids(store)
    assert not (store / "builds" / build_id / "vm").exists()

    # The VHD is the whole disk: the source's MBR boot code first, a fixed VHD footer last.
    base = (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/aib-local/providers"
        "/Microsoft.VirtualMachineImages/imageTemplates/vm-built/runOutputs"
    )
    uri = json.loads(cli("show", f"{base}/disk").stdout)["properties"]["artifactUri"]
    vhd = Path(urlsplit(uri).path)
    with vhd.open("rb") as disk:
        boot_sector = disk.read(512)
    assert boot_sector[510:] == b"\x55\xaa" and boot_sector[:440] != bytes(440)
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-f", "vpc", "--output", "json", str(vhd)], check=True, capture_output=True
        ).stdout.decode()
    )
    assert info["virtual-size"] == vhd.stat().st_size - 512

    # It boots by its own bootloader; cloud-init provisions it anew; the unit reports.
    booted = cli("boot", uri, "--expect", f"AIB-LOCAL-UNIT-{MARKER}", "--output", "json", timeout=900)
    assert booted.code == 0, booted.output
    report = json.loads(booted.stdout)
    assert report["booted"] and report["secondsToSsh"] > 0 and report["secondsToExpected"] > 0
    assert qemu_processes(store) == []

    # `boot --validate`: a template's validators run in the booted VHD, reported as a build's steps.
    checks = [
        {"type": "Shell", "name": "marker", "inline": [f"grep -x {MARKER} /etc/marker"]},
        {"type": "Shell", "name": "unit", "inline": ["systemctl is-enabled aib-report.service"]},
    ]
    checker = write_template(template("vm-checks", [], validate={"inVMValidations": checks}), "checks.json")
    validated = cli("boot", uri, "--validate", str(checker), "--output", "json", timeout=900)
    assert validated.code == 0, validated.output
    events = [json.loads(line) for line in validated.stdout.splitlines() if line.startswith("{")]
    finished = {e["step"]: e["status"] for e in events if e["event"] == "step-finished"}
    assert finished["validate[0] marker"] == finished["validate[1] unit"] == "succeeded", finished
    assert "deprovision" not in finished and "capture" not in finished  # nothing is built
    assert cli("show", template_id("vm-checks")).code == 2  # no run of that template is recorded
    assert qemu_processes(store) == []

    # The managed image holds the disk and is the next VM build's source.
    record = json.loads(cli("show", image_id).stdout)
    assert record["aibLocal"]["disk"].endswith(".qcow2") and "dockerImage" not in record["aibLocal"]
    # Its validators run on the build VM, then again in the booted image (--boot-test):
    # one reads what only the boot it runs in has (cloud-init's instance), one a file of
    # /run that a customizer wrote, which no captured image keeps.
    validators = [
        {"type": "Shell", "name": "instance", "inline": ["echo VALIDATED-IN=$(cat /run/cloud-init/.instance-id)"]},
        {"type": "Shell", "name": "runtime", "inline": ["test -e /run/aib-built"]},
    ]
    chained = write_template(
        template(
            "vm-chained",
            [{"type": "Shell", "inline": ["cat /etc/marker", "id -un", "sudo touch /run/aib-built"]}],
            source={"type": "ManagedImage", "imageId": image_id},
            distribute=[
                {
                    "type": "ManagedImage",
                    "runOutputName": "image",
                    "imageId": managed_image_id("vm-chained"),
                    "location": "westeurope",
                }
            ],
            validate={"inVMValidations": validators},
        ),
        "chained.json",
    )
    again = cli("build", str(chained), "--target", "vm", "--boot-test", "--vm-boot", "cold", timeout=1800)
    assert again.code == 1, again.output
    assert MARKER in again.stdout and "packer" in again.stdout
    assert re.search(r"validate\[1\] runtime: ok", again.stdout)  # on the build VM
    # --boot-test booted what this build made (its managed image: no VHD) as the last phase.
    instances = re.findall(r"VALIDATED-IN=(\S+)", again.stdout)
    assert len(instances) == 2 and "-boot-" not in instances[0] and "-boot-" in instances[1], instances
    assert "boot-test validate[1] runtime" in again.stdout
    assert "the booted image failed its validation" in again.stderr
    assert qemu_processes(store) == []
    # A container build cannot start from it, and says so.
    refused = cli("build", str(chained))
    assert refused.code == 2 and "build from it with --target vm" in refused.stderr


def test_every_way_to_reboot_ends_its_own_step_on_a_vm_and_the_next_runs_whole_in_the_new_boot(
    cli: Any, write_template: Any, store: Path, vm_disk: Path
) -> None:
    """On a VM (an SSH host underneath: the same step runner and reboot rule as --target
    ssh), `reboot`, `shutdown -r now`, `systemctl reboot` and a reboot followed by more
    lines each end the step that asked for it, however late the guest goes down after it."""
    path = write_template(template("vm-reboots", reboot_steps("cat /proc/sys/kernel/random/boot_id")))
    result = cli("build", str(path), "--target", "vm", "--no-cache", "--output", "json", timeout=1800)
    assert_each_reboot_ended_its_own_step(result)
    assert qemu_processes(store) == []


def test_later_builds_restore_the_booted_vm_the_first_build_saved(
    cli: Any, write_template: Any, store: Path, vm_disk: Path, host_port: int
) -> None:
    """The first build of a source saves the booted VM; the next ones (two at once here)
    restore it instead of booting, each on its own copy of the disk, with the host's clock
    and a random generator of its own; `clean --snapshots` removes it."""
    probe = [
        *reach(host_port),
        "echo CLOCK=$(date -u +%s)",
        "echo RANDOM=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n')",
        "test -e /var/tmp/touched && echo SEEN-AN-EARLIER-BUILD || echo FRESH-DISK",
        "sudo touch /var/tmp/touched",
    ]
    first = write_template(template("vm-first", [{"type": "Shell", "inline": probe}]), "first.json")
    made = cli("build", str(first), "--target", "vm", timeout=1800)
    assert made.code == 0, made.output
    assert "saved the booted VM" in made.stdout and "FRESH-DISK" in made.stdout
    (saved,) = (store / "vm-snapshots").glob("*/meta.json")
    assert json.loads(saved.read_text())["build"] == build_id_of(made)
    assert oct((saved.parent / "id_ed25519").stat().st_mode & 0o777) == "0o600"

    paths = [write_template(template(f"vm-{n}", [{"type": "Shell", "inline": probe}]), f"{n}.json") for n in "bc"]
    both = cli("build", *map(str, paths), "--target", "vm", "--parallel", "2", "--output", "json", timeout=1800)
    assert both.code == 0, both.output
    events = [json.loads(line) for line in both.stdout.splitlines() if line.startswith("{")]
    lines: dict[str, list[str]] = {}
    for event in events:
        if event["event"] == "output":
            lines.setdefault(event["buildId"], []).append(event["line"])
            if event["line"].startswith("CLOCK="):  # the guest's clock against the host's, as the line came
                host = datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
                assert abs(int(event["line"].split("=")[1]) - host) < 5, event
        if event["event"] == "info" and "restored the VM saved by build" in event["message"]:
            lines.setdefault(event["buildId"], []).append("RESTORED")
    assert len(lines) == 2
    assert not [e for e in events if e["event"] == "warning" and "not renewed" in e["message"]]
    values = {}
    for build_id, said in lines.items():
        assert "RESTORED" in said and "FRESH-DISK" in said and "REACHED" in said, (build_id, said)
        found = dict(line.split("=", 1) for line in said if line.startswith("RANDOM="))
        values[build_id] = found
    # Restored from one saved machine, and still each with random numbers of its own.
    first_random, second_random = (found["RANDOM"] for found in values.values())
    assert first_random != second_random
    assert qemu_processes(store) == []

    # A saved VM that no longer loads (cut short here) is dropped: the build boots, says
    # so, and saves a new one.
    state = saved.parent / "state"
    with state.open("r+b") as cut:
        cut.truncate(state.stat().st_size // 2)
    fallback = cli("build", str(paths[0]), "--target", "vm", timeout=1800)
    assert fallback.code == 0, fallback.output
    assert "the saved VM did not restore" in fallback.stdout and "saved the booted VM" in fallback.stdout
    assert "FRESH-DISK" in fallback.stdout
    (again,) = (store / "vm-snapshots").glob("*/meta.json")
    assert json.loads(again.read_text())["build"] == build_id_of(fallback)
    assert qemu_processes(store) == []

    cleaned = cli("clean", "--snapshots")
    assert cleaned.code == 0, cleaned.output
    assert "removed the boot snapshot of " in cleaned.stdout
    assert not list((store / "vm-snapshots").glob("*/meta.json"))


def test_a_gen2_source_boots_by_uefi_and_so_does_the_image_it_makes(
    cli: Any, write_template: Any, store: Path, vm_disk: Path
) -> None:
    """A Gen2 source (its SKU says so) boots under OVMF, its managed image is V2, and the
    boot test boots that image by UEFI too (its validator runs there)."""
    uefi = ["test -d /sys/firmware/efi", "echo BOOTED-BY-UEFI"]
    path = write_template(
        template(
            "vm-gen2",
            [{"type": "Shell", "name": "firmware", "inline": uefi}],
            source={"type": "PlatformImage", "publisher": "Debian", "offer": "debian-12", "sku": "12-gen2"}
            | {"version": "latest"},
            distribute=[
                {
                    "type": "ManagedImage",
                    "runOutputName": "image",
                    "imageId": managed_image_id("vm-gen2"),
                    "location": "westeurope",
                }
            ],
            validate={"inVMValidations": [{"type": "Shell", "name": "uefi", "inline": uefi}]},
        )
    )
    built = cli("build", str(path), "--target", "vm", "--boot-test", timeout=1800)
    assert built.code == 0, built.output
    assert "UEFI firmware (OVMF)" in built.stdout and built.stdout.count("| BOOTED-BY-UEFI") == 3, built.stdout
    assert re.search(r"boot-test validate\[0\] uefi: ok", built.stdout), built.stdout
    record = json.loads(cli("show", managed_image_id("vm-gen2")).stdout)
    assert record["properties"]["hyperVGeneration"] == "V2"
    # The next build restores the booted Gen2 VM that build saved (its UEFI variables too).
    again = cli("build", str(path), "--target", "vm", timeout=1800)
    assert again.code == 0, again.output
    assert "restored the VM saved by build" in again.stdout and again.stdout.count("| BOOTED-BY-UEFI") == 2
    assert qemu_processes(store) == []


def test_sigint_mid_build_leaves_no_qemu_and_no_overlay(write_template: Any, store: Path, vm_disk: Path) -> None:
    path = write_template(template("vm-int", [{"type": "Shell", "inline": ["echo VM-STEP-RUNNING", "sleep 600"]}]))
    running = Running(["build", str(path), "--target", "vm"], store)
    running.wait_for("VM-STEP-RUNNING", within=900)
    assert qemu_processes(store)
    signum, expected = SIGNALS["SIGINT"]
    running.send(signum)
    code, output = running.finish()
    assert code == expected, output
    assert running.seconds_since_signal() < 20
    assert qemu_processes(store) == []
    assert not list((store / "builds").rglob("disk.qcow2")) and not list((store / "builds").glob("*/vm"))


def test_a_vm_whose_qemu_is_killed_mid_step_fails_at_once_naming_it(
    write_template: Any, store: Path, vm_disk: Path
) -> None:
    """kill -9 of the VM's QEMU during a step: not a network problem to wait 30 s for, but
    QEMU's own exit, named with its signal and the console's last lines; nothing is left."""
    path = write_template(template("vm-killed", [{"type": "Shell", "inline": ["echo VM-STEP-RUNNING", "sleep 600"]}]))
    running = Running(["build", str(path), "--target", "vm", "--vm-boot", "cold"], store)
    running.wait_for("VM-STEP-RUNNING", within=900)
    (pid,) = qemu_processes(store)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    code, output = running.finish()
    assert code == 1, output
    assert time.monotonic() - killed_at < 10, output
    assert "the VM's QEMU" in output and "was killed by SIGKILL" in output and "its console's last lines" in output
    assert "sshd is down" not in output and "internal error" not in output
    assert qemu_processes(store) == []
    assert not list((store / "builds").rglob("disk.qcow2"))


# The kept VM's QEMU runs on after the build returns, by design (`clean` stops it): the
# build ran in this process, whose handle on that child is collected while it runs.
@pytest.mark.filterwarnings("ignore:subprocess \\d+ is still running:ResourceWarning")
def test_a_kept_failed_vm_takes_shell_and_rerun_and_clean_removes_it(
    cli: Any, write_template: Any, store: Path, tmp_path: Path, vm_disk: Path, host_port: int
) -> None:
    pytest.importorskip("pexpect")
    port = host_port
    script = tmp_path / "step.sh"
    script.write_text("#!/bin/sh\necho attempt-one\nexit 3\n")
    path = write_template(
        template(
            "vm-kept",
            [
                {"type": "Shell", "name": "prepare", "inline": ["echo prepared > /var/tmp/prepared", *reach(port)]},
                {"type": "Shell", "name": "flaky", "scriptUri": "step.sh"},
            ],
        )
    )
    first = cli("build", str(path), "--target", "vm", "--on-error", "abort", "--network", "none", timeout=1800)
    assert first.code == 1, first.output
    assert "CUT-OFF" in first.stdout and "REACHED" not in first.stdout  # --network none: nothing but SSH
    build_id = build_id_of(first)
    assert len(qemu_processes(store)) == 1  # kept, running

    shell_in_kept(store, build_id, "shell in VM from ", "cat /var/tmp/prepared; id -un", ["prepared", "packer"])
    assert len(qemu_processes(store)) == 1  # the shell leaves it kept

    script.write_text("#!/bin/sh\ncat /var/tmp/prepared\necho attempt-two\n")
    again = cli("rerun", build_id, timeout=600)
    assert again.code == 0, again.output
    assert "prepared" in again.stdout and "attempt-two" in again.stdout
    assert len(qemu_processes(store)) == 1  # still kept: no --finish

    cleaned = cli("clean", "--build", build_id)
    assert cleaned.code == 0, cleaned.output
    assert qemu_processes(store) == []
    assert not (store / "builds" / build_id / "vm").exists()


def test_clean_stops_the_qemu_of_a_build_killed_while_saving_its_vm(
    cli: Any, write_template: Any, store: Path, vm_disk: Path
) -> None:
    path = write_template(template("vm-crash", [{"type": "Shell", "inline": ["true"]}]))
    running = Running(["build", str(path), "--target", "vm"], store, {"AIB_LOCAL_FAILPOINTS": "vm:saving=kill"})
    code, output = running.finish(within=900)
    assert code == -9, output
    assert len(qemu_processes(store)) == 1  # the killed build's VM runs on, orphaned (paused)
    assert list((store / "vm-snapshots").glob(".new-*"))  # the half-made saved VM
    cleaned = cli("clean")
    assert cleaned.code == 0, cleaned.output
    assert "QEMU" in cleaned.stdout and "a saved VM left half-made" in cleaned.stdout
    assert qemu_processes(store) == []
    assert not list((store / "builds").glob("*/vm"))
    assert not list((store / "vm-snapshots").glob(".new-*")) and not list((store / "vm-snapshots").glob("*/meta.json"))


def test_sigint_while_saving_the_booted_vm_leaves_nothing(store: Path, write_template: Any, vm_disk: Path) -> None:
    path = write_template(template("vm-int-save", [{"type": "Shell", "inline": ["true"]}]))
    running = Running(["build", str(path), "--target", "vm"], store, {"AIB_LOCAL_FAILPOINTS": "vm:saving=sigint"})
    code, output = running.finish(within=900)
    assert code == 130, output
    assert qemu_processes(store) == []
    assert not list((store / "builds").glob("*/vm"))
    assert not list((store / "vm-snapshots").glob(".new-*")) and not list((store / "vm-snapshots").glob("*/meta.json"))


def test_the_step_cache_restores_the_running_vm_and_runs_only_the_edited_step(
    cli: Any, write_template: Any, store: Path, vm_disk: Path
) -> None:
    """A VM build keeps the running machine after its customizers (--checkpoint: after
    each); a rebuild after the last one is edited restores the VM as it was, running
    service and /tmp included, and runs only that one; prune removes the saved VMs."""
    setup = {
        "type": "Shell",
        "name": "setup",
        "inline": ["echo carried > /tmp/carried", "sudo systemd-run --unit aib-bg sleep 3600", "echo SETUP-RAN"],
    }

    def app(text: str) -> dict[str, Any]:
        return {"type": "Shell", "name": "app", "inline": ["cat /tmp/carried", "systemctl is-active aib-bg", text]}

    path = write_template(template("vm-cache", [setup, app("echo APP-ONE")]))
    first = cli("build", str(path), "--target", "vm", "--checkpoint", timeout=1800)
    assert first.code == 0, first.output
    assert first.stdout.count("state kept for the next builds") == 2
    path = write_template(template("vm-cache", [setup, app("echo APP-TWO")]))
    again = cli("build", str(path), "--target", "vm", timeout=1800)
    assert again.code == 0, again.output
    assert "restored the VM the step cache kept, saved by build" in again.stdout
    assert "customize[0] setup: cached (from build" in again.stdout and "SETUP-RAN" not in again.stdout
    assert "carried" in again.stdout and "\n" in again.stdout and "APP-TWO" in again.stdout
    assert re.search(r"customize\[1\] app \| active", again.stdout), again.stdout  # the service still runs
    assert qemu_processes(store) == []
    pruned = cli("cache", "prune", "--all")
    assert pruned.code == 0 and pruned.stdout.count("removed customize[") == 2, pruned.output
    assert not list((store / "step-cache" / "vm").glob("*/meta.json"))
