"""The tasks view's search: filters and keyset pages, once per backend (through the storage
interface; the SQLite backend's query plans are checked in tests/test_queue_sqlite.py). The
`filled` and `histories` queues are conftest.py's fixtures."""

from __future__ import annotations

import pytest

from orchestrator.core.errors import UsageError
from orchestrator.queue.search import TaskFilter, all_ids, search, timeline
from orchestrator.queue.writes import Queue


@pytest.fixture
def queue(location, clock, test_config):
    with Queue(location, clock, test_config) as q:
        yield q



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
    for row in filled.store.dump()["tasks"]:
        if row["error"] is not None:
            last.setdefault(row["error"], set()).add(row["id"])
    assert last  # the fixture's param_error failures
    for error, ids in last.items():
        assert ids <= set(all_ids(filled, TaskFilter(error=error)))
