"""What the fold counted, turned into figures: SLIs, SLO table, verdict, checkpoints, series.

Everything returned is plain JSON-able data (lists, dicts, floats, None for "no data"), so the
same figures feed the markdown summary, the charts and any outside tool. The live headline (the
progress view) and the summary take success, p95 and the faults injected from one function,
`headline`. Reads the state and the aborts; writes nothing.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import numpy as np

from orchestrator.core.clock import RunEnd
from orchestrator.judge.aborts import RULE_NAMES, Abort
from orchestrator.judge.reporttext import parse_wall
from orchestrator.judge.state import TRANSIENT_CLASSES, RunState, Settings

CHART_POINTS = 144  # latency buckets across a run (30 min for 72h, 10 min for 24h)
WORKER_FAULTS = {"worker_crash": "worker_crash_every", "worker_stall": "worker_stall_every"}


def _rate(num: int, den: int) -> float | None:
    return num / den if den > 0 else None


def _pct(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def wall_at(header: dict[str, Any], t: float) -> str | None:
    """UTC wall time (ISO 8601, ms) at soak time t, from the header's start and speed; None on
    the skip clock (its soak time is not proportional to wall time)."""
    if header.get("clock") == "skip":
        return None
    start = parse_wall(header.get("started_at") or header.get("wall"))
    speed = float(header.get("speed") or 1.0)
    if start is None:
        return None
    stamp = start + timedelta(seconds=t / speed)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- SLOs and verdict ---------------------------------------------------------------------
VERDICTS = ("PASS", "FAIL", "INCOMPLETE", "ABORTED", "STOPPED")


def planned_worker_faults(st: Settings) -> dict[str, int]:
    """Worker crashes and stalls the run planned (kind -> count): the manifest's, counted from
    the run's fault schedule. A log written before the manifest carried them: estimated from the
    profile, as the summary did then."""
    planned = (st.header.get("manifest") or {}).get("faults") or {}
    if any(kind in planned for kind in WORKER_FAULTS):
        return {kind: int(planned[kind]) for kind in WORKER_FAULTS if kind in planned}
    faults = st.profile.get("faults") or {}
    out = {}
    for kind, key in WORKER_FAULTS.items():
        every = float(faults.get(key) or 0.0)
        if every > 0 and st.duration > 0:
            out[kind] = int(st.duration // every)
    return out


def latency_sample(s: RunState) -> np.ndarray:
    """SLI-2's sample: every terminal task's latency and, once the run has ended, the age of every
    task still PENDING or IN_PROGRESS (at least that long: the slowest tasks do not drop out)."""
    lat, _end = s.samples.arrays()
    if s.finished is None:
        return lat
    ages = [s.last_t - rec.enq for rec in s.open.values()
            if rec.enq is not None and rec.state in ("PENDING", "IN_PROGRESS")]
    return np.concatenate([lat, np.array(ages, dtype=np.float64)]) if ages else lat


def _row(name: str, target: Any, op: str, measured: Any, met: bool | None, note: str,
         required: bool = True) -> dict[str, Any]:
    """One SLO row: `pass` True / False, or None when not exercised (no data). `required`: a run
    cannot PASS while this row is not exercised (the profile planned what feeds it)."""
    status = "not exercised" if met is None else ("pass" if met else "fail")
    return {"name": name, "target": target, "op": op, "measured": measured, "pass": met, "status": status,
            "required": required, "note": note}


def slo_table(st: Settings, s: RunState, lat: np.ndarray | None = None,
              head: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per SLO of the profile: name, target, measured, pass (None: not exercised). `lat`
    (the latency sample) and `head` (its headline) when the caller has them already."""
    if lat is None:
        lat = latency_sample(s)
    head = head or headline(s, lat)
    slo = st.profile.get("slo") or {}
    done, failed = s.counts["DONE"], s.counts["FAILED"]
    worker_faults = planned_worker_faults(st)
    rows = []
    success = head["success"]
    target = float(slo.get("success", 0.0))
    rows.append(_row("SLI-1 success (DONE / (DONE + FAILED))", target, ">=", success,
                     None if success is None else success >= target,
                     f"{done:,}/{done + failed:,}" if success is not None else "no DONE/FAILED task: not exercised"))
    p95 = head["p95"]
    target = float(slo.get("p95", math.inf))
    rows.append(_row("SLI-2 p95 arrival->terminal (soak s)", target, "<=", p95, None if p95 is None else p95 <= target,
                     f"{len(lat):,} tasks" if p95 is not None else "no terminal task: not exercised"))
    want = float(slo.get("lease_recovery") or 0.0)
    if want > 0:
        rec = lease_recovery(st, s)
        planned = ", ".join(f"{n} {kind.replace('_', ' ')}es" if kind == "worker_crash" else f"{n} {kind.replace('_', ' ')}s"
                            for kind, n in worker_faults.items() if n)
        rows.append(_row("Lease-timeout recovery", want, ">=", rec["rate"],
                         None if rec["rate"] is None else rec["rate"] >= want,
                         f"{rec['recovered']:,}/{rec['judged']:,}" if rec["rate"] is not None else
                         "no lease expired: not exercised" + (f" although the profile planned {planned}" if planned
                                                              else ""),
                         required=any(worker_faults.values())))
    allowed = int(slo.get("max_duplicates") or 0)
    actual = len({d["key"] for d in s.duplicates})
    side = s.side_effects
    seen = side["applied"] + side["deduped"]
    note = (f"{side['applied']:,} side effects applied, {side['deduped']:,} duplicates stopped downstream; "
            f"{sum(s.dispatch.values()):,} duplicate dispatches")
    rows.append(_row("SLI-4 actual duplicate executions", allowed, "<=", actual,
                     actual <= allowed if (seen or actual) else None,
                     note if seen or actual else "no side effect reported by the handler: not exercised",
                     required=bool(worker_faults.get("worker_stall"))))
    return rows


