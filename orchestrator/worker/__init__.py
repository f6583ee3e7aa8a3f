"""The worker process: lease, run the handler under the task's lease, heartbeat, report back.

Imports `orchestrator.handlers`, `orchestrator.faults`, `orchestrator.queue` and `orchestrator.core`.
"""
