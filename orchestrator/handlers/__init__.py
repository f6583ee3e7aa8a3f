"""Handlers: what a worker runs for a task.

A handler is `module:function` taking a `TaskContext` and returning a JSON-able result (the
effect's record). It fails a task by raising; `core.model.classify` maps the exception to a class.
`orchestrator.handlers:synthetic` (the default) obeys the faults planned into each task.

Part of the worker side: imports only `orchestrator.core`.
"""

from orchestrator.handlers.context import LeaseLost, Stopping, TaskContext, load_handler
from orchestrator.handlers.synthetic import synthetic

__all__ = ["LeaseLost", "Stopping", "TaskContext", "load_handler", "synthetic"]
