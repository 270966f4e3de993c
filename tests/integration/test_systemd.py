"""Build containers that behave like the build VM: systemd as PID 1, services that keep
running between steps, reboots inside Shell steps, and AIB's real deprovision (waagent)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.images import commit_changes
from tests.support import (
    PID1_STARTED,
    assert_cut_off_by_an_unasked_reboot,
    assert_each_reboot_ended_its_own_step,
    managed_image_id,
    reboot_steps,
    run_image,
    template,
    unasked_reboot_steps,
    unavailable,
)

pytestmark = pytest.mark.docker

UNIT = """[Unit]
Description=a web page served from the image
[Service]
ExecStart=/usr/bin/python3 -m http.server 8088 --bind 127.0.0.1 --directory /srv/hello
Restart=always
[Install]
WantedBy=multi-user.target
"""
REACH = "for i in $(seq 50); do curl -fsS http://127.0.0.1:8088/ && exit 0; sleep 0.1; done; exit 1"


def image(cli: Any, name: str) -> str:
    record = json.loads(cli("show", managed_image_id(name)).stdout)
    return str(record["aibLocal"]["dockerImage"])


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@contextlib.contextmanager
def derived(docker_client: Any, base_image: str, script: str, conf: dict[str, Any] | None = None) -> Iterator[str]:
    """An image made from the base image by `script` (as root, no network); removed after."""
    container = docker_client.containers.run(base_image, ["sh", "-c", script], detach=True, network_mode="none")
    try:
        container.wait(timeout=120)
        changes = commit_changes(conf or {})  # what Podman takes instead of conf
        made = container.commit(repository="aib-local-test/derived", tag=container.id[:12], conf=conf, changes=changes)
    finally:
        container.remove(force=True)
    try:
        yield str(made.id)
    finally:
        docker_client.images.remove(made.id, force=True)


def build_from(
    cli: Any, write_template: Any, tmp_path: Path, image_id: str, name: str, *args: str, env: Any = None
) -> Any:
    """Build a one-step template whose Debian URN maps to `image_id`. Without the step
    cache: on a slow machine (the cgroup v2 VM under TCG) it may keep the step's state as
    a child image of `image_id`, which `derived` could then not remove."""
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps({"Debian:debian-12:12:latest": image_id}))
    path = write_template(template(name, [{"type": "Shell", "inline": ["cat /proc/1/comm"]}]))
    return cli("build", str(path), "--catalogue", str(catalogue), "--no-cache", *args, env=env)


def test_a_service_runs_across_steps_and_a_reboot_and_waagent_deprovisions(
    cli: Any, write_template: Any, docker_client: Any, base_image: str, store: Path, leftovers: Any
) -> None:
    steps = [
        {"type": "File", "name": "unit", "sourceUri": "hello.service", "destination": "/tmp/hello.service"},
        {
            "type": "Shell",
            "name": "install",
            "inline": [
                "sudo mkdir -p /srv/hello /etc/ssh /var/lib/dhcp",
                "echo hello-from-a-service | sudo tee /srv/hello/index.html",
                "sudo cp /tmp/hello.service /etc/systemd/system/",
                "sudo systemctl enable --now hello",
                # what waagent's deprovision removes: SSH host keys, DHCP leases
                "sudo touch /etc/ssh/ssh_host_test_key /var/lib/dhcp/dhclient.eth0.leases",
                f"{PID1_STARTED} > /var/tmp/first-boot",
            ],
        },
        {"type": "Shell", "name": "reach", "inline": [REACH]},
        {"type": "Shell", "name": "reboot", "inline": ["echo going down", "sudo reboot", "sleep 60", "echo NEVER"]},
        {
            "type": "Shell",
            "name": "after",
            "inline": [
                f'[ "$({PID1_STARTED})" != "$(cat /var/tmp/first-boot)" ] && echo NEW-BOOT',
                "systemctl is-active hello",
                REACH,
            ],
        },
    ]
    path = write_template(
        template(
            "systemd",
            steps,
            distribute=[
                {
                    "type": "ManagedImage",
                    "imageId": managed_image_id("systemd"),
                    "location": "westeurope",
                    "runOutputName": "systemd",
                }
            ],
        )
    )
    (path.parent / "hello.service").write_text(UNIT)
    result = cli("build", str(path), "--network", "none", "--output", "json")
    assert result.code == 0, result.output
    seen = events(result.stdout)
    finished = {e["step"]: e["status"] for e in seen if e["event"] == "step-finished"}
    assert finished["customize[3] reboot"] == "rebooted"
    assert finished["customize[4] after"] == "succeeded"
    lines = [e["line"] for e in seen if e["event"] == "output"]
    assert lines.count("hello-from-a-service") == 3  # tee, then reached before and after the reboot
    assert "NEW-BOOT" in lines and "active" in lines
    assert "going down" in lines and "NEVER" not in lines
    assert any("systemd is the container's PID 1" in e.get("message", "") for e in seen)
    log = next(store.glob("builds/*/customization.log")).read_text()
    assert "ending customize[3] reboot: rebooted" in log
    # AIB's own deprovision command ran, to the end, in the container.
    assert "WARNING! All SSH host key pairs will be deleted." in lines
    assert finished["deprovision"] == "succeeded"
    out = run_image(
        docker_client,
        image(cli, "systemd"),
        [
            "sh",
            "-c",
            "ls /etc/ssh /var/lib/dhcp; grep ^root: /etc/shadow | cut -d: -f2; "
            "ls /etc/systemd/system/multi-user.target.wants; ls /etc/systemd/system/systemd-reboot.service.d; echo end",
        ],
    )
    assert "ssh_host_test_key" not in out and "dhclient.eth0.leases" not in out
    assert "*LOCK*" in out  # waagent disabled root's password
    assert "hello.service" in out  # the service stays enabled in the image
    assert "No such file or directory" in out  # aib-local's reboot drop-in is taken out
    assert leftovers() == []


def test_a_step_that_fails_before_its_reboot_fails(
    cli: Any, write_template: Any, base_image: str, leftovers: Any
) -> None:
    path = write_template(template("fails-first", [{"type": "Shell", "inline": ["false", "sudo reboot"]}]))
    result = cli("build", str(path), "--network", "none")
    assert result.code == 1, result.output
    assert "customize[0] Shell failed with exit code 1" in result.stderr
    assert "rebooted" not in result.stdout
    assert leftovers() == []


def test_a_degraded_boot_names_its_failed_units(cli: Any, write_template: Any, base_image: str, leftovers: Any) -> None:
    unit = "[Service]\\nExecStart=/bin/false\\n[Install]\\nWantedBy=multi-user.target\\n"
    steps = [
        {
            "type": "Shell",
            "name": "broken-unit",
            "inline": [
                f"printf '{unit}' | sudo tee /etc/systemd/system/broken.service",
                "sudo systemctl enable broken",
            ],
        },
        {"type": "Shell", "name": "reboot", "inline": ["sudo systemctl reboot"]},
        {"type": "Shell", "name": "after", "inline": ["systemctl is-system-running || true"]},
    ]
    result = cli("build", str(write_template(template("degraded", steps))), "--network", "none")
    assert result.code == 0, result.output
    assert "warning: customize[1] reboot: systemd booted degraded: broken.service failed" in result.stdout
    assert "customize[2] after | degraded" in result.stdout
    assert leftovers() == []


def test_windows_restart_on_linux_reboots_systemd(
    cli: Any, write_template: Any, base_image: str, leftovers: Any
) -> None:
    steps = [
        {"type": "Shell", "name": "mark", "inline": [f"{PID1_STARTED} > /var/tmp/first-boot"]},
        {"type": "WindowsRestart", "name": "restart"},
        {
            "type": "Shell",
            "name": "after",
            "inline": [f'[ "$({PID1_STARTED})" != "$(cat /var/tmp/first-boot)" ] && echo NEW-BOOT'],
        },
    ]
    result = cli("build", str(write_template(template("restart", steps))), "--network", "none")
    assert result.code == 0, result.output
    assert "rebooting aib-local-restart-" in result.stdout and ": systemctl reboot" in result.stdout
    assert "NEW-BOOT" in result.stdout
    assert leftovers() == []


def test_init_none_keeps_a_keep_alive_pid_1(cli: Any, write_template: Any, base_image: str, leftovers: Any) -> None:
    path = write_template(template("no-init", [{"type": "Shell", "inline": ["cat /proc/1/comm"]}]))
    result = cli("build", str(path), "--network", "none", "--init", "none")
    assert result.code == 0, result.output
    assert "systemd is the container's PID 1" not in result.stdout
    assert "| systemd" not in result.stdout
    assert leftovers() == []


def test_an_image_without_systemd_falls_back_and_says_so(
    cli: Any, write_template: Any, docker_client: Any, base_image: str, tmp_path: Path, leftovers: Any
) -> None:
    cache = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    with derived(docker_client, base_image, "rm -f /usr/lib/systemd/systemd") as image:
        image_id = docker_client.images.get(image).id
        result = build_from(cli, write_template, tmp_path, image, "fallback", "--network", "none", env=cache)
        assert result.code == 0, result.output
        assert "its VM-like layer needs the network to install it (--network none)" in result.stdout
        assert "the image has no systemd: a keep-alive process is the container's PID 1" in result.stdout
        # The verdict is kept by image ID: the next builds of it skip the probe, and say the same.
        verdicts = json.loads((tmp_path / "cache" / "aib-local" / "images-without-systemd.json").read_text())
        assert verdicts == [image_id]
        again = build_from(cli, write_template, tmp_path, image, "fallback", "--network", "none", env=cache)
        assert again.code == 0 and "a keep-alive process is the container's PID 1" in again.stdout
        refused = build_from(
            cli, write_template, tmp_path, image, "fallback", "--network", "none", "--init", "systemd", env=cache
        )
        assert refused.code == 1, refused.output
        assert "--init systemd:" in refused.stderr and "has no systemd" in refused.stderr
    assert leftovers() == []


def test_a_fixture_image_from_an_older_recipe_is_named_with_the_command_that_remakes_it(
    cli: Any, write_template: Any, docker_client: Any, base_image: str, tmp_path: Path, leftovers: Any
) -> None:
    old = {"Labels": {"aib-local.fixture-recipe": "2"}, "Cmd": ["/bin/bash"]}
    with derived(docker_client, base_image, "true", old) as image:
        result = build_from(cli, write_template, tmp_path, image, "old-recipe", "--network", "none")
        assert result.code == 0, result.output
        assert "was made by an older recipe (2; now 4) and lacks systemd and waagent" in result.stdout
        assert "build-image.sh" in result.stdout or "docker import" in result.stdout
    assert leftovers() == []


def debian_mirror_reachable() -> bool:
    import socket

    try:
        socket.create_connection(("deb.debian.org", 80), timeout=5).close()
    except OSError:
        return False
    return True


def test_an_image_without_systemd_gets_a_vm_like_layer_once(
    cli: Any, write_template: Any, docker_client: Any, base_image: str, tmp_path: Path, leftovers: Any
) -> None:
    if not debian_mirror_reachable():
        unavailable("the VM-like layer installs systemd from Debian's mirror, which is not reachable here")
    # A minimized image: systemd and its packages gone, as in a registry's ubuntu or debian.
    purge = "dpkg --purge --force-all systemd-sysv systemd libpam-systemd dbus-user-session"
    with derived(docker_client, base_image, purge, {"Cmd": ["bash"]}) as image:
        layer_tag = f"aib-local/vm-layer:{image.split(':')[-1][:12]}"
        try:
            first = build_from(cli, write_template, tmp_path, image, "layered")
            assert first.code == 0, first.output
            assert "installing systemd, dbus and sudo once with its package manager" in first.stdout
            assert "vm-layer | Setting up systemd" in first.stdout
            assert "| systemd" in first.stdout  # PID 1
            again = build_from(cli, write_template, tmp_path, image, "layered")
            assert again.code == 0, again.output
            assert f"using its VM-like layer {layer_tag}" in again.stdout
            # Kept as an image of its own: not carrying the build's labels, it is no build's leftover.
            layer_labels = docker_client.images.get(layer_tag).labels
            assert not layer_labels.get("io.aib-local.build-id") and layer_labels["io.aib-local.vm-layer-of"] == image
            assert "| systemd" in again.stdout
        finally:
            with contextlib.suppress(Exception):
                docker_client.images.remove(layer_tag, force=True)
    assert leftovers() == []


def test_the_nginx_script_of_a_typical_template_builds_and_serves_in_the_next_step(
    cli: Any, write_template: Any, base_image: str, leftovers: Any
) -> None:
    if not debian_mirror_reachable():
        unavailable("installing nginx needs Debian's mirror, which is not reachable here")
    steps = [
        {
            "type": "Shell",
            "name": "nginx",
            "inline": [
                "sudo apt-get install -y nginx-light && sudo systemctl enable nginx && sudo systemctl restart nginx"
            ],
        },
        {"type": "Shell", "name": "serves", "inline": ["curl -fsS http://localhost/ | grep -o 'Welcome to nginx!'"]},
    ]
    result = cli("build", str(write_template(template("nginx", steps))))
    assert result.code == 0, result.output
    assert "customize[1] serves | Welcome to nginx!" in result.stdout
    assert leftovers() == []


def test_every_way_to_reboot_ends_its_own_step_and_the_next_runs_whole_in_the_new_boot(
    cli: Any, write_template: Any, base_image: str, leftovers: Any
) -> None:
    """A reboot command returns before the machine goes down: the step that asked for it
    is the one that ends `rebooted` (never the next one), and the next step starts in the
    new boot and runs every line."""
    path = write_template(template("reboots", reboot_steps(PID1_STARTED)))
    result = cli("build", str(path), "--network", "none", "--output", "json")
    assert_each_reboot_ended_its_own_step(result)
    assert leftovers() == []


def test_a_step_cut_off_by_a_reboot_it_did_not_ask_for_fails_and_says_so(
    cli: Any, write_template: Any, base_image: str, leftovers: Any
) -> None:
    """A reboot that reaches the machine after its own step has ended and passed the reboot
    watch (here a timer's, 12 s on) cuts off the next step, whose commands name none: that
    step fails, and the build stops; it is never reported as passed."""
    later = "sudo systemd-run --on-active=12 --timer-property=AccuracySec=100ms systemctl reboot"
    path = write_template(template("unasked", unasked_reboot_steps(later)))
    result = cli("build", str(path), "--network", "none", "--output", "json")
    assert_cut_off_by_an_unasked_reboot(result)
    assert leftovers() == []
