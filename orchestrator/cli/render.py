"""Human output: rich tables on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from orchestrator.core.clock import Clock, iso_utc
from orchestrator.queue.tasks import task_name


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def emit_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A rich table on a terminal; aligned plain lines otherwise (pipes, logs, scripts)."""
    if sys.stdout.isatty():
        table = Table(title=title, show_edge=False)
        for col in columns:
            table.add_column(col)
        for row in rows:
            table.add_row(*row)
        _console().print(table)
        return
    widths = [max([len(col)] + [len(r[i]) for r in rows]) for i, col in enumerate(columns)]
    click.echo(f"{title}:")
    for line in [columns, *rows]:
        click.echo("  " + "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:,.1f}s"


def render_status(doc: dict, clock: Clock) -> None:
    counts = doc["counts"]
    emit_table("Tasks by state", [*counts, "total"], [[str(v) for v in counts.values()] + [str(doc["total"])]])
    click.echo(
        f"effects: {doc['effects']}   oldest PENDING age: {_age(doc['oldest_pending_age'])}   "
        f"expired leases: {doc['expired_leases']}   last seq: {doc['last_seq']}"
    )
    if doc["in_flight"]:
        emit_table("In flight", ["worker", "tasks", "oldest heartbeat age"],
                   [[str(r["worker"]), str(r["tasks"]), _age(r["heartbeat_age"])] for r in doc["in_flight"]])
    if doc["errors"]:
        emit_table("Errors by class (last error of each task)", ["error", "state", "tasks"],
                   [[r["error"], r["state"], str(r["tasks"])] for r in doc["errors"]])
    if doc["recent_actions"]:
        _events_table("Recent operator actions", doc["recent_actions"])


EVENT_COLUMNS = ["seq", "wall", "event", "task", "state", "prev", "attempt", "epoch", "worker", "error",
                 "actor", "notes"]


def _events_table(title: str, events: list[dict], detail: bool = False) -> None:
    """The events as a table; `detail`: a last column with each event's detail (the upstream's
    message of a failure, a stale call's epochs, a fault's kind), as `--json` has it."""
    columns = EVENT_COLUMNS + (["detail"] if detail else [])
    rows = [
        [iso_utc(e["wall"]) if col == "wall" else ("" if e.get(col) is None else str(e.get(col)))
         for col in EVENT_COLUMNS] + ([_detail(e)] if detail else [])
        for e in events
    ]
    emit_table(title, columns, rows)


def _detail(event: dict) -> str:
    """The fields of an event beyond the table's columns, `detail` first."""
    shown = set(EVENT_COLUMNS) | {"seq", "t", "wall", "task", "key", "data"}
    extra = {k: v for k, v in event.items() if k not in shown and v is not None}
    text = str(extra.pop("detail")) if "detail" in extra else ""
    rest = " ".join(f"{k}={v}" for k, v in extra.items())
    return f"{text} {rest}".strip() if text else rest


def render_history(doc: dict, clock: Clock) -> None:
    task = doc["task"]
    click.echo(
        f"{task['id']}  key={task['key']}  state={task['state']}  attempt={task['attempt']}/"
        f"{task['max_attempts']}  epoch={task['epoch']}  error={task['error'] or '-'}  "
        f"budget={task['budget'] if task['budget'] is not None else '-'}"
    )
    if task["plan"]:
        click.echo(f"plan: {task['plan']}")
    _events_table("History", doc["events"], detail=True)


def render_tasks(title: str, ids: list[int]) -> None:
    shown = ", ".join(task_name(i) for i in ids[:10])
    more = f" (+{len(ids) - 10} more)" if len(ids) > 10 else ""
    click.echo(f"{title}: {len(ids)} task(s){': ' + shown if ids else ''}{more}")
