"""The log shipper: the event table -> the run's JSONL file, in `seq` order, fsync'd in batches.

It runs as its own process (`orch soak ship`), so it can die or be stopped for real; it resumes
after the last complete line already in the file, so the file stays gap-free across restarts.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from orchestrator.core.clock import iso_utc, since_start
from orchestrator.core.heap import keep_freed_memory
from orchestrator.core.skipclock import SHIP
from orchestrator.queue.probe import install
from orchestrator.queue.runs import Run, RunStore, join
from orchestrator.queue.tasks import task_name
from orchestrator.queue.writes import Queue

FIELDS = ("seq", "t", "wall", "event", "task", "key", "state", "prev", "attempt", "epoch", "worker", "error",
          "actor", "notes")
BATCH = 5000
SKIP_SYNC_WALL = 0.25  # wall seconds between fsyncs of the log on the skip clock


def event_line(row, started_soak: float) -> bytes:
    """One event row as one JSONL line (the contract in docs/jsonl.md)."""
    doc: dict[str, Any] = {
        "seq": row["seq"], "t": since_start(row["t"], started_soak), "wall": iso_utc(row["wall"]),
        "event": row["event"], "task": None if row["task"] is None else task_name(row["task"]),
        "key": row["key"], "state": row["state"], "prev": row["prev"], "attempt": row["attempt"],
        "epoch": row["epoch"], "worker": row["worker"], "error": row["error"], "actor": row["actor"],
        "notes": row["notes"],
    }
    if row["data"]:
        extra = orjson.loads(row["data"])
        doc.update({k: v for k, v in extra.items() if k not in FIELDS})
    if row["event"] == "enqueued":
        doc.setdefault("planned_t", None)  # null: enqueued by hand, not by the plan
    return orjson.dumps(doc) + b"\n"


def header_line(run: Run, manifest: dict, workers: int) -> bytes:
    return orjson.dumps({
        "event": "run_started", "run_id": run.id, "profile": run.profile, "seed": run.seed,
        "speed": run.speed, "clock": run.clock_mode, "commit": run.commit_sha, "started_at": iso_utc(run.started_wall),
        "t": 0.0, "wall": iso_utc(run.started_wall), "first_seq": run.first_seq, "workers": workers,
        "manifest": manifest,
    }) + b"\n"


def write_header(path: Path, line: bytes) -> None:
    with open(path, "xb") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def link_latest(path: Path, profile_name: str) -> Path:
    """Point `soak_<profile>.jsonl` at this run's file (relative symlink, replaced atomically)."""
    link = path.parent / f"soak_{profile_name}.jsonl"
    tmp = path.parent / f".{link.name}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(path.name)
    os.replace(tmp, link)
    return link


def last_shipped(path: Path, first_seq: int) -> int:
    """The seq of the last complete line in the file; a torn last line is cut off."""
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        back = min(size, 1 << 16)
        fh.seek(size - back)
        tail = fh.read()
        end = tail.rfind(b"\n")
        if end < len(tail) - 1:  # a torn line after the last newline: drop it
            fh.truncate(size - back + end + 1)
        lines = tail[: end + 1].splitlines()
    for line in reversed(lines):
        doc = orjson.loads(line)
        if "seq" in doc:
            return int(doc["seq"])
        if doc.get("event") == "run_started":
            break
    return first_seq - 1


class Shipper:
    def __init__(self, queue: Queue, run: Run, interval_soak: float = 1.0, wall_floor: float = 0.005):
        self.queue = queue
        self.store = RunStore(queue)
        self.run_id = run.id
        self.path = Path(run.log_path)
        self.started_soak = run.started_soak
        self.last = last_shipped(self.path, run.first_seq)
        self.pause = max(queue.clock.to_wall(interval_soak), wall_floor)
        self.stop = threading.Event()
        # On the skip clock the shipper is woken for every batch of events (skipclock.SHIP_BACKLOG)
        # and for each evaluation of the abort rules, which waits for it (thousands of times in a
        # rehearsal): there the file is fsync'd at most every SKIP_SYNC_WALL, and at the end.
        self.sync_every = SKIP_SYNC_WALL if queue.clock.skips else 0.0
        self.synced = 0.0
        self.looked = 0.0  # when `ended` last read the run's row (monotonic)

    def ship_once(self, fh) -> int:
        rows = self.queue.events_after(self.last, BATCH)
        if not rows:
            return 0
        fh.write(b"".join(event_line(r, self.started_soak) for r in rows))
        fh.flush()
        if time.monotonic() - self.synced >= self.sync_every:
            self.sync(fh)
        self.last = rows[-1]["seq"]
        return len(rows)

    def sync(self, fh) -> None:
        os.fsync(fh.fileno())
        self.synced = time.monotonic()

    def ended(self) -> bool:
        """Whether the run has ended. On the skip clock the shipper is woken thousands of times
        in a rehearsal, so it reads the run's row only when the clock is frozen (the run winds
        down) or SKIP_SYNC_WALL after its last look."""
        clock = self.queue.clock
        if clock.skips and not clock.frozen and time.monotonic() - self.looked < SKIP_SYNC_WALL:
            return False
        self.looked = time.monotonic()
        return self.store.get(self.run_id).status != "running"

    def run(self) -> int:
        """Ship until the run has ended and every event is in the file."""
        clock = self.queue.clock
        with open(self.path, "ab") as fh, clock.participant():
            while True:
                if self.ship_once(fh) == BATCH:
                    continue  # behind: ship the next batch at once; else one batch (one fsync) per pause
                if (self.stop.is_set() or self.ended()) and self.queue.last_seq() <= self.last:
                    self.sync(fh)
                    return 0
                if clock.skips:  # woken when events wait to be shipped: no jump leaves one behind
                    clock.wait(self.stop, None, SHIP, seen=self.last)
                else:
                    self.stop.wait(self.pause)


def run_shipper(db: Path, run_id: str, folder: Path) -> int:
    keep_freed_memory()
    run = join(db, run_id, "shipper", folder)
    if run is None:
        return 0
    install(run.clock, db)
    queue = Queue(db, run.clock)
    try:
        shipper = Shipper(queue, run)
        signal.signal(signal.SIGTERM, lambda *_: shipper.stop.set())
        return shipper.run()
    finally:
        queue.close()
