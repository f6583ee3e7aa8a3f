"""The overview page's parts, rendered on the server from the monitor's snapshot and points (and
the queue's status for the leases): the verdict tiles, the tasks by state, the abort rules, the
charts as inline SVG (`judge/svg.py`), faults, burn rates, leases.

The first response carries every part, so a page opened without a script (or a screenshot taken
at load, or a slow link) shows the figures at once. The page's script asks for the same parts
again (`/parts/overview`, `/parts/leases`) when the SSE stream says the figures moved: one
renderer, so the first paint and the updates cannot disagree. Each part is one element with a
fixed id, which the script replaces whole.
"""

from __future__ import annotations

from typing import Any

from orchestrator.judge import svg
from orchestrator.judge.reporttext import pace, pct, secs, soak_clock, target_text, utc
from orchestrator.web.markup import attr, esc, table

STATES = ("PENDING", "IN_PROGRESS", "BLOCKED", "DONE", "FAILED", "CANCELLED")
OPEN_COLORS = ("#1f77b4", "#ff7f0e", "#9467bd")  # PENDING, IN_PROGRESS, BLOCKED
ENDED_COLORS = ("#2ca02c", "#d62728", "#8c564b")  # DONE, FAILED, CANCELLED


def figure_parts(snap: dict[str, Any] | None, points: list[dict[str, Any]], error: str | None) -> dict[str, str]:
    """Every part that comes from the run's log, by element id."""
    return {"error": f'<p id="error" class="err">{esc(error) if error else ""}</p>',
            "tiles": tiles(snap), "counts": counts(snap), "rules": rules(snap), "charts": charts(snap, points),
            "faults": faults(snap), "budget": budget(snap)}


def lease_parts(status: dict[str, Any] | None) -> dict[str, str]:
    """The part that comes from the queue database."""
    return {"leases": leases(status)}


def _tile(label: str, value: Any, sub: str = "", cls: str = "") -> str:
    return (f'<div class="tile"><small>{esc(label)}</small><b class="{attr(cls)}">{esc(value)}</b>'
            f"<small>{esc(sub)}</small></div>")


def tiles(snap: dict[str, Any] | None) -> str:
    if snap is None:
        return '<div class="tiles" id="tiles">waiting for the log...</div>'
    sli, budget_ = snap["sli"], snap["budget"]
    slo = {row["name"].split(" ")[0]: row for row in snap["slo"]}  # SLI-1, SLI-2, Lease-timeout, SLI-4

    def target(name: str) -> str:
        return f"target {target_text(slo[name])}" if name in slo else ""

    state = "live" if snap["live"] else ("run finished" if snap["complete"] else "log ended")
    dups = f"{target('SLI-4')}; {sli['dispatches']} duplicate dispatches"
    items = [
        _tile("verdict so far", snap["verdict"], state, snap["verdict"]),
        _tile("soak clock", soak_clock(snap["soak_t"]), f"of {soak_clock(snap['duration'])}"),
        _tile("wall clock", utc(snap["wall"]), f"started {utc(snap['started_at'])}"),
        _tile("speed", pace(snap), f"run {snap['run_id']}"),
        _tile("SLI-1 success", pct(sli["success"]), target("SLI-1")),
        _tile("SLI-2 p95", secs(sli["p95"]), target("SLI-2")),
        _tile("SLI-3 transient recovery", pct(sli["transient_recovery"]),
              "tasks retried after a transient error that ended DONE"),
        _tile("SLI-4 actual duplicates", sli["actual_duplicates"], dups),
        _tile("error budget left", pct(budget_["remaining"]), f"SLO {pct(budget_['target'], 1)}"),
    ]
    data = (f'data-verdict="{attr(snap["verdict"])}" data-success="{attr(sli["success"])}" '
            f'data-p95="{attr(sli["p95"])}" data-seq="{attr(snap["last_seq"])}"')
    return f'<div class="tiles" id="tiles" {data}>{"".join(items)}</div>'


def counts(snap: dict[str, Any] | None) -> str:
    """Tasks by state as the log tells it, and how many were enqueued."""
    if snap is None:
        return '<table id="counts"></table>'
    cells = [("enqueued", snap["enqueued"])] + [(s, snap["states"][s]) for s in STATES]
    head = "".join(f"<th>{esc(name)}</th>" for name, _ in cells)
    row = "".join(f'<td data-state="{attr(name)}">{n:,}</td>' for name, n in cells)
    return f'<table id="counts"><tr>{head}</tr><tr>{row}</tr></table>'


