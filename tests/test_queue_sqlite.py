"""What only the SQLite backend has: its schema in WAL mode, its page size, its refusal of files
that are not its own, its index upgrades, its read snapshot under a concurrent commit, its
driver errors wrapped, and its query plans (EXPLAIN QUERY PLAN: an index for every hot and
tasks-view query, never a scan of the queue's depth). The backend-neutral contract is
tests/test_queue_contract.py."""

from __future__ import annotations

import sqlite3

import pytest

from orchestrator.core.errors import StoreError
from orchestrator.queue.search import TaskFilter, id_bounds, search
from orchestrator.queue.sqlfile import page_query
from orchestrator.queue.sqlite.sqlfile import q
from orchestrator.queue.sqlite.store import PAGE_SIZE
from orchestrator.queue.writes import Queue

# --- files, schema, pragmas -----------------------------------------------------------------

def test_new_database_has_the_schema_in_wal_mode(queue, db_path):
    tables = {r[0] for r in queue.store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meta", "tasks", "events", "effects", "runs"} <= tables
    indexes = {r[0] for r in queue.store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"tasks_due", "tasks_state_id"} <= indexes
    assert not {"tasks_lease", "tasks_state"} & indexes  # dropped: every lease and completion wrote them
    assert queue.store.conn.execute(q("schema_version")).fetchone()[0] == "orch-queue/1"
    assert queue.store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert queue.store.conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE
    assert db_path.exists()


def test_foreign_files_are_refused_untouched(tmp_path, clock, test_config):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 10)
    with pytest.raises(StoreError, match="not a SQLite database"):
        Queue(junk, clock, test_config)
    assert junk.read_bytes() == b"this is not a database at all" * 10

    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    before = foreign.read_bytes()
    with pytest.raises(StoreError, match=r"foreign schema .*\(tables: invoices\)"):
        Queue(foreign, clock, test_config)
    assert foreign.read_bytes() == before

    with pytest.raises(StoreError, match="no queue database"):
        Queue(tmp_path / "absent.db", clock, test_config, create=False)
    assert not (tmp_path / "absent.db").exists()


def test_driver_errors_on_read_are_wrapped(queue):
    queue.store.conn.execute("PRAGMA query_only = 1")  # a read that needs no write still answers
    assert queue.last_seq() == 0
    queue.store.conn.close()
    with pytest.raises(StoreError, match="cannot read the queue database: Cannot operate on a closed database"):
        queue.events_after(0)


def test_an_older_database_gets_this_versions_indexes_when_opened(db_path, clock, dump):
    with Queue(db_path, clock) as queue:
        queue.enqueue("k", {})
    conn = sqlite3.connect(db_path)  # what the previous version left: its indexes, not this one's
    conn.executescript("DROP INDEX tasks_error_state; DROP INDEX events_error;"
                       "CREATE INDEX tasks_lease ON tasks (lease_until) WHERE state = 'IN_PROGRESS';"
                       "CREATE INDEX tasks_state ON tasks (state, error);"
                       "CREATE INDEX tasks_error ON tasks (error, id) WHERE error IS NOT NULL;")
    conn.close()
    with Queue(db_path, clock, create=False) as queue:
        indexes = {r[0] for r in queue.store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"tasks_error_state", "events_error"} <= indexes
        assert not {"tasks_lease", "tasks_state", "tasks_error"} & indexes
        params = {"state": "PENDING", "error": "timeout", "lo": 0, "hi": 10, "limit": 5}
        assert queue.store.conn.execute(q("tasks_page_state_error"), params).fetchall() == []
    before = dump(db_path)
    with Queue(db_path, clock, create=False):
        pass
    assert dump(db_path) == before  # indexes that match: nothing written


class CommitBetweenQueries:
    """A reader's connection with another connection's commit slipped in after its first SELECT:
    what a writer does to a reader that reads a figure at a time."""

    def __init__(self, conn: sqlite3.Connection, commit):
        self._conn, self._commit, self.selects = conn, commit, 0

    def execute(self, sql: str, *args):
        cursor = self._conn.execute(sql, *args)
        if sql.lstrip().upper().startswith("SELECT"):
            self.selects += 1
            if self.selects == 1:
                self._commit()
        return cursor

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


