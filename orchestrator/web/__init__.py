"""The on-call view: the live server (overview, task search and timelines, SSE, `/metrics`,
alerts, guarded operator actions) and the incident bundle of `ops diagnose`.

Imports the judge, the queue and the core. Nothing here writes SQL: reads and operator actions
go through `orchestrator.queue.writes.Queue`.
"""
