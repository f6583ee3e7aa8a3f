"""Pre-soak: the data home and the queue schema are what the soak plan expects."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from orchestrator.core.errors import StoreError
from orchestrator.core.home import DEFAULT_HOME, Home
from orchestrator.queue.writes import Queue


def test_home_layout_matches_the_soak_plan(home):
    assert DEFAULT_HOME == Path("automation/orchestrator")
    h = Home.resolve(str(home)).ensure()
    assert h.db == home / "db" / "queue.db"
    assert h.logs == home / "logs" / "soak"
    assert h.soak_reports == home / "reports" / "soak"
    for folder in (h.db.parent, h.logs, h.soak_reports, h.drill_reports):
        assert folder.is_dir()


def test_queue_schema(queue, home):
    conn = queue.store.conn  # the SQLite backend's schema, as the soak plan expects it
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meta", "tasks", "events", "effects", "runs"} <= tables
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"tasks_due", "tasks_state_id", "events_task"} <= indexes
    assert conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()[0] == "orch-queue/1"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    effects_pk = [r["name"] for r in conn.execute("PRAGMA table_info(effects)") if r["pk"]]
    assert effects_pk == ["key"]  # one effect per idempotency key, enforced by the database
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO tasks (key, payload, state, max_attempts, due_at, enqueued_at, updated_at) "
                     "VALUES ('k', '{}', 'LOST', 1, 0, 0, 0)")  # the state set is closed


def test_foreign_or_broken_databases_are_refused(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite" * 100)
    with pytest.raises(StoreError, match="not a SQLite database"):
        Queue(junk)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="foreign schema"):
        Queue(other)
