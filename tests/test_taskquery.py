"""The tasks view's search: filters, keyset pages, and query plans that use an index (no SCAN tasks)."""

from __future__ import annotations

import sqlite3

import pytest

from orchestrator.core.errors import UsageError
from orchestrator.queue.search import TaskFilter, all_ids, id_bounds, page_query, search, timeline
from orchestrator.queue.sqlfile import q
from orchestrator.queue.writes import Queue


@pytest.fixture
def filled(queue, clock):
    for i in range(300):
        queue.enqueue(f"k{i}", {"i": i})
        clock.advance(1.0)
    leases = queue.lease("w1", limit=30)
    for lease in leases[:10]:
        queue.fail(lease.task, lease.epoch, "w1", "param_error")
    for lease in leases[10:20]:
        queue.complete(lease.task, lease.epoch, "w1")
    return queue


def test_pages_are_newest_first_without_gap_or_overlap(filled):
    seen, before = [], None
    while True:
        rows, before = search(filled, TaskFilter(), before, limit=70)
        seen += [r["id"] for r in rows]
        if before is None:
            break
    assert seen == list(range(300, 0, -1))


def test_filters(filled, clock):
    failed, _ = search(filled, TaskFilter(state="FAILED"))
    assert len(failed) == 10 and {r["state"] for r in failed} == {"FAILED"}
    by_error, _ = search(filled, TaskFilter(error="param_error"))
    assert [r["id"] for r in by_error] == [r["id"] for r in failed]
    both, _ = search(filled, TaskFilter(state="FAILED", error="param_error"), limit=3)
    assert len(both) == 3
    assert search(filled, TaskFilter(state="DONE", error="param_error"))[0] == []
    row, = search(filled, TaskFilter(key="k7"))[0]
    assert row["id"] == 8
    origin = 1_000_000.0
    ranged = all_ids(filled, TaskFilter(since=origin + 100, until=origin + 109.5))
    assert ranged == list(range(110, 100, -1))
    assert TaskFilter.parse({"from": "100", "to": "109.5", "state": "PENDING"}, origin).since == origin + 100
    with pytest.raises(UsageError):
        TaskFilter.parse({"state": "NOPE"})
    doc = timeline(filled, 1, origin)
    assert [e["event"] for e in doc["events"]] == ["enqueued", "leased", "failed"]


PLANS = [TaskFilter(), TaskFilter(state="DONE"), TaskFilter(error="timeout"), TaskFilter(state="FAILED", error="timeout"),
         TaskFilter(state="PENDING", since=5.0, until=9.0)]


@pytest.mark.parametrize("f", PLANS, ids=lambda f: page_query(f) + ("_time" if f.since else ""))
def test_list_and_search_use_an_index(filled, f):
    conn = filled.conn
    lo, hi = id_bounds(conn, f)
    params = {"lo": lo, "hi": min(hi, 150), "limit": 51, "state": f.state, "error": f.error}
    steps = [r["detail"] for r in conn.execute("EXPLAIN QUERY PLAN " + q(page_query(f)), params)]
    plan = " | ".join(steps)
    assert all(step.startswith("SEARCH ") and " USING " in step for step in steps), plan  # no SCAN of any table
    assert "USE TEMP B-TREE" not in plan, plan
    if f.error:  # the tasks that ever had the class: the events' error index, newest task first
        assert steps[0] == "SEARCH e USING COVERING INDEX events_error (error=? AND task>? AND task<?)", plan
    for name, args in (("first_id_enqueued_since", (5.0,)), ("last_id_enqueued_until", (9.0,)),
                       ("task_row_by_key", ("k1",)), ("task_row_by_id", (1,)), ("task_events", (1,)),
                       ("task_had_error", ("timeout", 1))):
        detail = " | ".join(r["detail"] for r in conn.execute("EXPLAIN QUERY PLAN " + q(name), args))
        assert "USING" in detail and "TEMP B-TREE" not in detail, (name, detail)


@pytest.fixture
def histories(queue, clock):
    """Five tasks and the errors of their attempts (TEST_POLICY: backoff 10 s, 20 s; 3 attempts):
    ORCH-1 timeout then DONE (no error left); ORCH-2 timeout, network, network: FAILED network;
    ORCH-3 timeout three times: FAILED timeout; ORCH-4 a lease that expired, then DONE; ORCH-5 DONE."""
    plans = {1: ["timeout", None], 2: ["timeout", "network", "network"], 3: ["timeout"] * 3,
             4: ["expire", None], 5: [None]}
    for i in plans:
        queue.enqueue(f"h{i}", {"i": i})
    for attempt in range(3):
        for lease in queue.lease("w1", limit=10):
            outcome = plans[lease.task][attempt]
            if outcome is None:
                queue.complete(lease.task, lease.epoch, "w1")
            elif outcome != "expire":
                queue.fail(lease.task, lease.epoch, "w1", outcome)
        clock.advance(31.0)  # past every backoff and the 30 s lease TTL
        queue.reap()
    return queue


def names(rows) -> list[int]:
    return [r["id"] for r in rows]


def test_the_error_filter_finds_tasks_that_ever_had_the_class(histories):
    assert [histories.get(i).state.value for i in range(1, 6)] == ["DONE", "FAILED", "FAILED", "DONE", "DONE"]
    assert [histories.get(i).error for i in (1, 2, 3)] == [None, "network", "timeout"]  # the last error
    assert names(search(histories, TaskFilter(error="timeout"))[0]) == [3, 2, 1]
    assert names(search(histories, TaskFilter(error="network"))[0]) == [2]
    assert names(search(histories, TaskFilter(error="lease_timeout"))[0]) == [4]
    assert names(search(histories, TaskFilter(state="FAILED", error="timeout"))[0]) == [3, 2]
    assert names(search(histories, TaskFilter(state="DONE", error="timeout"))[0]) == [1]
    assert search(histories, TaskFilter(error="param_error"))[0] == []
    # one id or key, with an error filter: the same meaning
    assert names(search(histories, TaskFilter(key="h1", error="timeout"))[0]) == [1]
    assert search(histories, TaskFilter(task=1, error="network"))[0] == []
    # ORCH-3 has three timeout events: a page of one task at a time lists each task once
    seen, before = [], None
    while True:
        rows, before = search(histories, TaskFilter(error="timeout"), before, limit=1)
        seen += names(rows)
        if before is None:
            break
    assert seen == [3, 2, 1]
    # a bulk action's selection (the web view's filter) is the same set
    assert all_ids(histories, TaskFilter(state="FAILED", error="timeout")) == [3, 2]


def test_every_task_with_a_last_error_is_found_by_its_class(filled, clock):
    last = {}
    for row in filled.conn.execute("SELECT id, error FROM tasks WHERE error IS NOT NULL"):
        last.setdefault(row["error"], set()).add(row["id"])
    assert last  # the fixture's param_error failures
    for error, ids in last.items():
        assert ids <= set(all_ids(filled, TaskFilter(error=error)))


def test_a_database_made_before_the_error_index_finds_earlier_errors(histories, db_path, clock):
    histories.close()
    conn = sqlite3.connect(db_path)
    conn.executescript("DROP INDEX events_error;")
    conn.close()
    with Queue(db_path, clock, create=False) as reopened:  # the index is built from the events already there
        assert names(search(reopened, TaskFilter(error="timeout"))[0]) == [3, 2, 1]
