"""`soak_summary.md`: the review report of one soak run, written from the aggregator's figures.

`write_summary` writes `soak_summary_<run_id>.md` (kept) and copies it to `soak_summary.md`
(the latest), with the PNG charts beside them. Someone who reads only this file should know
whether the run passed and, if not, where to look.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.core.errors import StoreError
from orchestrator.core.files import write_whole
from orchestrator.judge import charts
from orchestrator.judge.aborts import RULE_TITLES
from orchestrator.judge.htmlreport import render_html
from orchestrator.judge.incident import write_incident
from orchestrator.judge.reporttext import (
    VERDICT_TEXT,
    both,
    end_row,
    measured_text,
    missed_slos,
    num,
    pace,
    pct,
    secs,
    slo_result,
    soak_clock,
    span,
    table,
    target_text,
)

if TYPE_CHECKING:
    from orchestrator.judge.sli import Aggregator

__all__ = ["write_summary", "write_incident", "render_summary"]



def write_summary(agg: Aggregator, out_dir: Path, *, log_path: Path | None = None,
                  incidents: list[Path] | tuple[Path, ...] = ()) -> Path:
    """Write the run's summary, its charts and `soak_report.html` (from one `figures()` dict); return
    the run-specific summary's path."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        figures = agg.figures()
        prefix = f"soak_{_safe(agg.run_id)}"
        drawn = charts.draw_all(figures, out_dir, prefix)
        kept = [Path(p) for p in incidents if p]
        text = render_summary(figures, log_path=log_path, incidents=kept,
                              charts={name: path.name for name, path in drawn.items()})
        path = out_dir / f"soak_summary_{_safe(agg.run_id)}.md"
        _publish(text, path, out_dir / "soak_summary.md")
        page = render_html(figures, incidents=kept, log_path=log_path)  # the same figures: same numbers
        _publish(page, out_dir / f"soak_report_{_safe(agg.run_id)}.html", out_dir / "soak_report.html")
    except OSError as exc:
        raise StoreError(f"cannot write the summary in {out_dir}: {exc.strerror or exc}") from None
    return path


def _publish(text: str, path: Path, latest: Path) -> None:
    """Write `path` and its copy `latest`, each whole."""
    write_whole(path, text)
    write_whole(latest, text)


def _safe(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)


def render_summary(f: dict[str, Any], *, log_path: Path | None = None, incidents: list[Path] = (),
                   charts: dict[str, str] | None = None) -> str:
    lines: list[str] = []
    add = lines.extend
    run = f["run"]
    add([f"# Soak summary: run `{run['run_id']}` (profile {run['profile_name']})", ""])
    add(_verdict(f))
    add(_run(f, log_path))
    add(_slo(f))
    add(_slis(f))
    add(_states(f))
    add(_checkpoints(f))
    add(_errors(f))
    add(_storms(f))
    add(_faults(f))
    add(_operator(f))
    add(_resumes(f))
    add(_aborts(f, incidents))
    add(_charts(charts or {}))
    return "\n".join(lines).rstrip() + "\n"


def _verdict(f: dict[str, Any]) -> list[str]:
    verdict, run = f["verdict"], f["run"]
    out = [f"## Verdict: **{verdict}**", "", f"{verdict}: {VERDICT_TEXT[verdict]}."]
    missed = missed_slos(f)
    if missed:
        out.append(f"SLOs missed: {', '.join(missed)}.")
    if f["open_tasks"]["count"] and f["run"]["complete"]:
        out.append(f"{f['open_tasks']['count']:,} tasks were still PENDING or IN_PROGRESS at the end (listed under "
                   "Open tasks at the end; counted in SLI-2 at their age).")
    for abort in f["aborts"]:
        out.append(f"Abort rule {abort['rule']} ({RULE_TITLES.get(abort['rule'], abort['name'])}) at soak "
                   f"{soak_clock(abort['t'])} ({abort['source']}).")
    if run["log_verdict"] and run["log_verdict"] != verdict:
        out.append(f"Note: the run itself recorded `{run['log_verdict']}` in `run_finished`; this report, "
                   f"computed from the log alone, says `{verdict}`.")
    if not run["complete"]:
        out.append(f"**The log ends without `run_finished`** at soak {soak_clock(run['end_t'])}: the run was still "
                   "going or its supervisor died. The figures cover the log as far as it goes.")
    if run["unknown_events"]:
        out.append(f"Events outside the contract were counted and ignored: {run['unknown_events']}.")
    return out + [""]


