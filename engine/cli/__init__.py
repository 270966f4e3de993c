"""The command line: `main` (the console script) and its command groups.

- `main`: the group, validate/show/list/export, and the one error boundary
- `build`: build, rerun, shell, logs, clean
- `gallery`: the `az sig`-style gallery commands
- `options`: the click options several commands share
"""

from __future__ import annotations

from engine.cli.main import cli, main

__all__ = ["cli", "main"]
