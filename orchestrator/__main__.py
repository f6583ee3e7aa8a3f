"""`python -m orchestrator ...` runs `orch`."""

from orchestrator.cli.orch import orch

if __name__ == "__main__":
    orch(prog_name="orch")