def verdict(st: Settings, s: RunState, aborts: list[Abort], aborted: bool = False,
            slo: list[dict[str, Any]] | None = None, final: bool = False) -> str:
    """ABORTED when a rule tripped (live or on replay) or the log records an abort; STOPPED when
    the log records `run_stopped` (the run did not drain, its open tasks were never judged);
    INCOMPLETE when the run reached its end (`final`, or `run_finished` in the log) with tasks
    still PENDING or IN_PROGRESS; else FAIL when an SLO is missed or a required SLO was not
    exercised, PASS when every SLO is met."""
    logged = (s.finished or {}).get("verdict")
    if aborted or aborts or logged == "ABORTED":
        return "ABORTED"
    if s.stopped is not None or logged == "STOPPED":
        return "STOPPED"
    ended = final or s.finished is not None
    if logged == "INCOMPLETE" or (ended and s.counts["PENDING"] + s.counts["IN_PROGRESS"] > 0):
        return "INCOMPLETE"
    rows = slo if slo is not None else slo_table(st, s)
    if any(row["pass"] is False or (row["pass"] is None and row["required"]) for row in rows):
        return "FAIL"
    return "PASS"


def open_tasks(s: RunState, limit: int = 20) -> dict[str, Any]:
    """Tasks still PENDING or IN_PROGRESS at the end of the log, the oldest first, with their age
    (soak seconds since they should have arrived)."""
    rows = sorted(((task, rec) for task, rec in s.open.items() if rec.state in ("PENDING", "IN_PROGRESS")),
                  key=lambda p: (p[1].enq if p[1].enq is not None else p[1].due, p[0]))
    return {"count": len(rows), "oldest": [
        {"task": task, "state": rec.state, "attempt": rec.attempt,
         "age": None if rec.enq is None else round(s.last_t - rec.enq, 3)} for task, rec in rows[:limit]]}


