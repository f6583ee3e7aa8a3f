"""`orch` with every queue config's epoch fence off, for the tests that show a drill catches a
broken fence. Test code only: the product has no switch (option or environment variable) that
turns the fence off; this builds such a config through the API."""

import functools

from orchestrator.cli import orch as cli
from orchestrator.core.model import QueueConfig

cli.QueueConfig = functools.partial(QueueConfig, fencing=False)

if __name__ == "__main__":
    cli.orch(prog_name="orch")
