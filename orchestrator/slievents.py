"""How the aggregator reads the less frequent events: retries, failures, expiries, fences,
guardrails, operator actions, workers, faults and the run's own events.

A mixin of `sli.Aggregator`: the methods work on the aggregator's state (see its __init__).
`enqueued`, `leased` and `completed`, nine events in ten, are handled inline in `feed_many`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import aborts as rules
from .aborts import Abort
from .errors import LogError
from .model import TRANSIENT

if TYPE_CHECKING:
    from .sli import OpenTask

TRANSIENT_CLASSES = frozenset(c.value for c in TRANSIENT)
LISTED = 500  # operator actions / manual closes / duplicates listed at most


class EventHandlers:
    """Handlers by event name; each takes (event, t, seq)."""

    def _handler_table(self) -> dict[str, Any]:
        return {
            "duplicate_enqueue": self._on_duplicate_enqueue, "retry_scheduled": self._on_retry,
            "failed": self._on_failed, "idempotency_skip": self._on_idempotency_skip,
            "lease_expired": self._on_lease_expired, "stale_rejected": self._on_stale,
            "released": self._on_released, "guardrail_exceeded": self._on_guardrail, "blocked": self._on_blocked,
            "cancelled": self._on_operator, "replanned": self._on_operator, "retried": self._on_operator,
            "closed_done": self._on_operator, "closed_failed": self._on_operator,
            "worker_started": self._on_worker, "worker_exited": self._on_worker,
            "worker_restarted": self._on_worker, "fault_injected": self._on_fault,
            "checkpoint": self._on_checkpoint, "run_resumed": self._on_resumed, "abort": self._on_abort,
            "run_stopped": self._on_stopped, "run_finished": self._on_finished, "run_started": self._on_header,
        }

    def _error(self, rec: OpenTask | None, error: str | None, t: float) -> None:
        if not error:
            return
        self.error_events[error] = self.error_events.get(error, 0) + 1
        window = self.error_windows.setdefault(int(t // self.checkpoint_every), {})
        window[error] = window.get(error, 0) + 1
        if rec is None:
            return
        bit = self.error_bits.setdefault(error, 1 << len(self.error_bits))
        if not rec.errors & bit:
            rec.errors |= bit
            self.error_tasks[error] = self.error_tasks.get(error, 0) + 1
        rec.cause = error
        if error in self.fault_bits or error in TRANSIENT_CLASSES:
            self._touch(rec, error)

    def _touch(self, rec: OpenTask | None, kind: str) -> None:
        bit = self.fault_bits.setdefault(kind, 1 << len(self.fault_bits))
        if rec is not None:
            rec.faults |= bit

    def _on_duplicate_enqueue(self, ev, t, seq) -> None:
        task, rec = self._move(ev, t, seq)
        self.dispatch["duplicate_enqueue"] += 1
        self.observed["duplicate_enqueue"] = self.observed.get("duplicate_enqueue", 0) + 1
        self._touch(rec, "duplicate_enqueue")

    def _on_retry(self, ev, t, seq) -> None:
        task, rec = self._move(ev, t, seq)
        error = ev.get("error")
        if rec is not None:
            rec.attempt = ev.get("attempt") or rec.attempt
            if error in TRANSIENT_CLASSES:
                rec.transient = True
        self._error(rec, error, t)
        self._observe(error)

    def _on_failed(self, ev, t, seq) -> None:
        rec = self.open.get(ev["task"])
        if rec is not None:
            rec.attempt = ev.get("attempt") or rec.attempt
        self._error(rec, ev.get("error"), t)
        self._observe(ev.get("error"))
        self._move(ev, t, seq)

    def _on_idempotency_skip(self, ev, t, seq) -> None:
        self.dispatch["idempotency_skip"] += 1
        self._move(ev, t, seq)

    def _on_lease_expired(self, ev, t, seq) -> None:
        rec = self.open.get(ev["task"])
        self.lease["expirations"] += 1
        if rec is not None:
            if rec.expired is None:
                self.lease["tasks"] += 1
            rec.expired = t
            rec.attempt = ev.get("attempt") or rec.attempt
            kind = self.faulted_workers.get(ev.get("worker") or "")
            if kind:
                self.observed[kind] = self.observed.get(kind, 0) + 1
                self._touch(rec, kind)
        self._error(rec, ev.get("error") or "lease_timeout", t)
        self._move(ev, t, seq)

    def _on_stale(self, ev, t, seq) -> None:
        self._move(ev, t, seq)
        call = str(ev.get("call") or "unknown")
        self.stale_by_call[call] = self.stale_by_call.get(call, 0) + 1
        if call == "complete":
            self.dispatch["stale_complete"] += 1
        kind = self.faulted_workers.get(ev.get("worker") or "")
        if kind:
            self.fenced[kind] = self.fenced.get(kind, 0) + 1

    def _on_released(self, ev, t, seq) -> None:
        self._wind_down("released")
        self._move(ev, t, seq)

    def _wind_down(self, name: str) -> None:
        if self.closing:
            self.after_close[name] = self.after_close.get(name, 0) + 1

    def _on_guardrail(self, ev, t, seq) -> None:
        task, rec = self._move(ev, t, seq)
        self.guard["exceeded"] += 1
        self.observed["guardrail"] = self.observed.get("guardrail", 0) + 1
        self._error(rec, "guardrail", t)
        self._touch(rec, "guardrail")
        if ev.get("blocked") is False:
            self._trip(rules.make(rules.GUARDRAIL_NOT_BLOCKED, t, {
                "task": task, "epoch": ev.get("epoch"), "spend": ev.get("spend"), "budget": ev.get("budget"),
                "why": "guardrail_exceeded says blocked=false"}, [task]))
        else:
            self.pending_guards[task] = (ev.get("epoch"), t)

    def _on_blocked(self, ev, t, seq) -> None:
        task = ev["task"]
        pending = self.pending_guards.pop(task, None)
        if pending is not None and pending[0] != ev.get("epoch"):
            self._guard_broken(task, "blocked", t, pending)
        self.guard["blocked"] += 1
        self._move(ev, t, seq)

    def _on_operator(self, ev, t, seq) -> None:
        name = ev["event"]
        actor = str(ev.get("actor") or "unknown")
        self.operator[(name, actor)] = self.operator.get((name, actor), 0) + 1
        entry = {"t": t, "wall": ev.get("wall"), "event": name, "task": ev.get("task"), "actor": actor,
                 "notes": ev.get("notes"), "from": ev.get("prev"), "to": ev.get("state")}
        if name in ("closed_done", "closed_failed"):
            if len(self.manual) < LISTED:
                self.manual.append(entry)
            if name == "closed_failed":
                rec = self.open.get(ev["task"])
                if rec is not None:
                    rec.cause = ev.get("error") or "operator"
                self.error_events["operator"] = self.error_events.get("operator", 0) + 1
        elif len(self.actions) < LISTED:
            self.actions.append(entry)
        if name == "replanned":
            self.guard["replanned"] += 1
            self.guard["oncall"] += actor == "oncall-sim"
        self._move(ev, t, seq)

    def _on_worker(self, ev, t, seq) -> None:
        name = ev["event"]
        self.workers[name.split("_", 1)[1]] += 1
        self._wind_down(name)
        if name == "worker_restarted":
            kind = self.faulted_workers.get(ev.get("worker") or "")
            if kind:
                key = f"{kind}:restarted"
                self.observed[key] = self.observed.get(key, 0) + 1

    def _on_fault(self, ev, t, seq) -> None:
        kind = str(ev.get("kind") or "unknown")
        self.injected[kind] = self.injected.get(kind, 0) + 1
        task = ev.get("task")
        if task:
            self._touch(self.open.get(task) or self.reopenable.get(task), kind)
        elif ev.get("worker"):
            self.faulted_workers[ev["worker"]] = kind

    def _on_checkpoint(self, ev, t, seq) -> None:
        keep = ("hour", "counts", "errors", "in_flight", "lock_retries", "oldest_pending_age", "expired_leases")
        self.checkpoints.append({"t": t, "wall": ev.get("wall"), **{k: ev.get(k) for k in keep}})

    def _on_resumed(self, ev, t, seq) -> None:
        self.resumes.append({"t": t, "wall": ev.get("wall"), "gap": ev.get("gap"), "old_pid": ev.get("old_pid")})
        self._last_trans_t = max(self._last_trans_t, t)  # the gap is reported on its own, not as a stall

    def _on_abort(self, ev, t, seq) -> None:
        self.log_aborts.append(Abort.from_event(ev))
        self.closing = True

    def _on_stopped(self, ev, t, seq) -> None:
        self.stopped = {"t": t, "wall": ev.get("wall"), "reason": ev.get("reason")}
        self.closing = True

    def _on_finished(self, ev, t, seq) -> None:
        self.finished = {"t": t, "wall": ev.get("wall"), "verdict": ev.get("verdict"), "reason": ev.get("reason")}
        self.closing = True

    def _on_header(self, ev, t, seq) -> None:
        if ev.get("run_id") != self.header.get("run_id"):
            raise LogError(f"a second run_started (run {ev.get('run_id')}) inside run {self.run_id}")

    def _observe(self, error: str | None) -> None:
        if error:
            self.observed[error] = self.observed.get(error, 0) + 1
