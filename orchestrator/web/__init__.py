"""The on-call view: SVG charts, the offline HTML report's pieces, the live server, metrics, alerts.

Nothing here writes SQL: reads and operator actions go through `orchestrator.queue.Queue`.
"""
