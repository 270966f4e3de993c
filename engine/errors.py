"""The error vocabulary. Every error the user can see derives from `AibLocalError`.

Errors never print or log themselves: the CLI reports them once, at one boundary, and
turns them into the exit codes of the contract (1 build failed, 2 invalid input,
3 environment, 130 interrupted).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


class AibLocalError(Exception):
    """Root of every error aib-local reports to the user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


def key_path(path: str, key: str) -> str:
    """`path.key`, or `path["key"]` when the key is not a plain word (so the path stays readable)."""
    if re.fullmatch(r"[A-Za-z_$@][A-Za-z0-9_$@-]*", key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


@dataclass(frozen=True)
class Finding:
    """One validation finding, named by its JSON path.

    `aib_rejects` says whether Azure Image Builder would refuse the template for it,
    which is what `validate` exists to answer before any cloud round trip.
    """

    path: str
    message: str
    severity: str = "error"  # "error" | "warning" | "note"
    aib_rejects: bool = True
    rule: str = ""  # the kind of finding, stable whatever the message says (SARIF's ruleId)

    def describe(self) -> str:
        """path: message (verdict), without the severity."""
        where = f"{self.path}: " if self.path else ""
        if self.severity == "note":
            return f"{where}{self.message}"
        verdict = "AIB would reject this" if self.aib_rejects else "AIB would accept this"
        return f"{where}{self.message} ({verdict})"

    def render(self) -> str:
        return f"{self.severity}: {self.describe()}"


class UsageError(AibLocalError):
    """The command line or an input file is invalid (exit 2)."""

    exit_code = 2


class TemplateError(UsageError):
    """A template is invalid; carries every finding, not only the first."""

    def __init__(self, source: str, findings: list[Finding]) -> None:
        errors = [f for f in findings if f.severity == "error"]
        lines = [f"{source}: {len(errors)} error(s)"] + ["  " + f.render() for f in errors]
        super().__init__("\n".join(lines))
        self.source = source
        self.findings = findings


class EnvironmentProblem(AibLocalError):
    """Something the machine lacks: no Docker engine, no base image, no key (exit 3)."""

    exit_code = 3


class StoreDamaged(EnvironmentProblem):
    """A store record that cannot be read as one (truncated, empty, not JSON, the wrong
    shape): a damaged file underneath, named with its path; `clean --repair` moves it aside."""

    def __init__(self, path: Path | str, what: str) -> None:
        super().__init__(
            f"the store record {path} is damaged: {what}",
            hint="aib-local clean --repair moves damaged records aside (into the store's quarantine folder)",
        )
        self.path = Path(path)
        self.what = what


class EngineSilent(EnvironmentProblem):
    """The Docker engine stopped answering (a paused or hung dockerd): nothing more is asked
    of it, since each call would wait out the client's timeout."""


class StoreNewer(StoreDamaged):
    """A store record in a format newer than this aib-local reads: not damage, and never
    moved aside; the aib-local that wrote it (or a newer one) reads it."""

    def __init__(self, path: Path | str, found: int, reads: int) -> None:
        what = f"written by a newer aib-local (record format {found}; this one reads format {reads} and older)"
        EnvironmentProblem.__init__(
            self,
            f"the store record {path} was {what}",
            hint="use the aib-local that wrote it, or upgrade this one (pip install --upgrade aib-local)",
        )
        self.path = Path(path)
        self.what = what


class BuildFailed(AibLocalError):
    """The build failed in a named step (exit 1)."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        step: str,
        exit_code: int | None = None,
        log_path: Path | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.step = step
        self.step_exit_code = exit_code
        self.log_path = log_path

    def __str__(self) -> str:
        text = super().__str__()
        return text if self.log_path is None else f"{text}\n  log: {self.log_path}"


class BuildTimeout(BuildFailed):
    """buildTimeoutInMinutes expired while `step` was running."""


class ValidationFailed(BuildFailed):
    """An in-VM validator failed: the run is Failed, whether or not it went on to distribute."""


class Interrupted(AibLocalError):
    """A signal interrupted the build; cleanup has run (exit 130 for SIGINT, 143 for SIGTERM)."""

    exit_code = 130

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        from engine import signals

        super().__init__(message, hint=hint)
        self.exit_code = signals.exit_code()


def engine_fault(exc: BaseException) -> bool:
    """Whether `exc` is the Docker engine's (or its connection's), not a defect: told by the
    library that raised it (docker-py, requests, urllib3), so that nothing is imported for it."""
    return isinstance(exc, Exception) and type(exc).__module__.split(".")[0] in ("docker", "requests", "urllib3")