# --- SLI figures --------------------------------------------------------------------------
def lease_recovery(st: Settings, s: RunState) -> dict[str, Any]:
    blocked = stuck = recovering = 0
    for rec in s.open.values():
        if rec.expired is None:
            continue
        if rec.state == "BLOCKED":
            blocked += 1
        elif s.last_t - rec.expired >= st.stall:
            stuck += 1
        else:
            recovering += 1
    lease = s.lease
    recovered = lease["done"] + lease["failed"] + blocked
    judged = recovered + lease["operator"] + stuck
    return {"expirations": lease["expirations"], "tasks": lease["tasks"], "done": lease["done"],
            "failed": lease["failed"], "blocked": blocked, "operator": lease["operator"], "stuck": stuck,
            "recovering": recovering, "recovered": recovered, "judged": judged, "rate": _rate(recovered, judged)}


def _latency(lat: np.ndarray, p95: float | None) -> dict[str, Any]:
    return {"tasks": int(len(lat)), "p50": _pct(lat, 50), "p95": p95, "p99": _pct(lat, 99),
            "max": float(lat.max()) if len(lat) else None, "mean": float(lat.mean()) if len(lat) else None}


def _arrival_lag(st: Settings, s: RunState) -> dict[str, Any]:
    """How late arrivals were enqueued after their planned time, over all and per burst window."""
    lag, planned = s.arrival_lag.arrays()
    bursts = []
    for start, end in (st.header.get("manifest") or {}).get("bursts") or []:
        inside = lag[(planned >= start) & (planned < end)]
        bursts.append({"start": float(start), "end": float(end), "arrivals": int(len(inside)),
                       "p95": _pct(inside, 95), "max": float(inside.max()) if len(inside) else None})
    return {"tasks": int(len(lag)), "p50": _pct(lag, 50), "p95": _pct(lag, 95),
            "max": float(lag.max()) if len(lag) else None, "bursts": bursts}


def _faults(st: Settings, s: RunState) -> list[dict[str, Any]]:
    planned_faults = (st.header.get("manifest") or {}).get("faults") or {}
    kinds_planned = dict(planned_faults.get("transient_kinds") or {})
    for name in ("db_lock", "duplicate_enqueue", "guardrail", "persistent"):
        if name in planned_faults:
            kinds_planned[name] = planned_faults[name]
    kinds_planned.update(planned_worker_faults(st))
    open_by_kind: dict[str, dict[str, int]] = {}
    for rec in s.open.values():
        if rec.faults:
            for kind, bit in s.fault_bits.items():
                if rec.faults & bit:
                    row = open_by_kind.setdefault(kind, {})
                    row[rec.state] = row.get(rec.state, 0) + 1
    order = list(kinds_planned) + sorted(set(s.injected) - set(kinds_planned))
    storm_tasks = sum(g[0] for g in s.storms.values())
    rows = []
    for kind in order:
        final = s.fault_final.get(kind, {})
        still = open_by_kind.get(kind, {})
        row = {"kind": kind, "planned": kinds_planned.get(kind), "injected": s.injected.get(kind, 0),
               "observed": s.observed.get(kind, 0), "observed_what": _observed_what(kind),
               "done": final.get("DONE", 0), "failed": final.get("FAILED", 0),
               "cancelled": final.get("CANCELLED", 0), "blocked": still.get("BLOCKED", 0),
               "open": still.get("PENDING", 0) + still.get("IN_PROGRESS", 0)}
        if kind == "persistent":
            row.update(observed=storm_tasks, injected=None)
        if kind == "worker_crash":
            row["restarts"] = s.observed.get("worker_crash:restarted", 0)
        if kind in s.fenced:
            row["fenced"] = s.fenced[kind]
        if kind == "guardrail":
            row["blocked_events"] = s.guard["blocked"]
            row["replanned"] = s.guard["replanned"]
        row["not_injected"] = _not_injected(kind, row, s)
        rows.append(row)
    return rows


SYNTHETIC = "orchestrator.handlers:synthetic"
HANDLER_FAULTS = TRANSIENT_CLASSES | {"db_lock", "guardrail"}  # raised by the synthetic handler itself


