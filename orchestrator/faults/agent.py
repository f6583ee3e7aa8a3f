"""The chaos agent: a separate process that holds the write lock and enqueues duplicates on request.

The agent listens on a Unix socket (abstract namespace, named after the run's folder). One line in, one line out:
  `hold <soak seconds> <task>`  -> takes the write lock (BEGIN IMMEDIATE), records `fault_injected`
                                   (kind db_lock) inside it, answers `held`, keeps the lock for the
                                   hold time and until the asker says `met` (it wrote and met the
                                   lock) or hangs up, but no longer than the hold time or
                                   HOLD_WALL_CAP wall seconds, whichever is longer; then commits.
  `enqueue <json>`             -> enqueues {key, payload, data} and answers `ok <task> <created>`.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import orjson

from orchestrator.core.errors import OrchestratorError
from orchestrator.core.heap import keep_freed_memory
from orchestrator.core.skipclock import HOLD
from orchestrator.faults.client import address
from orchestrator.queue.probe import install
from orchestrator.queue.runs import join
from orchestrator.queue.tasks import parse_task_id
from orchestrator.queue.writes import Queue

# A hold must outlast the asker's write, which meets SQLite's busy wait: it lasts its hold time
# and until the asker says it met the lock, but never longer than the hold time or this many wall
# seconds, whichever is longer (an asker stopped by SIGSTOP, or still queued behind other writers,
# would otherwise keep every writer waiting; every writer waits while it lasts). At a rehearsal's
# speed the hold time is a millisecond or two and the asker usually meets the lock a millisecond
# later. (Before, every hold lasted the whole 5 ms; a 20 ms cap was tried and a loaded machine's
# askers reached it: 57 holds of 20-30 ms in one 72h rehearsal at 4320x.)
HOLD_WALL_CAP = 0.005


class Agent:
    def __init__(self, queue: Queue, sock_path: Path):
        self.queue = queue
        self.sock_path = Path(sock_path)
        self.stop = threading.Event()

    def serve(self) -> int:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(address(self.sock_path))
        server.listen(16)
        server.settimeout(0.2)
        try:
            while not self.stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self.stop.is_set():
                        break
                    raise
                with conn, self.queue.clock.participant():  # busy while it answers (skip clock)
                    conn.settimeout(5.0)
                    self._handle(conn)
        finally:
            server.close()
        return 0

    def _handle(self, conn: socket.socket) -> None:
        try:
            line = conn.makefile("rb").readline().decode().strip()
        except (OSError, UnicodeDecodeError):
            return
        verb, _, rest = line.partition(" ")
        try:
            if verb == "hold":
                seconds, _, task = rest.partition(" ")
                self._hold(conn, float(seconds), task)
            elif verb == "enqueue":
                doc = orjson.loads(rest)
                result = self.queue.enqueue(doc["key"], doc["payload"], data=doc.get("data"))
                conn.sendall(f"ok ORCH-{result.task} {int(result.created)}\n".encode())
            else:
                conn.sendall(b"error unknown verb\n")
        except (OrchestratorError, ValueError, KeyError, orjson.JSONDecodeError) as exc:
            _send(conn, f"error {type(exc).__name__}: {exc}\n")

    def _hold(self, conn: socket.socket, soak_seconds: float, task: str) -> None:
        queue = self.queue
        hold_wall = queue.clock.to_wall(soak_seconds)
        task_id = parse_task_id(task) if task else None

        def wait_soak(_: float) -> None:
            """The skip clock: the hold time is a soak-time wait (the clock may jump to its end),
            then the asker's `met` as above."""
            queue.clock.wait(self.stop, soak_seconds, HOLD)  # writers kept out wait for `released`
            conn.settimeout(HOLD_WALL_CAP)
            try:
                conn.recv(16)
            except OSError:
                pass

        def wait(seconds: float) -> None:
            until = time.monotonic() + seconds
            conn.settimeout(max(seconds, HOLD_WALL_CAP))
            try:
                conn.recv(16)  # `met`, or the asker hung up
            except OSError:
                pass  # no word in time: the cap
            left = until - time.monotonic()
            if left > 0:
                self.stop.wait(left)

        queue.hold_write_lock(hold_wall, on_held=lambda: _send(conn, "held\n"),
                              wait=wait_soak if queue.clock.skips else wait,
                              task=task_id, data={"kind": "db_lock", "target": task or None, "hold": soak_seconds})


def _send(conn: socket.socket, text: str) -> None:
    try:
        conn.sendall(text.encode())
    except OSError:
        pass  # the asker gave up waiting; the fault still happened and is recorded


def run_agent(db: Path, run_id: str, sock_path: Path, folder: Path) -> int:
    keep_freed_memory()
    run = join(db, run_id, "agent", folder)
    if run is None:
        return 0
    install(run.clock, db)
    queue = Queue(db, run.clock)
    agent = Agent(queue, sock_path)
    signal.signal(signal.SIGTERM, lambda *_: agent.stop.set())
    try:
        return agent.serve()
    finally:
        queue.close()
