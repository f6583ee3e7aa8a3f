"""The fold's task bookkeeping: a task's transitions applied to its record and the counts, and a
task's final figures added when it ends (and withdrawn when `ops retry` reopens it).

Writes only the `RunState` it is given; tells the rules when a guardrail exceed went unblocked.
"""

from __future__ import annotations

from typing import Any

from orchestrator.judge.rules import Rules
from orchestrator.judge.state import OpenTask, RunState, Settings

EXAMPLES = 5  # example task ids kept per retry-storm group
POLICY_ENDS = frozenset({"completed", "idempotency_skip", "failed", "lease_expired"})


class TaskBook:
    def __init__(self, state: RunState, settings: Settings, rules: Rules):
        self.state = state
        self.settings = settings
        self.rules = rules

    def guard_broken(self, task: str, event: str, t: float, pending: tuple | None = None) -> None:
        """A task's guardrail exceed was not followed by `blocked` of the same epoch (rule 4)."""
        epoch, since = pending or self.state.pending_guards.pop(task)
        self.rules.guard_broken(task, event, t, epoch, since)

    def adopt(self, task: str, ev: dict[str, Any], pop: bool = False) -> OpenTask:
        """A task met in a transition without being open: reopened (retried) or foreign."""
        s = self.state
        rec = s.reopenable.pop(task, None)
        if rec is not None:
            self.account(task, rec, rec.final[0], rec.final[1], ev["t"], -1)
            rec.final = None
        else:
            prev = ev.get("prev")
            s.foreign += 1
            rec = OpenTask(None, prev or "PENDING", ev["t"])
            if prev in s.counts:
                s.counts[prev] += 1
        if not pop:
            s.open[task] = rec
        return rec

    def move(self, ev: dict[str, Any], t: float, seq: int) -> tuple[str, OpenTask | None]:
        """Apply a possible transition of `ev` to the task's record; returns (task, record)."""
        s = self.state
        task = ev["task"]
        state, prev = ev["state"], ev["prev"]
        if s.pending_guards and task in s.pending_guards and ev["event"] != "blocked":
            self.guard_broken(task, ev["event"], t)
        if state == prev:
            return task, s.open.get(task) or s.reopenable.get(task)
        rec = s.open.get(task) or self.adopt(task, ev)
        s.counts[prev] -= 1
        s.counts[state] += 1
        rec.state = state
        s.last_transition_t = t
        s.last_transition_seq = seq
        if state == "PENDING":
            rec.due = t + float(ev.get("backoff") or 0.0)
        elif state in ("DONE", "FAILED", "CANCELLED"):
            del s.open[task]
            m = int(t) // 60 if t > 0 else 0
            if state == "DONE":
                s.done_m.values[m] += 1
            elif state == "FAILED":
                s.failed_m.values[m] += 1
                s.failures.append((t, task))
            self.account(task, rec, state, ev["event"], t, +1)
        return task, rec

    def account(self, task: str, rec: OpenTask, state: str, via: str, t: float, sign: int) -> None:
        """Add (sign +1) or withdraw (-1, `ops retry`) a task's final figures."""
        s = self.state
        if state in ("DONE", "FAILED"):
            if sign > 0:
                if rec.enq is not None:
                    rec.slot = s.samples.add(t - rec.enq, t)
            else:
                s.samples.withdraw(rec.slot)
                rec.slot = -1
            if rec.transient:
                s.sli3["tasks"] += sign
                s.sli3["done"] += sign if state == "DONE" else 0
        storm = None
        if state == "FAILED":
            cause = rec.cause or "unknown"
            s.error_final[cause] = s.error_final.get(cause, 0) + sign
            if rec.attempt >= self.settings.max_attempts and via in POLICY_ENDS:
                storm = self._storm(task, rec, sign)
        if rec.expired is not None:
            key = "operator" if via not in POLICY_ENDS else ("done" if state == "DONE" else "failed")
            if state == "CANCELLED":
                key = "operator"
            s.lease[key] += sign
        if rec.faults:
            for kind, bit in s.fault_bits.items():
                if rec.faults & bit:
                    final = s.fault_final.setdefault(kind, {})
                    final[state] = final.get(state, 0) + sign
        if state in ("FAILED", "CANCELLED") and sign > 0:
            rec.final = (state, via, storm)
            s.reopenable[task] = rec

    def _storm(self, task: str, rec: OpenTask, sign: int) -> str:
        s = self.state
        seen = sorted(name for name, bit in s.error_bits.items() if rec.errors & bit and name != rec.cause)
        cause = rec.cause or "unknown"
        if seen:
            cause += " (also " + ", ".join(seen) + ")"
        group = s.storms.setdefault(cause, [0, []])
        group[0] += sign
        if sign > 0 and len(group[1]) < EXAMPLES:
            group[1].append(task)
        elif sign < 0 and task in group[1]:
            group[1].remove(task)
        return cause