def _not_injected(kind: str, row: dict[str, Any], s: RunState) -> str | None:
    """Why fewer faults were injected than planned (None: as planned, or nothing planned)."""
    planned, injected = row["planned"], row["injected"]
    if not planned or injected is None or injected >= planned:
        return None
    lacking = f"{planned - injected:,} of {planned:,} planned not injected"
    handlers = sorted(h for h in s.handlers if h)
    if kind in HANDLER_FAULTS and handlers and SYNTHETIC not in handlers:
        return f"{lacking}: the handler ({', '.join(handlers)}) does not obey planned faults; only {SYNTHETIC} does"
    if s.stopped is not None or s.log_aborts or (s.finished or {}).get("verdict") in ("ABORTED", "STOPPED"):
        return f"{lacking}: the run ended before they were due"
    if kind in WORKER_FAULTS:
        return f"{lacking}: no worker held a lease when one was due"
    if kind == "db_lock":
        return f"{lacking}: the chaos agent did not hold the lock (not running, or its asker gave up)"
    return lacking


def _observed_what(kind: str) -> str:
    if kind in TRANSIENT_CLASSES:
        return f"attempt failures with error {kind}"
    return {"duplicate_enqueue": "duplicate_enqueue events (idempotency skip at the door)",
            "guardrail": "guardrail_exceeded events",
            "worker_crash": "leases expired under a killed worker",
            "worker_stall": "leases expired under a stopped worker",
            "persistent": "tasks that reached max attempts (retry storm)"}.get(kind, "events")


