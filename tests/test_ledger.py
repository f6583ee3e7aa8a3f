"""The synthetic handler's downstream (handlers/ledger.py): a key lands once however many workers
apply it at once, wherever they run. On SQLite the ledger is a file in the run's folder (the
workers of one host); on PostgreSQL it is a table on the queue's server, which workers on other
hosts (another home, another run folder) share."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from orchestrator.core.clock import WALL
from orchestrator.handlers.ledger import Ledger, ServerLedger, open_ledger
from orchestrator.queue.writes import Queue


def hosts(location: Path | str, tmp_path: Path) -> tuple[Path, Path]:
    """The run folders of two workers: two hosts' on a server database, one host's on a file."""
    if isinstance(location, str):
        return tmp_path / "host-a" / "run", tmp_path / "host-b" / "run"
    return tmp_path / "run", tmp_path / "run"


def test_the_ledger_follows_the_queue_database(location, tmp_path):
    ledger = open_ledger(location, tmp_path / "run")
    try:
        assert isinstance(ledger, ServerLedger if isinstance(location, str) else Ledger)
    finally:
        ledger.close()
    assert not (tmp_path / "run").exists()  # opened on first use only


def test_a_key_lands_once_whichever_worker_applies_it(location, tmp_path):
    with Queue(location, WALL):  # the run's database exists
        pass
    here, there = (open_ledger(location, folder) for folder in hosts(location, tmp_path))
    try:
        assert here.apply("key-1", "ORCH-1", 1, "w1") is True
        assert there.apply("key-1", "ORCH-1", 2, "w2") is False  # a stalled worker's late attempt
        assert there.apply("key-2", "ORCH-2", 1, "w2") is True
        # a downstream that does not dedupe lands the second attempt: a real duplicate
        assert there.apply("key-3", "ORCH-3", 1, "w2", dedupe=False) is True
        assert here.apply("key-3", "ORCH-3", 2, "w1", dedupe=False) is True
        seen = here.entries()
        assert [(e["key"], e["epoch"], e["worker"]) for e in seen] == [
            ("key-1", 1, "w1"), ("key-2", 1, "w2"), ("key-3", 1, "w2"), ("key-3", 2, "w1")]
        assert [e["epoch"] for e in there.entries("key-3")] == [1, 2]
    finally:
        here.close()
        there.close()


def _apply_at_once(location, folder: str, name: str, start, out) -> None:
    ledger = open_ledger(location, folder)
    try:
        ledger.entries()  # connected and the table made before the start
        start.wait(30)
        out.put((name, ledger.apply("the-key", "ORCH-1", 1, name)))
    finally:
        ledger.close()


def test_eight_processes_applying_one_key_at_once_land_it_once(location, tmp_path):
    with Queue(location, WALL):
        pass
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    a, b = hosts(location, tmp_path)
    procs = [ctx.Process(target=_apply_at_once, args=(location, str(a if i % 2 else b), f"w{i}", start, out))
             for i in range(8)]
    for p in procs:
        p.start()
    start.set()
    results = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sorted(results.values()) == [False] * 7 + [True]
    ledger = open_ledger(location, a)
    try:
        entries = ledger.entries("the-key")
    finally:
        ledger.close()
    assert len(entries) == 1 and results[entries[0]["worker"]] is True
