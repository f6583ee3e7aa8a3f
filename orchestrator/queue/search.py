"""The tasks view's reads: search by id, key, state, error class and enqueue-time range, newest
first, with keyset pagination (`before` = the last id of the previous page), and one task's
timeline. The error filter finds the tasks that ever had the class (any attempt's failure, retry,
lease expiry, block or manual fail), not only those whose last error it is: the events record it.
Every read is one of the backend's (`Backend.tasks_page` and friends); the SQLite backend serves
each with an index (asserted in tests/test_queue_sqlite.py with EXPLAIN QUERY PLAN).

Ids are given in enqueue order under the write lock and `enqueued_at` comes from the run's one
clock, so an enqueue-time range is an id range: its bounds are two index lookups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.core.errors import UsageError
from orchestrator.core.model import ErrorClass, State
from orchestrator.queue.backend import Reads
from orchestrator.queue.tasks import event_dict, parse_task_id, task_name
from orchestrator.queue.writes import Queue

MAX_LIMIT = 500
BIG = 2**62


@dataclass(frozen=True)
class TaskFilter:
    """What to look for; every field optional. `since`/`until` are soak times on the queue's axis;
    `error` matches a task that ever had that class."""

    task: int | None = None
    key: str | None = None
    state: str | None = None
    error: str | None = None
    since: float | None = None
    until: float | None = None

    @classmethod
    def parse(cls, params: dict[str, str], origin: float = 0.0) -> TaskFilter:
        """From query parameters: id=ORCH-N, key, state, error, from/to (soak seconds since the run start)."""
        def text(name: str) -> str | None:
            value = (params.get(name) or "").strip()
            return value or None

        state, error = text("state"), text("error")
        if state is not None and state not in {s.value for s in State}:
            raise UsageError(f"unknown state {state!r}")
        if error is not None and error not in {e.value for e in ErrorClass}:
            raise UsageError(f"unknown error class {error!r}")
        bounds = []
        for name in ("from", "to"):
            value = text(name)
            try:
                bounds.append(None if value is None else origin + float(value))
            except ValueError:
                raise UsageError(f"{name} must be soak seconds, got {value!r}") from None
        task = text("id")
        return cls(task=parse_task_id(task) if task else None, key=text("key"), state=state, error=error,
                   since=bounds[0], until=bounds[1])


def row_doc(row: dict, origin: float = 0.0) -> dict[str, Any]:
    doc = {"id": task_name(row["id"]), "key": row["key"], "state": row["state"], "attempt": row["attempt"],
           "max_attempts": row["max_attempts"], "epoch": row["epoch"], "worker": row["worker"],
           "error": row["error"], "enqueued_t": round(row["enqueued_at"] - origin, 3),
           "updated_t": round(row["updated_at"] - origin, 3)}
    if "heartbeat_at" in row.keys():  # one task's view: its lease (heartbeats are not events)
        for name in ("heartbeat_at", "lease_until"):
            doc[name.replace("_at", "_t").replace("_until", "_until_t")] = (
                None if row[name] is None else round(row[name] - origin, 3))
        doc.update(budget=row["budget"], plan=row["plan"])
    return doc


def search(queue: Queue, f: TaskFilter, before: int | None = None, limit: int = 50) -> tuple[list[dict], int | None]:
    """One page of matching tasks, newest first, and the `before` of the next page (None: last page)."""
    limit = max(1, min(int(limit), MAX_LIMIT))
    store = queue.store
    if f.task is not None or f.key is not None:
        row = store.task_row(f.task) if f.task is not None else store.task_row_by_key(f.key)
        rows = [row] if row is not None else []
        rows = [r for r in rows if _matches(store, r, f) and (f.key is None or r["key"] == f.key)]
        return rows, None
    lo, hi = id_bounds(store, f)
    if before is not None:
        hi = min(hi, before - 1)
    rows = store.tasks_page(f.state, f.error, lo, hi, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1]["id"] if more else None)


def _matches(store: Reads, row: dict, f: TaskFilter) -> bool:
    return ((f.state is None or row["state"] == f.state)
            and (f.since is None or row["enqueued_at"] >= f.since)
            and (f.until is None or row["enqueued_at"] <= f.until)
            and (f.error is None or store.task_had_error(f.error, row["id"])))


def id_bounds(store: Reads, f: TaskFilter) -> tuple[int, int]:
    lo, hi = 0, BIG
    if f.since is not None:
        first = store.first_id_enqueued_since(f.since)
        lo = first if first is not None else BIG
    if f.until is not None:
        last = store.last_id_enqueued_until(f.until)
        hi = last if last is not None else -1
    return lo, hi


def all_ids(queue: Queue, f: TaskFilter, cap: int = 100_000) -> list[int]:
    """Every matching id (newest first), page by page, at most `cap` (a bulk action's selection)."""
    out: list[int] = []
    before = None
    while len(out) < cap:
        rows, before = search(queue, f, before, MAX_LIMIT)
        out += [r["id"] for r in rows]
        if before is None:
            break
    return out[:cap]


def timeline(queue: Queue, task: int, origin: float = 0.0) -> dict[str, Any]:
    """The task and every event of it, in order (enqueue, leases with epochs, heartbeat-less
    expiries, retries with backoff, stale calls fenced, operator actions)."""
    row = queue.store.task_row(task)
    if row is None:
        queue.get(task)  # raises UnknownTask
    events = queue.history(task)
    for ev in events:
        ev["t"] = round(ev["t"] - origin, 3)
    return {"task": row_doc(row, origin), "events": events}


__all__ = ["TaskFilter", "search", "all_ids", "timeline", "row_doc", "event_dict"]
