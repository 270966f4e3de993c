"""The cgroup settings of a systemd container, per cgroup version and engine: what each
grants, and the engines that cannot run systemd unprivileged."""

from __future__ import annotations

import pytest

from engine.targets.systemd import INIT_PATHS, cgroup_setup, container_settings


def test_cgroup_v1_binds_the_hierarchy_read_only_and_nothing_else() -> None:
    setup = cgroup_setup(1)
    assert not setup.blocked
    settings = container_settings(INIT_PATHS[0], setup)
    assert settings["volumes"] == {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"}}
    assert "cgroupns" not in settings and "security_opt" not in settings
    assert "read-only" in setup.grants


@pytest.mark.parametrize("api", ["1.48", "1.49", "1.51", "2.0"])
def test_cgroup_v2_on_docker_28_gets_a_private_namespace_whose_own_subtree_is_writable(api: str) -> None:
    setup = cgroup_setup(2, api, "Docker", "28.5.2")
    settings = container_settings(INIT_PATHS[0], setup)
    assert settings["cgroupns"] == "private"
    assert settings["security_opt"] == ["writable-cgroups=true"]
    assert "volumes" not in settings  # no bind mount of the host's tree
    assert "privileged" not in settings and "cap_add" not in settings
    assert "its own cgroup subtree" in setup.grants


@pytest.mark.parametrize(("api", "version"), [("1.41", "20.10.24"), ("1.45", "26.1.5"), ("1.47", "27.5.1"), ("", "")])
def test_cgroup_v2_on_an_older_docker_is_blocked_with_the_reason(api: str, version: str) -> None:
    setup = cgroup_setup(2, api, "Docker", version)
    assert "read-only on cgroup v2" in setup.blocked
    assert "Docker 28.0 or newer" in setup.blocked
    assert not setup.options


@pytest.mark.parametrize("version", [1, 2])
def test_podman_runs_systemd_in_its_own_namespace_without_dockers_option(version: int) -> None:
    """On v1 too: Podman's systemd mode mounts the controllers writable over any bind
    mount, which in the host's cgroup namespace would be the host's whole tree."""
    setup = cgroup_setup(version, "1.41", "Podman", "4.3.1")
    assert not setup.blocked
    settings = container_settings(INIT_PATHS[1], setup)
    assert settings["cgroupns"] == "private"
    assert "security_opt" not in settings and "volumes" not in settings
    assert "its own cgroup" in setup.grants


def test_an_engine_that_cannot_copy_into_containers_is_named_as_the_fault() -> None:
    """Debian's Docker 28.5 on a kernel before 6.6 fails every copy into a container (seen on
    the cgroup v2 test engine before its kernel was upgraded): the error says whose fault."""
    import docker.errors

    from engine.images import reason

    failure = docker.errors.APIError(
        "500 Server Error",
        explanation="chmod systemd-reboot.service.d: via /proc/self/fd/27: no such file or directory",
    )
    said = reason(failure)
    assert said.startswith("chmod systemd-reboot.service.d")
    assert "a fault of this Docker engine" in said and "kernels before 6.6" in said
    assert reason(docker.errors.APIError("500", explanation="no space left on device")) == "no space left on device"


@pytest.mark.parametrize("engine", ["Podman", "Docker"])
def test_a_rootless_engine_on_cgroup_v1_cannot_run_systemd_and_says_why(engine: str) -> None:
    """Seen with rootless Podman 4.3 here: systemd exits at once with "Failed to create
    /init.scope control group: Permission denied"; v1 has no delegation to a user."""
    setup = cgroup_setup(1, "1.41", engine, "4.3.1", rootless=True)
    assert setup.blocked.startswith(f"rootless {engine} on cgroup v1")
    assert "Permission denied" in setup.blocked and "cgroup v2" in setup.blocked
    assert not setup.options
    assert not cgroup_setup(2, "1.41", "Podman", "4.3.1", rootless=True).blocked  # v2 delegates
