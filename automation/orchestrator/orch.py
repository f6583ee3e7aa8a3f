#!/usr/bin/env python3
"""Runs `orch` as the runbook does: python3 automation/orchestrator/orch.py ..."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from orchestrator.cli.orch import orch  # noqa: E402

if __name__ == "__main__":
    orch(prog_name="orch")
