"""`soak_report.html`: the summary as one self-contained page (inline CSS, inline SVG charts drawn
here in Python, no script and no URL of any kind), rendered from the same `figures()` dict as
`soak_summary.md`, with the same formatting helpers, so both show the same numbers.

Series are downsampled to `svg.MAX_POINTS` per chart: a 72h run stays well under 2 MB.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any, Iterable

from orchestrator.judge import svg
from orchestrator.judge.aborts import RULE_TITLES
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
    target_text,
)

VERDICT_COLOR = {"PASS": "#1a7f37", "FAIL": "#b35900", "INCOMPLETE": "#9a6700", "ABORTED": "#cf222e",
                 "STOPPED": "#57606a"}

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#1f2328;padding:0 16px}
h1{font-size:22px} h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left;
vertical-align:top} th{background:#f6f8fa} .verdict{font-size:20px;font-weight:bold;padding:8px 12px;color:#fff;
display:inline-block;border-radius:6px} .fail{color:#cf222e;font-weight:bold} .muted{color:#57606a}
""" + svg.CSS


def esc(value: Any) -> str:
    return escape(value if isinstance(value, str) else num(value))


def table(columns: Iterable[str], rows: Iterable[Iterable[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def render_html(f: dict[str, Any], *, incidents: list[Path] = (), log_path: Path | None = None) -> str:
    """The whole page for one figures dict."""
    run = f["run"]
    parts = [f"<h1>Soak report: run <code>{esc(run['run_id'])}</code> (profile {esc(run['profile_name'])})</h1>",
             _verdict(f), _run(f, log_path), _slo(f), _slis(f), _charts(f), _states(f), _checkpoints(f),
             _errors(f), _storms(f), _faults(f), _operator(f), _resumes(f), _aborts(f, incidents)]
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Soak report {esc(run['run_id'])}: {esc(f['verdict'])}</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(parts) + "</body></html>\n")


def _verdict(f: dict[str, Any]) -> str:
    verdict, run = f["verdict"], f["run"]
    out = [f'<h2>Verdict</h2><p><span class="verdict" id="verdict" style="background:{VERDICT_COLOR[verdict]}">'
           f"{esc(verdict)}</span> {esc(VERDICT_TEXT[verdict])}.</p>"]
    missed = missed_slos(f)
    if missed:
        out.append(f"<p>SLOs missed: {esc(', '.join(missed))}.</p>")
    for a in f["aborts"]:
        out.append(f"<p>Abort rule {a['rule']} ({esc(RULE_TITLES.get(a['rule'], a['name']))}) at soak "
                   f"{soak_clock(a['t'])} ({esc(a['source'])}).</p>")
    if not run["complete"]:
        out.append(f"<p><b>The log ends without <code>run_finished</code></b> at soak {soak_clock(run['end_t'])}: "
                   "the figures cover the log as far as it goes.</p>")
    return "".join(out)


def _run(f: dict[str, Any], log_path: Path | None) -> str:
    run = f["run"]
    rows = [("run id", run["run_id"]), ("commit", run["commit"] or "unknown"),
            ("profile", f"{run['profile_name']}: {run['profile'].get('description') or ''}".strip()),
            ("seed", run["seed"]), ("speed", pace(run)), ("workers", run["workers"]),
            ("wall start", both(run["started_at"])), end_row(run),
            ("soak time", f"0:00:00 -> {soak_clock(run['end_t'])} of {soak_clock(run['duration'])} planned"),
            ("events", f"{run['events']:,} (seq {num(run['first_seq'])} to {num(run['last_seq'])})"),
            ("log", str(log_path) if log_path else "-")]
    return "<h2>The run</h2>" + table(["", ""], rows)


def _slo(f: dict[str, Any]) -> str:
    fail = ' class="fail"'
    rows = "".join(
        f"<tr><td>{esc(r['name'])}</td><td>{esc(target_text(r))}</td><td>{esc(measured_text(r))}</td>"
        f"<td{'' if r['pass'] is not False else fail}>{esc(slo_result(r).replace('**', ''))}</td></tr>"
        for r in f["slo"])
    return ('<h2>SLOs</h2><table id="slo"><tr><th>SLO</th><th>target</th><th>measured</th><th>result</th></tr>'
            + rows + "</table>")


def _slis(f: dict[str, Any]) -> str:
    s1, s2, s3, s4, lr, mv = f["sli1"], f["sli2"], f["sli3"], f["sli4"], f["lease_recovery"], f["moving"]
    items = [
        f"<b>SLI-1 success</b>: {pct(s1['success'])} = {s1['done']:,} DONE / {s1['done'] + s1['failed']:,} "
        f"DONE+FAILED ({s1['manual_done']} manual done, {s1['manual_failed']} manual fail)",
        f"<b>SLI-2 latency</b> planned arrival -> terminal over {s2['tasks']:,} tasks: p50 {secs(s2['p50'])}, "
        f"p95 {secs(s2['p95'])}, p99 {secs(s2['p99'])}, max {secs(s2['max'])}",
        f"<b>Arrival lag</b> planned -> enqueued over {f['arrival_lag']['tasks']:,} arrivals: "
        f"p50 {secs(f['arrival_lag']['p50'])}, p95 {secs(f['arrival_lag']['p95'])}, max {secs(f['arrival_lag']['max'])}",
        f"<b>SLI-3 transient recovery</b>: {s3['done']:,} of {s3['tasks']:,} ({pct(s3['rate'])}); "
        f"{s3['failed']:,} FAILED, {s3['still_open']:,} still open",
        f"<b>SLI-4 duplicates</b>: {s4['actual']} actual duplicate executions against {s4['dispatches']:,} "
        "duplicate dispatches (" + ", ".join(f"{esc(k)} {v:,}" for k, v in s4["breakdown"].items()) + ")",
        f"<b>Lease-timeout recovery</b>: {pct(lr['rate'])} = {lr['recovered']:,} / {lr['judged']:,} judged, "
        f"{lr['expirations']:,} lease expiries, {lr['stuck']:,} stuck, {lr['recovering']:,} still recovering",
        f"<b>{mv['window'] / 60:g}-min moving success</b>: lowest {pct(mv['lowest'])} at soak "
        f"{soak_clock(mv['lowest_t'])}; {mv['below']} boundaries below {pct(mv['threshold'], 0)}",
    ]
    return '<h2>SLIs</h2><ul id="slis">' + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _states(f: dict[str, Any]) -> str:
    s = f["states"]
    cols = ["enqueued", "DONE", "FAILED", "CANCELLED", "BLOCKED", "PENDING", "IN_PROGRESS"]
    return "<h2>Tasks by final state</h2>" + table(cols, [[s[c] for c in cols]], "states")


def _checkpoints(f: dict[str, Any]) -> str:
    cp = f["checkpoints"]
    rows = []
    for w in cp["windows"]:
        bl = w["backlog"]
        rows.append((f"{soak_clock(w['start'])}-{soak_clock(w['end'])}" + (" (partial)" if w["partial"] else ""),
                     w["arrivals"], w["done"], w["failed"], pct(w["success"]), pct(w["cum_success"]),
                     secs(w["p95"]), secs(w["cum_p95"]), f"{bl['PENDING']}/{bl['IN_PROGRESS']}/{bl['BLOCKED']}",
                     ", ".join(f"{k} {v}" for k, v in w["errors"].items()) or "-"))
    return (f"<h2>Checkpoints (every {span(cp['every'])} of soak time)</h2>"
            + table(["window", "arrivals", "DONE", "FAILED", "success", "cumulative success", "p95",
                     "cumulative p95", "backlog P/IP/B", "attempt errors"], rows))


def _errors(f: dict[str, Any]) -> str:
    rows = [(r["class"], "transient" if r["transient"] else "permanent / policy", r["events"], r["tasks"], r["final"])
            for r in f["errors"]]
    return "<h2>Error buckets</h2>" + (table(["class", "kind", "events", "tasks", "final"], rows) if rows
                                       else "<p>No errors were recorded.</p>")


def _storms(f: dict[str, Any]) -> str:
    rs = f["retry_storms"]
    rows = [(g["cause"], g["tasks"], ", ".join(g["examples"])) for g in rs["groups"]]
    return (f"<h2>Retry storms (max attempts = {rs['max_attempts']})</h2>"
            + (table(["cause", "tasks", "example tasks"], rows) if rows else "<p>No task reached max attempts.</p>"))


def _faults(f: dict[str, Any]) -> str:
    rows = [(r["kind"], num(r["planned"]),
             num(r["injected"]) + (f" ({r['not_injected']})" if r.get("not_injected") else ""),
             f"{r['observed']:,} {r['observed_what']}",
             f"{r['done']:,} DONE, {r['failed']:,} FAILED") for r in f["faults"]]
    return "<h2>Faults: planned vs injected vs observed</h2>" + table(
        ["fault", "planned", "injected", "observed", "recovery"], rows, "faults")


def _operator(f: dict[str, Any]) -> str:
    op = f["operator"]
    if not op["counts"]:
        return "<h2>Operator interventions</h2><p>None.</p>"
    out = table(["action", "actor", "count"], [(c["event"], c["actor"], c["n"]) for c in op["counts"]])
    if op["manual"]:
        out += "<p><b>Manual closes</b> (no effect written, counted in SLI-1 by state):</p>" + table(
            ["time", "soak", "action", "task", "from", "actor", "notes"],
            [(both(m["wall"]), soak_clock(m["t"]), "manual DONE" if m["event"] == "closed_done" else "manual FAILED",
              m["task"], m["from"], m["actor"], m["notes"] or "") for m in op["manual"]])
    return "<h2>Operator interventions</h2>" + out


def _resumes(f: dict[str, Any]) -> str:
    rows = [(both(r["wall"]), soak_clock(r["t"]), secs(r["gap"]), r["old_pid"]) for r in f["resumes"]]
    return "<h2>Resume gaps</h2>" + (table(["resumed at", "soak", "gap", "old pid"], rows) if rows
                                     else "<p>None: one supervisor ran the whole run.</p>")


def _aborts(f: dict[str, Any], incidents: list[Path]) -> str:
    items = []
    for a in f["aborts"]:
        figures = ", ".join(f"{k}={v}" for k, v in a["figures"].items())
        items.append(f"<li><b>Rule {a['rule']} <code>{esc(a['name'])}</code></b> at soak {soak_clock(a['t'])}, "
                     f"{esc(both(a['wall']))} ({esc(a['source'])}). Figures: {esc(figures)}. "
                     f"Evidence: {esc(', '.join(a['evidence'][:20]) or '-')}.</li>")
    for path in incidents:
        items.append(f"<li>Incident record: {esc(Path(path).name)} (beside this file)</li>")
    return "<h2>Aborts and incidents</h2>" + ("<ul>" + "".join(items) + "</ul>" if items
                                              else "<p>No abort rule tripped.</p>")


def _charts(f: dict[str, Any]) -> str:
    s, mv = f["series"], f["moving"]
    hours = [t / 3600.0 for t in s["minute_t"]]
    bands = [(a / 3600.0, b / 3600.0) for a, b in (f["manifest"].get("bursts") or [])]
    out = ["<h2>Charts</h2>"]
    if not hours:
        return out[0] + "<p>No data.</p>"
    out.append(svg.line_chart("Arrivals and completions per soak minute (bursts shaded)", hours,
                              [("arrivals", s["arrivals"]), ("DONE", s["done"]), ("FAILED", s["failed"])],
                              y_label="tasks / min", bands=bands, chart_id="chart-arrivals"))
    mt = [t / 3600.0 for t in s["moving_t"]] or [0.0]
    moving = [None if v is None else v * 100 for v in s["moving"]] or [None]
    low = min([v for v in moving if v is not None] + [mv["threshold"] * 100])
    out.append(svg.line_chart(f"{mv['window'] / 60:g}-min moving success", mt, [("moving success %", moving)],
                              y_label="%", hlines=[(mv["threshold"] * 100, f"abort line {mv['threshold'] * 100:g} %")],
                              y_min=max(0.0, low - 2), y_max=100.5, chart_id="chart-moving"))
    if s["latency_t"]:
        target = (f["run"]["profile"].get("slo") or {}).get("p95")
        lt = [(t + s["latency_bucket"] / 2) / 3600.0 for t in s["latency_t"]]
        out.append(svg.line_chart("Latency arrival->terminal, p50 / p95", lt, [("p50", s["p50"]), ("p95", s["p95"])],
                                  y_label="soak s", hlines=[(target, f"SLO p95 {target:g} s")] if target else [],
                                  chart_id="chart-latency"))
    bl = s["backlog"]
    out.append(svg.stacked_chart("Backlog by state at each soak minute", hours,
                                 [(k, bl[k]) for k in ("PENDING", "IN_PROGRESS", "BLOCKED")], chart_id="chart-backlog"))
    return "".join(out)
