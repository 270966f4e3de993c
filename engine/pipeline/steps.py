"""Running steps on the target: events, the deadline, and what an exit code means.

Every step a build runs (a customizer's plan, a probe, the deprovision, a restart)
goes through a `StepRunner`: it emits step-started/step-finished with the output in
between, gives each command what is left of the build's deadline, and turns exit
codes and target failures into the build's errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from customizers.base import SCRIPT, PutFile, Restart, RunCommand, RunScript, Step, UntilDone
from engine import exitcodes
from engine.errors import BuildFailed, BuildTimeout
from engine.fetch import redact_uri
from engine.pipeline.context import BuildContext
from engine.targets.base import Command, CommandTimeout, Rebooted, TargetError
from engine.targets.reboot import may_reboot

PROBE_TIMEOUT = 60.0
UNASKED_REBOOT = (
    "{name} was cut off by a reboot it did not ask for ({cause}), so it did not finish: some of its "
    "commands may never have run. A reboot started earlier (by a previous step, a timer or a service) "
    "reached the machine late; if this step's own commands reboot it through a script they run, "
    "add a line `# reboot` to the step so that its end is taken as the reboot it asked for"
)


class StepRunner:
    """Executes steps against the build's target, under the build's deadline."""

    def __init__(self, ctx: BuildContext) -> None:
        self.ctx = ctx

    def check_deadline(self) -> None:
        deadline = self.ctx.deadline
        if deadline.expired():
            raise BuildTimeout(
                f"buildTimeoutInMinutes ({deadline.minutes}) expired during {self.ctx.current}",
                step=self.ctx.current,
            )

    def finished(self, name: str, started: float, status: str, code: int | None = None, **extra: Any) -> None:
        duration = round(time.monotonic() - started, 3)
        self.ctx.events.emit("step-finished", step=name, status=status, exitCode=code, duration=duration, **extra)

    def action(self, name: str, action: Callable[[], None], *, detail: str = "") -> None:
        """A step that is not a command (start, upload, restart): a target failure fails it."""
        started = time.monotonic()
        self.ctx.events.emit("step-started", step=name, detail=detail)
        try:
            action()
        except TargetError as exc:
            self.finished(name, started, "failed")
            raise BuildFailed(f"{name} failed: {exc}", step=name) from None
        except BuildFailed:  # a step it ran failed (a boot test's validators)
            self.finished(name, started, "failed")
            raise
        self.finished(name, started, "succeeded")

    def probe(self, script: str) -> int:
        """Run a probe or a clean-up quietly (sh on Linux, PowerShell on Windows); its exit code."""
        if self.ctx.os_type == "Windows":
            argv = ["powershell", "-NoProfile", "-NonInteractive", "-Command", script]
        else:
            argv = ["/bin/sh", "-c", script]
        try:
            return self.ctx.require_target().run(
                Command(argv, as_root=True),
                lambda _s, _l: None,
                timeout=min(PROBE_TIMEOUT, self.ctx.deadline.remaining()),
            )
        except CommandTimeout:
            self.check_deadline()
            raise BuildFailed(f"the probe {script!r} did not answer within 60s", step=self.ctx.current) from None
        except TargetError as exc:
            raise BuildFailed(str(exc), step=self.ctx.current) from None

    def command(self, name: str, step: RunCommand) -> int:
        """Run `step.argv`, its output streamed as events; BuildFailed unless its code is OK."""
        ctx = self.ctx
        target = ctx.require_target()
        started = time.monotonic()
        ctx.events.emit("step-started", step=name, detail=step.label, command=" ".join(step.argv))
        code: int | None = None
        status = "failed"
        denied = False

        def sink(stream: str, line: str) -> None:
            nonlocal denied
            denied = denied or "Permission denied" in line
            ctx.events.emit("output", step=name, stream=stream, line=line)

        try:
            code = target.run(
                Command(list(step.argv), as_root=step.as_root, env=dict(ctx.options.secrets), script=step.script),
                sink,
                timeout=ctx.deadline.remaining(),
            )
            status = "succeeded" if code in step.ok_codes else "failed"
        except CommandTimeout:
            status = "timed-out"
            raise BuildTimeout(
                f"buildTimeoutInMinutes ({ctx.deadline.minutes}) expired during {name}; the step was killed",
                step=name,
            ) from None
        except Rebooted as exc:
            # A Shell step that reboots ends with the machine going down, as on the build VM:
            # not a failure; the next step runs on the machine booted again. A step whose
            # commands name no reboot was cut off by someone else's: it did not finish.
            status, code = "rebooted", None
            if step.script is None or not may_reboot(step.script[1]):
                status = "failed"
                raise BuildFailed(UNASKED_REBOOT.format(name=name, cause=exc), step=name) from None
            ctx.events.info(f"{name}: {exc}", step=name)
            if exc.warning:
                ctx.events.warning(f"{name}: {exc.warning}")
            return 0
        except TargetError as exc:
            raise BuildFailed(f"{name} failed: {exc}", step=name) from None
        finally:
            self.finished(name, started, status, code)
        if code not in step.ok_codes:
            allowed = "" if step.ok_codes == (0,) else f" (valid exit codes: {list(step.ok_codes)})"
            windows = step.windows_codes or ctx.os_type == "Windows"
            meaning = exitcodes.explain(code) if windows else ""
            hint = f" ({step.denied_hint})" if denied and step.denied_hint else ""
            raise BuildFailed(
                f"{name} failed with exit code {code}{allowed}" + (f": {meaning}" if meaning else "") + hint,
                step=name,
                exit_code=code,
            )
        return code

    def script_path(self, index: int, number: int, suffix: str) -> str:
        folder = "C:/Windows/Temp" if self.ctx.os_type == "Windows" else "/tmp"
        return f"{folder}/aib-local-script-{self.ctx.build_id[-6:]}-{index}-{number}{suffix}"

    def script(self, name: str, step: RunScript, *, index: int = 99, number: int = 0, ok: tuple[int, ...] = ()) -> int:
        """Upload `step.script` and run its command; the target removes the script after."""
        path = self.script_path(index, number, step.suffix)
        return self.command(
            name,
            RunCommand(
                tuple(part.replace(SCRIPT, path) for part in step.command),
                as_root=step.as_root,
                ok_codes=ok or step.ok_codes,
                label=redact_uri(step.label),
                windows_codes=step.suffix == ".ps1",
                script=(path, step.script),
                denied_hint=step.denied_hint,
            ),
        )

    def execute(self, name: str, step: Step, *, index: int = 99, number: int = 0) -> None:
        """One step of a plan."""
        self.check_deadline()
        if isinstance(step, RunScript):
            self.script(name, step, index=index, number=number)
        elif isinstance(step, RunCommand):
            self.command(name, step)
        elif isinstance(step, PutFile):
            target = self.ctx.require_target()
            self.action(
                name,
                lambda: target.put(step.source.read_bytes(), step.destination),
                detail=f"upload to {step.destination}",
            )
        elif isinstance(step, Restart):
            self.restart(name, step)
        else:
            self.until_done(name, index, step)

    def until_done(self, name: str, index: int, step: UntilDone) -> None:
        """Run the step's script until it exits 0, restarting when it asks for it."""
        for round_number in range(1, step.max_rounds + 1):
            self.check_deadline()
            code = self.script(f"{name} round {round_number}", step.run, index=index, ok=(0, *step.restart_codes))
            if code == 0:
                return
            self.ctx.events.info(f"{name}: exit code {code} asks for a restart", step=name)
            self.restart(f"{name} restart {round_number}", step.restart)
        raise BuildFailed(f"{name} still asked for a restart after {step.max_rounds} rounds", step=name)

    def restart(self, name: str, step: Restart) -> None:
        target = self.ctx.require_target()
        timeout = min(step.timeout, self.ctx.deadline.remaining())
        self.action(
            name,
            lambda: target.restart(step.command, timeout, lambda phase: self.ctx.events.info(phase, step=name)),
            detail=f"{step.command} (wait up to {timeout:.0f}s)",
        )
        if step.check_command:
            check = RunCommand(("/bin/sh", "-c", step.check_command), label=step.check_command)
            self.command(f"{name} check", check)
