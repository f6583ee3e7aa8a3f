"""Failure drills: short seeded scenarios that cause one failure for real and end in PASS/FAIL
with evidence (`orch drill list|run|all`, docs/drills.md).

Imports the soak run, the worker and handlers, the faults, the judge, the queue and the core.
"""