def rules(snap: dict[str, Any] | None) -> str:
    head = "<tr><th>rule</th><th>state</th><th>evidence</th><th>figures</th></tr>"
    rows = []
    for r in snap["rules"] if snap else []:
        links = " ".join(f'<a href="/tasks?id={attr(e)}">{esc(e)}</a>' for e in r["evidence"]) or "-"
        figures = esc(_figures(r["figures"])) if r["figures"] else "-"
        rows.append(f'<tr id="rule-{r["rule"]}" data-state="{attr(r["state"])}"><td>{r["rule"]}. {esc(r["title"])}</td>'
                    f'<td class="{attr(r["state"])}">{esc(r["state"])}</td><td>{links}</td><td>{figures}</td></tr>')
    return f'<table id="rules">{head}{"".join(rows)}</table>'


def _figures(figures: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in figures.items())


def charts(snap: dict[str, Any] | None, points: list[dict[str, Any]]) -> str:
    """The moving success with its abort line, and the open and ended tasks by state, one point per
    soak minute (downsampled to `svg.MAX_POINTS`)."""
    hours = [p["t"] / 3600.0 for p in points]
    moving = [None if p["moving"] is None else p["moving"] * 100 for p in points]
    threshold = (snap["moving"]["threshold"] if snap else 0.95) * 100
    window = (snap["moving"]["window"] if snap else 1800.0) / 60
    data = {"points": str(len(points))}
    low = min([v for v in moving if v is not None] + [90.0, threshold])
    drawn = [
        ("chart-moving", svg.line_chart(f"{window:g}-min moving success (%)", hours, [("moving success", moving)],
                                        y_label="%", hlines=[(threshold, f"abort line {threshold:g} %")],
                                        y_min=max(0.0, low - 1), y_max=100.5, data=data)),
        ("chart-states", svg.line_chart("Open tasks by state over time", hours,
                                        [(s, [p["counts"][i] for p in points]) for i, s in enumerate(STATES[:3])],
                                        y_label="tasks", colors=OPEN_COLORS, data=data)),
        ("chart-ended", svg.line_chart("Ended tasks by state over time", hours,
                                       [(s, [p["counts"][i + 3] for p in points]) for i, s in enumerate(STATES[3:])],
                                       y_label="tasks", colors=ENDED_COLORS, data=data)),
    ]
    body = "".join(f'<div id="{ident}">{chart}</div>' for ident, chart in drawn)
    return (f'<section id="charts"><h2>Charts (<span id="npoints">{len(points)}</span> points, one per soak '
            f"minute)</h2>{body}</section>")


def faults(snap: dict[str, Any] | None) -> str:
    rows = [(f["kind"], f["planned"], f["injected"], f"{f['observed']} {f['observed_what']}")
            for f in (snap["faults"] if snap else [])]
    return table("faults", ("fault", "planned", "injected", "observed"), rows)


def budget(snap: dict[str, Any] | None) -> str:
    head = ("<tr><th>pair</th><th>long window</th><th>short window</th><th>threshold</th><th>burn long</th>"
            "<th>burn short</th><th>firing</th></tr>")
    rows = []
    for w in snap["budget"]["windows"] if snap else []:
        burns = "".join(f"<td>{'n/a' if b is None else f'{b:.2f}'}</td>" for b in (w["burn_long"], w["burn_short"]))
        firing = '<td class="tripped">FIRING</td>' if w["firing"] else '<td class="ok">no</td>'
        rows.append(f"<tr><td>{esc(w['name'])} ({esc(w['severity'])})</td><td>{w['long_min']} min</td>"
                    f"<td>{w['short_min']} min</td><td>{w['threshold']:g}</td>{burns}{firing}</tr>")
    return f'<table id="budget">{head}{"".join(rows)}</table>'


def leases(status: dict[str, Any] | None) -> str:
    head = "<tr><th>worker</th><th>leases</th><th>oldest heartbeat age (soak s)</th></tr>"
    if status is None:
        return f'<table id="leases">{head}<tr><td colspan="3">no queue database yet</td></tr></table>'
    rows = "".join(f"<tr><td>{esc(w['worker'])}</td><td>{w['tasks']}</td><td>{esc(w['heartbeat_age'])}</td></tr>"
                   for w in status["in_flight"]) or '<tr><td colspan="3">no lease in flight</td></tr>'
    expired = f'<tr><td>expired, not reaped yet</td><td colspan="2">{status["expired_leases"]}</td></tr>'
    return f'<table id="leases">{head}{rows}{expired}</table>'
