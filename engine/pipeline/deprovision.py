"""The deprovision phase, as AIB runs it, planned as steps.

Linux: /tmp/DeprovisioningScript.sh when a customizer wrote one, else AIB's waagent
command; for images without waagent, aib-local's generic deprovision (or nothing, with
--deprovision skip). Windows: C:\\DeprovisioningScript.ps1, AIB's Sysprep sequence put
in place before the customizers (which may replace it). What the probe finds decides
the plan; `plan_linux` is pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

from customizers.base import SCRIPT, RunCommand, RunScript, Step
from engine.pipeline.context import BuildContext
from engine.pipeline.steps import StepRunner

OVERRIDE_LINUX = "/tmp/DeprovisioningScript.sh"
OVERRIDE_WINDOWS = "C:/DeprovisioningScript.ps1"
MISSING_WINDOWS_SCRIPT = (
    "Deprovisioning script [c:\\DeprovisioningScript.ps1] could not be found. Image build may fail or the VM "
    "created from the Image may not boot. Please make sure the deprovisioning script is not accidentally "
    "deleted by a Customizer in the Template."
)
# AIB's default Linux deprovision command, as AIB runs it.
AIB_DEPROVISION = """WAAGENT=/usr/sbin/waagent
waagent -version 1> /dev/null 2>&1
if [ $? -eq 0 ]; then
  WAAGENT=waagent
fi
$WAAGENT -force -deprovision+user && export HISTSIZE=0 && sync
"""
# In a container Docker bind-mounts /etc/resolv.conf, /etc/hosts and /etc/hostname, and
# waagent cannot delete them (EBUSY: it stops with a traceback). A sitecustomize module on
# PYTHONPATH (waagent is Python) empties such a file instead, and says so; nothing else of
# the command changes, and on a VM it never comes into play.
MOUNTED_FILES_SHIM = r"""shim=$(mktemp -d /tmp/.aib-local-deprovision.XXXXXX)
trap 'rm -rf "$shim"' EXIT
cat > "$shim/sitecustomize.py" <<'PYTHON'
import errno, os, sys
_MOUNTED = {"/etc/resolv.conf", "/etc/hosts", "/etc/hostname"}
_remove = os.remove
def _remove_mounted(path, *args, **kwargs):
    try:
        return _remove(path, *args, **kwargs)
    except OSError as exc:
        if exc.errno != errno.EBUSY or os.path.realpath(path) not in _MOUNTED:
            raise
        open(path, "w").close()
        print(f"aib-local: {path} is mounted by Docker in a container: emptied instead of deleted", file=sys.stderr)
os.remove = os.unlink = _remove_mounted
PYTHON
export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"
"""
WAAGENT_DEPROVISION = MOUNTED_FILES_SHIM + AIB_DEPROVISION
FIND_WAAGENT = "command -v waagent >/dev/null 2>&1 || [ -x /usr/sbin/waagent ]"
# One probe: 10 = a customizer wrote the override, 11 = waagent is there, else neither.
PROBE_LINUX = f"test -f {OVERRIDE_LINUX} && exit 10; {FIND_WAAGENT} && exit 11; exit 0"
FOUND_OVERRIDE, FOUND_WAAGENT = 10, 11
PROBE_WINDOWS = f"if (Test-Path '{OVERRIDE_WINDOWS}') {{ exit 0 }} else {{ exit 1 }}"
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
NAME = "deprovision"


@dataclass(frozen=True)
class Plan:
    """What the deprovision step does: notes to say, steps to run, and whether the image
    ends generalized."""

    steps: list[Step] = field(default_factory=list)
    info: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def generalizes(self) -> bool:
        return bool(self.steps)


def plan_linux(found: int, mode: str) -> Plan:
    """The plan for what the probe found (FOUND_OVERRIDE, FOUND_WAAGENT or neither) and
    --deprovision `mode` (generic | skip)."""
    if found == FOUND_OVERRIDE:
        return Plan(
            [RunCommand(("/bin/sh", OVERRIDE_LINUX), as_root=True, label=OVERRIDE_LINUX)],
            info=[f"running the deprovision override {OVERRIDE_LINUX} written by a customizer"],
        )
    if found == FOUND_WAAGENT:
        waagent = RunScript(
            WAAGENT_DEPROVISION.encode(), ("/bin/sh", SCRIPT), as_root=True, label="waagent -force -deprovision+user"
        )
        return Plan([waagent])
    if mode == "generic":
        generic = RunScript(
            GENERIC_DEPROVISION.encode(), ("/bin/sh", SCRIPT), as_root=True, label="generic deprovision"
        )
        return Plan(
            [generic],
            warnings=[
                "the image has no waagent: running aib-local's generic deprovision instead "
                "(clears machine-id, SSH host keys, logs, shell history); --deprovision skip turns it off"
            ],
        )
    return Plan(warnings=["deprovision SKIPPED (--deprovision skip): the image has no waagent and is not generalized"])


def plan_windows(found: bool) -> Plan:
    if not found:
        return Plan(warnings=[MISSING_WINDOWS_SCRIPT])
    argv = ("powershell", "-NoProfile", "-ExecutionPolicy", "Bypass", "-File", OVERRIDE_WINDOWS)
    return Plan([RunCommand(argv, as_root=True, label=OVERRIDE_WINDOWS, windows_codes=True)])


def deprovision(ctx: BuildContext, steps: StepRunner) -> None:
    ctx.current = NAME
    if ctx.os_type == "Windows":
        run(ctx, steps, plan_windows(steps.probe(PROBE_WINDOWS) == 0))
        return
    run(ctx, steps, plan_linux(steps.probe(PROBE_LINUX), ctx.options.deprovision))
    target = ctx.require_target()
    steps.action(
        "prepare-capture", target.prepare_capture, detail="take aib-local's build user and sudo set-up back out"
    )


def run(ctx: BuildContext, steps: StepRunner, planned: Plan) -> None:
    for message in planned.info:
        ctx.events.info(message, step=NAME)
    for message in planned.warnings:
        ctx.events.warning(message, step=NAME)
    for step in planned.steps:
        steps.execute(NAME, step)
    ctx.generalized = ctx.generalized or planned.generalizes


def place_windows_script(ctx: BuildContext, steps: StepRunner) -> None:
    """AIB puts its Sysprep script in place before the customizers, which may replace it."""
    if steps.probe(PROBE_WINDOWS) == 0:
        ctx.events.info(f"{OVERRIDE_WINDOWS} already exists on the target: it will run as the deprovision step")
        return
    script = resources.files("engine").joinpath("data/DeprovisioningScript.ps1").read_text()
    ctx.require_target().put(script.replace("\n", "\r\n").encode(), OVERRIDE_WINDOWS)
