"""The event fold: the JSONL contract (docs/jsonl.md) read event by event into a `RunState`.

It owns the state it builds and is its only writer. What can trip an abort rule at once it tells
the rules as it meets it; on every soak-minute boundary the log crosses it takes the backlog
snapshot and lets rule 1 judge the window. `enqueued`, `leased` and `completed`, nine events in
ten, are handled inline in `feed_many`; every other event has its handler below.
"""

from __future__ import annotations

from typing import Any, Iterable

from orchestrator.core.errors import LogError
from orchestrator.judge.aborts import GUARD_GRACE, Abort
from orchestrator.judge.rules import Rules
from orchestrator.judge.state import TRANSIENT_CLASSES, OpenTask, RunState, Settings
from orchestrator.judge.taskbook import TaskBook

LISTED = 500  # operator actions / manual closes / duplicates listed at most


class Fold:
    def __init__(self, settings: Settings, rules: Rules):
        self.settings = settings
        self.rules = rules
        self.state = RunState(minutes=int(settings.duration // 60) + 2, last_event=settings.header,
                              expect=settings.first_seq)
        self.book = TaskBook(self.state, settings, rules)
        self._handlers = self._handler_table()

    # --- feeding ------------------------------------------------------------------------
    def feed_many(self, events: Iterable[dict[str, Any]]) -> None:
        """Take events in log order. `enqueued`, `leased` and `completed` are handled inline
        with the position kept in locals; every other event goes through its handler with the
        position written back first (`_keep`)."""
        s, book, rules = self.state, self.book, self.rules
        counts, opened, guards, reopenable = s.counts, s.open, s.pending_guards, s.reopenable
        keys, add_sample, add_lag, dispatch = s.completed_keys, s.samples.add, s.arrival_lag.add, s.dispatch
        done_v, arrivals_v = s.done_m.values, s.arrivals.values  # grown in place by cross()
        handlers, stall, new_task = self._handlers, self.settings.stall, OpenTask
        n, expect, next_b = s.events, s.expect, s.next_minute
        last_trans, last_trans_seq = s.last_transition_t, s.last_transition_seq
        ev: Any = None
        t = seq = None
        try:
            for ev in events:
                n += 1
                try:
                    seq = ev["seq"]
                    t = ev["t"]
                    name = ev["event"]
                except (KeyError, TypeError) as exc:
                    s.events = n
                    raise self._malformed(ev, exc) from None
                if seq != expect:
                    self._keep(n, expect, t, last_trans, last_trans_seq)
                    rules.seq_jump(s, seq, t)
                expect = seq + 1
                if t >= next_b or t - last_trans >= stall or t < 0:
                    if name == "run_resumed":  # the gap is reported on its own, not judged as a stall
                        last_trans = max(last_trans, t)
                    self._keep(n, expect, t, last_trans, last_trans_seq)
                    t = self._pace(t)
                    next_b = s.next_minute
                if name == "leased":
                    task = ev["task"]
                    rec = opened.get(task)
                    if rec is None or (guards and task in guards):
                        self._keep(n, expect, t, last_trans, last_trans_seq)
                        rec = self._slow_task(task, ev, name, t, False)
                    counts[ev["prev"]] -= 1
                    counts["IN_PROGRESS"] += 1
                    rec.state = "IN_PROGRESS"
                    rec.attempt = ev["attempt"] or 0
                    if rec.expired is not None:
                        dispatch["re_lease"] += 1
                    last_trans, last_trans_seq = t, seq
                elif name == "completed":
                    task = ev["task"]
                    key = ev["key"]
                    rec = opened.pop(task, None)
                    if rec is None or key in keys or (guards and task in guards):
                        self._keep(n, expect, t, last_trans, last_trans_seq)
                        if key in keys:
                            self._duplicate(key, task, t)
                        rec = rec or self._slow_task(task, ev, name, t, True)
                        if guards and task in guards:
                            book.guard_broken(task, name, t)
                    keys.add(key)
                    counts[ev["prev"]] -= 1
                    counts["DONE"] += 1
                    done_v[int(t) // 60] += 1
                    last_trans, last_trans_seq = t, seq
                    if rec.enq is not None and not (rec.transient or rec.faults or rec.expired is not None):
                        add_sample(t - rec.enq, t)  # the plain case: nothing else to account
                    else:
                        book.account(task, rec, "DONE", "completed", t, +1)
                elif name == "enqueued":
                    task = ev["task"]
                    if task in opened or task in reopenable:
                        raise LogError(f"event seq {seq}: {task} enqueued twice")
                    planned = ev.get("planned_t")
                    if planned is None:  # enqueued by hand: its latency runs from its enqueue
                        opened[task] = new_task(t, "PENDING", t)
                    else:  # an arrival of the plan: its latency runs from when it should have arrived
                        if planned.__class__ is not float and planned.__class__ is not int:
                            raise LogError(f"event seq {seq}: planned_t is not a number ({planned!r})")
                        opened[task] = new_task(planned, "PENDING", t)
                        add_lag(t - planned, planned)
                    counts["PENDING"] += 1
                    arrivals_v[int(t) // 60] += 1
                    last_trans, last_trans_seq = t, seq
                else:
                    self._keep(n, expect, t, last_trans, last_trans_seq)
                    handler = handlers.get(name)
                    if handler is None:
                        s.unknown[name] = s.unknown.get(name, 0) + 1
                        continue
                    try:
                        handler(ev, t, seq)
                    except (KeyError, TypeError) as exc:
                        raise self._malformed(ev, exc) from None
                    last_trans, last_trans_seq = s.last_transition_t, s.last_transition_seq
        finally:
            self._keep(n, expect, t if t is not None else s.last_t, last_trans, last_trans_seq)
            if ev is not None:
                s.last_event = ev

    def _keep(self, n: int, expect: int | None, t: float, last_trans: float, last_trans_seq: int) -> None:
        """Write the hot loop's position back before a slow path reads it."""
        s = self.state
        s.events = n
        s.expect = expect
        if expect is not None:
            s.last_seq = expect - 1
        if t is not None:
            s.last_t = t
        s.last_transition_t = last_trans
        s.last_transition_seq = last_trans_seq

    def _pace(self, t: float) -> float:
        """The time-driven checks an event may trigger: minute boundaries and the stall rule."""
        s = self.state
        if t < 0:  # soak time before the run start (clock skew): counted in the first minute
            t = 0.0
        if t >= s.next_minute:
            self.cross(t)
        if t - s.last_transition_t >= self.settings.stall and not s.closing:
            self.rules.stall(s, t)
        return t

    def cross(self, t: float) -> None:
        """Soak-minute boundaries up to `t`: backlog snapshots, rule 1 and the guardrail grace."""
        s, settings = self.state, self.settings
        if t > settings.t_limit:
            raise LogError(f"event #{s.events}: t={t} is far past the run's plan (duration {settings.duration:g} s)")
        last = int(t // 60)
        for series in (s.arrivals, s.done_m, s.failed_m, *s.backlog.values()):
            series.grow(last)
        window = settings.window_minutes * 60.0
        while s.next_minute <= t:
            b = s.next_minute
            m = int(b // 60)
            for state, series in s.backlog.items():
                series.values[m - 1] = s.counts[state]
            if not s.closing:
                while s.failures and s.failures[0][0] < b - window:
                    s.failures.popleft()
                self.rules.window(s, b, m)
                for task, (_epoch, since) in list(s.pending_guards.items()):
                    if b - since >= GUARD_GRACE:
                        self.book.guard_broken(task, "none", b)
            s.next_minute = b + 60.0

    def _slow_task(self, task: str, ev: dict[str, Any], name: str, t: float, pop: bool) -> OpenTask:
        s = self.state
        if s.pending_guards and task in s.pending_guards and name != "completed":
            self.book.guard_broken(task, name, t)
        rec = s.open.pop(task, None) if pop else s.open.get(task)
        return rec or self.book.adopt(task, ev, pop=pop)

    def _duplicate(self, key: str, task: str, t: float, **what: Any) -> None:
        """An actual duplicate execution: a second `completed` of a key (`via` completed: the
        schema forbids it) or a second side effect applied downstream (`via` side_effect)."""
        entry = {"key": key, "task": task, "t": t, "via": "completed", **what}
        if len(self.state.duplicates) < LISTED:
            self.state.duplicates.append(entry)
        self.rules.duplicate(self.state, entry)

    def _malformed(self, ev: Any, exc: Exception) -> LogError:
        where = f"event #{self.state.events}"
        if isinstance(ev, dict) and "seq" in ev:
            where += f" (seq {ev['seq']})"
        return LogError(f"{where}: malformed event ({type(exc).__name__}: {exc})")

    # --- the less frequent events: each handler takes (event, t, seq) ----------------------
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
            "side_effect_applied": self._on_side_effect, "side_effect_deduped": self._on_side_effect,
            "checkpoint": self._on_checkpoint, "run_resumed": self._on_resumed, "abort": self._on_abort,
            "run_stopped": self._on_stopped, "run_finished": self._on_finished, "run_started": self._on_header,
        }

    def _error(self, rec: OpenTask | None, error: str | None, t: float) -> None:
        if not error:
            return
        s = self.state
        s.error_events[error] = s.error_events.get(error, 0) + 1
        window = s.error_windows.setdefault(int(t // self.settings.checkpoint_every), {})
        window[error] = window.get(error, 0) + 1
        if rec is None:
            return
        bit = s.error_bits.setdefault(error, 1 << len(s.error_bits))
        if not rec.errors & bit:
            rec.errors |= bit
            s.error_tasks[error] = s.error_tasks.get(error, 0) + 1
        rec.cause = error
        if error in s.fault_bits or error in TRANSIENT_CLASSES:
            self._touch(rec, error)

    def _touch(self, rec: OpenTask | None, kind: str) -> None:
        bit = self.state.fault_bits.setdefault(kind, 1 << len(self.state.fault_bits))
        if rec is not None:
            rec.faults |= bit

    def _observe(self, kind: str | None) -> None:
        if kind:
            self.state.observed[kind] = self.state.observed.get(kind, 0) + 1

    def _on_duplicate_enqueue(self, ev, t, seq) -> None:
        _task, rec = self.book.move(ev, t, seq)
        self.state.dispatch["duplicate_enqueue"] += 1
        self._observe("duplicate_enqueue")
        self._touch(rec, "duplicate_enqueue")

    def _on_retry(self, ev, t, seq) -> None:
        _task, rec = self.book.move(ev, t, seq)
        error = ev.get("error")
        if rec is not None:
            rec.attempt = ev.get("attempt") or rec.attempt
            if error in TRANSIENT_CLASSES:
                rec.transient = True
        self._error(rec, error, t)
        self._observe(error)

    def _on_failed(self, ev, t, seq) -> None:
        rec = self.state.open.get(ev["task"])
        if rec is not None:
            rec.attempt = ev.get("attempt") or rec.attempt
        self._error(rec, ev.get("error"), t)
        self._observe(ev.get("error"))
        self.book.move(ev, t, seq)

    def _on_idempotency_skip(self, ev, t, seq) -> None:
        self.state.dispatch["idempotency_skip"] += 1
        self.book.move(ev, t, seq)

    def _on_lease_expired(self, ev, t, seq) -> None:
        s = self.state
        rec = s.open.get(ev["task"])
        s.lease["expirations"] += 1
        if rec is not None:
            if rec.expired is None:
                s.lease["tasks"] += 1
            rec.expired = t
            rec.attempt = ev.get("attempt") or rec.attempt
            kind = s.faulted_workers.get(ev.get("worker") or "")
            if kind:
                self._observe(kind)
                self._touch(rec, kind)
        self._error(rec, ev.get("error") or "lease_timeout", t)
        self.book.move(ev, t, seq)

    def _on_stale(self, ev, t, seq) -> None:
        s = self.state
        self.book.move(ev, t, seq)
        call = str(ev.get("call") or "unknown")
        s.stale_by_call[call] = s.stale_by_call.get(call, 0) + 1
        if call == "complete":
            s.dispatch["stale_complete"] += 1
        kind = s.faulted_workers.get(ev.get("worker") or "")
        if kind:
            s.fenced[kind] = s.fenced.get(kind, 0) + 1

    def _on_released(self, ev, t, seq) -> None:
        self._wind_down("released")
        self.book.move(ev, t, seq)

    def _wind_down(self, name: str) -> None:
        s = self.state
        if s.closing:
            s.after_close[name] = s.after_close.get(name, 0) + 1

    def _on_guardrail(self, ev, t, seq) -> None:
        s = self.state
        task, rec = self.book.move(ev, t, seq)
        s.guard["exceeded"] += 1
        self._observe("guardrail")
        self._error(rec, "guardrail", t)
        self._touch(rec, "guardrail")
        if ev.get("blocked") is False:
            self.rules.guard_not_blocked(ev, task, t)
        else:
            s.pending_guards[task] = (ev.get("epoch"), t)

    def _on_blocked(self, ev, t, seq) -> None:
        s = self.state
        task = ev["task"]
        pending = s.pending_guards.pop(task, None)
        if pending is not None and pending[0] != ev.get("epoch"):
            self.book.guard_broken(task, "blocked", t, pending)
        s.guard["blocked"] += 1
        self.book.move(ev, t, seq)

    def _on_operator(self, ev, t, seq) -> None:
        s = self.state
        name = ev["event"]
        actor = str(ev.get("actor") or "unknown")
        s.operator[(name, actor)] = s.operator.get((name, actor), 0) + 1
        entry = {"t": t, "wall": ev.get("wall"), "event": name, "task": ev.get("task"), "actor": actor,
                 "notes": ev.get("notes"), "from": ev.get("prev"), "to": ev.get("state")}
        if name in ("closed_done", "closed_failed"):
            if len(s.manual) < LISTED:
                s.manual.append(entry)
            if name == "closed_failed":
                rec = s.open.get(ev["task"])
                if rec is not None:
                    rec.cause = ev.get("error") or "operator"
                s.error_events["operator"] = s.error_events.get("operator", 0) + 1
        elif len(s.actions) < LISTED:
            s.actions.append(entry)
        if name == "replanned":
            s.guard["replanned"] += 1
            s.guard["oncall"] += actor == "oncall-sim"
        self.book.move(ev, t, seq)

    def _on_worker(self, ev, t, seq) -> None:
        s = self.state
        name = ev["event"]
        s.workers[name.split("_", 1)[1]] += 1
        if name == "worker_started" and ev.get("handler"):
            s.handlers.add(str(ev["handler"]))
        self._wind_down(name)
        if name == "worker_restarted":
            kind = s.faulted_workers.get(ev.get("worker") or "")
            if kind:
                self._observe(f"{kind}:restarted")

    def _on_fault(self, ev, t, seq) -> None:
        s = self.state
        kind = str(ev.get("kind") or "unknown")
        s.injected[kind] = s.injected.get(kind, 0) + 1
        task = ev.get("task")
        if task:
            self._touch(s.open.get(task) or s.reopenable.get(task), kind)
        elif ev.get("worker"):
            s.faulted_workers[ev["worker"]] = kind

    def _on_side_effect(self, ev, t, seq) -> None:
        s = self.state
        key = ev["key"]
        what = {"task": ev["task"], "epoch": ev.get("epoch"), "worker": ev.get("worker"), "t": t, "seq": seq,
                "downstream": ev.get("downstream")}
        if ev["event"] == "side_effect_deduped":
            s.side_effects["deduped"] += 1
            if len(s.deduped) < LISTED:
                s.deduped.append({"key": key, **what})
            return
        s.side_effects["applied"] += 1
        first = s.applied.get(key)
        if first is None:
            s.applied[key] = what
        else:
            self._duplicate(key, ev["task"], t, via="side_effect", first=first, second=what)

    def _on_checkpoint(self, ev, t, seq) -> None:
        keep = ("hour", "counts", "errors", "in_flight", "lock_retries", "oldest_pending_age", "expired_leases")
        self.state.checkpoints.append({"t": t, "wall": ev.get("wall"), **{k: ev.get(k) for k in keep}})

    def _on_resumed(self, ev, t, seq) -> None:
        s = self.state
        s.resumes.append({"t": t, "wall": ev.get("wall"), "gap": ev.get("gap"), "old_pid": ev.get("old_pid")})
        s.last_transition_t = max(s.last_transition_t, t)  # (already so when the gap was long: see feed_many)

    def _on_abort(self, ev, t, seq) -> None:
        self.state.log_aborts.append(Abort.from_event(ev))
        self.state.closing = True

    def _on_stopped(self, ev, t, seq) -> None:
        self.state.stopped = {"t": t, "wall": ev.get("wall"), "reason": ev.get("reason")}
        self.state.closing = True

    def _on_finished(self, ev, t, seq) -> None:
        self.state.finished = {"t": t, "wall": ev.get("wall"), "verdict": ev.get("verdict"), "reason": ev.get("reason")}
        self.state.closing = True

    def _on_header(self, ev, t, seq) -> None:
        if ev.get("run_id") != self.settings.header.get("run_id"):
            raise LogError(f"a second run_started (run {ev.get('run_id')}) inside run {self.settings.run_id}")