def _run(f: dict[str, Any], log_path: Path | None) -> list[str]:
    run, prof = f["run"], f["run"]["profile"]
    planned = run["duration"]
    ended = ("`run_finished` (verdict {verdict}, reason {reason})".format(**run["finished"]) if run["finished"]
             else "no `run_finished` line")
    if run["stopped"]:
        ended = f"`run_stopped` ({run['stopped'].get('reason')}) at soak {soak_clock(run['stopped']['t'])}; " + ended
    rows = [
        ("run id", f"`{run['run_id']}`"), ("commit", f"`{run['commit']}`" if run["commit"] else "unknown"),
        ("profile", f"{run['profile_name']}: {prof.get('description') or ''}".strip()),
        ("seed", run["seed"]), ("speed", pace(run, planned)),
        ("workers", run["workers"]), ("wall start", both(run["started_at"])), end_row(run),
        ("soak time", f"0:00:00 -> {soak_clock(run['end_t'])} of {soak_clock(planned)} planned"),
        ("events", f"{run['events']:,} (seq {num(run['first_seq'])} to {num(run['last_seq'])})"),
        ("end of the log", ended), ("log", f"`{log_path}`" if log_path else "-"),
    ]
    out = ["## The run", ""] + table(["", ""], rows) + [""]
    settings = _settings(prof)
    out += ["<details><summary>Profile settings</summary>", "", "```", *settings, "```", "", "</details>", ""]
    return out


