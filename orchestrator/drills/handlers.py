"""Handlers the drills run (`orch worker --handler orchestrator.drills.handlers:NAME`).

Each obeys its task's payload, so a drill decides per task what happens:
  `slow_first`       works `first` soak seconds on attempt 1, `work` afterwards (cooperative)
  `uninterruptible`  works `work` soak seconds without looking at its lease (a blocking call)
  `always_timeout`   every call times out (TimeoutError), after `work` soak seconds
  `outcome`          succeeds, or raises the upstream error named by `fail` on every attempt
  `chaos`            raises the upstream-style error named by `kind` (long, multi-line messages)
  `probing`          works, then writes once with SQLite's busy timeout only (meets a held lock)
  `journaled`        appends one line per run to the file `journal` (the effect outside the queue)
  `ledgered`         works like `uninterruptible`, then applies its side effect to the run's ledger,
                     which dedupes by the idempotency key (as the synthetic handler does)
  `ledgered_no_dedupe`  the same against a ledger that does not dedupe (a duplicate lands twice)
"""

from __future__ import annotations

import os
import socket
import threading
import time

from orchestrator.handlers.context import TaskContext
from orchestrator.handlers.synthetic import UpstreamError, apply_downstream, synthetic

LONG = ("<html><head><title>upstream</title></head><body>" + "stack frame at upstream.service.call\n" * 12
        + "</body></html>")


def _payload(ctx: TaskContext) -> dict:
    return ctx.payload if isinstance(ctx.payload, dict) else {}


def slow_first(ctx: TaskContext) -> dict:
    p = _payload(ctx)
    ctx.sleep(float(p.get("first", 0.0)) if ctx.attempt == 1 else float(p.get("work", 1.0)))
    return {"task": ctx.task, "attempt": ctx.attempt}


def uninterruptible(ctx: TaskContext) -> dict:
    deadline = time.monotonic() + ctx.clock.to_wall(float(_payload(ctx).get("work", 0.0)))
    pause = threading.Event()  # never set: a blocking call does not notice a lost lease
    while (left := deadline - time.monotonic()) > 0:
        pause.wait(left)
    return {"task": ctx.task, "epoch": ctx.epoch}


def always_timeout(ctx: TaskContext) -> dict:
    ctx.sleep(float(_payload(ctx).get("work", 1.0)))
    raise TimeoutError(f"upstream call for {ctx.task} timed out after 30s (attempt {ctx.attempt})")


UPSTREAM = {
    "server_error": lambda: UpstreamError(502, "Bad Gateway\n" + LONG),
    "param_error": lambda: UpstreamError(400, "Bad Request: field 'region' must be one of eu, us; got 'mars'\n"
                                         + LONG),
    "rate_limit": lambda: UpstreamError(429, "Too Many Requests; retry after 30s\n" + LONG),
    "network": lambda: ConnectionResetError(104, "Connection reset by peer while reading response body " + LONG),
    "timeout": lambda: socket.timeout("The read operation timed out after 30.000s waiting for " + LONG),
    "unknown": lambda: RuntimeError("unexpected upstream response (no status): " + "\x00garbage\t" * 60 + LONG),
    "gateway_timeout": lambda: UpstreamError(504, "Gateway Timeout\n" + LONG),
    "key_error": lambda: KeyError("response field 'result' missing in " + LONG),
}
# the class each kind must map to (model.classify)
EXPECTED_CLASS = {"server_error": "server_error", "param_error": "param_error", "rate_limit": "rate_limit",
                  "network": "network", "timeout": "timeout", "unknown": "unknown",
                  "gateway_timeout": "timeout", "key_error": "param_error"}


def outcome(ctx: TaskContext) -> dict:
    p = _payload(ctx)
    ctx.sleep(float(p.get("work", 1.0)))
    if p.get("fail"):
        raise UPSTREAM[p["fail"]]()
    return {"task": ctx.task}


def chaos(ctx: TaskContext) -> dict:
    p = _payload(ctx)
    ctx.sleep(float(p.get("work", 1.0)))
    raise UPSTREAM[p["kind"]]()


def probing(ctx: TaskContext) -> dict:
    ctx.sleep(float(_payload(ctx).get("work", 1.0)))
    if ctx.probe_write is not None:
        ctx.probe_write()  # raises DbLockError (class db_lock) while another process holds the lock
    return {"task": ctx.task}


def journaled(ctx: TaskContext) -> dict:
    """The effect a real integration has outside the queue (a charge, a mail): one line per run."""
    p = _payload(ctx)
    ctx.sleep(float(p.get("work", 1.0)))
    fd = os.open(p["journal"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{ctx.key} {ctx.task} {ctx.epoch}\n".encode())
    finally:
        os.close(fd)
    return {"task": ctx.task}


def ledgered(ctx: TaskContext) -> dict:
    out = uninterruptible(ctx)
    apply_downstream(ctx, dedupe=True)
    return out


def ledgered_no_dedupe(ctx: TaskContext) -> dict:
    out = uninterruptible(ctx)
    apply_downstream(ctx, dedupe=False)
    return out


__all__ = ["slow_first", "uninterruptible", "always_timeout", "outcome", "chaos", "probing", "journaled",
           "ledgered", "ledgered_no_dedupe", "synthetic", "EXPECTED_CLASS"]
