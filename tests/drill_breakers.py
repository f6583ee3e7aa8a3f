"""Handlers that break what a drill guards, for tests/test_drills.py only. A drill's test runs
the drill with `ORCH_TEST_UNSAFE_DRILL_HANDLER=drill_breakers:NAME` and shows it reports FAIL."""

from __future__ import annotations

import os
import threading
import time

from orchestrator.core.errors import DbLockError
from orchestrator.drills.handlers import UPSTREAM, chaos, journaled, outcome, probing


def _wall_sleep(ctx, soak_seconds: float) -> None:
    deadline = time.monotonic() + ctx.clock.to_wall(soak_seconds)
    pause = threading.Event()  # never set: does not look at ctx.lost
    while (left := deadline - time.monotonic()) > 0:
        pause.wait(left)


def ignores_cancel(ctx) -> dict:
    """Works its whole time whatever happens to the lease (a worker that ignores cancellation)."""
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    _wall_sleep(ctx, min(float(payload.get("work", 1.0)), 300.0))
    return {"task": ctx.task}


def slow_every_attempt(ctx) -> dict:
    """Never finishes in time, whichever attempt: a crashed task cannot be recovered."""
    ctx.sleep(36000.0)
    return {"task": ctx.task}


def fail_everything(ctx) -> dict:
    ctx.sleep(1.0)
    raise UPSTREAM["server_error"]()


def unknown_retry_succeeds(ctx) -> dict:
    """The planned `unknown` failures succeed on their retry: more than 63 of 100 end DONE."""
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    if payload.get("fail") == "unknown" and ctx.attempt > 1:
        return {"task": ctx.task}
    return outcome(ctx)


def misclassify(ctx) -> dict:
    """Wraps every upstream error in a bare RuntimeError: its class is lost (all `unknown`)."""
    try:
        return chaos(ctx)
    except Exception as exc:
        raise RuntimeError(f"call failed: {type(exc).__name__}") from None


def journal_twice(ctx) -> dict:
    """Writes its effect outside the queue twice (a non-idempotent integration)."""
    journaled(ctx)
    fd = os.open(ctx.payload["journal"], os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, f"{ctx.key} {ctx.task} {ctx.epoch} again\n".encode())
    finally:
        os.close(fd)
    return {"task": ctx.task}


def swallow_lock(ctx) -> dict:
    """Turns the database's lock error into an unclassifiable one."""
    try:
        return probing(ctx)
    except DbLockError:
        raise RuntimeError("something went wrong") from None


def instant(ctx) -> dict:
    """Finishes every task at once, whatever it asks for."""
    return {"task": ctx.task}
