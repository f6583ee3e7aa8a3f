"""The supervisor's progress view: rich Live on a terminal, a plain line per period otherwise.

It is given two functions, the figures to show (a snapshot dict) and the soak time: it knows
nothing of the supervisor that shows it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from orchestrator.judge.reporttext import soak_clock, span

PLAIN_EVERY_SOAK = 600.0  # a plain line every 10 soak minutes ...
PLAIN_EVERY_WALL = 2.0  # ... but not more often than every 2 wall seconds
LIVE_EVERY_WALL = 0.5


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _secs(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}s"


def plain_line(s: dict[str, Any]) -> str:
    c = s["counts"]
    return (f"soak {soak_clock(s['soak_t']):>8}/{span(s['duration'])}  arrivals {s['arrivals']}/{s['planned']}  "
            f"PENDING {c['PENDING']} IN_PROGRESS {c['IN_PROGRESS']} DONE {c['DONE']} FAILED {c['FAILED']} "
            f"BLOCKED {c['BLOCKED']} CANCELLED {c['CANCELLED']}  success {_pct(s['success'])}  "
            f"p95 {_secs(s['p95'])}  faults {s['faults']}")


def table(s: dict[str, Any]) -> Table:
    t = Table(title="soak", show_header=False, show_edge=False)
    t.add_row("soak time", f"{soak_clock(s['soak_t'])} of {span(s['duration'])}")
    t.add_row("arrivals", f"{s['arrivals']} of {s['planned']}")
    t.add_row("states", "  ".join(f"{k} {v}" for k, v in s["counts"].items()))
    t.add_row("success so far", _pct(s["success"]))
    t.add_row("p95 so far", _secs(s["p95"]))
    t.add_row("faults injected", str(s["faults"]))
    if s["aborts"]:
        t.add_row("ABORT", ", ".join(s["aborts"]))
    return t


class Progress:
    def __init__(self, snapshot: Callable[[], dict[str, Any]], now_t: Callable[[], float], live: bool):
        self.snapshot = snapshot
        self.now_t = now_t
        self.live = Live(console=Console(), auto_refresh=False) if live else None
        self.last_wall = 0.0
        self.last_soak = float("-inf")

    def __enter__(self) -> Progress:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(table(self.snapshot()), refresh=True)
            self.live.__exit__(*exc)
        else:
            click.echo(plain_line(self.snapshot()))

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