def _settings(prof: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in prof.items():
        if key == "description":
            continue
        if isinstance(value, dict):
            out += _settings(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key} = {value}")
    return out


def _slo(f: dict[str, Any]) -> list[str]:
    rows = [(row["name"], target_text(row), measured_text(row), slo_result(row)) for row in f["slo"]]
    return ["## SLOs", ""] + table(["SLO", "target", "measured", "result"], rows) + [""]


def arrival_lag_lines(lag: dict[str, Any], worst: int = 5) -> list[str]:
    """The arrival lag (planned -> enqueued): part of SLI-2, shown on its own, with the worst bursts."""
    if not lag["tasks"]:
        return ["- **Arrival lag** planned -> enqueued: no arrival of the plan in this log."]
    out = [f"- **Arrival lag** planned -> enqueued (inside SLI-2), over {lag['tasks']:,} arrivals: "
           f"p50 {secs(lag['p50'])}, p95 {secs(lag['p95'])}, max {secs(lag['max'])}."]
    bursts = sorted((b for b in lag["bursts"] if b["arrivals"]), key=lambda b: (-b["max"], b["start"]))
    if bursts:
        shown = ", ".join(f"{soak_clock(b['start'])} max {secs(b['max'])} (p95 {secs(b['p95'])}, {b['arrivals']})"
                          for b in bursts[:worst])
        out.append(f"  Worst lag per burst ({len(bursts)} bursts; start, max, p95, arrivals): {shown}.")
    return out


def _slis(f: dict[str, Any]) -> list[str]:
    s1, s2, s3, s4, lr, mv = f["sli1"], f["sli2"], f["sli3"], f["sli4"], f["lease_recovery"], f["moving"]
    b = s4["breakdown"]
    out = ["## SLIs", ""]
    out.append(f"- **SLI-1 success**: {pct(s1['success'])} = {s1['done']:,} DONE / {s1['done'] + s1['failed']:,} "
               f"DONE+FAILED. Manual closes count by their state: {s1['manual_done']} `orch done`, "
               f"{s1['manual_failed']} `orch fail` (listed under Operator interventions).")
    out.append(f"- **SLI-2 latency** planned arrival -> last DONE/FAILED transition, over {s2['tasks']:,} tasks: "
               f"p50 {secs(s2['p50'])}, **p95 {secs(s2['p95'])}**, p99 {secs(s2['p99'])}, max {secs(s2['max'])}.")
    out += arrival_lag_lines(f["arrival_lag"])
    still = f", {s3['still_open']:,} still open" if s3["still_open"] else ""
    out.append(f"- **SLI-3 transient recovery**: {s3['done']:,} of {s3['tasks']:,} tasks with a transient "
               f"`retry_scheduled` ended DONE ({pct(s3['rate'])}); {s3['failed']:,} ended FAILED{still}.")
    out.append(f"- **SLI-4 duplicates**: **{s4['actual']} actual duplicate executions** (keys whose side effect was "
               f"applied downstream more than once, or with more than one `completed`), of {s4['side_effects']:,} side "
               f"effects applied; **{s4['stopped']:,} duplicates stopped** (attempts the downstream refused by key); "
               f"against {s4['dispatches']:,} duplicate dispatches = {b['duplicate_enqueue']:,} "
               f"duplicate enqueues + {b['stale_complete']:,} stale completions rejected + "
               f"{b['idempotency_skip']:,} idempotency skips + {b['re_lease']:,} re-leases after expiry.")
    if s4["stale_by_call"]:
        out.append(f"  Stale calls fenced, by call: {', '.join(f'{k} {v:,}' for k, v in s4['stale_by_call'].items())}.")
    if s4["keys"]:
        out.append(f"  Keys executed more than once: {', '.join(f'`{k}`' for k in s4['keys'])}.")
    out.append(f"- **Lease-timeout recovery**: {pct(lr['rate'])} = {lr['recovered']:,} recovered by policy "
               f"({lr['done']:,} DONE, {lr['failed']:,} FAILED, {lr['blocked']:,} BLOCKED) / {lr['judged']:,} "
               f"judged, of {lr['tasks']:,} tasks with {lr['expirations']:,} lease expiries; "
               f"{lr['operator']:,} closed or cancelled by an operator, {lr['stuck']:,} stuck "
               f"(open and no transition for {f['run']['profile'].get('abort', {}).get('stall', 600):g} s), "
               f"{lr['recovering']:,} still recovering when the log ended (not judged).")
    lowest = (f"lowest {pct(mv['lowest'])} in the window ending at soak {soak_clock(mv['lowest_t'])}"
              if mv["lowest"] is not None else "never judged")
    out.append(f"- **{mv['window'] / 60:g}-min moving success** (judged at {mv['judged']:,} minute boundaries "
               f"with >= {mv['min_volume']} tasks in the window): {lowest}; {mv['below']} boundaries below the "
               f"{pct(mv['threshold'], 0)} abort line.")
    return out + [""]


def _states(f: dict[str, Any]) -> list[str]:
    s = f["states"]
    rows = [(s["enqueued"], s["DONE"], s["FAILED"], s["CANCELLED"], s["BLOCKED"], s["PENDING"], s["IN_PROGRESS"])]
    out = ["## Tasks by final state", ""]
    out += table(["enqueued", "DONE", "FAILED", "CANCELLED", "BLOCKED", "PENDING (open)", "IN_PROGRESS (open)"], rows)
    out += ["", f"- **BLOCKED at the end: {s['BLOCKED']:,}** (waiting for `ops replan`; not in SLI-1)."]
    out.append(f"- Still open at the end: {s['open']:,} ({s['PENDING']:,} PENDING, {s['IN_PROGRESS']:,} IN_PROGRESS).")
    if s["foreign"]:
        out.append(f"- {s['foreign']:,} tasks appear without their `enqueued` in this log (no latency for them).")
    ot = f["open_tasks"]
    if ot["count"]:
        out += ["", "### Open tasks at the end", "",
                f"{ot['count']:,} tasks PENDING or IN_PROGRESS when the log ends, the oldest first (age: soak "
                "seconds since they should have arrived)" + (f"; SLI-2 counts {f['sli2']['open_counted']:,} of them at "
                                                             "their age" if f["sli2"]["open_counted"] else "") + ".", ""]
        out += table(["task", "state", "attempt", "age"],
                     [(r["task"], r["state"], r["attempt"], secs(r["age"])) for r in ot["oldest"]])
        if ot["count"] > len(ot["oldest"]):
            out.append(f"\n(+{ot['count'] - len(ot['oldest']):,} more)")
    return out + [""]


def _checkpoints(f: dict[str, Any]) -> list[str]:
    cp = f["checkpoints"]
    rows = []
    for w in cp["windows"]:
        logged = w["logged"] or {}
        bl = w["backlog"]
        errors = ", ".join(f"{k} {v}" for k, v in w["errors"].items()) or "-"
        rows.append((f"{soak_clock(w['start'])}-{soak_clock(w['end'])}" + (" (partial)" if w["partial"] else ""),
                     w["arrivals"], w["done"], w["failed"], pct(w["success"]), pct(w["cum_success"]),
                     secs(w["p95"]), secs(w["cum_p95"]), f"{bl['PENDING']}/{bl['IN_PROGRESS']}/{bl['BLOCKED']}",
                     errors, num(logged.get("in_flight")), num(logged.get("lock_retries"))))
    out = [f"## Checkpoints (every {span(cp['every'])} of soak time)", "",
           "Computed from the log per window; the last two columns come from the run's own `checkpoint` "
           "events (in flight, lock retries) where one was written.", ""]
    out += table(["window", "arrivals", "DONE", "FAILED", "success", "cumulative success", "p95", "cumulative p95",
                  "backlog P/IP/B at end", "attempt errors", "in flight", "lock retries"], rows)
    return out + [""]


def _errors(f: dict[str, Any]) -> list[str]:
    rows = [(r["class"], "transient" if r["transient"] else "permanent / policy", r["events"], r["tasks"], r["final"])
            for r in f["errors"]]
    out = ["## Error buckets", ""]
    if not rows:
        return out + ["No errors were recorded.", ""]
    return out + table(["class", "kind", "events", "tasks", "tasks FAILED with it as final error"], rows) + [""]


def _storms(f: dict[str, Any]) -> list[str]:
    rs = f["retry_storms"]
    out = [f"## Retry storms (tasks that reached max attempts = {rs['max_attempts']})", ""]
    if not rs["groups"]:
        return out + ["No task reached max attempts.", ""]
    rows = [(g["cause"], g["tasks"], ", ".join(g["examples"])) for g in rs["groups"]]
    out += [f"{rs['tasks']:,} tasks, grouped by their final error class (other classes they met in brackets):", ""]
    return out + table(["cause", "tasks", "example tasks"], rows) + [""]


def _faults(f: dict[str, Any]) -> list[str]:
    rows = []
    for r in f["faults"]:
        recovery = _recovery(r, f)
        injected = num(r["injected"]) + (f" ({r['not_injected']})" if r.get("not_injected") else "")
        rows.append((r["kind"], num(r["planned"]), injected, f"{r['observed']:,} {r['observed_what']}", recovery))
    out = ["## Faults: planned vs injected vs observed", "",
           "Planned comes from the run's manifest, its fault schedule counted (tasks planned to meet the fault; "
           "worker faults: one per period of the profile's interval, from half a period in), injected from "
           "`fault_injected` events, observed from the errors and "
           "events the faults caused. Recovery: the final state of the tasks the fault touched.", ""]
    return out + table(["fault", "planned", "injected", "observed", "recovery"], rows) + [""]


def _recovery(r: dict[str, Any], f: dict[str, Any]) -> str:
    if r["kind"] == "duplicate_enqueue":
        return (f"{f['sli4']['actual']} actual duplicate executions; {f['sli4']['stopped']:,} duplicate side "
                "effects stopped downstream")
    if r["kind"] == "persistent":
        return f"{f['retry_storms']['tasks']:,} FAILED at max attempts (expected)"
    parts = [f"{r['done']:,} DONE", f"{r['failed']:,} FAILED"]
    for key in ("cancelled", "blocked", "open"):
        if r[key]:
            parts.append(f"{r[key]:,} {key}")
    if "restarts" in r:
        parts.append(f"{r['restarts']} workers restarted")
    if "fenced" in r:
        parts.append(f"{r['fenced']} late calls fenced")
    if "replanned" in r:
        parts.append(f"{r['blocked_events']:,} blocked, {r['replanned']:,} replanned")
    return ", ".join(parts)


def _operator(f: dict[str, Any]) -> list[str]:
    op = f["operator"]
    out = ["## Operator interventions", ""]
    if not op["counts"]:
        return out + ["None.", ""]
    out += table(["action", "actor", "count"], [(c["event"], c["actor"], c["n"]) for c in op["counts"]]) + [""]
    if op["manual"]:
        out += ["**Manual closes** (`orch done` / `orch fail`: no effect written, counted in SLI-1 by state):", ""]
        out += table(["time", "soak", "action", "task", "from", "actor", "notes"],
                     [(both(m["wall"]), soak_clock(m["t"]), "manual DONE" if m["event"] == "closed_done"
                       else "manual FAILED", m["task"], m["from"], m["actor"], m["notes"] or "")
                      for m in op["manual"]]) + [""]
    people = [a for a in op["actions"] if a["actor"] != "oncall-sim"]
    if people:
        out += ["Other actions by people:", ""]
        out += table(["time", "soak", "action", "task", "from -> to", "actor", "notes"],
                     [(both(a["wall"]), soak_clock(a["t"]), a["event"], a["task"], f"{a['from']} -> {a['to']}",
                       a["actor"], a["notes"] or "") for a in people]) + [""]
    return out


def _resumes(f: dict[str, Any]) -> list[str]:
    out = ["## Resume gaps", ""]
    if not f["resumes"]:
        return out + ["None: one supervisor ran the whole run.", ""]
    rows = [(both(r["wall"]), soak_clock(r["t"]), secs(r["gap"]), r["old_pid"]) for r in f["resumes"]]
    return out + table(["resumed at", "soak", "gap without a supervisor", "old pid"], rows) + [""]


def _aborts(f: dict[str, Any], incidents: list[Path]) -> list[str]:
    out = ["## Aborts and incidents", ""]
    if not f["aborts"]:
        out.append("No abort rule tripped.")
    for a in f["aborts"]:
        figures = ", ".join(f"{k}={v}" for k, v in a["figures"].items())
        evidence = ", ".join(a["evidence"][:20]) or "-"
        source = {"log": "recorded in the log", "replay": "found on replay of the log (not recorded by the run)",
                  "log+replay": "recorded in the log and confirmed on replay"}[a["source"]]
        out.append(f"- **Rule {a['rule']} `{a['name']}`** ({RULE_TITLES.get(a['rule'], '')}) at soak "
                   f"{soak_clock(a['t'])}, {both(a['wall'])}; {source}. Figures: {figures}. Evidence: {evidence}.")
    for path in incidents:
        out.append(f"- Incident record: [{path.name}]({path.name})")
    return out + [""]


def _charts(drawn: dict[str, str]) -> list[str]:
    out = ["## Charts", ""]
    for name, (title, _) in charts.CHARTS.items():
        if name in drawn:
            out += [f"### {title}", "", f"![{title}]({drawn[name]})", ""]
    return out
