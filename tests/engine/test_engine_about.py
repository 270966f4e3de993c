"""What aib-local asks of each kind of engine, from what the engine said it is."""

from __future__ import annotations

import pytest

from engine.images import ROOTLESS_PODMAN_OOM_SCORE_ADJ, EngineAbout


def about(kind: str, rootless: bool, cgroup_version: int) -> EngineAbout:
    return EngineAbout(kind, "1", "1.41", "unix:///x.sock", rootless, cgroup_version)


@pytest.mark.parametrize("cgroup_version", [1, 2])
def test_rootless_podman_containers_ask_for_an_oom_score_adj_its_user_services_may_set(cgroup_version: int) -> None:
    # Podman 4's Docker API would set 0, below the 200 of systemd's user services.
    defaults = about("Podman", True, cgroup_version).container_defaults
    assert defaults == {"oom_score_adj": ROOTLESS_PODMAN_OOM_SCORE_ADJ} and ROOTLESS_PODMAN_OOM_SCORE_ADJ >= 200


@pytest.mark.parametrize(("kind", "rootless"), [("Podman", False), ("Docker", False), ("Docker", True)])
def test_other_engines_get_their_own_defaults(kind: str, rootless: bool) -> None:
    assert about(kind, rootless, 2).container_defaults == {}


def test_only_rootless_on_cgroup_v1_lacks_cgroups() -> None:
    assert not about("Podman", True, 1).has_cgroups
    assert not about("Docker", True, 1).has_cgroups
    assert about("Podman", True, 2).has_cgroups and about("Docker", False, 1).has_cgroups
