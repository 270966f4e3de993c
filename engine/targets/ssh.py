"""The SSH target: a host or VM the user runs, reached through paramiko.

This is the only module that catches paramiko and socket errors; each is re-raised as
one of the project's errors with a hint. Host keys are verified against known_hosts
(or a file the user names); accepting an unknown key takes an explicit flag. A dropped
connection is its own state (`ConnectionLost`), never an exit code; reconnects are
retried with tenacity within the step's own time.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import logging
import os
import re
import select
import shlex
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
from tenacity import RetryError, retry, retry_if_exception_type, stop_after_delay, wait_fixed

from engine.errors import AibLocalError, EnvironmentProblem
from engine.targets import posix, reboot, runner, terminal
from engine.targets.base import (
    Command,
    CommandTimeout,
    OpenRequest,
    OutputSink,
    OwnSource,
    Rebooted,
    Target,
    TargetError,
)
from engine.targets.endpoint import SshEndpoint, SshOptions, parse_target

# paramiko logs transport failures with tracebacks; they reach the user as our errors instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

# Exit codes of `shutdown` that mean a restart is already under way (Windows).
RESTART_IN_PROGRESS = (1115, 1190)
RECONNECT_WITHIN = 30.0  # seconds of reconnect attempts after the link drops mid-step
EXPORT_EXCLUDES = ("./proc/*", "./sys/*", "./dev/*", "./run/*", "./tmp/.aib-local-*")


class ConnectionLost(TargetError):
    """The SSH connection dropped; what ran on the host is unknown."""


def fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as OpenSSH prints it (SHA256:base64)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    """Refuses an unknown host key, remembering it so the error can show its fingerprint."""

    def __init__(self) -> None:
        self.key: paramiko.PKey | None = None

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.key = key
        raise paramiko.SSHException(f"unknown host key for {hostname}")


class SshLink:
    """The SSH connection to one host: connect (host keys checked, bounded retries), run a
    one-off command with its output and a timeout, and close. The target's steps run over
    it through the step runner; probes, Windows commands and clean-ups run here directly."""

    def __init__(self, endpoint: SshEndpoint, options: SshOptions) -> None:
        self.endpoint = endpoint
        self.options = options
        self.client: paramiko.SSHClient | None = None

    def known_hosts(self) -> Path:
        return self.options.known_hosts or Path.home() / ".ssh" / "known_hosts"

    def connect_once(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        policy = _RefuseUnknown()
        known = self.known_hosts()
        if known.exists():
            try:
                client.load_host_keys(str(known))
            except (OSError, paramiko.SSHException) as exc:
                raise EnvironmentProblem(f"cannot read known hosts file {known}: {exc}") from None
        elif self.options.known_hosts is not None:
            raise EnvironmentProblem(f"known hosts file {known} does not exist")
        client.set_missing_host_key_policy(
            paramiko.AutoAddPolicy() if self.options.insecure_accept_host_key else policy
        )
        password = None
        if self.options.password_env:
            password = os.environ.get(self.options.password_env)
            if password is None:
                raise EnvironmentProblem(f"the password variable {self.options.password_env} is not set")
        key_file = self.options.key_file
        if key_file is not None and not key_file.exists():
            raise EnvironmentProblem(f"SSH key {key_file} does not exist", hint="pass an existing key with --ssh-key")
        try:
            client.connect(
                self.endpoint.host,
                port=self.endpoint.port,
                username=self.endpoint.user,
                key_filename=str(key_file) if key_file else None,
                password=password,
                allow_agent=key_file is None and _agent_answers(),
                look_for_keys=key_file is None,
                timeout=min(self.options.connect_timeout, 30),
                banner_timeout=30,
                auth_timeout=30,
            )
        except paramiko.BadHostKeyException as exc:
            raise EnvironmentProblem(
                f"the host key of {self.endpoint.host} has CHANGED: it is now {fingerprint(exc.key)}, "
                f"known_hosts ({known}) says {fingerprint(exc.expected_key)}",
                hint="if the host was rebuilt, remove its old key (ssh-keygen -R HOST); "
                "--ssh-insecure-accept-host-key accepts any key",
            ) from None
        except paramiko.SSHException as exc:
            if policy.key is not None:
                raise EnvironmentProblem(
                    f"the host key of {self.endpoint.host} ({policy.key.get_name()} {fingerprint(policy.key)}) "
                    f"is not in {known}",
                    hint="add it to known_hosts (ssh-keyscan), pass --known-hosts FILE, "
                    "or accept it with --ssh-insecure-accept-host-key",
                ) from None
            transport = client.get_transport()
            if not isinstance(exc, paramiko.AuthenticationException) and (
                transport is None or not transport.is_active() or transport.is_authenticated()
            ):
                raise ConnectionLost(f"SSH to {self.endpoint} failed: {exc}") from None
            # paramiko reports a refused key file as the last key type it tried; either way: refused.
            client.close()
            how = f"key {key_file}" if key_file else "the SSH agent or default keys"
            if password is not None:
                how += f" or the password in {self.options.password_env}"
            raise EnvironmentProblem(
                f"authentication failed for {self.endpoint.user}@{self.endpoint.host} with {how}",
                hint="pass the right key with --ssh-key",
            ) from None
        except (OSError, EOFError) as exc:
            raise ConnectionLost(f"cannot connect to {self.endpoint}: {exc}") from None
        transport = client.get_transport()
        if self.options.keepalive and transport is not None:
            transport.set_keepalive(self.options.keepalive)
        return client

    def connect(self, within: float) -> None:
        @retry(
            retry=retry_if_exception_type(ConnectionLost),
            stop=stop_after_delay(within),
            wait=wait_fixed(1),
            reraise=True,
        )
        def attempt() -> paramiko.SSHClient:
            return self.connect_once()

        try:
            self.client = attempt()
        except ConnectionLost as exc:
            raise EnvironmentProblem(
                f"{exc} (gave up after {within:.0f}s)",
                hint="is sshd running there, and the port right? --ssh-start-command can start a VM first",
            ) from None

    def transport(self) -> paramiko.Transport:
        transport = self.client.get_transport() if self.client else None
        if transport is None or not transport.is_active():
            raise ConnectionLost(f"the SSH connection to {self.endpoint} is down")
        return transport

    def capture(self, command: str, timeout: float = 60) -> tuple[int, str]:
        lines: list[str] = []
        code = self.exec(command, lambda _s, line: lines.append(line), timeout, kill_pidfile=None)
        return code, "\n".join(lines)

    def answer(self, command: str, timeout: float = 15) -> str | None:
        """The output of `command`; None when the host did not answer (the link dropped,
        the command timed out or ended without an exit status)."""
        try:
            code, out = self.capture(command, timeout)
        except (ConnectionLost, CommandTimeout):
            return None
        return None if code == -1 else out

    def exec(
        self,
        line: str,
        sink: OutputSink,
        timeout: float | None,
        *,
        kill_pidfile: str | None,
        as_root: bool = False,
    ) -> int:
        transport = self.transport()
        try:
            channel = transport.open_session()
            channel.exec_command(line)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionLost(f"cannot run a command on {self.endpoint}: {exc}") from None
        end = None if timeout is None else time.monotonic() + timeout
        outputs = {name: runner.Lines(name, sink) for name in ("stdout", "stderr")}
        try:
            while True:
                if end is not None and time.monotonic() >= end:
                    self.kill(kill_pidfile, as_root)
                    channel.close()
                    raise CommandTimeout(f"timed out after {timeout:.0f}s; the process was killed on the host")
                wait = 0.5 if end is None else max(0.0, min(0.5, end - time.monotonic()))
                for name, data in read_channel(channel, wait):
                    outputs[name].feed(data)
                if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
                if not transport.is_active() or (channel.closed and not channel.exit_status_ready()):
                    raise ConnectionLost(f"the connection to {self.endpoint} dropped while a command ran")
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectionLost(f"the connection to {self.endpoint} dropped: {exc}") from None
        finally:
            for output in outputs.values():
                output.flush()
        status = channel.recv_exit_status()
        # The command has ended and said how: a host going down right after it (a reboot
        # command) may break the connection before the channel's close is sent.
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            channel.close()
        if status == -1:
            raise ConnectionLost(f"the command on {self.endpoint} ended without an exit status")
        if kill_pidfile:
            self.quiet(f"rm -f {kill_pidfile}")
        return status

    def quiet(self, line: str) -> None:
        try:
            channel = self.transport().open_session()
            channel.exec_command(line)
            channel.recv_exit_status()
            channel.close()
        except (TargetError, paramiko.SSHException, OSError, EOFError):
            pass

    def kill(self, pidfile: str | None, as_root: bool) -> None:
        if pidfile is None:
            return
        line = posix.join(posix.kill_tree(pidfile))
        if as_root and self.endpoint.user != "root":
            line = f"sudo -n {line}"
        self.quiet(line)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


class SshTarget(Target):
    """A host reached over SSH; the build runs on it as the SSH user (with sudo for root)."""

    kind = "ssh"
    starts_from_image = False  # the host is the source image
    export_needs_stop = False  # the host keeps running; its filesystem is exported as it is

    def __init__(self, endpoint: SshEndpoint, options: SshOptions, *, build_id: str) -> None:
        self.endpoint = endpoint
        self.options = options
        self.build_id = build_id
        self.link = SshLink(endpoint, options)
        self.build_user = endpoint.user
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.os_type = "Linux"
        self._started = False
        self._sessions: dict[bool, runner.Session] = {}
        self._running: tuple[str, bool] | None = None  # (pid file, as root) of the step in progress
        self._boot = ""  # the host's boot identity: a new one after a drop means it rebooted
        self._tag = re.sub(r"[^A-Za-z0-9]", "", build_id)[-6:]

    @property
    def name(self) -> str:
        return str(self.endpoint)

    def describe(self) -> str:
        return f"ssh host {self.endpoint}"

    # --- connecting ----------------------------------------------------------------

    def start(self) -> None:
        if self.options.start_command:
            self.notes.append(f"ran the start command: {self.options.start_command}")
            _local(self.options.start_command, "--ssh-start-command")
            self._started = True
        within = 300.0 if self.options.start_command else self.options.connect_timeout
        self.link.connect(within)
        self._detect()

    def _detect(self) -> None:
        code, out = self.link.capture("uname -s")
        if code == 0 and out.strip():
            self.os_type = "Linux"
        else:
            code, out = self.link.capture("cmd /c ver")
            if code == 0 and "windows" in out.lower():
                self.os_type = "Windows"
                self.notes.append(f"{self.endpoint.host} runs Windows: commands run through PowerShell")
                return
            raise TargetError(f"cannot tell the operating system of {self.endpoint.host}")
        self._boot = self._identity()
        if self.endpoint.user == "root":
            self.notes.append(f"customizers run as root on {self.endpoint.host}")
        elif self.link.capture("sudo -n true")[0] == 0:
            self.notes.append(f"customizers run as {self.endpoint.user!r} with passwordless sudo, as in AIB")
        else:
            self.notes.append(
                f"{self.endpoint.user!r} has no passwordless sudo on {self.endpoint.host}: "
                "steps that need root (deprovision, capture) will fail"
            )

    # --- running -------------------------------------------------------------------

    def run(self, command: Command, sink: OutputSink, timeout: float | None) -> int:
        if self.os_type == "Windows":
            if command.script is None:
                return self.link.exec(subprocess.list2cmdline(command.argv), sink, timeout, kill_pidfile=None)
            path, data = command.script
            self.put(data, path)
            try:
                return self.link.exec(subprocess.list2cmdline(command.argv), sink, timeout, kill_pidfile=None)
            finally:
                self.link.quiet(
                    f'powershell -NoProfile -Command "Remove-Item -Force -ErrorAction SilentlyContinue {path}"'
                )
        root = command.as_root and self.endpoint.user != "root"
        step_id = self._tag + uuid.uuid4().hex[:8]  # the build's tag first: see stop_leftovers
        self._running = (runner.pidfile(step_id), root)
        try:
            code = runner.run_step(
                self._session(root),
                step_id,
                posix.command_line(command),
                command.script,
                sink,
                timeout,
                lambda pidfile: self.link.kill(pidfile, root),
            )
        except runner.StepTimedOut:
            self._running = None
            raise CommandTimeout(f"timed out after {timeout:.0f}s; the process was killed on the host") from None
        except runner.RunnerGone as exc:
            gone_session = self._sessions.pop(root, None)
            if gone_session is not None:
                gone_session.close()
            reboots = command.script is not None and reboot.may_reboot(command.script[1])
            raise ConnectionLost(self._after_drop(str(exc), timeout, reboots)) from None
        self._running = None
        # `systemctl reboot` returns at once: a script may end before the host goes down.
        if command.script is not None and reboot.may_reboot(command.script[1]) and self._going_down():
            self._close_sessions()
            end = time.monotonic() + min(reboot.REBOOT_WAIT, timeout if timeout is not None else reboot.REBOOT_WAIT)
            self._wait_down(self._boot, end)
            self._wait_up(self._boot, end)
            self._rebooted()
        return code

    def _going_down(self) -> bool:
        """After a step that may have asked for a reboot: whether the host is going down."""
        return reboot.watch_going_down(functools.partial(self.link.answer, reboot.GOING_DOWN))

    def _rebooted(self) -> None:
        """The host came back from a reboot during a step: say so (the step is not a failure)."""
        self._boot = self._identity()
        raise Rebooted(f"{self.endpoint.host} rebooted during the step and is back up")

    def _after_drop(self, why: str, timeout: float | None, reboots: bool = False) -> str:
        """The link dropped mid-step: reconnect (bounded: 30 s, or AIB's 20 minutes for a
        script that reboots). A host with a new boot identity rebooted: Rebooted is raised.
        Else the step's process is stopped; what happened."""
        window = reboot.REBOOT_WAIT if reboots else RECONNECT_WITHIN
        within = min(window, timeout if timeout is not None else window)
        self._close_sessions()
        self.link.close()
        try:
            self.link.connect(within)
        except EnvironmentProblem:
            return (
                f"the SSH connection to {self.endpoint} dropped during the step ({why}), and reconnecting "
                f"failed for {within:.0f}s: the host or its sshd is down"
            )
        identity = ""
        with contextlib.suppress(ConnectionLost, TargetError):
            identity = self._identity()
        if self._boot and identity and identity != self._boot:
            self._running = None
            self._rebooted()
        self._stop_running()
        return (
            f"the SSH connection to {self.endpoint} dropped during the step ({why}); "
            "reconnected and stopped the step's process: the step did not complete"
        )

    def _stop_running(self) -> None:
        """Kill the process tree of the step that was running when the build was stopped."""
        if self._running is not None and self.link.client is not None:
            pidfile, root = self._running
            self._running = None
            self.link.kill(pidfile, root)

    def _session(self, root: bool) -> runner.Session:
        """The step runner (as the SSH user, or under sudo), one SSH channel for the build."""
        session = self._sessions.get(root)
        if session is None:
            line = f"/bin/sh -c {shlex.quote(runner.RUNNER)}"
            if root:
                line = f"sudo -n {line}"
            try:
                channel = self.link.transport().open_session()
                channel.exec_command(line)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise ConnectionLost(f"cannot start the step runner on {self.endpoint}: {exc}") from None
            session = self._sessions[root] = _SshSession(channel)
        return session

    def _close_sessions(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()

    def stop_leftovers(self) -> int:
        """After the engine of this build died: kill its running step, remove its scripts;
        how many steps were still running."""
        kill = shlex.quote(posix.KILL_TREE)
        script = (
            f'n=0; for f in /tmp/.aib-local-pid-{self._tag}*; do [ -e "$f" ] || continue; '
            f'sh -c {kill} kill-tree "$f"; n=$((n+1)); done; '
            f"rm -f /tmp/aib-local-script-{self._tag}-*; echo $n"
        )
        line = posix.join(["/bin/sh", "-c", script])
        if self.endpoint.user != "root":
            line = f"sudo -n {line} || {line}"
        code, out = self.link.capture(line, timeout=60)
        words = out.split()
        return int(words[-1]) if code == 0 and words and words[-1].isdigit() else 0

    # --- files ---------------------------------------------------------------------

    def put(self, data: bytes, destination: str, *, mode: int = 0o644, owner: str | None = None) -> None:
        transport = self.link.transport()
        needs_root = owner == "root" and self.endpoint.user != "root" and self.os_type == "Linux"
        target = f"/tmp/.aib-local-upload-{uuid.uuid4().hex[:12]}" if needs_root else destination
        if self.os_type == "Windows" and re.match(r"^[A-Za-z]:", target):
            target = "/" + target  # Windows OpenSSH's SFTP names drives as /C:/...
        try:
            with paramiko.SFTPClient.from_transport(transport) as sftp:  # type: ignore[union-attr]
                sftp.putfo(io.BytesIO(data), target)
                sftp.chmod(target, mode)
        except FileNotFoundError:
            parent = destination.rsplit("/", 1)[0] or "/"
            raise TargetError(f"cannot write {destination}: the directory {parent} does not exist") from None
        except PermissionError:
            raise TargetError(f"cannot write {destination}: permission denied for {self.endpoint.user}") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionLost(f"upload to {self.endpoint} failed: {exc}") from None
        if needs_root:
            code, out = self.link.capture(
                f"sudo -n sh -c {shlex.quote(f'chown root:root {target} && mv {target} {shlex.quote(destination)}')}"
            )
            if code != 0:
                raise TargetError(f"cannot move the upload into {destination}: {out.strip()}")

    def export(self) -> Iterator[bytes]:
        excludes = " ".join(f"--exclude={shlex.quote(e)}" for e in EXPORT_EXCLUDES)
        line = f"tar -C / --numeric-owner --one-file-system -cpf - {excludes} ."
        if self.endpoint.user != "root":
            line = f"sudo -n {line}"
        transport = self.link.transport()
        try:
            channel = transport.open_session()
            channel.exec_command(line)
            errors = b""
            while True:
                chunk = channel.recv(1 << 20)
                if not chunk:
                    break
                yield chunk
                while channel.recv_stderr_ready():
                    errors += channel.recv_stderr(65536)
            status = channel.recv_exit_status()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionLost(f"the filesystem export from {self.endpoint} broke off: {exc}") from None
        # GNU tar exits 1 when files changed while it read them: a live system, not an error.
        if status not in (0, 1):
            raise TargetError(f"tar on {self.endpoint} failed ({status}): {errors.decode(errors='replace')[-300:]}")

    # --- restart -------------------------------------------------------------------

    def _identity(self) -> str:
        code, out = self.link.capture(posix.BOOT_IDENTITY if self.os_type == "Linux" else "wmic os get lastbootuptime")
        if code != 0:
            raise TargetError(f"cannot read the boot identity of {self.endpoint.host}")
        return out.strip()

    def restart(self, command: str, timeout: float, report: Callable[[str], None]) -> None:
        end = time.monotonic() + timeout
        before = self._identity()
        report(f"restarting {self.endpoint.host}: {command}")
        self._close_sessions()
        if self.os_type == "Linux" and self.endpoint.user != "root" and not command.startswith("sudo"):
            command = f"sudo -n {command}"
        try:
            code = self.link.exec(command, lambda _s, _l: None, min(30.0, timeout), kill_pidfile=None)
            if code not in (0, *RESTART_IN_PROGRESS, 255, -1):
                raise TargetError(f"the restart command exited with {code}")
        except (ConnectionLost, CommandTimeout):
            pass  # the host went down under the command: expected
        report(f"waiting for {self.endpoint.host} to go down")
        self._wait_down(before, end)
        report(f"waiting for {self.endpoint.host} to come back up")
        self._wait_up(before, end)
        self._boot = self._identity()
        report(f"{self.endpoint.host} is back up")

    def _wait_down(self, before: str, end: float) -> None:
        @retry(
            retry=retry_if_exception_type(_StillUp),
            stop=stop_after_delay(max(0.0, end - time.monotonic())),
            wait=wait_fixed(0.5),
        )
        def down() -> None:
            try:
                if self._identity() == before:
                    raise _StillUp
            except (ConnectionLost, TargetError, CommandTimeout):
                return  # the connection dropped, or the host is already someone new

        try:
            down()
        except RetryError:
            raise TargetError("Timeout waiting for machine to restart: it never went down") from None
        self.link.close()

    def _wait_up(self, before: str, end: float) -> None:
        @retry(
            retry=retry_if_exception_type((ConnectionLost, _StillUp, EnvironmentProblem)),
            stop=stop_after_delay(max(0.0, end - time.monotonic())),
            wait=wait_fixed(1),
            reraise=True,
        )
        def up() -> None:
            if self.link.client is None:
                self.link.client = self.link.connect_once()
            try:
                identity = self._identity()
            except (ConnectionLost, TargetError):
                self.link.client = None
                raise ConnectionLost("not up yet") from None
            if identity == before:
                raise _StillUp

        try:
            up()
        except (ConnectionLost, _StillUp, EnvironmentProblem) as exc:
            raise TargetError(f"Timeout waiting for machine to restart: it did not come back ({exc})") from None

    # --- interactive ---------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        options = self.options
        return {
            "kind": self.kind,
            "target": f"ssh://{self.endpoint.user}@{self.endpoint.host}:{self.endpoint.port}",
            "keyFile": str(options.key_file) if options.key_file else None,
            "knownHosts": str(options.known_hosts) if options.known_hosts else None,
            "insecureAcceptHostKey": options.insecure_accept_host_key,
            "passwordEnv": options.password_env,
            "osType": self.os_type,
        }

    @classmethod
    def open(cls, request: OpenRequest) -> SshTarget:
        return cls(parse_target(request.spec), request.ssh, build_id=request.build_id)

    @classmethod
    def check_spec(cls, spec: str) -> None:
        parse_target(spec)

    @classmethod
    def own_source(cls, spec: str) -> OwnSource | None:
        endpoint = parse_target(spec)
        return OwnSource({"type": "SshHost", "host": str(endpoint)}, f"SSH host {endpoint}")

    @classmethod
    def release(cls, info: dict[str, Any], build_id: str) -> list[str]:
        """Stop the step a dead build left running on the host, and remove its scripts."""
        try:
            target = cls.attach(info, build_id, within=10)
            try:
                stopped = target.stop_leftovers()
            finally:
                target.remove()
        except AibLocalError as exc:
            raise TargetError(
                f"could not reach {info.get('target')} to stop what build {build_id} left there: {exc}"
            ) from None
        return [f"{stopped} running step(s) of build {build_id} on {info.get('target')}"] if stopped else []

    @classmethod
    def attach(cls, info: dict[str, Any], build_id: str, *, within: float | None = None) -> SshTarget:
        """Connect again to the host of a kept (or dead) build."""
        options = SshOptions(
            key_file=Path(info["keyFile"]) if info.get("keyFile") else None,
            known_hosts=Path(info["knownHosts"]) if info.get("knownHosts") else None,
            insecure_accept_host_key=bool(info.get("insecureAcceptHostKey")),
            password_env=info.get("passwordEnv"),
        )
        target = cls(parse_target(info["target"]), options, build_id=build_id)
        target.link.connect(options.connect_timeout if within is None else within)
        target.os_type = info.get("osType", "Linux")
        return target

    def interactive_shell(self) -> int:
        columns, rows = terminal.size()
        try:
            channel = self.link.transport().open_session()
            channel.get_pty(term=os.environ.get("TERM", "xterm"), width=columns, height=rows)
            channel.invoke_shell()
            terminal.pump(channel.fileno(), lambda: channel.recv(4096), channel.sendall)
            return channel.recv_exit_status()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionLost(f"the shell on {self.endpoint} broke off: {exc}") from None

    # --- capture and teardown ------------------------------------------------------

    def stop(self) -> None:
        """Nothing to stop: the host keeps running (export_needs_stop is False)."""

    def commit(self, repository: str, tag: str, base_image: str) -> str:
        """The host's filesystem, imported into the local image store."""
        from engine import images

        return images.import_filesystem(images.connect(), self.export(), repository, tag)

    def detach(self) -> None:
        self._close_sessions()
        self.link.close()

    def remove(self) -> None:
        self._stop_running()  # an interrupted step: closing its channel alone would orphan it
        self.detach()
        if self._started and self.options.stop_command:
            self._started = False
            _local(self.options.stop_command, "--ssh-stop-command")


class _StillUp(Exception):
    pass


def _local(command: str, flag: str) -> None:
    """Run the user's own start/stop command on this machine (bounded to 10 minutes)."""
    try:
        result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired:
        raise TargetError(f"{flag} did not finish within 10 minutes: {command}") from None
    if result.returncode != 0:
        raise TargetError(f"{flag} failed ({result.returncode}): {(result.stderr or result.stdout).strip()[-300:]}")


class _SshSession(runner.Session):
    """A runner on one SSH channel: stdin to it, stdout and stderr from it."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel

    def send(self, data: bytes) -> None:
        try:
            self.channel.sendall(data)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise runner.RunnerGone(str(exc)) from None

    def poll(self, timeout: float) -> list[tuple[str, bytes]]:
        channel = self.channel
        try:
            got = read_channel(channel, timeout)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise runner.RunnerGone(str(exc)) from None
        data = [g for g in got if g[1]]
        if not data and (got or channel.exit_status_ready() or channel.closed or channel.eof_received):
            raise runner.RunnerGone("the runner's channel closed")
        return data

    def close(self) -> None:
        self.channel.close()


def read_channel(channel: paramiko.Channel, wait: float) -> list[tuple[str, bytes]]:
    """What a channel has for us within `wait` seconds: (stdout|stderr, bytes) pieces, in
    the order read (an empty piece: that stream's end). The one read of a command's output
    over SSH, for a single command and for the step runner alike."""
    select.select([channel], [], [], wait)
    got = []
    while channel.recv_ready():
        got.append(("stdout", channel.recv(1 << 16)))
    while channel.recv_stderr_ready():
        got.append(("stderr", channel.recv_stderr(1 << 16)))
    return got


def _agent_answers() -> bool:
    """Whether SSH_AUTH_SOCK names a socket (paramiko opens a socket for a dangling or
    empty one and leaves it open)."""
    path = os.environ.get("SSH_AUTH_SOCK", "")
    try:
        return bool(path) and Path(path).is_socket()
    except OSError:
        return False
