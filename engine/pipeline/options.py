"""What a build is asked to do: the command line's options, where it continues an
earlier build, its deadline, and what it ends with."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from distributors.base import RunOutput
from engine.errors import AibLocalError
from engine.fetch import STALL_TIMEOUT
from engine.records import BuildRecord, StoredOptions
from engine.step_cache import DEFAULT_LIMIT
from engine.store import DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION
from engine.targets.endpoint import SshOptions

LOG_NAME = "customization.log"


@dataclass
class BuildOptions:
    """What the command line says about a build (the template says the rest)."""

    target: str = "docker"  # docker | ssh://USER@HOST[:PORT]
    ssh: SshOptions = field(default_factory=SshOptions)
    store: Path | None = None
    catalogue: Path | None = None
    network: str | None = None
    init: str = "auto"  # containers: auto | systemd | none
    on_error: str | None = None  # cleanup | abort | ask; None: the template's errorHandling
    deprovision: str = "generic"  # for images without waagent: generic | skip
    powershell_strict: bool = False
    secrets: dict[str, str] = field(default_factory=dict)
    checkpoint: bool = False  # keep the state after every customizer in the step cache, not only those worth it
    cache: bool = True  # the step cache: start from the longest kept prefix, keep states worth keeping
    cache_from: str | None = None  # run again from this customizer (its name, customize[N] or N)
    cache_limit: int = DEFAULT_LIMIT  # bytes of kept states in the store before the least recently used go
    boot_test: bool = False  # VM builds: boot what was made in a throw-away VM as a last phase
    vm_boot: str = "snapshot"  # VM builds: restore the store's snapshot of the booted source (snapshot), or cold
    validate_disk: Path | None = None  # `boot --validate`: only the template's validators, run in this disk booted
    generation: str | None = None  # the source's Hyper-V generation, when the template's source does not say it
    # --debug: asked before each customizer; answers continue | shell | rerun | skip | abort.
    pause: Callable[[str], str] | None = None
    # --on-error ask: asked whether to keep the target of a failed build (None: no terminal).
    confirm_keep: Callable[[str], bool] | None = None
    allow_any_destination: bool = False
    download_timeout: float = STALL_TIMEOUT  # seconds without data before a download attempt fails
    subscription: str = DEFAULT_SUBSCRIPTION
    resource_group: str = DEFAULT_RESOURCE_GROUP

    def stored(self) -> StoredOptions:
        """The options a rerun or resume reuses (never the secrets)."""
        return StoredOptions(
            target=self.target,
            network=self.network,
            init=self.init,
            deprovision=self.deprovision,
            allow_any_destination=self.allow_any_destination,
            powershell_strict=self.powershell_strict,
            subscription=self.subscription,
            resource_group=self.resource_group,
            catalogue=str(self.catalogue) if self.catalogue else None,
            checkpoint=self.checkpoint,
        )

    def with_stored(self, saved: StoredOptions) -> BuildOptions:
        """An earlier build's options, with what the command line gives now on top."""
        return replace(
            self,
            target=saved.target,
            network=self.network or saved.network,
            init=self.init if self.init != "auto" else saved.init,
            deprovision=saved.deprovision,
            allow_any_destination=self.allow_any_destination or saved.allow_any_destination,
            powershell_strict=self.powershell_strict or saved.powershell_strict,
            subscription=saved.subscription,
            resource_group=saved.resource_group,
            catalogue=self.catalogue or (Path(saved.catalogue) if saved.catalogue else None),
            checkpoint=self.checkpoint or saved.checkpoint,
        )


@dataclass
class Continuation:
    """Where a rerun picks up an earlier build: in the target it kept."""

    record: BuildRecord
    first: int = 0  # the first customizer to run
    only: bool = False  # run just that one
    finish: bool = True  # then deprovision, capture and distribute

    def selects(self, index: int) -> bool:
        """Whether the customizer at `index` runs in this continuation."""
        return index == self.first if self.only else index >= self.first


@dataclass
class BuildResult:
    build_id: str
    status: str  # Succeeded | PartiallySucceeded | Failed | Canceled
    run_outputs: list[RunOutput]
    log_path: Path
    kept: bool = False
    error: AibLocalError | None = None


class Deadline:
    """buildTimeoutInMinutes, threaded through every step."""

    def __init__(self, minutes: int) -> None:
        self.minutes = minutes
        self.end = time.monotonic() + minutes * 60

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= 0


def new_build_id(name: str) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:32] or "build"
    return f"{stem}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
