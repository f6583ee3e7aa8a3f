#!/usr/bin/env python3
"""Runs `ops` as the runbook does: python3 automation/orchestrator/ops.py ..."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from orchestrator.cli.entry import run  # noqa: E402  (standard library only)

if __name__ == "__main__":
    run("orchestrator.cli.ops", "ops", ROOT)
