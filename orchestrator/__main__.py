"""`python -m orchestrator ...` runs `orch` (how the supervisor starts its worker processes)."""

from .cli.orch import orch

orch(prog_name="orch")
