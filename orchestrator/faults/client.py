"""Asking for faults: the request/answer exchange with the chaos agent (a db_lock hold, a
concurrent duplicate enqueue) and the signals sent to processes. The worker and the supervisor
use these; the agent's side is `faults.agent`."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from orchestrator.core.clock import Clock


def address(sock_path: Path) -> str:
    """The agent's socket in Linux's abstract namespace, named after its path under the home: no
    file to clean up, and no 108-byte limit on a deep home's path."""
    digest = hashlib.sha1(str(Path(sock_path).resolve()).encode()).hexdigest()[:20]
    return f"\0orch-agent-{digest}"


@contextmanager
def _conversation(sock_path: Path, line: str, timeout: float) -> Iterator[tuple[socket.socket | None, str | None]]:
    """Send one request line to the agent and read its answer line: (the open socket, the answer),
    the answer None when no agent answered in time. The socket stays open for the block."""
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError:
        yield None, None
        return
    with s:
        try:
            s.settimeout(timeout)
            s.connect(address(sock_path))
            s.sendall(line.encode() + b"\n")
            answer = s.makefile("rb").readline().decode().strip() or None
        except OSError:
            answer = None
        yield s, answer


def ask(sock_path: Path, line: str, timeout: float) -> str | None:
    """Send one request to the agent; None when no agent answers in time."""
    with _conversation(sock_path, line, timeout) as (_s, answer):
        return answer


def lock_requester(sock_path: Path, clock: Clock, task: str) -> Callable[[float], AbstractContextManager[bool]]:
    """What a handler calls to meet the lock: `with request(hold_soak) as held:` asks the agent to
    hold it and waits for `held` (False: no agent answered); the handler writes inside the block,
    and leaving it tells the agent the lock was met, so the hold ends."""
    @contextmanager
    def request(hold_soak: float) -> Iterator[bool]:
        line = f"hold {hold_soak} {task}"
        with _conversation(sock_path, line, max(clock.to_wall(60.0), 2.0)) as (s, answer):
            try:
                yield answer == "held"
            finally:
                if s is not None:
                    try:
                        s.sendall(b"met\n")
                    except OSError:
                        pass
    return request


def kill(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
