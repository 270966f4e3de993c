"""A build of one image template, split by what changes together.

- `loop`: the phase list as data, the run and its outcome (`BuildRun`, `run_all`)
- `context`: the state of one build that the phases share
- `steps`: the step runner (events, the deadline, what an exit code means)
- `inputs`, `source`, `machine`, `customize`, `deprovision`, `distribute`: the phases
- `teardown`: claiming a build, and the keep/remove decision at its end
- `recording`: the build record and the template's lastRunStatus
- `revisit`: coming back to a build (rerun on its kept target)
- `cache`: the step cache (the longest kept prefix restored, states worth keeping kept)
"""

from __future__ import annotations

from engine.pipeline.loop import PHASES, BuildRun, run_all
from engine.pipeline.options import LOG_NAME, BuildOptions, BuildResult, Continuation

__all__ = ["LOG_NAME", "PHASES", "BuildOptions", "BuildResult", "BuildRun", "Continuation", "run_all"]
