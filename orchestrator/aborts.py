"""The five abort rules of the soak plan: the `Abort` record, its names, and the maths behind
the moving-success volume guard.

The rules are evaluated by `sli.Aggregator` (it owns the figures they read); this module holds
what a rule produces and what the rules share. See docs/sli.md for how each rule reads the log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .errors import LogError

MOVING_SUCCESS = 1
DUPLICATE_EXECUTION = 2
TRANSITION_STALL = 3
GUARDRAIL_NOT_BLOCKED = 4
LOG_MISSING = 5

RULE_NAMES = {
    MOVING_SUCCESS: "moving_success",
    DUPLICATE_EXECUTION: "duplicate_execution",
    TRANSITION_STALL: "transition_stall",
    GUARDRAIL_NOT_BLOCKED: "guardrail_not_blocked",
    LOG_MISSING: "log_missing",
}
RULE_TITLES = {
    MOVING_SUCCESS: "30-min moving success below the abort line",
    DUPLICATE_EXECUTION: "actual duplicate execution",
    TRANSITION_STALL: "no state transition while work waits (DB lock / timeout stall)",
    GUARDRAIL_NOT_BLOCKED: "guardrail hard exceed not blocked",
    LOG_MISSING: "log or metrics missing",
}
# The SLI (or invariant) that detects each rule, for the incident record.
RULE_SLI = {
    MOVING_SUCCESS: "SLI-1 success, 30-min moving window",
    DUPLICATE_EXECUTION: "SLI-4 actual duplicate executions",
    TRANSITION_STALL: "state-transition liveness (events table)",
    GUARDRAIL_NOT_BLOCKED: "guardrail enforcement (guardrail_exceeded -> blocked)",
    LOG_MISSING: "JSONL log completeness (seq contiguity, freshness against the database)",
}
GUARD_GRACE = 60.0  # soak s: a `blocked` written in the same transaction cannot be later than this


@dataclass(frozen=True)
class Abort:
    """One tripped abort rule: what the `abort` event and the incident record carry."""

    rule: int
    name: str
    figures: dict[str, Any]
    evidence: list[str] = field(default_factory=list)  # task ids
    t: float = 0.0  # soak seconds since the run start when the condition was met

    def to_event(self) -> dict[str, Any]:
        """The extra fields of the `abort` event (docs/jsonl.md)."""
        return {"rule": self.rule, "name": self.name, "figures": dict(self.figures),
                "evidence": list(self.evidence)}

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> Abort:
        rule = int(event.get("rule") or 0)
        return cls(rule=rule, name=str(event.get("name") or RULE_NAMES.get(rule, "unknown")),
                   figures=dict(event.get("figures") or {}), evidence=[str(e) for e in event.get("evidence") or []],
                   t=float(event.get("t") or 0.0))


def make(rule: int, t: float, figures: dict[str, Any], evidence: list[str] | None = None) -> Abort:
    return Abort(rule=rule, name=RULE_NAMES[rule], figures=figures, evidence=list(evidence or []), t=float(t))


def log_abort(reason: str, now_t: float, line: int | None = None) -> Abort:
    """Rule 5 for a log that cannot be read (a `LogError`): corrupt line, shrunk file, seq gap."""
    figures: dict[str, Any] = {"reason": reason}
    if line is not None:
        figures["line"] = line
    return make(LOG_MISSING, now_t, figures)


# --- the volume guard of rule 1 -----------------------------------------------------------
def false_abort_probability(n: int, success: float, threshold: float) -> float:
    """P(observed success over n tasks < threshold) when each task succeeds with `success`.

    The number of failures F is Binomial(n, 1 - success); the window trips when
    (n - F) / n < threshold, i.e. F > n (1 - threshold).
    """
    if n <= 0:
        return 0.0
    q = 1.0 - success
    allowed = math.floor(n * (1.0 - threshold) + 1e-9)  # failures that still keep the rate >= threshold
    if q <= 0:
        return 0.0
    if q >= 1:
        return 1.0 if allowed < n else 0.0
    keep = sum(math.comb(n, k) * q**k * (1 - q) ** (n - k) for k in range(0, min(allowed, n) + 1))
    return max(0.0, 1.0 - keep)


def failures_to_trip(n: int, threshold: float) -> int:
    """The fewest failures among n tasks that put the rate below `threshold`."""
    return math.floor(n * (1.0 - threshold) + 1e-9) + 1


def suggest_min_volume(success: float, threshold: float, alpha: float = 0.01, limit: int = 2000) -> int:
    """The smallest n from which a system that meets `success` exactly trips the rule with
    probability at most `alpha` in any one evaluation (and keeps doing so for every larger n
    up to `limit`; the binomial tail is not monotone in n because failures are whole)."""
    best = limit
    for n in range(limit, 0, -1):
        if false_abort_probability(n, success, threshold) > alpha:
            break
        best = n
    return best


# --- the rules, evaluated on the aggregator's state ------------------------------------------
class RuleChecks:
    """A mixin of `sli.Aggregator`: rule 2, 4 and 5 (seq) as events arrive; rules 1 and 4
    (grace) on every soak-minute boundary the log crosses; rule 3 on every event and at `check`;
    rule 5 (freshness) at `check`. Each rule trips once."""

    def _trip(self, abort: Abort) -> None:
        if abort.rule not in self.tripped:
            self.tripped[abort.rule] = abort
            self._fresh.append(abort)

    def _seq_jump(self, seq: int, t: float) -> None:
        expected = self._expect
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise LogError(f"event #{self.events}: seq is not an integer ({seq!r})")
        if expected is None:  # a header without first_seq: the first event sets the start
            return
        what = (f"seq gap: expected {expected}, got {seq} ({seq - expected} missing)" if seq > expected
                else f"seq went back: expected {expected}, got {seq}")
        self._trip(make(LOG_MISSING, t, {"reason": what, "expected": expected, "got": seq}))

    def _duplicate(self, key: str, task: str, t: float) -> None:
        if len(self.duplicates) < 500:
            self.duplicates.append({"key": key, "task": task, "t": t})
        self._trip(make(DUPLICATE_EXECUTION, t, {
            "key": key, "task": task, "actual_duplicates": len({d["key"] for d in self.duplicates})}, [task]))

    def _guard_broken(self, task: str, event: str, t: float, pending: tuple | None = None) -> None:
        epoch, since = pending or self.pending_guards.pop(task)
        self._trip(make(GUARDRAIL_NOT_BLOCKED, t, {
            "task": task, "epoch": epoch, "exceeded_at": since, "next_event": event,
            "why": "guardrail_exceeded not followed by `blocked` of the same epoch"}, [task]))

    def _cross(self, t: float) -> None:
        """Soak-minute boundaries up to `t`: backlog snapshots, rule 1 and the guardrail grace."""
        if t > self._t_limit:
            raise LogError(f"event #{self.events}: t={t} is far past the run's plan (duration {self.duration:g} s)")
        last = int(t // 60)
        for series in (self.arrivals, self.done_m, self.failed_m, *self.backlog.values()):
            series.grow(last)
        while self._next_b <= t:
            b = self._next_b
            m = int(b // 60)
            for state, series in self.backlog.items():
                series.values[m - 1] = self.counts[state]
            if not self.closing:
                self._judge_window(b, m)
                for task, (epoch, since) in list(self.pending_guards.items()):
                    if b - since >= GUARD_GRACE:
                        self._guard_broken(task, "none", b)
            self._next_b = b + 60.0

    def _judge_window(self, b: float, m: int) -> None:
        start = m - self.window_minutes
        done = self.done_m.window_sum(start, m)
        failed = self.failed_m.window_sum(start, m)
        low = b - self.window_minutes * 60.0
        while self._failures and self._failures[0][0] < low:
            self._failures.popleft()
        n = done + failed
        rate = done / n if n else None
        judged = rate if n >= self.min_volume else None
        if judged is not None and judged < self.moving_success:
            evidence = [task for ft, task in self._failures if ft < b][-50:]
            self._trip(make(MOVING_SUCCESS, b, {
                "window_start": low, "window_end": b, "done": done, "failed": failed,
                "success": round(judged, 6), "threshold": self.moving_success, "min_volume": self.min_volume},
                evidence))

    def _waiting_since(self) -> float | None:
        """Since when work has waited without a transition: the last transition if a task was in
        progress or due then, else the earliest due time of a task in backoff (None: no work)."""
        memo = (self._last_trans_seq, self._last_trans_t)
        if self._stall_memo[0] == memo:
            return self._stall_memo[1]
        base = self._last_trans_t
        since = None
        for rec in self.open.values():
            if rec.state == "IN_PROGRESS" or (rec.state == "PENDING" and rec.due <= base):
                since = base
                break
            if rec.state == "PENDING" and (since is None or rec.due < since):
                since = rec.due
        self._stall_memo = (memo, since)
        return since

    def _judge_stall(self, now_t: float, arrivals_due: float | None = None) -> None:
        if TRANSITION_STALL in self.tripped:
            return
        since = self._waiting_since()
        if arrivals_due is not None:  # arrivals due but not enqueued (the database refused them)
            due = max(arrivals_due, self._last_trans_t)
            since = due if since is None else min(since, due)
        if since is None or now_t - since < self.stall:
            return
        waiting = [(task, rec.state) for task, rec in self.open.items() if rec.state in ("PENDING", "IN_PROGRESS")]
        self._trip(make(TRANSITION_STALL, since + self.stall, {
            "last_transition_t": self._last_trans_t, "waiting_since": since, "stall": self.stall,
            "judged_at": now_t, "pending": sum(1 for _, s in waiting if s == "PENDING"),
            "in_progress": sum(1 for _, s in waiting if s == "IN_PROGRESS"),
            "arrivals_due_since": arrivals_due},
            [task for task, _ in waiting[:20]]))

    def check(self, now_t: float, db_last_seq: int | None = None,
              arrivals_due: float | None = None) -> list[Abort]:
        """Evaluate the rules at soak time `now_t` (seconds since the run start); return the
        aborts tripped since the last call (each rule trips once). `db_last_seq` is the
        database's newest seq: when the log is behind it, the log cannot speak for the queue.
        `arrivals_due` (live runs) is the soak time since which arrivals are due but not yet
        enqueued: work that waits although the log cannot show it (a locked database)."""
        log_seq = self.last_seq if self.last_seq is not None else (self.first_seq or 1) - 1
        behind = db_last_seq is not None and db_last_seq > log_seq
        if self.last_seq != self._checked_seq:
            self._checked_seq = self.last_seq
            self._advanced_at = max(now_t, self._advanced_at)
        if not self.closing:
            if not behind:
                if now_t >= self._next_b:
                    self._cross(now_t)
                if now_t - self._last_trans_t >= self.stall:
                    self._judge_stall(now_t, arrivals_due)
            elif now_t - self._advanced_at >= self.log_gap:
                self._trip(make(LOG_MISSING, now_t, {
                    "reason": f"the log has not advanced for {now_t - self._advanced_at:.0f} soak s "
                              f"while the database moved on", "db_last_seq": db_last_seq,
                    "log_last_seq": self.last_seq, "behind_by": db_last_seq - log_seq,
                    "silent_for": round(now_t - self._advanced_at, 3), "log_gap": self.log_gap}))
        fresh, self._fresh = self._fresh, []
        return fresh
