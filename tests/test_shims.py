"""The runbook's shims (`python3 ops.py`, `python3 automation/orchestrator/ops.py`, and orch's):
they run the commands, and with a Python that lacks the dependencies they say so in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIMS = ["ops.py", "orch.py", "automation/orchestrator/ops.py", "automation/orchestrator/orch.py"]


@pytest.mark.parametrize("shim", SHIMS)
def test_a_shim_runs_its_command(shim, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / shim), "--help"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: {Path(shim).stem} ")


@pytest.mark.parametrize("shim", SHIMS)
def test_a_python_without_the_dependencies_gets_one_line_and_the_fix(shim, tmp_path):
    # -S: no site-packages, so click, tenacity and the rest are missing, as in a bare system Python
    done = subprocess.run([sys.executable, "-S", str(ROOT / shim), "status"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"Error: this Python ({sys.executable}) lacks '")
    assert f"activate the project's virtualenv (. {ROOT / '.venv' / 'bin' / 'activate'})" in lines[0]
    assert f"pip install -e {ROOT}" in lines[0]
