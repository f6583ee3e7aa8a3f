"""`/metrics` in the Prometheus text format (prometheus-client), from the live view's snapshot
(the same Aggregator as the page) and the queue's own status (leases in flight, heartbeat ages).
A scrape renders one aggregator snapshot and one queue status, which is one read transaction.

Durations and times on the soak clock end in `_soak_seconds`; `_seconds` is wall time (Unix
time for `_timestamp_seconds`), so Prometheus' `rate()` over either is per wall second and a
soak-time figure is never mistaken for a wall-time one at speed 4320.

The names are pinned by tests/test_web.py; docs/oncall-view.md lists them.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from orchestrator.judge.reporttext import parse_wall

P = "orch_soak_"
RULE_STATES = ("ok", "armed", "tripped")
STATES = ("PENDING", "IN_PROGRESS", "BLOCKED", "DONE", "FAILED", "CANCELLED")
VERDICTS = ("PASS", "FAIL", "INCOMPLETE", "ABORTED", "STOPPED")


def run_state(snap: dict[str, Any]) -> str:
    """running, finished, aborted or stopped: what a dashboard filters runs by."""
    if snap["live"]:
        return "running"
    return {"ABORTED": "aborted", "STOPPED": "stopped"}.get(snap["verdict"], "finished")


def families(snap: dict[str, Any] | None, status: dict[str, Any] | None) -> list:
    out = []
    g = GaugeMetricFamily
    if status is None:  # no queue yet (an empty home): the series exist, at zero
        status = {"counts": dict.fromkeys(STATES, 0), "in_flight": [], "expired_leases": 0, "effects": 0}
    tasks = g(P + "tasks", "Tasks in the queue by state (database).", labels=["state"])
    for state, n in status["counts"].items():
        tasks.add_metric([state], n)
    out.append(tasks)
    out.append(g(P + "leases_in_flight", "Tasks IN_PROGRESS under a lease (database).",
                 value=sum(w["tasks"] for w in status["in_flight"])))
    out.append(g(P + "leases_expired_unreaped", "Leases past their TTL not reaped yet.",
                 value=status["expired_leases"]))
    hb = g(P + "heartbeat_age_soak_seconds", "Oldest heartbeat age of the leases a worker holds (soak s).",
           labels=["worker"])
    for w in status["in_flight"]:
        if w["heartbeat_age"] is not None:
            hb.add_metric([str(w["worker"])], w["heartbeat_age"])
    out.append(hb)
    out.append(CounterMetricFamily(P + "effects", "Effects committed in the queue (one per idempotency key).",
                                   value=status["effects"]))
    if snap is None:
        log_tasks = g(P + "log_tasks", "Tasks by state as the run's log tells it (the aggregator).", labels=["state"])
        for state in STATES:
            log_tasks.add_metric([state], 0)
        verdict = g(P + "verdict", "1 for the verdict so far.", labels=["verdict"])
        for v in VERDICTS:
            verdict.add_metric([v], 0.0)
        return out + [log_tasks, verdict]
    info = g(P + "run_info", "1 for the run the view follows (its id, profile, clock mode and state).",
             labels=["run_id", "profile", "clock", "state"])
    info.add_metric([str(snap["run_id"]), str(snap["profile"]), str(snap.get("clock") or "constant"),
                     run_state(snap)], 1.0)
    out.append(info)
    out.append(CounterMetricFamily(P + "lease_expiries", "lease_expired events in the run's log.",
                                   value=snap["lease"]["expirations"]))
    out.append(CounterMetricFamily(P + "stale_rejections", "stale_rejected events (fenced late calls).",
                                   value=snap["lease"]["stale"]))
    out.append(CounterMetricFamily(P + "duplicate_dispatches", "SLI-4 duplicate dispatches.",
                                   value=snap["sli"]["dispatches"]))
    out.append(g(P + "actual_duplicates", "SLI-4 keys executed more than once (must be 0).",
                 value=snap["sli"]["actual_duplicates"]))
    log_tasks = g(P + "log_tasks", "Tasks by state as the run's log tells it (the aggregator).", labels=["state"])
    for state, n in snap["states"].items():
        log_tasks.add_metric([state], n)
    out.append(log_tasks)
    rules = g(P + "abort_rule", "Abort rule state: 1 for the current one of ok, armed, tripped.",
              labels=["rule", "name", "state"])
    for r in snap["rules"]:
        for state in RULE_STATES:
            rules.add_metric([str(r["rule"]), r["name"], state], 1.0 if r["state"] == state else 0.0)
    out.append(rules)
    sli = snap["sli"]
    for name, key, doc in (("sli_success_ratio", "success", "SLI-1 DONE / (DONE + FAILED)."),
                           ("sli_latency_p95_soak_seconds", "p95", "SLI-2 p95 arrival->terminal (soak s)."),
                           ("sli_transient_recovery_ratio", "transient_recovery", "SLI-3."),
                           ("lease_recovery_ratio", "lease_recovery", "Lease-timeout recovery.")):
        if sli[key] is not None:
            out.append(g(P + name, doc, value=sli[key]))
    if snap["moving"]["last"] is not None:
        out.append(g(P + "moving_success_ratio", "30-min moving success at the last minute boundary.",
                     value=snap["moving"]["last"]))
    out.append(g(P + "clock_soak_seconds", "Soak seconds since the run start (the log's last event).",
                 value=snap["soak_t"]))
    out.append(g(P + "duration_soak_seconds", "The run's planned length (soak s).", value=snap["duration"] or 0.0))
    for name, key, doc in (("started_timestamp_seconds", "started_at", "Wall clock of the run's start (Unix s)."),
                           ("last_event_timestamp_seconds", "wall", "Wall clock of the log's last event (Unix s).")):
        stamp = parse_wall(snap[key])
        if stamp is not None:
            out.append(g(P + name, doc, value=stamp.timestamp()))
    out.append(g(P + "speed", "Soak seconds per wall second.", value=snap["speed"] or 0.0))
    out.append(g(P + "log_seq", "The last seq read from the run's log.", value=snap["last_seq"] or 0))
    budget = snap["budget"]
    if budget["remaining"] is not None:
        out.append(g(P + "error_budget_remaining_ratio", "SLI-1 error budget left at the run's failure ratio.",
                     value=budget["remaining"]))
    burn = g(P + "burn_rate", "Failure ratio over the window / (1 - SLO success).", labels=["pair", "window", "minutes"])
    firing = g(P + "burn_rate_firing", "1 when both windows of a pair burn at or above its threshold.",
               labels=["pair", "threshold"])
    for w in budget["windows"]:
        for which in ("long", "short"):
            value = w[f"burn_{which}"]
            if value is not None:
                burn.add_metric([w["name"], which, str(w[f"{which}_min"])], value)
        firing.add_metric([w["name"], f"{w['threshold']:g}"], 1.0 if w["firing"] else 0.0)
    out += [burn, firing]
    verdict = g(P + "verdict", "1 for the verdict so far.", labels=["verdict"])
    for v in VERDICTS:
        verdict.add_metric([v], 1.0 if snap["verdict"] == v else 0.0)
    out.append(verdict)
    return out


class _Collector:
    def __init__(self, snap, status):
        self.snap, self.status = snap, status

    def collect(self):
        return families(self.snap, self.status)


def render(snap: dict[str, Any] | None, status: dict[str, Any] | None) -> bytes:
    """The exposition text (a fresh registry per scrape: no global state)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snap, status))
    return generate_latest(registry)
