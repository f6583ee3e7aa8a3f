"""Shared helpers: a fake clock, a full dump of the database, wait_for, child-process cleanup.

They are handed to tests as fixtures (two conftest modules exist in this repository, so tests do
not import from `conftest` by name).
"""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from orchestrator.core.clock import HandClock
from orchestrator.core.model import QueueConfig, RetryPolicy
from orchestrator.queue.sqlite.inspect import key_order
from orchestrator.queue.writes import Queue

REPO = Path(__file__).resolve().parents[1]
QUEUE_TABLES = ("effects", "events", "meta", "runs", "tasks")




# A policy whose numbers a test can predict: no jitter, three attempts.
TEST_POLICY = RetryPolicy(backoff=(10.0, 20.0), max_attempts=3, jitter=0.0, unknown_retries=1)
TEST_CONFIG = QueueConfig(retry=TEST_POLICY, lease_ttl=30.0)


def dump_db(path: Path | str) -> dict[str, list[tuple]]:
    """Every row of every table, plus the schema itself: equal dumps before and after an action
    prove that the action wrote nothing."""
    conn = sqlite3.connect(path)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        out: dict[str, list[tuple]] = {
            "sqlite_master": conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall()
        }
        for name in names:
            order = key_order(sqlite_utils.Database(conn), name)
            out[name] = conn.execute(f'SELECT * FROM "{name}" ORDER BY {order}').fetchall()
    finally:
        conn.close()
    missing = set(QUEUE_TABLES) - set(out)
    assert not missing, f"dump of {path} lacks tables {missing}"
    return out


def wait_for(predicate: Callable[[], Any], timeout: float, what: str = "condition", interval: float = 0.01) -> Any:
    """Poll `predicate` until it returns something truthy (returned), or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()  # never set: wait() is a bounded pause between polls
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        tick.wait(interval)


class Children:
    """Child processes a test started; every one still alive is killed (by its pid) at teardown."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, args: list[str], **kwargs: Any) -> subprocess.Popen:
        proc = subprocess.Popen(args, **kwargs)
        self.started.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                for sig in (signal.SIGCONT, signal.SIGKILL):  # a stopped child must not linger
                    try:
                        os.kill(proc.pid, sig)
                    except ProcessLookupError:
                        break
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def orch_command(*args: str) -> list[str]:
    """`orch ARGS` as a real process of this interpreter."""
    return [sys.executable, "-m", "orchestrator", *args]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(extra)
    return env


@pytest.fixture
def clock() -> HandClock:
    return HandClock()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def db_path(home: Path) -> Path:
    return home / "db" / "queue.db"


# The storage backends the contract tests run on (orchestrator/queue/backend.py): each test that
# takes `backend` or `location` runs once per name. PostgreSQL's runs are marked `pg`.
BACKENDS = ("sqlite", "postgres")
PG_ENV = "ORCH_TEST_PG"  # a running server's URL; scripts/pg-test.sh starts a throwaway one and sets it
PG_HOW = f"set {PG_ENV}=postgresql://... or run them through scripts/pg-test.sh"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pg_unavailable(why: str) -> None:
    """No PostgreSQL server: the test is skipped, with the reason in the summary; in CI it fails."""
    if in_ci():
        pytest.fail(f"PostgreSQL tests cannot run in CI: {why}", pytrace=False)
    pytest.skip(f"PostgreSQL: {why} ({PG_HOW})")


@pytest.fixture(params=[pytest.param(name, marks=[pytest.mark.pg] if name == "postgres" else [])
                        for name in BACKENDS])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The URL of the test server ($ORCH_TEST_PG), checked once: a test that needs it is skipped
    (failed in CI) when it is not set or does not answer."""
    import psycopg  # here: the SQLite-only tests run without it

    url = os.environ.get(PG_ENV, "").strip()
    if not url:
        pg_unavailable(f"{PG_ENV} is not set")
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as exc:
        pg_unavailable(f"the server at {PG_ENV} does not answer: {str(exc).strip().splitlines()[0]}")
    return url


@pytest.fixture
def pg_database(pg_server: str):
    """A factory of fresh, empty PostgreSQL databases: each call makes a schema of its own on the
    test server and returns a URL whose connections use it (search_path), as a new SQLite file
    would be. The schemas are dropped at teardown."""
    import psycopg

    made: list[str] = []

    def drop(conn: psycopg.Connection, name: str) -> None:
        try:
            conn.execute(f"DROP SCHEMA {name} CASCADE")
        except psycopg.Error:
            pass  # a process of the test still holds it: left to the throwaway server

    def fresh(replacing: bool = False) -> str:
        """A new database's URL; `replacing`: the one made before it is dropped (it is done with)."""
        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")
            if replacing and made:
                drop(conn, made.pop())
            conn.execute(f"CREATE SCHEMA {name}")
        made.append(name)
        sep = "&" if "?" in pg_server else "?"
        return f"{pg_server}{sep}options=-csearch_path%3D{name}"

    yield fresh
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        for name in made:
            drop(conn, name)


@pytest.fixture
def new_location(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[], Path | str]:
    """A factory of fresh queue databases on `backend`, one in use at a time (hypothesis' examples):
    new SQLite files, or new PostgreSQL schemas, each replacing (dropping) the one before, so the
    server's catalog, which every dump reads, stays small."""
    if backend == "postgres":
        fresh = request.getfixturevalue("pg_database")
        return lambda: fresh(replacing=True)
    numbers = iter(range(1_000_000))
    return lambda: tmp_path / f"queue-{next(numbers)}.db"


@pytest.fixture
def location(backend: str, db_path: Path, request: pytest.FixtureRequest) -> Path | str:
    """Where a contract test's queue database lives on `backend` (SQLite: a file in the home;
    PostgreSQL: a fresh schema on the test server)."""
    if backend == "postgres":
        return request.getfixturevalue("pg_database")()
    return db_path


@pytest.fixture
def queue(db_path: Path, clock: HandClock):
    with Queue(db_path, clock, TEST_CONFIG) as q:
        yield q


@pytest.fixture
def filled(queue, clock):
    """300 tasks a second apart: 10 failed (param_error), 10 done, 10 in flight, the rest pending."""
    for i in range(300):
        queue.enqueue(f"k{i}", {"i": i})
        clock.advance(1.0)
    leases = queue.lease("w1", limit=30)
    for lease in leases[:10]:
        queue.fail(lease.task, lease.epoch, "w1", "param_error")
    for lease in leases[10:20]:
        queue.complete(lease.task, lease.epoch, "w1")
    return queue


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


@pytest.fixture
def dump() -> Callable[[Path | str], dict]:
    return dump_db


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., Any]:
    return wait_for


@pytest.fixture
def children():
    kids = Children()
    try:
        yield kids
    finally:
        kids.cleanup()


@pytest.fixture
def fake_clock_class() -> type[HandClock]:
    return HandClock


@pytest.fixture
def test_config() -> QueueConfig:
    return TEST_CONFIG


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def orch_cmd() -> Callable[..., list[str]]:
    return orch_command


@pytest.fixture
def clean_env() -> Callable[..., dict[str, str]]:
    return child_env
