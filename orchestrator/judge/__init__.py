"""The judge: reads only the JSONL contract (docs/jsonl.md), never the database. The SLI
aggregator and its abort rules (live and offline alike), the summary, the HTML report, the
charts and the incident record.

Imports only `orchestrator.core`.
"""
