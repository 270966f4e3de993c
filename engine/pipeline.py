"""The build pipeline: phases as data, one deadline, teardown in `finally`.

fetch inputs → resolve source → start target → plan → customize → deprovision →
capture → distribute → stop. Every phase runs under the deadline that
buildTimeoutInMinutes sets; the target is removed at the end unless the user keeps it
(--on-error abort, or the template's errorHandling.onCustomizerError: abort).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import customizers
import distributors
from customizers.base import (
    SCRIPT,
    Customizer,
    PlanContext,
    PlanError,
    PutFile,
    Restart,
    RunScript,
    Step,
    UntilDone,
)
from distributors.base import DistributeContext, DistributeError, Distributor, FilesystemWriter, RunOutput
from engine import exitcodes, failpoints, journal, signals
from engine import model as m
from engine.catalogue import Catalogue
from engine.errors import (
    AibLocalError,
    BuildFailed,
    BuildTimeout,
    EnvironmentProblem,
    Interrupted,
    UsageError,
)
from engine.events import BuildLog, Events, Redactor, Reporter, utc_now
from engine.fetch import STALL_TIMEOUT, Fetched, FetchError, fetch, redact_uri
from engine.gallery import VERSION_TYPE, Galleries
from engine.journal import Journal
from engine.store import DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION, Store
from engine.targets import docker as docker_target
from engine.targets.base import Command, CommandTimeout, Target, TargetError
from engine.targets.endpoint import SshOptions, parse_target
from engine.validation import LoadedTemplate

TEMPLATE_TYPE = "Microsoft.VirtualMachineImages/imageTemplates"
OVERRIDE_LINUX = "/tmp/DeprovisioningScript.sh"
OVERRIDE_WINDOWS = "C:/DeprovisioningScript.ps1"
MISSING_WINDOWS_SCRIPT = (
    "Deprovisioning script [c:\\DeprovisioningScript.ps1] could not be found. Image build may fail or the VM "
    "created from the Image may not boot. Please make sure the deprovisioning script is not accidentally "
    "deleted by a Customizer in the Template."
)
WAAGENT_DEPROVISION = """WAAGENT=/usr/sbin/waagent
waagent -version 1> /dev/null 2>&1
if [ $? -eq 0 ]; then
  WAAGENT=waagent
fi
$WAAGENT -force -deprovision+user && export HISTSIZE=0 && sync
"""
FIND_WAAGENT = "command -v waagent >/dev/null 2>&1 || [ -x /usr/sbin/waagent ]"
# What waagent's deprovision does that matters for a container image, for images without it.
GENERIC_DEPROVISION = r"""
echo "aib-local generic deprovision (the image has no waagent)"
if [ -f /etc/machine-id ]; then : > /etc/machine-id; echo "cleared /etc/machine-id"; fi
rm -f /var/lib/dbus/machine-id
for key in /etc/ssh/ssh_host_*; do [ -e "$key" ] && rm -f "$key" && echo "removed $key"; done
if [ -d /var/log ]; then
  find /var/log -type f | while read -r f; do : > "$f"; done
  echo "emptied the files under /var/log"
