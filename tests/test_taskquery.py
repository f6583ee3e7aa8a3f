"""The tasks view's search: filters, keyset pages, and query plans that use an index (no SCAN tasks)."""

from __future__ import annotations

import pytest

from orchestrator.core.errors import UsageError
from orchestrator.queue.search import TaskFilter, all_ids, id_bounds, page_query, search, timeline
from orchestrator.queue.sqlfile import q


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
    plan = " | ".join(r["detail"] for r in conn.execute("EXPLAIN QUERY PLAN " + q(page_query(f)), params))
    assert "SCAN tasks" not in plan.replace("SCAN tasks USING", "") and "USE TEMP B-TREE" not in plan, plan
    assert "SEARCH tasks USING" in plan, plan
    for name, arg in (("first_id_enqueued_since", 5.0), ("last_id_enqueued_until", 9.0), ("task_row_by_key", "k1"),
                      ("task_row_by_id", 1), ("task_events", 1)):
        detail = " | ".join(r["detail"] for r in conn.execute("EXPLAIN QUERY PLAN " + q(name), (arg,)))
        assert "USING" in detail and "TEMP B-TREE" not in detail, (name, detail)
