"""The supervisor's progress view: rich Live on a terminal, a plain line per period otherwise.

It is given two functions, the figures to show (a snapshot dict) and the soak time: it knows
nothing of the supervisor that shows it. The last frame (or line) is drawn when the run is over,
with the run's end as the summary and `orch soak status` print it.

The live view is at most `WIDTH` columns wide and no line fills the terminal's last column: after
a line that does, the `^C` the terminal echoes on Ctrl-C wraps onto a line of its own, the cursor
moves down one line behind rich's back, and every later redraw leaves the view's first line
behind it (a doubled title).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.judge.reporttext import ended, pct, secs, soak_clock, span, target_text

PLAIN_EVERY_SOAK = 600.0  # a plain line every 10 soak minutes ...
PLAIN_EVERY_WALL = 2.0  # ... but not more often than every 2 wall seconds
LIVE_EVERY_WALL = 0.5
WIDTH = 78  # an 80-column terminal keeps two columns free for its `^C`
LABEL = 16  # the label column of every part of the view
OPEN = ("PENDING", "IN_PROGRESS", "BLOCKED")
CLOSED = ("DONE", "FAILED", "CANCELLED")
SLO_LABELS = (("SLI-1", "SLI-1 success"), ("SLI-2", "SLI-2 p95"), ("Lease", "lease recovery"),
              ("SLI-4", "SLI-4 duplicates"))
SLO_STATE = {"pass": "met", "fail": "MISSED", "not exercised": "no data"}
RULE_STYLE = {"ok": "green", "armed": "yellow", "tripped": "bold red"}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _secs(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}s"


def plain_line(s: dict[str, Any]) -> str:
    c = s["counts"]
    line = (f"soak {soak_clock(s['soak_t']):>8}/{span(s['duration'])}  arrivals {s['arrivals']}/{s['planned']}  "
            f"PENDING {c['PENDING']} IN_PROGRESS {c['IN_PROGRESS']} DONE {c['DONE']} FAILED {c['FAILED']} "
            f"BLOCKED {c['BLOCKED']} CANCELLED {c['CANCELLED']}  success {_pct(s['success'])}  "
            f"p95 {_secs(s['p95'])}  faults {s['faults']}")
    end = s.get("end")
    return line if end is None else f"{line}  ended {ended(end.t, end.wall)}"


def _pace(s: dict[str, Any]) -> str:
    speed = s.get("speed") or 1.0
    return f"skip clock, {speed:g}x busy" if s.get("clock") == "skip" else f"{speed:g}x"


def _grid(*widths: int | None) -> Table:
    grid = Table.grid(padding=(0, 2))
    for width in widths:
        grid.add_column(width=width, no_wrap=True)
    return grid


def _slo_label(name: str) -> str:
    return next((label for prefix, label in SLO_LABELS if name.startswith(prefix)), name.split(" (")[0])


def _measured(row: dict[str, Any]) -> str:
    value, name = row["measured"], row["name"].lower()
    if "success" in name or "recovery" in name:
        return pct(value)
    if "p95" in name:
        return secs(value)
    return "n/a" if value is None else str(value)


def table(s: dict[str, Any]) -> Group:
    """The live view of one snapshot: what the run is, its progress, each SLO beside its target,
    the five abort rules' states, and at the end where the run ended."""
    title = Text(f"soak run {s['run_id']} · {s['profile']} · {_pace(s)}", style="bold", no_wrap=True,
                 overflow="ellipsis")
    c = s["counts"]
    head = _grid(LABEL, None)
    head.add_row("soak time", f"{soak_clock(s['soak_t'])} of {span(s['duration'])}")
    head.add_row("arrivals", f"{s['arrivals']:,} of {s['planned']:,}   faults injected {s['faults']:,}")
    head.add_row("open", "  ".join(f"{k} {c.get(k, 0):,}" for k in OPEN))
    head.add_row("closed", "  ".join(f"{k} {c.get(k, 0):,}" for k in CLOSED))
    slo = _grid(LABEL, 10, 11, None)
    slo.add_row(Text("SLO", style="bold"), Text("so far", style="bold"), Text("target", style="bold"), "")
    for row in s["slo"]:
        state = SLO_STATE[row["status"]]
        slo.add_row(_slo_label(row["name"]), _measured(row), target_text(row),
                    Text(state, style="bold red" if state == "MISSED" else ""))
    rules = _grid(LABEL, 21, None)
    rules.add_row(Text("abort rule", style="bold"), "", Text("state", style="bold"))
    for rule in s["rules"]:
        rules.add_row(f"rule {rule['rule']}", rule["name"].replace("_", " "),
                      Text(rule["state"], style=RULE_STYLE[rule["state"]]))
    end = s.get("end")
    if end is not None:
        tail: Table | Text = _grid(LABEL, None)
        tail.add_row("ended", ended(end.t, end.wall))
    elif s.get("winding_down"):
        tail = Text("stopping: shipping the rest of the log, writing the summary", style="dim", no_wrap=True)
    else:
        tail = Text("Ctrl-C stops the run; the summary is still written.", style="dim", no_wrap=True)
    return Group(title, head, slo, rules, tail)


class Progress:
    def __init__(self, snapshot: Callable[[], dict[str, Any]], now_t: Callable[[], float], live: bool,
                 console: Console | None = None):
        self.snapshot = snapshot
        self.now_t = now_t
        self.live = Live(console=console or Console(), auto_refresh=False) if live else None
        self.last_wall = 0.0
        self.last_soak = float("-inf")

    def __enter__(self) -> Progress:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        """The last frame (or line): drawn once the run is over, so it shows the run's end."""
        if self.live is not None:
            self.live.update(table(self.snapshot()), refresh=True)
            self.live.__exit__(*exc)
        else:
            click.echo(plain_line(self.snapshot()))

    def winding_down(self) -> None:
        """The run is stopping (live view: says so until the last frame)."""
        if self.live is not None:
            self.live.update(table({**self.snapshot(), "winding_down": True}), refresh=True)

    def tick(self) -> None:
        wall = time.monotonic()
        if self.live is not None:
            if wall - self.last_wall >= LIVE_EVERY_WALL:
                self.live.update(table(self.snapshot()), refresh=True)
                self.last_wall = wall
            return
        soak = self.now_t()
        if wall - self.last_wall >= PLAIN_EVERY_WALL and soak - self.last_soak >= PLAIN_EVERY_SOAK:
            click.echo(plain_line(self.snapshot()))
            self.last_wall, self.last_soak = wall, soak
