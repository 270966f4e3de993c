"""The command line: `run` (the console script), `main` and its command groups.

- `main`: the group, validate/show/list/export, and the one error boundary; `run`, the
  console script, calls it with the collector set for a short-lived process (`collector`)
- `build`: build, rerun, shell, logs, clean
- `gallery`: the `az sig`-style gallery commands
- `options`: the click options several commands share
"""

from __future__ import annotations

from engine.cli.main import cli, main, run

__all__ = ["cli", "main", "run"]
