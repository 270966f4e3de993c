"""The target interface: everything a build needs from a place that builds an image.

A target is opened from the command line's --target, starts, runs a command with
streamed output and a timeout, takes files, restarts, exports its filesystem as a tar
stream and stops; a kept one is attached to again, and what a dead build left on one is
released. What differs between targets is said by capability flags, never by type
checks outside engine/targets/. A target knows nothing of customizers or distributors;
the build drives it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from engine.errors import AibLocalError
from engine.targets.endpoint import SshOptions

# (stream, line) with stream "stdout" or "stderr"; lines come without their newline.
OutputSink = Callable[[str, str], None]


class TargetError(AibLocalError):
    """The target failed in a way that is not a command's exit code (exit 1)."""


class CommandTimeout(TargetError):
    """A command outlived its timeout; it has been killed inside the target."""


class Rebooted(TargetError):
    """The machine rebooted during a command (a Shell step's `reboot`): the command ended
    with the machine going down, and the machine is back up. Not a failure; `warning`
    says what did not come back (failed units)."""

    def __init__(self, message: str, warning: str = "") -> None:
        super().__init__(message)
        self.warning = warning


@dataclass(frozen=True)
class Command:
    """A command for a target: argv, run as the build user or as root."""

    argv: list[str]
    as_root: bool = False
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    # (path, content): written before the command runs, removed after it.
    script: tuple[str, bytes] | None = None


@dataclass(frozen=True)
class OpenRequest:
    """What a build asks for when it opens its target."""

    spec: str  # --target: docker | vm | ssh://USER@HOST[:PORT]
    build_id: str
    template: str = ""
    image: str = ""  # the source image's ID, for targets that start from an image
    os_type: str = "Linux"
    vm_size: str = ""
    network: str | None = None
    init: str = "auto"  # containers: systemd as PID 1 where the image has it (auto), systemd, or none
    ssh: SshOptions = field(default_factory=SshOptions)
    progress: Callable[[str], None] = field(default=lambda _message: None, compare=False)  # said as it happens
    within: float = 3600.0  # seconds the build has left, for what the start may have to make
    folder: str = ""  # a folder of the build's own on this machine, for what the target keeps here (a VM's disk)
    generation: str = "V1"  # VMs: the source's hyperVGeneration (V2 boots UEFI firmware)
    snapshots: str = ""  # VMs: the store's folder of boot snapshots to restore from and add to ("": boot cold)
    restore: str = ""  # the step cache's key of a kept state to start from instead of the source ("": none)
    store: str = ""  # the store's folder (where kept states of the step cache live)


@dataclass(frozen=True)
class OwnSource:
    """A target that is its own source (a host the user runs): how the build records it."""

    record: dict[str, str]
    description: str


class KeptStates(ABC):
    """Where a kind of target keeps machine states for the step cache (engine.step_cache):
    the states themselves, by key; the store keeps what they are."""

    kind: ClassVar[str] = ""
    # Seconds of customizer work since the last kept point that make keeping worth its cost.
    keep_after: ClassVar[float] = 2.0
    # What starting from a kept state means, said once to a build that does.
    fidelity: ClassVar[str] = ""

    def identity(self) -> str:
        """What, besides the source and the settings, makes a kept state of this kind
        (a VM's: QEMU's version); part of every key."""
        return ""

    @abstractmethod
    def present(self) -> dict[str, float]:
        """The keys of the states that exist, with when each was made (epoch seconds)."""

    @abstractmethod
    def remove(self, key: str) -> bool:
        """Remove KEY's state (gone already: True); False when a build is using it."""


