"""The incident record of an aborted soak: `incident_<run_id>.md`, in the shape the soak plan asks
for (time in KST, impact, detecting SLI, mitigation, root cause, prevention).

The root cause is written only as far as the log's evidence shows, and is marked for
confirmation: a person reads the evidence tasks' events and confirms or corrects it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.core.errors import StoreError
from orchestrator.core.files import write_whole
from orchestrator.judge.aborts import (
    DUPLICATE_EXECUTION,
    GUARDRAIL_NOT_BLOCKED,
    LOG_MISSING,
    MOVING_SUCCESS,
    RULE_SLI,
    RULE_TITLES,
    TRANSITION_STALL,
    Abort,
)
from orchestrator.judge.figures import wall_at
from orchestrator.judge.reporttext import both, kst, num, pct, soak_clock, table

if TYPE_CHECKING:
    from orchestrator.judge.sli import Aggregator

PREVENTION = {
    MOVING_SUCCESS: [
        "Group the window's failures by error class (error buckets, retry storms) and fix the dominant class "
        "at its source (upstream, handler, or retry policy).",
        "If the failures are planned faults, check that the profile's fault shares match the plan "
        "(a misconfigured share trips this rule by design).",
        "Add a drill that reproduces the failure mix at a small scale before the next long soak.",
    ],
    DUPLICATE_EXECUTION: [
        "Add a regression test that forces the same interleaving (two epochs of the key completing) against "
        "the queue contract suite; it must show one effect and one `idempotency_skip`.",
        "Check the effect guard: the effect row and DONE must commit in one transaction, fenced on "
        "`state='IN_PROGRESS' AND epoch=?`.",
        "Keep the soak's duplicate-enqueue and worker-stall faults on until the test passes under them.",
    ],
    TRANSITION_STALL: [
        "Find what held the write lock (lock-hog faults, WAL checkpoints, a long transaction) from the "
        "checkpoints' lock-retry counts and the workers' last events.",
        "Bound every write transaction's duration and make the busy handler's total wait (`lock_bound`) "
        "shorter than the stall window.",
        "Add a DB-lock-storm drill that holds the lock past the busy timeout and checks that work resumes.",
    ],
    GUARDRAIL_NOT_BLOCKED: [
        "Write `guardrail_exceeded` and `blocked` in one transaction (as `Queue.block` does) and refuse the "
        "spend before it happens.",
        "Add a test in which a handler exceeds its budget and assert the task ends BLOCKED with no effect.",
    ],
    LOG_MISSING: [
        "Supervise the log shipper like the workers (restart on death) and alert when the log lags the "
        "database by more than a few soak minutes.",
        "Keep the shipper's fsync-per-batch and its cut-off of a torn last line; never edit a run's log by hand.",
        "Add a drill that kills the shipper and checks that rule 5 fires and that the restarted shipper "
        "resumes gap-free.",
    ],
}


def write_incident(abort: Abort, agg: Aggregator, out_dir: Path) -> Path:
    """Write `incident_<run_id>.md` for the abort; return its path."""
    out_dir = Path(out_dir)
    path = incident_path(out_dir, agg.run_id)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_whole(path, render_incident(abort, agg.figures(), wall_at(agg.settings.header, abort.t)))
    except OSError as exc:
        raise StoreError(f"cannot write the incident record in {out_dir}: {exc.strerror or exc}") from None
    return path


def incident_path(out_dir: Path, run_id: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    return Path(out_dir) / f"incident_{safe}.md"


def render_incident(abort: Abort, f: dict[str, Any], wall: str | None) -> str:
    run = f["run"]
    title = RULE_TITLES.get(abort.rule, abort.name)
    lines = [
        f"# Incident: soak run `{run['run_id']}` aborted by rule {abort.rule} ({title})", "",
        f"- **Time (KST)**: {kst(wall)}; {both(wall)}; soak {soak_clock(abort.t)} "
        f"({abort.t:,.1f} s after the run start)",
        f"- **Run**: profile {run['profile_name']}, seed {run['seed']}, speed {num(run['speed'])}x, "
        f"commit `{run['commit'] or 'unknown'}`",
        "- **Status**: soak stopped (verdict ABORTED); summary: [soak_summary.md](soak_summary.md)", "",
        "## Impact", "",
    ]
    lines += _impact(abort, f)
    lines += ["", "## Detection", "",
              f"- Rule {abort.rule} `{abort.name}`: {title}.",
              f"- Detecting SLI: {RULE_SLI.get(abort.rule, '-')}.", ""]
    lines += table(["figure", "value"], [(k, _value(v)) for k, v in abort.figures.items()])
    evidence = ", ".join(f"`{t}`" for t in abort.evidence[:50]) or "none (the evidence is the log itself)"
    lines += ["", f"- Evidence tasks: {evidence}", "", "## Mitigation taken", ""]
    lines += _mitigation(f)
    lines += ["", "## Root cause (as far as the evidence shows; **to be confirmed**)", ""]
    lines += _cause(abort, f)
    lines += ["", "## Prevention actions", ""]
    lines += [f"- [ ] {item}" for item in PREVENTION.get(abort.rule, ["Confirm the root cause, then decide."])]
    lines += ["", "## Follow-up for the on-call", "",
              "- `ops status` for the current state; the evidence tasks' lines in the log (`grep` the task ids).",
              "- Runbook: isolate (`ops cancel`), `ops replan --notes`, `ops retry`, then `orch done|fail --notes`."]
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, float) and 0 < value < 1:
        return f"{value:.6g}"
    return num(value) if not isinstance(value, (dict, list)) else str(value)


def _impact(abort: Abort, f: dict[str, Any]) -> list[str]:
    run, s = f["run"], f["states"]
    planned = run["duration"] or 0
    share = f" ({abort.t / planned:.1%} of the planned {soak_clock(planned)})" if planned else ""
    p95 = f["sli2"]["p95"]
    out = [f"- The soak stopped at soak {soak_clock(abort.t)}{share}; the rest of the plan did not run.",
           f"- Tasks at the end of the log: {s['enqueued']:,} enqueued, {s['DONE']:,} DONE, {s['FAILED']:,} FAILED, "
           f"{s['CANCELLED']:,} CANCELLED, {s['BLOCKED']:,} BLOCKED, {s['open']:,} still open.",
           f"- SLI-1 so far {pct(f['sli1']['success'])}, SLI-2 p95 so far {'n/a' if p95 is None else f'{p95:,.1f} s'}, "
           f"actual duplicate executions {f['sli4']['actual']}."]
    fig = abort.figures
    if abort.rule == MOVING_SUCCESS:
        out.append(f"- In the window {soak_clock(fig.get('window_start'))}-{soak_clock(fig.get('window_end'))}: "
                   f"{fig.get('failed')} FAILED of {(fig.get('done') or 0) + (fig.get('failed') or 0)} tasks "
                   f"(success {pct(fig.get('success'))}).")
    elif abort.rule == DUPLICATE_EXECUTION:
        if fig.get("via") == "side_effect":
            out.append(f"- Key `{fig.get('key')}` had its side effect applied downstream twice: the "
                       "no-duplicate invariant was broken where a real caller would see it.")
            for which in ("first", "second"):
                a = fig.get(which) or {}
                out.append(f"  - {which}: {a.get('task')} epoch {a.get('epoch')} by worker {a.get('worker')} at soak "
                           f"{soak_clock(a.get('t'))} (seq {a.get('seq')}, downstream {a.get('downstream') or '-'}).")
        else:
            out.append(f"- Key `{fig.get('key')}` had its effect committed more than once: the no-duplicate "
                       "invariant was broken.")
    elif abort.rule == TRANSITION_STALL:
        out.append(f"- No task changed state from soak {soak_clock(fig.get('last_transition_t'))}; "
                   f"{fig.get('pending')} PENDING and {fig.get('in_progress')} IN_PROGRESS tasks waited.")
    elif abort.rule == GUARDRAIL_NOT_BLOCKED:
        out.append(f"- Task {fig.get('task')} passed its guardrail without being blocked.")
    elif abort.rule == LOG_MISSING:
        out.append("- The log could not be trusted as a record of the run from this point: "
                   f"{fig.get('reason')}.")
    return out


def _mitigation(f: dict[str, Any]) -> list[str]:
    wind = f.get("wind_down") or {}
    workers = f["workers"]
    out = ["- The soak was stopped: arrivals stopped, workers were asked to stop cleanly (SIGTERM: finish or "
           "release the task in hand), the `abort` event and `run_finished` (ABORTED) were written, and the "
           "summary was still written."]
    out.append(f"- Seen in the log after the stop: {wind.get('worker_exited', 0)} `worker_exited`, "
               f"{wind.get('released', 0)} leases `released`; {f['states']['open']:,} tasks were left open "
               f"({f['states']['PENDING']:,} PENDING, {f['states']['IN_PROGRESS']:,} IN_PROGRESS) for the on-call.")
    if workers.get("restarted"):
        out.append(f"- Workers restarted by the supervisor during the run: {workers['restarted']}.")
    return out


def _cause(abort: Abort, f: dict[str, Any]) -> list[str]:
    fig = abort.figures
    errors = ", ".join(f"{r['class']} {r['final']}" for r in f["errors"] if r["final"]) or "none"
    injected = ", ".join(f"{r['kind']} {r['injected']}" for r in f["faults"] if r["injected"]) or "none"
    if abort.rule == MOVING_SUCCESS:
        storms = ", ".join(f"{g['cause']} ({g['tasks']})" for g in f["retry_storms"]["groups"][:3]) or "none"
        return [f"- Final error classes of FAILED tasks over the run: {errors}.",
                f"- Retry-storm groups: {storms}. Faults injected: {injected}.",
                "- Likely: failures concentrated in the window beyond what the fault plan explains; confirm by "
                "reading the evidence tasks' events. **To be confirmed.**"]
    if abort.rule == DUPLICATE_EXECUTION and fig.get("via") == "side_effect":
        first, second = fig.get("first") or {}, fig.get("second") or {}
        return [f"- Epoch {first.get('epoch')} and epoch {second.get('epoch')} of `{fig.get('key')}` both performed "
                f"the side effect and the downstream ({second.get('downstream') or 'the handler'}) accepted both; "
                f"duplicates the downstream stopped in the run: {f['sli4']['stopped']:,}.",
                "- Likely: a worker stalled past its lease and woke up to finish its work while the new holder "
                "did the same, and the downstream does not dedupe by the idempotency key. **To be confirmed.**"]
    if abort.rule == DUPLICATE_EXECUTION:
        return [f"- Key `{fig.get('key')}` was completed again by {fig.get('task')} although an effect existed; "
                f"duplicate dispatches in the run: {f['sli4']['dispatches']:,} "
                f"({', '.join(f'{k} {v}' for k, v in f['sli4']['breakdown'].items())}).",
                "- Likely: the effect guard or the epoch fence let a second completion through. **To be confirmed.**"]
    if abort.rule == TRANSITION_STALL:
        lock = [r for r in f["faults"] if r["kind"] == "db_lock"]
        held = f"{lock[0]['injected']} lock-hog holds injected" if lock else "no lock-hog fault in the plan"
        retries = [c.get("lock_retries") for c in f["checkpoints"]["logged"] if c.get("lock_retries") is not None]
        return [f"- {held}; lock retries at the checkpoints: {retries or 'none recorded'}.",
                f"- Last transition at soak {soak_clock(fig.get('last_transition_t'))}; work waiting since "
                f"{soak_clock(fig.get('waiting_since'))}.",
                "- Likely: the database write lock was held (or every worker was stopped) for the whole window. "
                "**To be confirmed.**"]
    if abort.rule == GUARDRAIL_NOT_BLOCKED:
        return [f"- Task {fig.get('task')} (epoch {fig.get('epoch')}): {fig.get('why')}; next event "
                f"`{fig.get('next_event')}`.",
                "- Likely: the block was not written with the exceed, or a worker went on after the refusal. "
                "**To be confirmed.**"]
    return [f"- {fig.get('reason')}.",
            "- Likely: the log shipper died, lagged, or its file was damaged. **To be confirmed.**"]
