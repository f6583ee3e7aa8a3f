"""`orch soak status --watch`: the status every period until the run ends (or `--count`).

A live rich panel on a terminal (a one-line title, the tasks by state, faults, expired leases,
the verdict and the end of a run that is over); otherwise one plain line per period (`--json`:
one JSON document per line), so it can be piped or logged.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable

import click
import orjson

from orchestrator.judge.reporttext import ended, soak_clock, span

LIVE = frozenset({"starting", "running"})  # the run may still change: keep watching
STATES = ("PENDING", "IN_PROGRESS", "BLOCKED", "DONE", "FAILED", "CANCELLED")


def _stamp() -> str:
    return time.strftime("%H:%M:%S", time.gmtime())


def plain_line(doc: dict[str, Any] | None) -> str:
    stamp = _stamp()
    if doc is None:
        return f"{stamp} no soak run in this home"
    counts = doc["counts"]
    faults = sum(doc["faults"].values())
    verdict = f" verdict {doc['verdict']}" if doc["verdict"] else ""
    return (f"{stamp} run {doc['run_id']} {doc['status']}{verdict} soak {soak_clock(doc['soak_t'])}/"
            f"{span(doc['duration'] or 0)} " + " ".join(f"{s} {counts.get(s, 0)}" for s in STATES)
            + f" faults {faults} expired_leases {doc['expired_leases']}")


def title(doc: dict[str, Any] | None) -> str:
    """The live panel's title: one line (the run, its status and soak clock); the rest of the
    status is in the panel below it."""
    if doc is None:
        return f"{_stamp()} no soak run in this home"
    return (f"{_stamp()} run {doc['run_id']} {doc['status']} · soak {soak_clock(doc['soak_t'])} of "
            f"{span(doc['duration'] or 0)}")


def _panel(doc: dict[str, Any] | None):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    head = Text(title(doc), style="bold", no_wrap=True, overflow="ellipsis")
    if doc is None:
        return head
    table = Table(show_edge=False)
    for state in STATES:
        table.add_column(state, justify="right")
    table.add_row(*(f"{doc['counts'].get(s, 0):,}" for s in STATES))
    more = (f"faults injected {sum(doc['faults'].values()):,}   expired leases {doc['expired_leases']:,}"
            + (f"   verdict {doc['verdict']}" if doc["verdict"] else ""))
    parts = [head, table, Text(more, no_wrap=True, overflow="ellipsis")]
    if doc.get("ended"):
        parts.append(Text(f"ended {ended(doc['ended']['t'], doc['ended']['wall'])}", no_wrap=True))
    return Group(*parts)


def watch(fetch: Callable[[], dict[str, Any] | None], every: float, count: int | None, as_json: bool) -> None:
    tick = threading.Event()
    n = 0
    live = None
    if sys.stdout.isatty() and not as_json:
        from rich.live import Live

        live = Live(_panel(None), refresh_per_second=4)
        live.start()
    try:
        while True:
            doc = fetch()
            n += 1
            if live is not None:
                live.update(_panel(doc))
            elif as_json:
                click.echo(orjson.dumps(doc).decode())
            else:
                click.echo(plain_line(doc))
            if doc is None or doc["status"] not in LIVE or (count is not None and n >= count):
                return
            tick.wait(every)
    except KeyboardInterrupt:
        return
    finally:
        if live is not None:
            live.stop()