def test_status_is_one_snapshot_while_a_writer_commits(queue, clock, db_path):
    queue.enqueue_many([("k0", {}), ("k1", {})])
    first, = queue.lease("w1", limit=1)
    with Queue(db_path, clock) as writer:
        def commit():  # the lease completes and the other task is leased: two states change
            writer.complete(first.task, first.epoch, "w1")
            writer.lease("w2", limit=1)

        queue.store.conn = CommitBetweenQueries(queue.store.conn, commit)
        doc = queue.status()
        assert queue.store.conn.selects > 1 and writer.status()["counts"]["DONE"] == 1  # the commit happened mid-status
    queue.store.conn = queue.store.conn._conn
    # every figure is of the moment of the first read: before the commit
    assert doc["counts"] == {"PENDING": 1, "IN_PROGRESS": 1, "DONE": 0, "FAILED": 0, "BLOCKED": 0, "CANCELLED": 0}
    assert doc["in_flight"] == [{"worker": "w1", "tasks": 1, "heartbeat_age": 0.0}] and doc["effects"] == 0
    assert doc["last_seq"] == 3 and not queue.store.conn.in_transaction
    assert queue.status()["counts"]["DONE"] == 1  # the next status sees the commit


def test_driver_errors_on_write_are_wrapped(queue):
    queue.store.conn.execute("PRAGMA query_only = 1")
    with pytest.raises(StoreError, match="cannot write the queue database: attempt to write a readonly database"):
        queue.enqueue("k", {})
    queue.store.conn.execute("PRAGMA query_only = 0")
    assert queue.enqueue("k", {}).created


# --- query plans ----------------------------------------------------------------------------

def _plan(conn: sqlite3.Connection, sql: str, params) -> list[str]:
    return [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]


@pytest.mark.parametrize("statistics", [False, True], ids=["fresh-database", "after-ANALYZE"])
def test_hot_queries_use_the_partial_indexes(statistics, queue, clock):
    # a realistic mix; a fresh queue has no statistics (the planner's worst case), then with them
    queue.enqueue_many([(f"k{i}", {}) for i in range(300)])
    queue.lease("w1", limit=50)
    leases = queue.lease("w2", limit=50)
    for lease in leases[:40]:
        queue.complete(lease.task, lease.epoch, "w2")
    if statistics:
        queue.store.conn.execute("ANALYZE")
    now = clock.now()
    plans = {
        "lease": _plan(queue.store.conn, q("lease"), {"worker": "w", "until": now + 1, "now": now, "limit": 4}),
        "any_due": _plan(queue.store.conn, q("any_due"), (now,)),
        "expired_leases": _plan(queue.store.conn, q("expired_leases"), (now, 256)),
        "count_expired": _plan(queue.store.conn, q("count_expired"), (now,)),
    }
    assert any("USING INDEX tasks_due" in d or "USING COVERING INDEX tasks_due" in d for d in plans["lease"]), plans
    assert any("INDEX tasks_due" in d for d in plans["any_due"]), plans
    # expired leases: a range of tasks_state_id over the tasks in flight, never the queue's depth
    assert any("INDEX tasks_state_id (state=?)" in d for d in plans["expired_leases"]), plans
    assert any("INDEX tasks_state_id (state=?)" in d for d in plans["count_expired"]), plans
    for name, details in plans.items():
        assert not any(d.startswith("SCAN tasks") for d in details), (name, details)
        assert not any("USE TEMP B-TREE" in d for d in details), (name, details)


# --- the tasks view's plans ------------------------------------------------------------------

PLANS = [TaskFilter(), TaskFilter(state="DONE"), TaskFilter(error="timeout"), TaskFilter(state="FAILED", error="timeout"),
         TaskFilter(state="PENDING", since=5.0, until=9.0)]


@pytest.mark.parametrize("f", PLANS, ids=lambda f: page_query(f.state, f.error) + ("_time" if f.since else ""))
def test_list_and_search_use_an_index(filled, f):
    conn = filled.store.conn
    lo, hi = id_bounds(filled.store, f)
    params = {"lo": lo, "hi": min(hi, 150), "limit": 51, "state": f.state, "error": f.error}
    steps = [r["detail"] for r in conn.execute("EXPLAIN QUERY PLAN " + q(page_query(f.state, f.error)), params)]
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


def test_a_database_made_before_the_error_index_finds_earlier_errors(histories, db_path, clock):
    histories.close()
    conn = sqlite3.connect(db_path)
    conn.executescript("DROP INDEX events_error;")
    conn.close()
    with Queue(db_path, clock, create=False) as reopened:  # the index is built from the events already there
        assert [r["id"] for r in search(reopened, TaskFilter(error="timeout"))[0]] == [3, 2, 1]
