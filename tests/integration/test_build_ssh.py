"""Builds over SSH against a real sshd (in a container that restarts like a VM)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, assert_cut_off_by_an_unasked_reboot, managed_image_id, template, unasked_reboot_steps

pytestmark = [pytest.mark.ssh, pytest.mark.docker]


def test_quickstart_over_ssh_captures_a_managed_image(cli: Any, sshd: Any, docker_client: Any) -> None:
    result = cli("build", str(ROOT / "fixtures/templates/quickstart.json"), *sshd.cli_args())
    assert result.code == 0, result.output
    assert "setup.sh running as root" in result.stdout
    assert "motd installed by builder" in result.stdout
    assert "customizers run as 'builder' with passwordless sudo" in result.stdout
    image_id = managed_image_id("quickstart-image").replace("/tests/", "/aib-local/")
    record = json.loads(cli("show", image_id).stdout)
    assert record["aibLocal"]["source"]["type"] == "SshHost"
    out = docker_client.containers.run(
        record["aibLocal"]["dockerImage"],
        ["/bin/sh", "-c", "/opt/hello/hello.sh; cat /etc/motd"],
        remove=True,
        network_mode="none",
    ).decode()
    assert out.splitlines() == ["hello from an aib-local image", "Built by aib-local from the quickstart template."]


def test_a_shell_step_that_reboots_the_host_ends_there_and_the_build_goes_on(
    cli: Any, sshd: Any, write_template: Any
) -> None:
    # The sshd host restarts when its PID 1 dies: a reboot, as far as the build can tell (a
    # new boot identity once it is back). The step names its reboot in a comment, as a step
    # must whose commands reboot the machine without a reboot command of their own.
    steps = [
        {"type": "Shell", "name": "mark", "inline": ["cut -d' ' -f22 /proc/1/stat > /tmp/pid1"]},
        {
            "type": "Shell",
            "name": "reboot",
            "inline": ["# reboot: PID 1 dies", "echo going down", "sudo kill 1", "sleep 60", "echo NEVER"],
        },
        {"type": "Shell", "name": "after", "inline": ['test "$(cut -d\' \' -f22 /proc/1/stat)" != "$(cat /tmp/pid1)"']},
    ]
    result = cli("build", str(write_template(template("ssh-reboot", steps))), *sshd.cli_args(), "--output", "json")
    assert result.code == 0, result.output
    seen = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    finished = {e["step"]: e["status"] for e in seen if e["event"] == "step-finished"}
    assert finished["customize[1] reboot"] == "rebooted"
    assert finished["customize[2] after"] == "succeeded"
    lines = [e["line"] for e in seen if e["event"] == "output"]
    assert "going down" in lines and "NEVER" not in lines


def test_a_step_cut_off_by_a_reboot_it_did_not_ask_for_fails_on_an_ssh_host(
    cli: Any, sshd: Any, write_template: Any
) -> None:
    # The host's PID 1 dies 4 s after the first step has ended, during the next step, whose
    # commands name no reboot.
    later = "sudo sh -c \"setsid sh -c 'sleep 4; kill 1' </dev/null >/dev/null 2>&1 &\""
    path = write_template(template("ssh-unasked", unasked_reboot_steps(later)))
    result = cli("build", str(path), *sshd.cli_args(), "--output", "json")
    assert_cut_off_by_an_unasked_reboot(result)


def test_restart_continues_the_build(cli: Any, sshd: Any, write_template: Any) -> None:
    path = write_template(
        template(
            "restart",
            [
                {
                    "type": "Shell",
                    "name": "before",
                    "inline": ["echo kept > /tmp/before", "cut -d' ' -f22 /proc/1/stat > /tmp/pid1"],
                },
                {
                    "type": "WindowsRestart",
                    "name": "reboot",
                    "restartCommand": "kill 1",
                    "restartCheckCommand": "echo check-ran",
                    "restartTimeout": "2m",
                },
                {
                    "type": "Shell",
                    "name": "after",
                    "inline": [
                        "cat /tmp/before",
                        'test "$(cut -d\' \' -f22 /proc/1/stat)" != "$(cat /tmp/pid1)"',
                        "echo after-restart",
                    ],
                },
            ],
        )
    )
    result = cli("build", str(path), *sshd.cli_args(), "--deprovision", "skip")
    assert result.code == 0, result.output
    for phase in (
        "restarting 127.0.0.1: kill 1",
        "waiting for 127.0.0.1 to go down",
        "waiting for 127.0.0.1 to come back up",
        "127.0.0.1 is back up",
        "check-ran",
        "after-restart",
    ):
        assert phase in result.stdout


def test_unknown_host_key_is_refused_with_its_fingerprint(
    cli: Any, sshd: Any, write_template: Any, tmp_path: Path
) -> None:
    path = write_template(template("hostkey", [{"type": "Shell", "inline": ["echo connected"]}]))
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    args = ["--target", sshd.target, "--ssh-key", str(sshd.key_file), "--known-hosts", str(empty)]
    result = cli("build", str(path), *args)
    assert result.code == 3, result.output
    assert "SHA256:" in result.stderr and "--ssh-insecure-accept-host-key" in result.stderr
    accepted = cli("build", str(path), *args, "--ssh-insecure-accept-host-key", "--deprovision", "skip")
    assert accepted.code == 0, accepted.output
    assert "connected" in accepted.stdout


def test_changed_host_key_is_refused(cli: Any, sshd: Any, write_template: Any, tmp_path: Path) -> None:
    import paramiko

    other = paramiko.RSAKey.generate(2048)
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(
        f"[127.0.0.1]:{sshd.port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
        f"[127.0.0.1]:{sshd.port} {other.get_name()} {other.get_base64()}\n"
    )
    path = write_template(template("changed", [{"type": "Shell", "inline": ["true"]}]))
    result = cli(
        "build", str(path), "--target", sshd.target, "--ssh-key", str(sshd.key_file), "--known-hosts", str(wrong)
    )
    assert result.code == 3, result.output
    assert "has CHANGED" in result.stderr


def test_wrong_key_is_an_authentication_error(cli: Any, sshd: Any, write_template: Any, tmp_path: Path) -> None:
    import paramiko

    stranger = tmp_path / "stranger"
    paramiko.RSAKey.generate(2048).write_private_key_file(str(stranger))
    path = write_template(template("authfail", [{"type": "Shell", "inline": ["true"]}]))
    result = cli(
        "build", str(path), "--target", sshd.target, "--ssh-key", str(stranger), "--known-hosts", str(sshd.known_hosts)
    )
    assert result.code == 3, result.output
    assert "authentication failed for builder@127.0.0.1" in result.stderr
    assert "Traceback" not in result.output


def test_ssh_build_timeout_kills_the_remote_step(cli: Any, sshd: Any, write_template: Any) -> None:
    path = write_template(
        template("sshtimeout", [{"type": "Shell", "name": "forever", "inline": ["sleep 600"]}], buildTimeoutInMinutes=1)
    )
    result = cli("build", str(path), *sshd.cli_args())
    assert result.code == 1, result.output
    assert "buildTimeoutInMinutes (1) expired during customize[0] forever" in result.stderr
    procs = sshd.container.exec_run(["/bin/sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"]).output.decode()
    assert "sleep 600" not in procs


def test_password_from_the_environment_is_used_and_never_shown(
    cli: Any, sshd: Any, write_template: Any, store: Path, tmp_path: Path
) -> None:
    path = write_template(template("password", [{"type": "Shell", "inline": ["echo logged-in-as-$(id -un)"]}]))
    home = tmp_path / "home"  # no ~/.ssh keys, no agent: only the password can work
    home.mkdir()
    env = {"AIB_TEST_PASSWORD": "pass-for-aib-local-tests", "HOME": str(home), "SSH_AUTH_SOCK": ""}
    result = cli(
        "build",
        str(path),
        "--target",
        sshd.target,
        "--known-hosts",
        str(sshd.known_hosts),
        "--ssh-password-env",
        "AIB_TEST_PASSWORD",
        "--deprovision",
        "skip",
        env=env,
    )
    assert result.code == 0, result.output
    assert "logged-in-as-builder" in result.stdout
    assert "pass-for-aib-local-tests" not in result.output
    assert "pass-for-aib-local-tests" not in next(store.glob("builds/*/customization.log")).read_text()
    missing = cli(
        "build",
        str(path),
        "--target",
        sshd.target,
        "--known-hosts",
        str(sshd.known_hosts),
        "--ssh-password-env",
        "AIB_TEST_UNSET_PASSWORD",
        env=env,
    )
    assert missing.code == 3 and "AIB_TEST_UNSET_PASSWORD is not set" in missing.stderr


def test_start_and_stop_commands_bracket_the_build(cli: Any, sshd: Any, write_template: Any, tmp_path: Path) -> None:
    log = tmp_path / "vm.log"
    path = write_template(template("startstop", [{"type": "Shell", "inline": ["echo building"]}]))
    result = cli(
        "build",
        str(path),
        *sshd.cli_args(),
        "--deprovision",
        "skip",
        "--ssh-start-command",
        f"echo started >> {log}",
        "--ssh-stop-command",
        f"echo stopped >> {log}",
    )
    assert result.code == 0, result.output
    assert log.read_text().split() == ["started", "stopped"]
    failing = cli("build", str(path), *sshd.cli_args(), "--ssh-start-command", "echo no such vm >&2; exit 4")
    assert failing.code == 1
    assert "--ssh-start-command failed (4): no such vm" in failing.stderr
