"""What the runbook's shims run (`python3 ops.py ...`, `python3 automation/orchestrator/ops.py ...`):
the command line, or, when this Python lacks a dependency, one line that says which and how to
get it, exit 1 (no traceback). Imports only the standard library until the command line loads."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def run(module: str, command: str, root: Path) -> None:
    try:
        cli = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if not missing or missing == "orchestrator":
            raise
        venv = root / ".venv" / "bin" / "activate"
        sys.stderr.write(
            f"Error: this Python ({sys.executable}) lacks '{missing}', which {command} needs: "
            f"activate the project's virtualenv (. {venv}) or install the project into this Python "
            f"(pip install -e {root})\n")
        raise SystemExit(1) from None
    getattr(cli, command)(prog_name=command)
