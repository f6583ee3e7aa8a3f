"""The run record: one row per soak run, the source of the run's clock and progress."""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from orchestrator.core.clock import Clock, RunEnd, run_clock
from orchestrator.core.errors import Refused
from orchestrator.queue.backend import Tx
from orchestrator.queue.reads import clock_file
from orchestrator.queue.writes import Queue


@dataclass(frozen=True)
class Run:
    id: str
    profile_name: str
    profile: dict[str, Any]
    seed: int
    speed: float
    origin: float
    started_wall: float
    started_soak: float
    status: str  # starting | running | finished | stopped | aborted
    first_seq: int
    next_arrival: int
    next_dup: int
    supervisor_pid: int | None
    ended_wall: float | None
    verdict: str | None
    commit_sha: str | None
    log_path: str
    clock_file: str | None = None  # the skip clock's file; None: the constant clock

    @property
    def clock(self) -> Clock:
        return run_clock(self.origin, self.speed, self.clock_file)

    @property
    def clock_mode(self) -> str:
        return "skip" if self.clock_file else "constant"

    @classmethod
    def from_row(cls, row: dict) -> Run:
        values = {f: row[f] for f in cls.__dataclass_fields__ if f not in ("profile", "clock_file")}
        return cls(profile=orjson.loads(row["profile"]), clock_file=clock_file(row), **values)


def new_run_id(seed: int) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-s{seed}-{secrets.token_hex(2)}"


def mark_ready(folder: Path, name: str) -> None:
    """A run's process says it has started (imports done, database open)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.ready").touch()


def commit_sha() -> str | None:
    """The git SHA of the code that runs, or None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) == 40 else None


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child is dead for our purposes
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


class RunStore:
    """Reads and writes of the `runs` table, through the queue's backend."""

    def __init__(self, queue: Queue):
        self.queue = queue

    def create(self, run_id: str, profile: dict, seed: int, speed: float, origin: float, log_path: Path,
               inflight_cap: int | None, clock_file: Path | None = None) -> Run:
        def work(tx: Tx) -> None:
            if tx.current_run() is not None:
                raise Refused("a soak run is already in progress in this home (see `orch soak status`)")
            tx.insert_run({
                "id": run_id, "profile_name": profile["name"], "profile": orjson.dumps(profile).decode(),
                "seed": seed, "speed": speed, "origin": origin, "started_wall": origin, "started_soak": origin,
                "first_seq": tx.last_seq() + 1, "supervisor_pid": os.getpid(),
                "commit_sha": commit_sha(), "log_path": str(log_path), "inflight_cap": inflight_cap,
                "clock": None if clock_file is None else str(clock_file),
            })

        self.queue.write(work)
        return self.get(run_id)

    def get(self, run_id: str) -> Run:
        row = self.queue.store.run(run_id)
        if row is None:
            raise Refused(f"no run {run_id}")
        return Run.from_row(row)

    def latest(self) -> Run | None:
        row = self.queue.store.latest_run()
        return None if row is None else Run.from_row(row)

    def active(self) -> Run | None:
        """The run whose clock is running."""
        row = self.queue.store.active_run()
        return None if row is None else Run.from_row(row)

    def current(self) -> Run | None:
        """The run starting or running (its supervisor may be gone)."""
        row = self.queue.store.current_run()
        return None if row is None else Run.from_row(row)

    def go(self, run_id: str, origin: float) -> Run:
        """Start the run's clock: soak time 0 is wall time `origin` (its pool is ready)."""
        self.queue.write(lambda tx: tx.start_run(run_id, origin))
        return self.get(run_id)

    def wait_started(self, run_id: str, wall_timeout: float = 120.0) -> Run:
        """For a run's processes: wait until its clock runs (or the run is over)."""
        deadline = time.monotonic() + wall_timeout
        pause = threading.Event()
        while True:
            run = self.get(run_id)
            if run.status != "starting" or time.monotonic() > deadline:
                return run
            pause.wait(0.005)

    def cursor_update(self, run_id: str, next_arrival: int, next_dup: int):
        """A function that advances the arrival cursors inside an enqueue's transaction."""
        return lambda tx: tx.set_arrival_cursor(run_id, next_arrival, next_dup)

    def set_supervisor(self, run_id: str, pid: int) -> None:
        self.queue.write(lambda tx: tx.set_supervisor(run_id, pid, time.time()))

    def end_of(self, run: Run) -> RunEnd | None:
        """Where `run` ended: its `run_finished` event (None while it has none). Ask only of a run
        that is over: a running one has no such event, and the search walks its events back."""
        row = self.queue.store.run_finished_event(run.first_seq)
        return None if row is None else RunEnd.of_row(row["t"], row["wall"], run.started_soak)

    def end(self, run_id: str, status: str, verdict: str | None) -> None:
        self.queue.write(lambda tx: tx.end_run(run_id, status, time.time(), verdict))


def join(db: Path, run_id: str, name: str, folder: Path) -> Run | None:
    """What a run's process does first: say it is ready, then wait for the run's clock to start.
    Returns the running run, or None when the run is over (or never started)."""
    from orchestrator.core.clock import WALL

    with Queue(db, WALL, create=False) as probe:
        store = RunStore(probe)
        mark_ready(folder, name)
        run = store.wait_started(run_id)
    return run if run.status == "running" else None
