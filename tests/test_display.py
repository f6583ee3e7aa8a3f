"""Soak time shown in its own unit: a sub-hour profile is `10m`, not `0.17h/0h`."""

from __future__ import annotations

from orchestrator.judge.reporttext import span
from orchestrator.soak.progress import plain_line


def test_span_uses_the_unit_that_fits():
    assert [span(s) for s in (259200, 86400, 5400, 3600, 600, 90, 45, 0.5)] == [
        "72h", "24h", "1.5h", "1h", "10m", "1.5m", "45s", "0.5s"]


def test_the_progress_line_of_a_ten_minute_profile():
    snap = {"soak_t": 300.0, "duration": 600.0, "arrivals": 3, "planned": 7, "success": None, "p95": None,
            "faults": 0, "counts": dict.fromkeys(("PENDING", "IN_PROGRESS", "DONE", "FAILED", "BLOCKED", "CANCELLED"), 0)}
    assert plain_line(snap).startswith("soak  0:05:00/10m  arrivals 3/7  ")
