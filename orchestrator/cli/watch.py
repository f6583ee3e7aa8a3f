"""`orch soak status --watch`: the status every period until the run ends (or `--count`).

A live rich panel on a terminal; otherwise one plain line per period (`--json`: one JSON document
per line), so it can be piped or logged.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable

import click
import orjson

from orchestrator.judge.reporttext import soak_clock, span

LIVE = frozenset({"starting", "running"})  # the run may still change: keep watching
STATES = ("PENDING", "IN_PROGRESS", "BLOCKED", "DONE", "FAILED", "CANCELLED")


def plain_line(doc: dict[str, Any] | None) -> str:
    stamp = time.strftime("%H:%M:%S", time.gmtime())
    if doc is None:
        return f"{stamp} no soak run in this home"
    counts = doc["counts"]
    faults = sum(doc["faults"].values())
    verdict = f" verdict {doc['verdict']}" if doc["verdict"] else ""
    return (f"{stamp} run {doc['run_id']} {doc['status']}{verdict} soak {soak_clock(doc['soak_t'])}/"
            f"{span(doc['duration'] or 0)} " + " ".join(f"{s} {counts.get(s, 0)}" for s in STATES)
            + f" faults {faults} expired_leases {doc['expired_leases']}")


def _panel(doc: dict[str, Any] | None):
    from rich.table import Table

    table = Table(title=plain_line(doc).split(" ", 1)[1] if doc else "no soak run", show_header=True)
    if doc is None:
        return table
    for state in STATES:
        table.add_column(state, justify="right")
    table.add_row(*(str(doc["counts"].get(s, 0)) for s in STATES))
    return table


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
