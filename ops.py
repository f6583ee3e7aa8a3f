#!/usr/bin/env python3
"""Runs `ops` from a checkout: python3 ops.py ..."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from orchestrator.cli.ops import ops  # noqa: E402

if __name__ == "__main__":
    ops(prog_name="ops")
