"""The lease queue's state machine, on any backend of `queue.backend` (its statements are the
backend's; the decisions are here).

Every transition writes its event row in the same transaction (gap-free `seq`). Worker calls
carry (task, epoch) and apply only while `state='IN_PROGRESS' AND epoch=?`; a stale call changes
nothing but is recorded as `stale_rejected`. The effect row of a task is written in the same
transaction as DONE, under a UNIQUE idempotency key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import orjson

from orchestrator.core.errors import IllegalTransition, KeyConflict, UnknownTask, UsageError
from orchestrator.core.model import ACTION_EVENTS, OPERATOR_ACTIONS, ErrorClass, State, shorten
from orchestrator.queue.backend import Tx
from orchestrator.queue.reads import QueueView
from orchestrator.queue.tasks import Enqueued, Lease, SideEffect, Task, canonical_json, task_name

T = TypeVar("T")

REAP_BATCH = 256


class Queue(QueueView):
    """The queue's writes: every transition, with its event, in one transaction each."""

    # --- events -------------------------------------------------------------------------
    def _event(self, tx: Tx, event: str, now: float, task: int | None = None,
               key: str | None = None, state: str | None = None, prev: str | None = None,
               attempt: int | None = None, epoch: int | None = None, worker: str | None = None,
               error: str | None = None, actor: str | None = None, notes: str | None = None,
               data: dict | None = None) -> int | None:
        return tx.insert_event(now, self.clock.wall_of(now), event, task, key, state, prev, attempt, epoch, worker,
                               error, actor, notes, orjson.dumps(data).decode() if data else None)

    def hold_write_lock(self, wall_seconds: float, on_held: Callable[[], None],
                        wait: Callable[[float], Any], **fields: Any) -> None:
        """Take the write lock as a foreign writer would (not through the writers' queue), write
        a `fault_injected` event inside, call `on_held`, keep the lock `wall_seconds`, commit.
        The chaos agent's lock hog."""

        def work(tx: Tx) -> None:
            self._event(tx, "fault_injected", self.clock.now(), **fields)
            on_held()
            wait(wall_seconds)

        try:
            self.write.unqueued(work)
        finally:
            self.clock.released()  # the skip clock: wake the writers that waited for this hold to end

    def _kicking(self, result: T, tasks: int = 1) -> T:
        """After a commit that may have made `tasks` tasks due now: wake as many idle workers of
        a skip clock at once; on the constant clock, tell the workers listening for work on a
        database that notifies (PostgreSQL), and the others look every poll. A task a woken worker
        misses is still seen: the clock wakes them all before it jumps past due work."""
        if tasks:
            self.clock.kick(tasks)
            if not self.clock.skips:  # the skip clock's kick is the wake-up; else the engine's, if it has one
                self.store.notify_work()
        return result

    def record(self, event: str, **fields: Any) -> int | None:
        """Write one event that changes no task (worker_started, fault_injected, checkpoint...)."""
        now = self.clock.now()
        return self.write(lambda tx: self._event(tx, event, now, **fields))

    # --- enqueue ------------------------------------------------------------------------
    def enqueue(self, key: str, payload: Any = None, **options: Any) -> Enqueued:
        return self.enqueue_many([(key, payload)], **options)[0]

    def enqueue_many(
        self,
        items: Sequence[tuple[str, Any]],
        *,
        budget: float | None = None,
        due_at: float | None = None,
        max_attempts: int | None = None,
        actor: str | None = None,
        data: dict | None = None,
        also: Callable[[Tx], None] | None = None,
    ) -> list[Enqueued]:
        """Enqueue each (key, payload[, event data]) in one transaction. A known key with the same payload
        returns the existing task and records `duplicate_enqueue`; with another payload the whole
        call is refused (`KeyConflict`) and nothing is written. `also` runs in the same
        transaction (a soak run advances its arrival cursor with it)."""
        if not items:
            return []
        prepared = []
        for key, payload, *extra in items:
            if not isinstance(key, str) or not key.strip():
                raise UsageError("idempotency key must be a non-empty string")
            payload_budget = payload.get("budget") if isinstance(payload, dict) else None
            task_budget = payload_budget if budget is None else budget
            if task_budget is not None and (isinstance(task_budget, bool) or not isinstance(task_budget, (int, float))
                                            or not task_budget > 0):
                raise UsageError(f"budget of {key!r} must be a number greater than 0, got {task_budget!r}")
            prepared.append((key, canonical_json(payload), task_budget,
                             extra[0] if extra else data))
        attempts = max_attempts or self.config.retry.max_attempts
        now = self.clock.now()
        due = now if due_at is None else due_at

        def work(tx: Tx) -> list[Enqueued]:
            out = []
            for key, body, task_budget, item_data in prepared:
                new = tx.insert_task(key, body, attempts, due, now, task_budget)
                if new is not None:
                    self._event(tx, "enqueued", now, task=new, key=key, state="PENDING",
                                prev=None, attempt=0, epoch=0, actor=actor, data=item_data)
                    out.append(Enqueued(new, True))
                    continue
                existing = tx.task_by_key(key)
                if existing["payload"] != body:
                    raise KeyConflict(
                        f"key {key!r} is already {task_name(existing['id'])} with another payload; refused"
                    )
                self._event(tx, "duplicate_enqueue", now, task=existing["id"], key=key,
                            state=existing["state"], prev=existing["state"], attempt=existing["attempt"],
                            epoch=existing["epoch"], actor=actor, data=item_data)
                out.append(Enqueued(existing["id"], False))
            if also is not None:
                also(tx)
            return out

        return self._kicking(self.write(work), len(prepared))

    # --- leasing ------------------------------------------------------------------------
    def has_due(self) -> bool:
        """Read-only check that some PENDING task is due (lets idle workers skip the write lock)."""
        return self.store.any_due(self.clock.now())

    def lease(self, worker: str, limit: int = 1, ttl: float | None = None) -> list[Lease]:
        """Hand up to `limit` due PENDING tasks to `worker`, each under a new epoch."""
        return self.write(lambda tx: self._lease(tx, self.clock.now(), worker, limit, ttl))

    def _lease(self, tx: Tx, now: float, worker: str, limit: int,
               ttl: float | None) -> list[Lease]:
        ttl = self.config.lease_ttl if ttl is None else ttl
        cap = self.config.inflight_cap
        n = limit
        if cap is not None:
            n = min(n, cap - tx.count_in_flight())
            if n <= 0:
                return []
        rows = tx.lease(worker, now + ttl, now, n)
        leases = [Lease(r["id"], r["key"], r["payload"], r["attempt"], r["max_attempts"], r["epoch"],
                        r["budget"], r["enqueued_at"], tx.effect_exists(r["key"]))
                  for r in rows]
        leases.sort(key=lambda lease: lease.task)
        for lease in leases:
            self._event(tx, "leased", now, task=lease.task, key=lease.key, state="IN_PROGRESS",
                        prev="PENDING", attempt=lease.attempt, epoch=lease.epoch, worker=worker)
        return leases

    def _fenced(self, tx: Tx, now: float, call: str, task: int, epoch: int,
                worker: str | None) -> dict | None:
        """The task's row when (task, epoch) still holds the lease; else record `stale_rejected`."""
        row = tx.fenced_row(task)
        if row is None:
            raise UnknownTask(f"no task {task_name(task)}")
        if row["state"] == "IN_PROGRESS" and row["epoch"] == epoch:
            return row
        self._event(tx, "stale_rejected", now, task=task, key=row["key"], state=row["state"],
                    prev=row["state"], attempt=row["attempt"], epoch=row["epoch"], worker=worker,
                    data={"stale_epoch": epoch, "call": call})
        return None

    def heartbeat(self, task: int, epoch: int, worker: str | None = None, ttl: float | None = None) -> bool:
        """Extend the lease; False (and a `stale_rejected` event) when the lease is gone."""
        ttl = self.config.lease_ttl if ttl is None else ttl

        def work(tx: Tx) -> bool:
            now = self.clock.now()
            if tx.heartbeat(task, epoch, now + ttl, now):
                return True
            self._fenced(tx, now, "heartbeat", task, epoch, worker)
            return False

        return self.write(work)

    def effect_of(self, key: str) -> dict | None:
        return self.store.effect(key)

    def complete(self, task: int, epoch: int, worker: str | None = None, result: Any = None,
                 spend: float | None = None) -> str:
        """Commit the effect and DONE together. Returns `completed`, `idempotency_skip` (an effect
        for the key already existed: no second one) or `stale_rejected`."""
        return self.complete_and_lease(task, epoch, worker, result, limit=0, spend=spend)[0]

    def complete_and_lease(self, task: int, epoch: int, worker: str | None, result: Any = None,
                           limit: int = 1, ttl: float | None = None, spend: float | None = None,
                           side_effects: Sequence[SideEffect] = ()) -> tuple[str, list[Lease]]:
        """`complete`, then lease up to `limit` more tasks for the same worker, in one transaction
        (half the write transactions per task of a busy worker). `spend` is what the handler
        reports it spent: past the task's budget, that is a guardrail exceed that was not blocked,
        and it is recorded as such. `side_effects`, what the attempt's handler reported, are
        recorded first, in the same transaction, whether the completion is fenced off or not."""
        body = orjson.dumps(result).decode() if result is not None else None

        def work(tx: Tx) -> tuple[str, list[Lease]]:
            now = self.clock.now()
            for effect in side_effects:
                self._event(tx, effect.event, now, task=task, key=effect.key, attempt=effect.attempt,
                            epoch=epoch, worker=worker, data=effect.data)
            outcome = self._complete(tx, now, task, epoch, worker, body, spend)
            return outcome, (self._lease(tx, now, worker, limit, ttl) if limit and worker else [])

        return self.write(work)

    def complete_many(self, done: Sequence[tuple[int, int, Any]], worker: str | None = None) -> list[str]:
        """`complete` for several leases in one transaction (a batch acknowledgement): one outcome
        per (task, epoch, result), in order. Each is fenced on its own (a stale one is rejected and
        recorded, the others complete); an unknown task refuses the whole batch, writing nothing.
        The effects of a batch commit together, so a caller that holds finished work back for a
        batch also risks running all of it again after a crash (the idempotency keys keep the
        effects single). `orch worker` completes each task as it finishes."""
        if not done:
            return []
        bodies = [orjson.dumps(result).decode() if result is not None else None for _task, _epoch, result in done]

        def work(tx: Tx) -> list[str]:
            now = self.clock.now()
            return [self._complete(tx, now, task, epoch, worker, body)
                    for (task, epoch, _result), body in zip(done, bodies)]

        return self.write(work)

    def _complete(self, tx: Tx, now: float, task: int, epoch: int, worker: str | None,
                  body: str | None, spend: float | None = None) -> str:
        # The guard is the UPDATE's WHERE: it applies only while (IN_PROGRESS, epoch) holds.
        row = tx.finish_returning(task, epoch, "DONE", now, None, None, fenced=self.config.fencing)
        if row is None:
            self._fenced(tx, now, "complete", task, epoch, worker)
            return "stale_rejected"
        if spend is not None and row["budget"] is not None and spend > row["budget"]:
            self._event(tx, "guardrail_exceeded", now, task=task, key=row["key"], state="IN_PROGRESS",
                        prev="IN_PROGRESS", attempt=row["attempt"], epoch=epoch, worker=worker,
                        error=ErrorClass.GUARDRAIL.value,
                        data={"spend": spend, "budget": row["budget"], "blocked": False})
        inserted = tx.insert_effect(row["key"], task, epoch, worker, now, body)
        event = "completed" if inserted else "idempotency_skip"
        self._event(tx, event, now, task=task, key=row["key"], state="DONE", prev="IN_PROGRESS",
                    attempt=row["attempt"], epoch=epoch, worker=worker)
        return event

    def _fault(self, tx: Tx, now: float, fault: str | None, row: dict,
               worker: str | None) -> None:
        """Record a planned fault that a handler raised, in the transaction that reports it."""
        if fault:
            self._event(tx, "fault_injected", now, task=row["id"], key=row["key"], state=row["state"],
                        prev=row["state"], attempt=row["attempt"], epoch=row["epoch"], worker=worker,
                        data={"kind": fault, "target": task_name(row["id"])})

    def fail(self, task: int, epoch: int, worker: str | None, error: ErrorClass | str, detail: str = "",
             fault: str | None = None) -> str:
        """Report a failed attempt: `retry_scheduled` (back to PENDING after a backoff),
        `failed`, or `stale_rejected`."""
        error = ErrorClass(error)
        detail = shorten(detail) if detail else None

        def work(tx: Tx) -> str:
            now = self.clock.now()
            row = self._fenced(tx, now, "fail", task, epoch, worker)
            if row is None:
                return "stale_rejected"
            self._fault(tx, now, fault, row, worker)
            backoff = self.config.retry.decide(error, row["attempt"], row["unknown_seen"], self.rng,
                                               max_attempts=row["max_attempts"])
            common = {"task": task, "key": row["key"], "prev": "IN_PROGRESS", "attempt": row["attempt"],
                      "epoch": epoch, "worker": worker, "error": error.value}
            if backoff is None:
                tx.finish(task, epoch, "FAILED", now, error.value, detail)
                self._event(tx, "failed", now, state="FAILED", data={"detail": detail}, **common)
                return "failed"
            tx.reschedule(task, epoch, now, now + backoff, error.value, detail,
                          unknown=int(error is ErrorClass.UNKNOWN), refund=0)
            self._event(tx, "retry_scheduled", now, state="PENDING",
                        data={"backoff": round(backoff, 3), "detail": detail}, **common)
            return "retry_scheduled"

        return self.write(work)

    def block(self, task: int, epoch: int, worker: str | None, spend: float, budget: float | None,
              fault: str | None = None) -> str:
        """Guardrail hard exceed: record `guardrail_exceeded` and move the task to BLOCKED."""

        def work(tx: Tx) -> str:
            now = self.clock.now()
            row = self._fenced(tx, now, "block", task, epoch, worker)
            if row is None:
                return "stale_rejected"
            self._fault(tx, now, fault, row, worker)
            common = {"task": task, "key": row["key"], "attempt": row["attempt"], "epoch": epoch,
                      "worker": worker, "error": ErrorClass.GUARDRAIL.value}
            figures = {"spend": spend, "budget": budget}
            self._event(tx, "guardrail_exceeded", now, state="IN_PROGRESS", prev="IN_PROGRESS",
                        data={**figures, "blocked": True}, **common)
            tx.finish(task, epoch, "BLOCKED", now, ErrorClass.GUARDRAIL.value, f"spend {spend:g} > budget {budget}")
            self._event(tx, "blocked", now, state="BLOCKED", prev="IN_PROGRESS", data=figures, **common)
            return "blocked"

        return self.write(work)

    def release(self, task: int, epoch: int, worker: str | None) -> str:
        """Give a lease back unrun (worker shutting down): PENDING at once, attempt not counted."""

        def work(tx: Tx) -> str:
            now = self.clock.now()
            row = self._fenced(tx, now, "release", task, epoch, worker)
            if row is None:
                return "stale_rejected"
            tx.reschedule(task, epoch, now, now, None, None, unknown=0, refund=1)
            self._event(tx, "released", now, task=task, key=row["key"], state="PENDING",
                        prev="IN_PROGRESS", attempt=row["attempt"] - 1, epoch=epoch, worker=worker)
            return "released"

        return self._kicking(self.write(work))

    def reap(self) -> list[tuple[int, str]]:
        """Return expired leases to PENDING (the attempt counts) or to FAILED (`lease_timeout`)
        when the attempts are spent. Returns (task, new state) pairs. Looks before it writes: a
        reaper that finds nothing expired (nearly every tick) does not take the write lock."""
        if not self.store.count_expired(self.clock.now()):
            return []

        def work(tx: Tx) -> list[tuple[int, str]]:
            now = self.clock.now()
            out = []
            for row in tx.expired_leases(now, REAP_BATCH):
                spent = row["attempt"] >= row["max_attempts"]
                state = "FAILED" if spent else "PENDING"
                timeout = ErrorClass.LEASE_TIMEOUT.value
                if spent:
                    tx.finish(row["id"], row["epoch"], "FAILED", now, timeout, None)
                else:
                    tx.reschedule(row["id"], row["epoch"], now, now, timeout, None, unknown=0, refund=0)
                self._event(tx, "lease_expired", now, task=row["id"], key=row["key"], state=state,
                            prev="IN_PROGRESS", attempt=row["attempt"], epoch=row["epoch"],
                            worker=row["worker"], error=ErrorClass.LEASE_TIMEOUT.value,
                            data={"lease_until": row["lease_until"]})
                out.append((row["id"], state))
            return out

        reaped = self.write(work)
        return self._kicking(reaped, len(reaped))

    # --- operator actions ---------------------------------------------------------------
    def operate(self, action: str, task: int, *, actor: str, notes: str | None = None,
                budget: float | None = None) -> Task:
        """cancel | replan | retry | done | fail through the guarded state machine."""
        return self._kicking(self.write(lambda tx: self._operate(tx, self.clock.now(), action, task, actor,
                                                                 notes, budget)))

    def _operate(self, tx: Tx, now: float, action: str, task: int, actor: str,
                 notes: str | None, budget: float | None) -> Task:
        allowed, target = OPERATOR_ACTIONS[action]
        row = tx.task(task)
        if row is None:
            raise UnknownTask(f"no task {task_name(task)}")
        current = State(row["state"])
        if current not in allowed:
            names = ", ".join(s.value for s in State if s in allowed)
            raise IllegalTransition(
                f"{task_name(task)} is {current.value}; {action} is allowed from {names}"
            )
        new_state = target or current
        if action == "replan" and current is State.BLOCKED:
            new_state = State.PENDING
        fresh = new_state is State.PENDING
        update = {
            "id": task, "now": now, "state": new_state.value,
            "due_at": now if fresh else row["due_at"],
            "attempt": 0 if fresh else row["attempt"],
            "unknown_seen": 0 if fresh else row["unknown_seen"],
            "budget": budget if budget is not None else row["budget"],
            "plan": notes if action == "replan" else row["plan"],
            "error": None if fresh else row["error"],
            "detail": None if fresh else row["detail"],
        }
        if action == "fail":
            update.update(error=ErrorClass.OPERATOR.value, detail=shorten(notes or ""))
        tx.operator_update(update)
        data = {"budget": budget} if budget is not None else None
        if action == "fail":
            data = {**(data or {}), "detail": notes}
        self._event(tx, ACTION_EVENTS[action], now, task=task, key=row["key"], state=new_state.value,
                    prev=current.value, attempt=update["attempt"], epoch=row["epoch"],
                    worker=row["worker"], error=update["error"] if action == "fail" else None,
                    actor=actor, notes=notes, data=data)
        return Task.from_row(tx.task(task))

    def select_ids(self, state: State, error: str | None = None) -> list[int]:
        return self.store.ids_by_state_error(state.value, error)

    def operate_many(self, action: str, tasks: Iterable[int], *, actor: str, notes: str | None = None) -> list[Task]:
        """Apply one action to many tasks in one transaction: all or nothing."""
        ids = list(tasks)

        def work(tx: Tx) -> list[Task]:
            now = self.clock.now()
            return [self._operate(tx, now, action, t, actor, notes, None) for t in ids]

        return self._kicking(self.write(work), len(ids))
