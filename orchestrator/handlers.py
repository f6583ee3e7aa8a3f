"""What a worker runs for a task: the handler contract and the built-in synthetic handler.

A handler is `module:function` taking a `TaskContext` and returning a JSON-able result (the
effect's record). It fails a task by raising; `model.classify` maps the exception to a class.
The synthetic handler obeys the faults planned into the task's payload, so soak faults are real
exceptions raised on the planned attempts.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import orjson

from .clock import Clock
from .errors import UsageError
from .model import GuardrailExceeded, TaskError


class LeaseLost(Exception):
    """Raised inside a handler when its lease was revoked (expired, cancelled, closed)."""


class Stopping(Exception):
    """Raised inside a handler's sleep when the worker must stop and release the task."""


@dataclass
class TaskContext:
    task: str
    key: str
    payload: Any
    attempt: int
    epoch: int
    budget: float | None
    clock: Clock
    lost: threading.Event = field(default_factory=threading.Event)
    spent: float = 0.0
    probe_write: Callable[[], None] | None = None  # one write with no retry (db_lock faults)
    request_lock: Callable[[float], AbstractContextManager[bool]] | None = None  # the lock hog holds the lock in the block

    def sleep(self, soak_seconds: float) -> None:
        """Work for `soak_seconds`; raises `LeaseLost` as soon as the lease is revoked."""
        if self.lost.wait(self.clock.to_wall(max(soak_seconds, 0.0))):
            raise LeaseLost(f"{self.task} lease lost")

    def spend(self, amount: float) -> None:
        """Account spend against the budget; refuse (before spending) past a hard budget."""
        if self.budget is not None and self.spent + amount > self.budget:
            raise GuardrailExceeded(self.spent + amount, self.budget)
        self.spent += amount


def load_handler(spec: str) -> Callable[[TaskContext], Any]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"handler must be module:function, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import handler module {module_name!r}: {exc}") from None
    handler = getattr(module, attr, None)
    if not callable(handler):
        raise UsageError(f"handler {spec!r} is not a callable")
    return handler


class UpstreamError(Exception):
    """An upstream-style error with an HTTP status, as a real client library would raise."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def raise_fault(kind: str, ctx: TaskContext) -> None:
    """Raise the real exception a planned fault stands for."""
    if kind == "timeout":
        raise TimeoutError(f"upstream call for {ctx.task} timed out after 30s")
    if kind == "rate_limit":
        raise UpstreamError(429, "Too Many Requests: retry later")
    if kind == "network":
        raise ConnectionResetError(104, "Connection reset by peer")
    if kind == "server_error":
        raise UpstreamError(503, "Service Unavailable")
    if kind == "param_error":
        raise UpstreamError(400, "Bad Request: parameter 'region' is invalid")
    if kind == "unknown":
        raise RuntimeError("unexpected upstream response: " + "x" * 400)
    raise TaskError("unknown", f"unplanned fault kind {kind!r}")


def meet_lock(ctx: TaskContext) -> None:
    """Have the lock hog (a separate process) take the write lock, then write: SQLite answers
    busy for real and `DbLockError` propagates. Without a hog, or if the lock was already gone,
    nothing is raised: a fault that did not happen is not reported."""
    if ctx.request_lock is None or ctx.probe_write is None:
        return
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    with ctx.request_lock(float(payload.get("lock_hold", 8.0))):
        ctx.probe_write()


def synthetic(ctx: TaskContext) -> dict:
    """Work for `payload.work` soak seconds, raising the fault planned for this attempt."""
    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    work = float(payload.get("work", 1.0))
    faults = payload.get("faults") or {}
    fault = faults.get(str(ctx.attempt)) or payload.get("always")
    if fault == "db_lock":
        meet_lock(ctx)
    elif fault:
        ctx.sleep(work / 2)
        try:
            raise_fault(fault, ctx)
        except Exception as exc:
            exc.injected = fault  # the worker records the planned fault with the failure
            raise
    spend = payload.get("spend")
    if spend is not None:
        try:
            ctx.spend(float(spend))  # a hard exceed is refused here, before the work runs
        except GuardrailExceeded as exc:
            exc.injected = "guardrail"
            raise
    ctx.sleep(work)
    return {"task": ctx.task, "attempt": ctx.attempt}


def payload_of(text: str) -> Any:
    return orjson.loads(text)