class Target(ABC):
    """A running machine (container, VM, host) that an image is built on."""

    kind: ClassVar[str] = "target"
    build_user: str = "root"
    # Capabilities: what the build may ask of this kind of target.
    starts_from_image: ClassVar[bool] = True  # False: the machine is its own source
    source_kind: ClassVar[str] = "image"  # what it starts from: a local Docker image, or a "disk" file
    export_needs_stop: ClassVar[bool] = True  # a quiescent disk to export needs the machine stopped
    captures_disk: ClassVar[bool] = False  # captured as its whole disk (disk()), which needs it stopped

    @classmethod
    @abstractmethod
    def open(cls, request: OpenRequest) -> Target:
        """A target for a new build (not started yet)."""

    @classmethod
    @abstractmethod
    def attach(cls, info: dict[str, Any], build_id: str, *, within: float | None = None) -> Target:
        """The target an earlier build kept (or left), connected again, from its `info()`."""

    @classmethod  # noqa: B027 - a target named by its kind alone checks nothing
    def check_spec(cls, spec: str) -> None:
        """Refuse a malformed --target before anything starts (UsageError)."""

    @classmethod
    def own_source(cls, spec: str) -> OwnSource | None:
        """For targets that are their own source image; None for those started from one."""
        return None

    @classmethod
    def release(cls, info: dict[str, Any], build_id: str) -> list[str]:
        """Stop what a dead build left running on its target (containers are found by label
        elsewhere); a description of each thing stopped."""
        return []

    @classmethod
    def remove_kept(cls, info: dict[str, Any], build_id: str) -> list[str]:
        """Remove the target a build kept (`clean`), from its `info()`; what was removed.
        Containers are removed by label elsewhere; a host the user runs stays."""
        return []

    @property
    def name(self) -> str:
        """What names this target among others of its kind (a container name, a host)."""
        return self.kind

    @abstractmethod
    def start(self) -> None:
        """Create and start the machine (or connect to it)."""

    @abstractmethod
    def run(self, command: Command, sink: OutputSink, timeout: float | None) -> int:
        """Run `command`, streaming its output to `sink`; return its exit code.

        On timeout the process and its children are killed inside the target and
        CommandTimeout is raised.
        """

    @abstractmethod
    def put(self, data: bytes, destination: str, *, mode: int = 0o644, owner: str | None = None) -> None:
        """Write `data` to the absolute path `destination` (its parent must exist)."""

    @abstractmethod
    def restart(self, command: str, timeout: float, report: Callable[[str], None]) -> None:
        """Restart the machine with `command` and wait until it is back, within `timeout`.

        Every wait is bounded by `timeout`; `report` is told each phase (restarting,
        down, back up) as it begins.
        """

    @abstractmethod
    def export(self) -> Iterator[bytes]:
        """The machine's root filesystem as a tar stream."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the machine, keeping its disk (it is captured after this)."""

    def halt(self) -> None:  # noqa: B027 - a target committed as it runs has nothing to stop
        """Stop the machine at once, for a commit of its filesystem as it stands: nothing runs
        on to change it, and the commit needs no pause (a power cut, not a shutdown). For a
        capture that needs no clean stop; the default leaves the machine as it is."""

    @abstractmethod
    def remove(self) -> None:
        """Remove the machine and everything started for it; safe to call twice."""

    def detach(self) -> None:  # noqa: B027 - a target without connections has nothing to close
        """Let go of a machine that is kept: close this process's connections to it (step
        runners, links), leaving it as it is for `shell`, `rerun` and `clean`."""

    def describe(self) -> str:
        return self.kind

    os_type: str = "Linux"
    notes: list[str]  # said once the target has started
    warnings: list[str]  # said as warnings (a degraded boot)

    def commit(self, repository: str, tag: str, base_image: str) -> str:
        """A local image of the machine's filesystem; returns its ID."""
        raise TargetError(f"a {self.kind} target cannot be captured as an image")

    @classmethod
    def kept_states(cls, store: Path) -> KeptStates | None:
        """Where this kind keeps states for the step cache of the store at `store`; None
        when it cannot keep a machine's state (a host the user runs)."""
        return None

    def keep_state(self, states: KeptStates, key: str, base_image: str) -> int:
        """Keep the machine's state as it is now under KEY (it goes on running); its size
        in bytes. `base_image` is the source's, whose configuration an image keeps."""
        raise TargetError(f"a {self.kind} target cannot keep its state")

    def disk(self) -> Path | None:
        """The whole disk of the stopped machine (partition table, bootloader), for targets
        captured as a disk; None for those captured as a filesystem or an image."""
        return None

    def console(self) -> Path | None:
        """The file the machine's serial console is written to, for those that have one."""
        return None

    def info(self) -> dict[str, Any]:
        """What is needed to find this target again (kept builds, rerun, shell)."""
        return {"kind": self.kind}

    def interactive_shell(self) -> int:
        """An interactive shell on the target, on the user's terminal; its exit code."""
        raise TargetError(f"a {self.kind} target has no interactive shell")

    def prepare_capture(self) -> None:  # noqa: B027 - most targets have nothing to undo
        """Undo what the target set up for the build (users, sudo), before capture."""
