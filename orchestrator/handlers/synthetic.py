"""The built-in synthetic handler: it works for `payload.work` soak seconds and obeys the faults
planned into the task's payload, so soak faults are real exceptions raised on the planned attempts.
Its side effect is an entry in the run's ledger (`handlers.ledger`), keyed by the idempotency key,
applied after the work and before the worker reports: the downstream dedupes by key."""

from __future__ import annotations

from orchestrator.core.model import GuardrailExceeded, TaskError
from orchestrator.handlers.context import TaskContext


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
    apply_downstream(ctx)
    return {"task": ctx.task, "attempt": ctx.attempt}


def apply_downstream(ctx: TaskContext, dedupe: bool = True) -> None:
    """The task's side effect: one ledger entry under its idempotency key, reported to the
    worker (`ctx.side_effect`). A downstream that dedupes (`dedupe`) refuses the key's second
    entry; one that does not lands it, which is a duplicate execution."""
    if ctx.ledger is None:
        return
    applied = ctx.ledger.apply(ctx.key, ctx.task, ctx.epoch, ctx.worker, dedupe=dedupe)
    ctx.side_effect(applied, downstream="ledger" if dedupe else "ledger (no dedupe)")
