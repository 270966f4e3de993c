"""Shell: a script (scriptUri) or inline commands, run on a Linux target."""

from __future__ import annotations

from typing import Literal

from customizers.base import SCRIPT, Customizer, Input, PlanContext, PlanError, RunScript, ScriptSection, Step
from engine.template.sections import Check


def unix_text(data: bytes) -> bytes:
    """CRLF line endings to LF, as Packer's shell provisioner uploads scripts."""
    return data.replace(b"\r\n", b"\n")


# How AIB runs the two kinds (the README's "How Shell customizers run" has the evidence):
# inline lines run as the build user, so what needs root says `sudo`; a downloaded script
# runs as root, so it may write /etc/motd or `mkdir /x` without sudo (and `sudo` in it
# still works). The script is made executable, so its own shebang picks the interpreter.
INLINE_DENIED = "inline Shell commands run as the build user, as in AIB: prefix what needs root with sudo"
RUN_ELEVATED = 'chmod +x "$1" && if [ "$(id -u)" = 0 ]; then exec "$1"; fi; exec sudo -n -E "$1"'


class ShellCustomizer(ScriptSection):
    """Runs a shell script (scriptUri) or inline commands on a Linux target."""

    type: Literal["Shell"]

    def check(self, here: str, check: Check) -> None:
        super().check(here, check)
        if check.os_type == "Windows":
            check.error(
                f"{here}.type",
                "a Shell customizer needs a Linux image, and the source is Windows (use PowerShell)",
                rule="aib/customizer-os",
            )


class Shell(Customizer[ShellCustomizer]):
    type_name = "Shell"
    schema = ShellCustomizer
    validates = True

    def inputs(self) -> list[Input]:
        uri = self.section.script_uri
        return [Input(uri, self.section.sha256_checksum)] if uri else []

    def plan(self, ctx: PlanContext) -> list[Step]:
        if ctx.os_type == "Windows":
            raise PlanError("a Shell customizer needs a Linux target; use PowerShell on Windows")
        if self.section.inline is not None:
            # One script with `sh -e`: the first failing line fails the step, as in AIB.
            body = "#!/bin/sh -e\n" + "\n".join(self.section.inline) + "\n"
            return [RunScript(body.encode(), ("/bin/sh", "-e", SCRIPT), label="inline", denied_hint=INLINE_DENIED)]
        uri = self.section.script_uri or ""
        script = unix_text(ctx.fetched[uri].read_bytes())
        return [RunScript(script, ("/bin/sh", "-c", RUN_ELEVATED, "sh", SCRIPT), label=uri)]