fi
rm -f /root/.bash_history /root/.ash_history /root/.sh_history /home/*/.bash_history /home/*/.ash_history
rm -rf /var/lib/dhcp/*.leases /var/cache/apt/archives/*.deb 2>/dev/null || true
echo "cleared shell history"
export HISTSIZE=0
sync
"""
LOG_NAME = "customization.log"


@dataclass
class BuildOptions:
    """What the command line says about a build (the template says the rest)."""

    target: str = "docker"  # docker | ssh://USER@HOST[:PORT]
    ssh: SshOptions = field(default_factory=SshOptions)
    store: Path | None = None
    catalogue: Path | None = None
    network: str | None = None
    on_error: str | None = None  # cleanup | abort; None: the template's errorHandling
    deprovision: str = "generic"  # for images without waagent: generic | skip
    powershell_strict: bool = False
    secrets: dict[str, str] = field(default_factory=dict)
    checkpoint: bool = False  # Docker: commit the container after each good customizer
    # --debug: asked before each customizer; answers continue | shell | rerun | skip | abort.
    pause: Callable[[str], str] | None = None
    # --on-error ask: asked whether to keep the target of a failed build (None: no terminal).
    confirm_keep: Callable[[str], bool] | None = None
    allow_any_destination: bool = False
    download_timeout: float = STALL_TIMEOUT  # seconds without data before a download attempt fails
    subscription: str = DEFAULT_SUBSCRIPTION
    resource_group: str = DEFAULT_RESOURCE_GROUP

    def record(self) -> dict[str, Any]:
        """The options a rerun or resume reuses (never the secrets)."""
        return {
            "target": self.target,
            "network": self.network,
            "deprovision": self.deprovision,
            "allowAnyDestination": self.allow_any_destination,
            "powershellStrict": self.powershell_strict,
            "subscription": self.subscription,
            "resourceGroup": self.resource_group,
            "catalogue": str(self.catalogue) if self.catalogue else None,
            "checkpoint": self.checkpoint,
        }


@dataclass
class Continuation:
    """Where a build picks up an earlier one: its kept target (rerun) or a checkpoint (resume)."""

    record: dict[str, Any]
    first: int = 0  # the first customizer to run
    only: bool = False  # run just that one
    finish: bool = True  # then deprovision, capture and distribute
    image: str | None = None  # resume: start a fresh container from this checkpoint image
    resume: bool = False  # pick the checkpoint (and `first`) once the inputs are fetched

    @property
    def attach(self) -> bool:
        return self.image is None and not self.resume


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


@dataclass
class _State:
    target: Target | None = None
    image_ref: str = ""
    image_id: str = ""
    source_record: dict[str, Any] = field(default_factory=dict)
    os_type: str = "Linux"
    fetched: dict[str, Path] = field(default_factory=dict)
    plans: list[tuple[str, list[Step]]] = field(default_factory=list)
    generalized: bool = False
    run_outputs: list[RunOutput] = field(default_factory=list)
    has_pwsh: bool = False


def new_build_id(name: str) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:32] or "build"
    return f"{stem}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def recipe_hint(image: str) -> str:
    """The command that makes a missing image locally."""
    recipe = Path(__file__).resolve().parents[1] / "fixtures" / "images" / "build-image.sh"
    if image in ("debian:12", "debian:bookworm", "aib-local/sshd:12"):
        return f"make it locally: {recipe if recipe.exists() else 'fixtures/images/build-image.sh'} {image}"
    return (
        f"make it locally (debootstrap/rootfs tarball | docker import - {image}), "
        "or map the source URN to an image you have with --catalogue FILE"
    )


class Build:
    """One build of one template."""

    def __init__(
        self,
        loaded: LoadedTemplate,
        options: BuildOptions,
        store: Store,
        reporter: Reporter,
        *,
        build_id: str | None = None,
        continuation: Continuation | None = None,
    ) -> None:
        self.loaded = loaded
        self.continuation = continuation
        self.keep_target = False
        self.cancelled = False
        self.completed: list[int] = []
        self.checkpoints: dict[str, str] = {}
        self.fingerprints: list[str] = []
        self.options = options
        self.store = store
        self.props = loaded.properties
        self.build_id = build_id or new_build_id(loaded.name)
        self.dir = store.build_dir(self.build_id)
        self.log = BuildLog(self.dir / LOG_NAME, self.build_id)
        self.redact = Redactor(options.secrets.values())
        self.events = Events(self.log, reporter, redact=self.redact)
        self.deadline = Deadline(self.props.timeout_minutes)
        self.state = _State(os_type=loaded.os_type)
        self.template_id = (
            f"/subscriptions/{options.subscription}/resourceGroups/{options.resource_group}"
            f"/providers/Microsoft.VirtualMachineImages/imageTemplates/{loaded.name}"
        )
        self._client: docker_target.Client | None = None
        self.journal = Journal(store, self.build_id, self.template_id)
        self.customizers: list[tuple[str, Customizer[Any]]] = [
            (self._step_name(i, c), customizers.create(c)) for i, c in enumerate(self.props.customize)
        ]
        self.distributors: list[Distributor[Any]] = []
        self.current = "validate"
        self.started_at = utc_now()

    @staticmethod
    def _step_name(index: int, section: Any) -> str:
        return f"customize[{index}] {section.name or section.type}"

    @property
    def on_error(self) -> str:
        if self.options.on_error:
            return self.options.on_error
        handling = self.props.error_handling
        return handling.on_customizer_error if handling else "cleanup"

    # --- the loop ------------------------------------------------------------------

    def phases(self) -> list[tuple[str, str, Callable[[], None]]]:
        """(name, AIB runSubState, action): the build, as data."""
        going_on = self.continuation
        phases: list[tuple[str, str, Callable[[], None]]] = [("fetch", "Queued", self.fetch_inputs)]
        if going_on is not None and going_on.attach:
            phases.append(("attach-target", "Building", self.attach_target))
        else:
            phases += [
                ("resolve-source", "Building", self.resolve_source),
                ("start-target", "Building", self.start_target),
            ]
        phases += [("plan", "Building", self.plan), ("customize", "Customizing", self.customize)]
        if going_on is None or going_on.finish:
            phases += [
                ("deprovision", "Customizing", self.deprovision),
                ("capture", "Distributing", self.capture),
                ("distribute", "Distributing", self.distribute),
            ]
        return phases

    def run(self) -> BuildResult:
        started = time.monotonic()
        try:
            self._claim()
        except UsageError as exc:
            self.log.close()
            return BuildResult(self.build_id, "Failed", [], self.log.path, False, exc)
        error: AibLocalError | None = None
        try:
            self.events.emit(
                "build-started",
                buildId=self.build_id,
                template=str(self.loaded.path),
                templateId=self.template_id,
                target=self.options.target,
                logPath=str(self.log.path),
                timeoutMinutes=self.props.timeout_minutes,
            )
            for finding in self.loaded.findings:
                if finding.severity == "warning":
                    self.events.warning(finding.describe())
            self._record_build("running")
            self._record_template("Running", "Queued", "")
            sub_state = "Queued"
            for name, phase_state, action in self.phases():
                self.current = name
                self._check_deadline()
                if phase_state != sub_state:  # AIB's runSubState changes a few times a build
                    sub_state = phase_state
                    self._record_template("Running", sub_state, "")
                failpoints.hit(f"phase:{name}")
                action()
        except KeyboardInterrupt:
            error = Interrupted(f"interrupted during {self.current}")
        except AibLocalError as exc:
            error = Interrupted(f"interrupted during {self.current}") if self.cancelled else exc
        except BaseException as exc:  # a defect: still nothing left behind (a rerun's target stays)
            with signals.held():
                kept = self._teardown(Interrupted("stopped by an internal error"))
                self._discard_pending()
                self._finish(BuildFailed(f"internal error: {exc!r}", step=self.current), kept, started)
            raise
        with signals.held():  # from here on, a signal cannot break into the cleanup
            failpoints.hit("teardown")
            kept = self._teardown(error)
            self._discard_pending()
            error = self._finish(error, kept, started)
        if isinstance(error, BuildFailed) and error.log_path is None:
            error.log_path = self.log.path
        if error is not None:
            error.message = self.redact(error.message)
        return BuildResult(self.build_id, self._status(error), self.state.run_outputs, self.log.path, kept, error)

    def _finish(self, error: AibLocalError | None, kept: bool, started: float) -> AibLocalError | None:
        """Record the outcome, report it, close the log and the journal entry."""
        status = self._status(error)
        message = "" if error is None else str(error)
        try:
            self._record_template(status, None, message)
            self._record_build(status.lower(), error=error, kept=kept)
        except AibLocalError as exc:  # the store's disk is full, say: the build's own error comes first
            self.events.warning(f"could not record the outcome: {exc}")
            error = error or exc
        self.events.emit(
            "build-finished",
            buildId=self.build_id,
            status=status,
            duration=round(time.monotonic() - started, 3),
            message=message,
            kept=kept,
            runOutputs=[{"name": o.name, **o.properties()} for o in self.state.run_outputs],
        )
        self.log.close()
        self.journal.close()
        return error

    def _claim(self) -> None:
        """Clear what dead builds left, refuse a second live run of this template, and
        open this build's journal entry (all before anything is made)."""
        # Outside the store lock (reaching a dead build's SSH host may take seconds); two
        # builds sweeping the same dead build at once remove the same things harmlessly.
        removed = journal.sweep(
            self.store,
            self._remove_containers,
            self._remove_images,
            release_host=journal.release_host(self.store, self.events.warning),
        )
        if removed:
            self.events.info("removed what builds that died left: " + ", ".join(removed))
        with self.store.lock():
            going_on = self.continuation
            for other in journal.live_builds(self.store).values():
                if other.get("templateId") == self.template_id and other.get("buildId") != self.build_id:
                    raise UsageError(
                        f"the image template {self.loaded.name} is being built by build {other['buildId']} "
                        f"(pid {journal.owner_pid(other)})",
                        hint="wait for it to end (AIB runs one build of a template at a time), "
                        "or give a copy another 'name'",
                    )
                if going_on is not None and other.get("buildId") == self.build_id:
                    raise UsageError(f"build {self.build_id} is already being rerun by another aib-local")
            self.journal.open()

    def _remove_containers(self, build_id: str, keep: list[str]) -> list[str]:
        try:
            client = self.client()
        except EnvironmentProblem:
            return []  # no engine here now: `aib-local clean` finds them by label later
        return docker_target.remove_labelled(client, build_id, keep)[0]

    def _remove_images(self, refs: list[str]) -> list[str]:
        try:
            return docker_target.remove_images(refs)
        except (EnvironmentProblem, TargetError) as exc:
            self.events.warning(f"could not remove {', '.join(refs)}: {exc}")
            return []

    def _discard_pending(self) -> None:
        """Images and files this build began but no record took (it was interrupted or failed)."""
        for item in self.journal.discard(self._remove_images):
            self.events.info(f"removed {item}: the build did not finish it")

    def cancel(self) -> None:
        """Stop the build from another thread: its target goes, and the build ends Canceled."""
        self.cancelled = True
        target = self.state.target
        if target is not None:
            with contextlib.suppress(AibLocalError):
                target.remove()

    def _status(self, error: AibLocalError | None) -> str:
        if isinstance(error, Interrupted):
            return "Canceled"
        if error is None:
            return "Succeeded"
        ok = [o for o in self.state.run_outputs if o.provisioning_state == "Succeeded"]
        return "PartiallySucceeded" if ok and self.current == "distribute" else "Failed"

    def _check_deadline(self) -> None:
        if self.deadline.expired():
            raise BuildTimeout(
                f"buildTimeoutInMinutes ({self.deadline.minutes}) expired during {self.current}",
                step=self.current,
            )

    def _teardown(self, error: AibLocalError | None) -> bool:
        target = self.state.target
        if target is None:
            return False
        failed = error is not None and not isinstance(error, Interrupted)
        rerun = self.continuation is not None and self.continuation.attach
        if failed and self.on_error == "ask":
            ask = self.options.confirm_keep
            self.keep_target = ask is not None and ask(f"{error}\nKeep {target.describe()} for inspection?")
        keep = self.keep_target or (failed and (self.on_error == "abort" or rerun))
        # A rerun never removes the kept target it came to, unless it finished the build.
        finishing = self.continuation is not None and self.continuation.finish and error is None
        keep = keep or (rerun and not finishing)
        if keep:
            why = "on-error abort" if failed and self.on_error == "abort" else "kept"
            self.events.info(
                f"keeping {target.describe()} ({why}). Next:\n"
                f"  aib-local shell {self.build_id}      # a shell in it\n"
                f"  aib-local logs {self.build_id}       # its customization.log\n"
                f"  aib-local rerun {self.build_id} [--from NAME | --only NAME] [--finish]"
                "   # after editing the template or its scripts\n"
                f"  aib-local clean --build {self.build_id}   # remove it",
                keptBuildId=self.build_id,
            )
            return True
        try:
            target.remove()
        except AibLocalError as exc:
            self.events.warning(f"could not remove {target.describe()}: {exc}")
        return False

    # --- phases --------------------------------------------------------------------

    def fetch_inputs(self) -> None:
        """Fetch and verify every referenced file before anything starts."""
        inputs = [(name, i) for name, c in self.customizers for i in c.inputs()]
        digests: dict[str, str] = {}
        for index, (name, item) in enumerate(inputs):
            if item.uri in self.state.fetched:
                continue
            started = time.monotonic()
            try:
                meter = self.events.meter(step="fetch", label=f"download {redact_uri(item.uri)}")
                got: Fetched = fetch(
                    item.uri,
                    self.loaded.base_dir,
                    self.dir / "inputs" / f"{index}",
                    expected_sha256=item.sha256,
                    progress=meter.add,
                    retrying=lambda message: self.events.warning(message, step="fetch"),
                    deadline=self.deadline.end,
                    stall_timeout=self.options.download_timeout,
                )
            except FetchError as exc:
                raise BuildFailed(str(exc.message), step=f"fetch ({name})", hint=exc.hint) from None
            self.state.fetched[item.uri] = got.path
            verified = "sha256 verified" if item.sha256 else f"sha256 {got.sha256} (no checksum given)"
            self.events.info(
                f"fetched {redact_uri(item.uri)} for {name}: {got.size} bytes, {verified}",
                step="fetch",
                durationSeconds=round(time.monotonic() - started, 3),
            )
            if got.size > 20 * 1024 * 1024 and any(c.type_name == "File" for n, c in self.customizers if n == name):
                self.events.warning(f"{name}: {got.size} bytes is over AIB's 20 MB File customizer limit")
            digests[item.uri] = got.sha256
        self.fingerprints = [
            hashlib.sha256(
                (
                    c.section.model_dump_json(by_alias=True) + "".join(digests.get(i.uri, "") for i in c.inputs())
                ).encode()
            ).hexdigest()
            for _, c in self.customizers
        ]
        if self.continuation is not None and self.continuation.resume:
            self._choose_checkpoint(self.continuation)

    def _choose_checkpoint(self, going_on: Continuation) -> None:
        """Resume from the last checkpoint whose customizers are unchanged since it was taken."""
        record = going_on.record
        before = record.get("fingerprints") or []
        usable = [
            int(index)
            for index in (record.get("checkpoints") or {})
            if before[: int(index) + 1] == self.fingerprints[: int(index) + 1]
        ]
        if not usable:
            self.events.warning(
                f"build {record['buildId']} has no checkpoint that matches the template as it is now: "
                "building from the start"
            )
            self.continuation = None
            return
        last = max(usable)
        going_on.first, going_on.image = last + 1, record["checkpoints"][str(last)]
        self.completed = list(range(last + 1))
        self.checkpoints = {k: v for k, v in record["checkpoints"].items() if int(k) <= last}

    @property
    def over_ssh(self) -> bool:
        return self.options.target != "docker"

    def client(self) -> docker_target.Client:
        """The Docker engine, connected on first use (SSH builds may never need it)."""
        if self._client is None:
            self._client = docker_target.connect()
        return self._client

    def resolve_source(self) -> None:
        self._check_distributors()
        source = self.props.source
        if self.over_ssh:
            endpoint = parse_target(self.options.target)
            self.state.source_record = {"type": "SshHost", "host": str(endpoint), "declared": source.type}
            self.events.info(
                f"the build runs on the SSH host {endpoint}: it is the source image, "
                f"properties.source ({source.type}) is recorded only"
            )
            return
        client = self.client()
        if self.continuation is not None and self.continuation.image is not None:
            self.state.source_record = dict(self.continuation.record.get("source") or {})
            self.state.image_ref = self.continuation.image
            self.events.info(
                f"resuming build {self.continuation.record['buildId']} from its checkpoint before "
                f"customize[{self.continuation.first}]"
            )
        elif isinstance(source, m.PlatformImageSource):
            ref = Catalogue.load(self.options.catalogue).resolve(source)
            if ref is None:
                raise EnvironmentProblem(
                    f"no catalogue entry for {source.urn}",
                    hint=f'map it to a local image with --catalogue FILE: {{"{source.urn}": "IMAGE"}}',
                )
            self.state.image_ref = ref
            self.state.source_record = {"type": "PlatformImage", "urn": source.urn, "image": ref}
            if re.match(r"^\d+\.\d+\.\d+$", source.version):
                self.state.source_record["version"] = source.version
        else:
            record, resource_id = self._stored_source(source)
            local = record.get("aibLocal") or {}
            ref = str(local.get("dockerImage", ""))
            os_disk = (record.get("properties") or {}).get("storageProfile", {}).get("osDisk", {})
            self.state.os_type = os_disk.get("osType") or local.get("osType") or self.state.os_type
            self.state.image_ref = ref
            self.state.source_record = {"type": source.type, "id": resource_id, "image": ref}
            if record.get("type") == VERSION_TYPE:
                self.state.source_record["version"] = record["name"]
        self.state.image_id = docker_target.ensure_image(
            client, self.state.image_ref, recipe_hint(self.state.image_ref)
        )
        self.state.source_record["exactVersion"] = self.state.image_id
        self.events.info(
            f"source {self.state.source_record.get('urn') or self.state.source_record.get('id')}"
            f" -> image {self.state.image_ref} ({self.state.image_id[:19]})"
        )

    def _check_distributors(self) -> None:
        self.distributors = []
        for index, section in enumerate(self.props.distribute):
            try:
                distributor = distributors.lookup(section.type)(section)
            except KeyError as exc:
                raise BuildFailed(str(exc.args[0]), step=f"distribute[{index}] {section.run_output_name}") from None
            try:
                distributor.check(self.store)
            except DistributeError as exc:
                raise UsageError(f"properties.distribute[{index}]: {exc}", hint=exc.hint) from None
            self.distributors.append(distributor)

    def attach_target(self) -> None:
        """Rerun: connect to the kept target of the earlier build."""
        assert self.continuation is not None
        record = self.continuation.record
        info = record.get("target") or {}
        if not record.get("kept") or not info:
            raise UsageError(
                f"build {self.build_id} kept no target to rerun on",
                hint="keep one with --on-error abort (or --debug, abort), or use build --resume with --checkpoint",
            )
        self.state.source_record = dict(record.get("source") or {})
        self.state.image_id = str(info.get("image", ""))
        try:
            target: Target
            if info["kind"] == "docker":
                target = docker_target.DockerTarget.attach(self.client(), info)
            else:
                from engine.targets.ssh import SshTarget

                target = SshTarget.attach(info, self.build_id)
        except TargetError as exc:
            raise UsageError(str(exc), hint=f"start again with: aib-local build {self.loaded.path}") from None
        self.state.target = target
        self.journal.keep(target.name if isinstance(target, docker_target.DockerTarget) else target.describe())
        self.state.os_type = target.os_type if info["kind"] != "docker" else self.state.os_type
        self.events.info(f"attached to the kept {target.describe()}", step="attach-target")
        if self.state.os_type == "Linux":
            self.state.has_pwsh = self._run_quiet("command -v pwsh >/dev/null 2>&1") == 0
        if self.continuation.finish:
            self._check_distributors()

    def _stored_source(self, source: m.Source) -> tuple[dict[str, Any], str]:
        """The store record of a ManagedImage or SharedImageVersion source, and its ID."""
        if isinstance(source, m.ManagedImageSource):
            resource_id = source.image_id
            record = self.store.get(resource_id)
        else:
            resource_id = getattr(source, "image_version_id", "")
            record = Galleries(self.store).resolve(resource_id)
            if record is not None and str(record["id"]) != resource_id:
                self.events.info(f"{resource_id} resolves to {record['id']}")
                resource_id = str(record["id"])
        if record is None:
            raise UsageError(
                f"properties.source: {resource_id} is not in the local store {self.store.root}",
                hint="build the template that distributes it first, or pass the right --store",
            )
        return record, resource_id

    def start_target(self) -> None:
        target: Target
        if self.over_ssh:
            from engine.targets.ssh import SshTarget  # paramiko is imported only for SSH builds

            target = SshTarget(parse_target(self.options.target), self.options.ssh, build_id=self.build_id)
        else:
            target = docker_target.DockerTarget(
                self.client(),
                self.state.image_id,
                build_id=self.build_id,
                template=self.loaded.name,
                vm_size=self.props.vm_profile.vm_size,
                network=self.options.network,
            )
        self.state.target = target
        try:
            self._step("start-target", target.start, detail=target.describe())
        finally:
            for note in target.notes:
                self.events.info(note, step="start-target")
        self._record_build("running")
        if self.over_ssh:
            self.state.os_type = target.os_type
        if self.state.os_type == "Linux":
            self.state.has_pwsh = self._run_quiet("command -v pwsh >/dev/null 2>&1") == 0
        else:
            self._place_windows_deprovision()

    def plan(self) -> None:
        ctx = PlanContext(self.state.os_type, self.state.fetched, self.state.has_pwsh, self.options.powershell_strict)
        plans = []
        for name, customizer in self.customizers:
            try:
                plans.append((name, customizer.plan(ctx)))
            except PlanError as exc:
                raise BuildFailed(f"{name} cannot run here: {exc}", step=name) from None
        self.state.plans = plans

    def _selected(self, index: int) -> bool:
        going_on = self.continuation
        if going_on is None:
            return True
        return index == going_on.first if going_on.only else index >= going_on.first

    def customize(self) -> None:
        previous: int | None = None
        for index, (name, steps) in enumerate(self.state.plans):
            if not self._selected(index):
                continue
            self.current = name
            if self.options.pause is not None and not self._pause(name, previous):
                self.events.info(f"{name} skipped (--debug)", step=name)
                continue
            for number, step in enumerate(steps):
                self._execute(name, index, number, step)
            self._customizer_done(index, name)
            previous = index

    def _pause(self, name: str, previous: int | None) -> bool:
        """--debug: ask before `name` until the user continues (True) or skips (False)."""
        assert self.options.pause is not None
        while True:
            answer = self.options.pause(name)
            if answer == "continue":
                return True
            if answer == "skip":
                return False
            if answer == "shell":
                self._target().interactive_shell()
            elif answer == "rerun" and previous is not None:
                before, steps = self.state.plans[previous]
                for number, step in enumerate(steps):
                    self._execute(before, previous, number, step)
            elif answer == "rerun":
                self.events.info("there is no previous customizer to rerun", step=name)
            elif answer == "abort":
                self.keep_target = True
                raise BuildFailed(f"aborted before {name} (--debug); the target is kept", step=name)

    def _customizer_done(self, index: int, name: str) -> None:
        self.completed.append(index)
        target = self.state.target
        if self.options.checkpoint and isinstance(target, docker_target.DockerTarget):
            repository = f"aib-local/checkpoints/{self.build_id}"
            ref = f"{repository}:{index}"
            self.journal.pending("images", ref)
            target.commit(repository, str(index), self.state.image_id)
            # By tag, so that cleaning up untags it even while later checkpoints build on it.
            self.checkpoints[str(index)] = ref
            self.events.info(f"checkpoint after {name}: {ref}", step=name)
            self._record_build("running")  # so that --resume finds it even if this process dies
            self.journal.settled("images", ref)

    def deprovision(self) -> None:
        self.current = "deprovision"
        if self.state.os_type == "Windows":
            self._deprovision_windows()
            return
        name = "deprovision"
        script: bytes | None = None
        # One probe: 10 = a customizer wrote the override, 11 = waagent is there, else neither.
        found = self._run_quiet(f"test -f {OVERRIDE_LINUX} && exit 10; {FIND_WAAGENT} && exit 11; exit 0")
        if found == 10:
            self.events.info(f"running the deprovision override {OVERRIDE_LINUX} written by a customizer", step=name)
            self._run_checked(name, ["/bin/sh", OVERRIDE_LINUX], as_root=True, detail=OVERRIDE_LINUX)
            self.state.generalized = True
        elif found == 11:
            script, detail = WAAGENT_DEPROVISION.encode(), "waagent -force -deprovision+user"
        elif self.options.deprovision == "generic":
            self.events.warning(
                "the image has no waagent: running aib-local's generic deprovision instead "
                "(clears machine-id, SSH host keys, logs, shell history); --deprovision skip turns it off",
                step=name,
            )
            script, detail = GENERIC_DEPROVISION.encode(), "generic deprovision"
        else:
            self.events.warning(
                "deprovision SKIPPED (--deprovision skip): the image has no waagent and is not generalized",
                step=name,
            )
        if script is not None:
            self._run_script(name, script, ("/bin/sh", SCRIPT), as_root=True, detail=detail)
            self.state.generalized = True
        self._step(
            "prepare-capture",
            self._target().prepare_capture,
            detail="take aib-local's build user and sudo set-up back out",
        )

    def _deprovision_windows(self) -> None:
        """Run C:\\DeprovisioningScript.ps1 (AIB's Sysprep sequence, or a customizer's own)."""
        if self._run_quiet(f"if (Test-Path '{OVERRIDE_WINDOWS}') {{ exit 0 }} else {{ exit 1 }}") != 0:
            self.events.warning(MISSING_WINDOWS_SCRIPT, step="deprovision")
            return
        argv = ["powershell", "-NoProfile", "-ExecutionPolicy", "Bypass", "-File", OVERRIDE_WINDOWS]
        self._run_checked("deprovision", argv, as_root=True, detail=OVERRIDE_WINDOWS, windows_codes=True)
        self.state.generalized = True

    def _place_windows_deprovision(self) -> None:
        """AIB puts its Sysprep script in place before the customizers, which may replace it."""
        if self._run_quiet(f"if (Test-Path '{OVERRIDE_WINDOWS}') {{ exit 0 }} else {{ exit 1 }}") == 0:
            self.events.info(f"{OVERRIDE_WINDOWS} already exists on the target: it will run as the deprovision step")
            return
        script = resources.files("engine").joinpath("data/DeprovisioningScript.ps1").read_text()
        self._target().put(script.replace("\n", "\r\n").encode(), OVERRIDE_WINDOWS)

    def capture(self) -> None:
        if not self.distributors:
            self.events.info("no distributions: nothing to capture")
            return
        if self.over_ssh:
            self._step("capture", self._target().stop, detail="export the live filesystem")
        elif any(d.needs_export for d in self.distributors):
            self._step("capture", self._target().stop, detail="stop the container so its disk is quiescent")
        else:
            self.events.info("capture: the container is committed paused, as docker commit does", step="capture")

    def distribute(self) -> None:
        target = self._target()
        failures = []
        for index, distributor in enumerate(self.distributors):
            section = distributor.section
            name = f"distribute[{index}] {section.run_output_name} ({section.type})"
            self.current = name
            self._check_deadline()
            ctx = DistributeContext(
                captured=target,
                store=self.store,
                build_id=self.build_id,
                template_id=self.template_id,
                base_image=self.state.image_id,
                os_type=self.state.os_type,
                generalized=self.state.generalized,
                source=self.state.source_record,
                os_disk_size_gb=self.props.vm_profile.os_disk_size_gb,
                location=self.loaded.template.location,
                write_filesystem=self._filesystem_writer(),
                journal=self.journal,
            )
            started = time.monotonic()
            self.events.emit("step-started", step=name)
            try:
                output = distributor.distribute(ctx)
            except (DistributeError, TargetError) as exc:
                output = RunOutput(section.run_output_name, provisioning_state="Failed")
                hint = getattr(exc, "hint", None)
                failures.append(f"{name}: {exc}" + (f" ({hint})" if hint else ""))
                self._finished(name, started, "failed", message=str(exc))
            else:
                self._finished(name, started, "succeeded")
                self.events.emit(
                    "artifact",
                    runOutputName=output.name,
                    artifactId=output.artifact_id,
                    artifactUri=output.artifact_uri,
                    type=section.type,
                )
            self.state.run_outputs.append(output)
            self.store.put(
                f"{self.template_id}/runOutputs/{output.name}",
                {
                    "name": output.name,
                    "type": f"{TEMPLATE_TYPE}/runOutputs",
                    "properties": output.properties(),
                },
            )
        if failures:
            raise BuildFailed(
                f"Failed in distributing {len(failures)} images out of total {len(self.distributors)}: "
                + "; ".join(failures),
                step="distribute",
            )

    def _filesystem_writer(self) -> FilesystemWriter:
        images = [self.state.image_id] if self.state.image_id else []
        writer = docker_target.Ext4Writer(self.client(), images, build_id=self.build_id)

        def write(stream: Iterator[bytes], image: str, offset: int, size: int | None) -> tuple[int, int]:
            metered = self.events.metered(stream, step=self.current, label="filesystem export")
            return writer.write(metered, image, offset=offset, size=size)

        return write

    # --- executing steps -----------------------------------------------------------

    def _target(self) -> Target:
        if self.state.target is None:
            raise BuildFailed("no target is running", step=self.current)
        return self.state.target

    def _sink(self, step: str) -> Callable[[str, str], None]:
        def sink(stream: str, line: str) -> None:
            self.events.emit("output", step=step, stream=stream, line=line)

        return sink

    def _finished(self, name: str, started: float, status: str, code: int | None = None, **extra: Any) -> None:
        duration = round(time.monotonic() - started, 3)
        self.events.emit("step-finished", step=name, status=status, exitCode=code, duration=duration, **extra)

    def _step(self, name: str, action: Callable[[], None], *, detail: str = "") -> None:
        started = time.monotonic()
        self.events.emit("step-started", step=name, detail=detail)
        try:
            action()
        except TargetError as exc:
            self._finished(name, started, "failed")
            raise BuildFailed(f"{name} failed: {exc}", step=name) from None
        self._finished(name, started, "succeeded")

    def _run_quiet(self, script: str) -> int:
        """Run a probe or a clean-up (sh on Linux, PowerShell on Windows); its exit code."""
        if self.state.os_type == "Windows":
            argv = ["powershell", "-NoProfile", "-NonInteractive", "-Command", script]
        else:
            argv = ["/bin/sh", "-c", script]
        try:
            return self._target().run(
                Command(argv, as_root=True),
                lambda _s, _l: None,
                timeout=min(60, self.deadline.remaining()),
            )
        except CommandTimeout:
            self._check_deadline()
            raise BuildFailed(f"the probe {script!r} did not answer within 60s", step=self.current) from None
        except TargetError as exc:
            raise BuildFailed(str(exc), step=self.current) from None

    def _run_checked(
        self,
        name: str,
        argv: list[str],
        *,
        as_root: bool = False,
        ok_codes: tuple[int, ...] = (0,),
        detail: str = "",
        windows_codes: bool = False,
        script: tuple[str, bytes] | None = None,
    ) -> int:
        target = self._target()
        started = time.monotonic()
        self.events.emit("step-started", step=name, detail=detail, command=" ".join(argv))
        code: int | None = None
        status = "failed"
        try:
            code = target.run(
                Command(argv, as_root=as_root, env=dict(self.options.secrets), script=script),
                self._sink(name),
                timeout=self.deadline.remaining(),
            )
            status = "succeeded" if code in ok_codes else "failed"
        except CommandTimeout:
            status = "timed-out"
            raise BuildTimeout(
                f"buildTimeoutInMinutes ({self.deadline.minutes}) expired during {name}; the step was killed",
                step=name,
            ) from None
        except TargetError as exc:
            raise BuildFailed(f"{name} failed: {exc}", step=name) from None
        finally:
            self._finished(name, started, status, code)
        if code not in ok_codes:
            allowed = "" if ok_codes == (0,) else f" (valid exit codes: {list(ok_codes)})"
            meaning = exitcodes.explain(code) if windows_codes or self.state.os_type == "Windows" else ""
            raise BuildFailed(
                f"{name} failed with exit code {code}{allowed}" + (f": {meaning}" if meaning else ""),
                step=name,
                exit_code=code,
            )
        return code

    def _script_path(self, index: int, number: int, suffix: str) -> str:
        folder = "C:/Windows/Temp" if self.state.os_type == "Windows" else "/tmp"
        return f"{folder}/aib-local-script-{self.build_id[-6:]}-{index}-{number}{suffix}"

    def _run_script(
        self,
        name: str,
        script: bytes,
        command: tuple[str, ...],
        *,
        as_root: bool = False,
        ok_codes: tuple[int, ...] = (0,),
        suffix: str = ".sh",
        detail: str = "",
        index: int = 99,
        number: int = 0,
    ) -> int:
        path = self._script_path(index, number, suffix)
        argv = [part.replace(SCRIPT, path) for part in command]
        # The target writes the script before the command runs and removes it after.
        return self._run_checked(
            name,
            argv,
            as_root=as_root,
            ok_codes=ok_codes,
            detail=detail,
            windows_codes=suffix == ".ps1",
            script=(path, script),
        )

    def _execute(self, name: str, index: int, number: int, step: Step) -> None:
        self._check_deadline()
        if isinstance(step, RunScript):
            self._run_script(
                name,
                step.script,
                step.command,
                as_root=step.as_root,
                ok_codes=step.ok_codes,
                suffix=step.suffix,
                detail=redact_uri(step.label),
                index=index,
                number=number,
            )
        elif isinstance(step, PutFile):
            target = self._target()

            def put() -> None:
                target.put(step.source.read_bytes(), step.destination)

            self._step(name, put, detail=f"upload to {step.destination}")
        elif isinstance(step, Restart):
            self._restart(name, step)
        elif isinstance(step, UntilDone):
            self._until_done(name, index, step)

    def _until_done(self, name: str, index: int, step: UntilDone) -> None:
        """Run the step's script until it exits 0, restarting when it asks for it."""
        run = step.run
        for round_number in range(1, step.max_rounds + 1):
            self._check_deadline()
            code = self._run_script(
                f"{name} round {round_number}",
                run.script,
                run.command,
                as_root=run.as_root,
                ok_codes=(0, *step.restart_codes),
                suffix=run.suffix,
                detail=run.label,
                index=index,
            )
            if code == 0:
                return
            self.events.info(f"{name}: exit code {code} asks for a restart", step=name)
            self._restart(f"{name} restart {round_number}", step.restart)
        raise BuildFailed(f"{name} still asked for a restart after {step.max_rounds} rounds", step=name)

    def _restart(self, name: str, step: Restart) -> None:
        target = self._target()
        timeout = min(step.timeout, self.deadline.remaining())
        self._step(
            name,
            lambda: target.restart(step.command, timeout, lambda phase: self.events.info(phase, step=name)),
            detail=f"{step.command} (wait up to {timeout:.0f}s)",
        )
        if step.check_command:
            self._run_checked(f"{name} check", ["/bin/sh", "-c", step.check_command], detail=step.check_command)

    # --- records -------------------------------------------------------------------

    def _record_template(self, run_state: str, sub_state: str | None, message: str) -> None:
        if self.continuation is not None and self.continuation.attach and not self.continuation.finish:
            return  # rerunning customizers on a kept target is debugging, not a run of the template
        status: dict[str, Any] = {"runState": run_state, "message": message}
        if sub_state:
            status["runSubState"] = sub_state
        status["startTime"] = self.started_at
        if run_state != "Running":
            status["endTime"] = utc_now()
        template = self.loaded.template
        # As Azure keeps it, but without SAS signatures or secret values: `show` prints it.
        properties = self.redact.deep(template.properties.model_dump(mode="json", by_alias=True, exclude_unset=True))
        properties["lastRunStatus"] = status
        properties["provisioningState"] = "Succeeded"
        self.store.put(
            self.template_id,
            {
                "name": self.loaded.name,
                "type": TEMPLATE_TYPE,
                "location": template.location,
                "tags": dict(template.tags),
                "properties": properties,
                "aibLocal": {"templateFile": str(self.loaded.path), "lastBuildId": self.build_id},
            },
        )

    def _record_build(self, status: str, *, error: AibLocalError | None = None, kept: bool = False) -> None:
        target = self.state.target
        record: dict[str, Any] = {
            "buildId": self.build_id,
            "status": status,
            "template": str(self.loaded.path.resolve()),
            "templateName": self.loaded.name,
            "templateId": self.template_id,
            "logPath": str(self.log.path),
            "kept": kept,
            "target": target.info() if target else None,
            "source": self.state.source_record,
            "options": self.options.record(),
            "reading": dataclasses.asdict(self.loaded.options) if self.loaded.options else {},
            "customizers": [name for name, _ in self.customizers],
            "fingerprints": self.fingerprints,
            "completed": self.completed,
            "checkpoints": self.checkpoints,
            "startedAt": self.started_at,
            "updatedAt": utc_now(),
        }
        if self.continuation is not None:
            record["continues"] = self.continuation.record["buildId"]
        if error is not None:
            record["failedStep"] = getattr(error, "step", self.current)
            failed = [i for i, (name, _) in enumerate(self.customizers) if name == record["failedStep"]]
            if failed:
                record["failedIndex"] = failed[0]
            record["message"] = str(error)
        self.store.put_build(self.build_id, record)


def run_all(builds: list[Build], parallel: int = 1) -> list[BuildResult]:
    """Run builds, `parallel` at a time; Ctrl-C cancels the running ones (their cleanup runs)."""
    if parallel <= 1 or len(builds) <= 1:
        return [build.run() for build in builds]
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="build") as pool:
        futures = [pool.submit(build.run) for build in builds]
        try:
            return [future.result() for future in futures]
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            for build in builds:
                build.cancel()
            wait(futures)
            raise
