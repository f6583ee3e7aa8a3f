#!/usr/bin/env python3
"""Runs `orch` from a checkout: python3 orch.py ..."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from orchestrator.cli.entry import run  # noqa: E402  (standard library only)

if __name__ == "__main__":
    run("orchestrator.cli.orch", "orch", ROOT)