def _checkpoints(st: Settings, s: RunState, lat: np.ndarray, end: np.ndarray, backlog: dict[str, list[int]]) -> dict:
    every = st.checkpoint_every
    span = max(s.last_t, 0.0)
    windows = []
    count = int(span // every) + 1
    cum_done = cum_failed = 0
    arrivals, done_m, failed_m = s.arrivals.values, s.done_m.values, s.failed_m.values
    for k in range(count):
        lo, hi = k * every, (k + 1) * every
        a, b = int(lo // 60), int(hi // 60)
        done, failed = sum(done_m[a:b]), sum(failed_m[a:b])
        cum_done += done
        cum_failed += failed
        inside = lat[(end >= lo) & (end < hi)]
        upto = lat[end < hi]
        last_minute = min(b, len(backlog["PENDING"])) - 1
        logged = [c for c in s.checkpoints if lo < c["t"] <= hi + 60]
        windows.append({
            "index": k, "start": lo, "end": min(hi, span) if k == count - 1 else hi, "partial": hi > span,
            "arrivals": sum(arrivals[a:b]), "done": done, "failed": failed, "success": _rate(done, done + failed),
            "cum_success": _rate(cum_done, cum_done + cum_failed), "p95": _pct(inside, 95), "cum_p95": _pct(upto, 95),
            "backlog": {k: backlog[k][last_minute] if last_minute >= 0 else 0 for k in backlog},
            "errors": dict(sorted(s.error_windows.get(k, {}).items())),
            "logged": logged[-1] if logged else None,
        })
    return {"every": every, "windows": windows, "logged": list(s.checkpoints)}


def _series(st: Settings, s: RunState, lat: np.ndarray, end: np.ndarray) -> dict[str, Any]:
    minutes = int(max(s.last_t, 0.0) // 60) + 1
    backlog = {k: list(s.backlog[k].values[:minutes]) for k in ("PENDING", "IN_PROGRESS", "BLOCKED")}
    for state in backlog:
        backlog[state] += [0] * (minutes - len(backlog[state]))
        backlog[state][-1] = s.counts[state]
    done = np.array(s.done_m.values[:minutes] + [0] * (minutes - len(s.done_m.values[:minutes])), dtype=np.int64)
    failed = np.array(s.failed_m.values[:minutes] + [0] * (minutes - len(s.failed_m.values[:minutes])),
                      dtype=np.int64)
    w = st.window_minutes
    cd = np.concatenate([[0], np.cumsum(done)])
    cf = np.concatenate([[0], np.cumsum(failed)])
    ms = np.arange(1, int(max(s.last_t, 0.0) // 60) + 1)
    lo = np.maximum(ms - w, 0)
    wd, wf = cd[ms] - cd[lo], cf[ms] - cf[lo]
    n = wd + wf
    moving = [float(d / k) if k >= st.min_volume else None for d, k in zip(wd.tolist(), n.tolist())]
    span = st.duration if st.duration > 0 else max(s.last_t, 60.0)
    bucket = max(1, round(span / CHART_POINTS / 60.0)) * 60.0
    lat_t, p50, p95, count = [], [], [], []
    if len(lat):
        idx = (end // bucket).astype(np.int64)
        order = np.lexsort((lat, idx))
        idx_sorted, lat_sorted = idx[order], lat[order]
        cuts = np.flatnonzero(np.diff(idx_sorted)) + 1
        for part_idx, part in zip(np.split(idx_sorted, cuts), np.split(lat_sorted, cuts)):
            lat_t.append(float(part_idx[0] * bucket))
            p50.append(float(np.percentile(part, 50)))
            p95.append(float(np.percentile(part, 95)))
            count.append(int(len(part)))
    return {
        "minute": 60.0, "minute_t": [i * 60.0 for i in range(minutes)],
        "arrivals": list(s.arrivals.values[:minutes]) + [0] * (minutes - len(s.arrivals.values[:minutes])),
        "done": done.tolist(), "failed": failed.tolist(), "backlog": backlog,
        "moving_t": (ms * 60.0).tolist(), "moving": moving,
        "latency_bucket": bucket, "latency_t": lat_t, "p50": p50, "p95": p95, "latency_n": count,
    }


def _aborts(st: Settings, s: RunState, aborts: list[Abort], tripped: set[int]) -> list[dict[str, Any]]:
    logged = {a.rule: a for a in s.log_aborts}
    rows = []
    for abort in aborts:
        source = "log" if abort.rule in logged else "replay"
        if abort.rule in logged and abort.rule in tripped:
            source = "log+replay"
        rows.append({"rule": abort.rule, "name": abort.name or RULE_NAMES.get(abort.rule), "t": abort.t,
                     "wall": wall_at(st.header, abort.t), "figures": abort.figures, "evidence": list(abort.evidence),
                     "source": source})
    return rows


def headline(s: RunState, lat: np.ndarray | None = None) -> dict[str, Any]:
    """Success, p95 and faults injected so far: the figures' own (`build` takes them from here),
    cheaply (the progress view): `build` walks every open task and every per-minute series, tens
    of milliseconds late in a 72h run (with the GIL held, so the supervisor's jobs wait)."""
    if lat is None:
        lat = latency_sample(s)
    done, failed = s.counts["DONE"], s.counts["FAILED"]
    return {"success": _rate(done, done + failed), "p95": _pct(lat, 95),
            "faults": sum(n for kind, n in s.injected.items() if kind != "persistent")}


def build(st: Settings, s: RunState, aborts: list[Abort], tripped: set[int]) -> dict[str, Any]:
    """Every figure of the summary (docs/sli.md, "Figures")."""
    lat, end = s.samples.arrays()  # terminal tasks, with their end times (series, checkpoints)
    sample = latency_sample(s)  # SLI-2: with the open tasks' ages once the run has ended
    head = headline(s, sample)
    header = st.header
    counts = s.counts
    done, failed = counts["DONE"], counts["FAILED"]
    manual_done = sum(n for (ev, _), n in s.operator.items() if ev == "closed_done")
    manual_failed = sum(n for (ev, _), n in s.operator.items() if ev == "closed_failed")
    open_transient = sum(1 for r in s.open.values() if r.transient)
    actual = sorted({d["key"] for d in s.duplicates})
    dispatches = sum(s.dispatch.values())
    storms = sorted(({"cause": c, "tasks": g[0], "examples": list(g[1])} for c, g in s.storms.items() if g[0]),
                    key=lambda g: (-g["tasks"], g["cause"]))
    errors = sorted(({"class": c, "transient": c in TRANSIENT_CLASSES, "events": n,
                      "tasks": s.error_tasks.get(c, 0), "final": s.error_final.get(c, 0)}
                     for c, n in s.error_events.items()), key=lambda r: (-r["events"], r["class"]))
    series = _series(st, s, lat, end)
    moving_values = [(t, v) for t, v in zip(series["moving_t"], series["moving"]) if v is not None]
    lowest = min(moving_values, key=lambda p: p[1]) if moving_values else None
    run_end = RunEnd.of_event(s.finished)  # where the run ended; a log without it: as far as it goes
    figures = {
        "run": {
            "run_id": st.run_id, "profile_name": st.profile.get("name"), "profile": st.profile,
            "seed": header.get("seed"), "speed": header.get("speed"),
            "clock": header.get("clock") or "constant", "commit": header.get("commit"),
            "workers": header.get("workers"), "started_at": header.get("started_at") or header.get("wall"),
            "end_wall": run_end.wall if run_end else s.last_wall, "end_t": run_end.t if run_end else s.last_t,
            "ended": None if run_end is None else {"t": run_end.t, "wall": run_end.wall}, "duration": st.duration,
            "first_seq": header.get("first_seq"), "last_seq": s.last_seq, "events": s.events,
            "complete": s.complete, "stopped": s.stopped, "finished": s.finished,
            "log_verdict": (s.finished or {}).get("verdict"), "unknown_events": dict(s.unknown),
        },
        "manifest": header.get("manifest") or {},
        "states": {"enqueued": s.enqueued, **counts, "open": counts["PENDING"] + counts["IN_PROGRESS"],
                   "foreign": s.foreign},
        "sli1": {"done": done, "failed": failed, "success": head["success"],
                 "manual_done": manual_done, "manual_failed": manual_failed},
        "sli2": {**_latency(sample, head["p95"]), "open_counted": int(len(sample) - len(lat))},
        "arrival_lag": _arrival_lag(st, s),
        "sli3": {"tasks": s.sli3["tasks"], "done": s.sli3["done"], "failed": s.sli3["tasks"] - s.sli3["done"],
                 "rate": _rate(s.sli3["done"], s.sli3["tasks"]), "still_open": open_transient},
        "sli4": {"actual": len(actual), "keys": actual[:20], "extra_executions": len(s.duplicates),
                 "side_effects": s.side_effects["applied"], "stopped": s.side_effects["deduped"],
                 "stopped_examples": s.deduped[:10],
                 "duplicates": s.duplicates[:20], "dispatches": dispatches, "breakdown": dict(s.dispatch),
                 "stale_by_call": dict(sorted(s.stale_by_call.items())),
                 "ratio": _rate(len(actual), dispatches)},
        "lease_recovery": lease_recovery(st, s),
        "moving": {"window": st.window_minutes * 60.0, "threshold": st.moving_success,
                   "min_volume": st.min_volume, "judged": len(moving_values),
                   "lowest": lowest[1] if lowest else None, "lowest_t": lowest[0] if lowest else None,
                   "below": sum(1 for _, v in moving_values if v < st.moving_success)},
        "errors": errors,
        "retry_storms": {"max_attempts": st.max_attempts, "tasks": sum(g["tasks"] for g in storms), "groups": storms},
        "operator": {"counts": [{"event": ev, "actor": actor, "n": n} for (ev, actor), n in sorted(s.operator.items())],
                     "manual": list(s.manual), "actions": list(s.actions)},
        "guardrail": {**s.guard, "blocked_at_end": counts["BLOCKED"], "unresolved": sorted(s.pending_guards)},
        "faults": _faults(st, s),
        "checkpoints": _checkpoints(st, s, lat, end, series["backlog"]),
        "resumes": list(s.resumes),
        "aborts": _aborts(st, s, aborts, tripped),
        "workers": {"planned": header.get("workers"), **s.workers},
        "wind_down": dict(s.after_close),
        "series": series,
        "slo": slo_table(st, s, sample, head),
        "open_tasks": open_tasks(s),
    }
    figures["verdict"] = verdict(st, s, aborts, slo=figures["slo"])
    return figures
