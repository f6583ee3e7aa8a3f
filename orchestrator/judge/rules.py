"""The five abort rules, judged on what the fold has counted (`state.RunState`).

The fold tells the rules what it met that can trip one at once (a seq jump: rule 5; a second
`completed` of a key: rule 2; a guardrail exceed not blocked: rule 4) and calls `window` on every
soak-minute boundary (rule 1) and `stall` when a silence is long enough (rule 3); the aggregator
asks `log_silence` (rule 5, freshness against the database) at its checks. The rules read the
state and never change it; each rule trips once. See docs/sli.md for how each rule reads the log.
`rule_states` says, for the live views, whether each rule is ok, armed or tripped.
"""

from __future__ import annotations

from typing import Any

from orchestrator.core.errors import LogError
from orchestrator.judge.aborts import (
    DUPLICATE_EXECUTION,
    GUARDRAIL_NOT_BLOCKED,
    LOG_MISSING,
    MOVING_SUCCESS,
    RULE_NAMES,
    RULE_TITLES,
    TRANSITION_STALL,
    Abort,
    make,
)
from orchestrator.judge.state import RunState, Settings


class Rules:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.tripped: dict[int, Abort] = {}
        self._fresh: list[Abort] = []
        self._stall_memo: tuple[tuple[int, float], float | None] = ((-2, 0.0), None)
        self._advanced_at = 0.0  # soak time the log was last seen to advance (rule 5)
        self._checked_seq: int | None = None

    def trip(self, abort: Abort) -> None:
        if abort.rule not in self.tripped:
            self.tripped[abort.rule] = abort
            self._fresh.append(abort)

    def take_fresh(self) -> list[Abort]:
        """The aborts tripped since the last call."""
        fresh, self._fresh = self._fresh, []
        return fresh

    # --- what the fold meets ------------------------------------------------------------
    def seq_jump(self, state: RunState, seq: Any, t: float) -> None:
        expected = state.expect
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise LogError(f"event #{state.events}: seq is not an integer ({seq!r})")
        if expected is None:  # a header without first_seq: the first event sets the start
            return
        what = (f"seq gap: expected {expected}, got {seq} ({seq - expected} missing)" if seq > expected
                else f"seq went back: expected {expected}, got {seq}")
        self.trip(make(LOG_MISSING, t, {"reason": what, "expected": expected, "got": seq}))

    def duplicate(self, state: RunState, entry: dict[str, Any]) -> None:
        """Rule 2: an actual duplicate execution (`entry`: key, task, t, via, and for a side effect
        applied twice the first and the second application)."""
        figures = {"key": entry["key"], "task": entry["task"], "via": entry["via"],
                   "actual_duplicates": len({d["key"] for d in state.duplicates})}
        evidence = [entry["task"]]
        for which in ("first", "second"):
            if which in entry:
                figures[which] = dict(entry[which])
                evidence.append(entry[which]["task"])
        self.trip(make(DUPLICATE_EXECUTION, entry["t"], figures, list(dict.fromkeys(evidence))))

    def guard_not_blocked(self, ev: dict[str, Any], task: str, t: float) -> None:
        self.trip(make(GUARDRAIL_NOT_BLOCKED, t, {
            "task": task, "epoch": ev.get("epoch"), "spend": ev.get("spend"), "budget": ev.get("budget"),
            "why": "guardrail_exceeded says blocked=false"}, [task]))

    def guard_broken(self, task: str, event: str, t: float, epoch: int | None, since: float) -> None:
        self.trip(make(GUARDRAIL_NOT_BLOCKED, t, {
            "task": task, "epoch": epoch, "exceeded_at": since, "next_event": event,
            "why": "guardrail_exceeded not followed by `blocked` of the same epoch"}, [task]))

    # --- rule 1: on every soak-minute boundary --------------------------------------------
    def window(self, state: RunState, b: float, m: int) -> None:
        s = self.settings
        start = m - s.window_minutes
        done = state.done_m.window_sum(start, m)
        failed = state.failed_m.window_sum(start, m)
        n = done + failed
        rate = done / n if n else None
        judged = rate if n >= s.min_volume else None
        if judged is not None and judged < s.moving_success:
            evidence = [task for ft, task in state.failures if ft < b][-50:]
            self.trip(make(MOVING_SUCCESS, b, {
                "window_start": b - s.window_minutes * 60.0, "window_end": b, "done": done, "failed": failed,
                "success": round(judged, 6), "threshold": s.moving_success, "min_volume": s.min_volume},
                evidence))

    # --- rule 3: a silence while work waits -----------------------------------------------
    def _waiting_since(self, state: RunState) -> float | None:
        """Since when work has waited without a transition: the last transition if a task was in
        progress or due then, else the earliest due time of a task in backoff (None: no work)."""
        memo = (state.last_transition_seq, state.last_transition_t)
        if self._stall_memo[0] == memo:
            return self._stall_memo[1]
        base = state.last_transition_t
        since = None
        for rec in state.open.values():
            if rec.state == "IN_PROGRESS" or (rec.state == "PENDING" and rec.due <= base):
                since = base
                break
            if rec.state == "PENDING" and (since is None or rec.due < since):
                since = rec.due
        self._stall_memo = (memo, since)
        return since

    def stall(self, state: RunState, now_t: float, arrivals_due: float | None = None) -> None:
        if TRANSITION_STALL in self.tripped:
            return
        stall = self.settings.stall
        since = self._waiting_since(state)
        if arrivals_due is not None:  # arrivals due but not enqueued (the database refused them)
            due = max(arrivals_due, state.last_transition_t)
            since = due if since is None else min(since, due)
        if since is None or now_t - since < stall:
            return
        waiting = [(task, rec.state) for task, rec in state.open.items() if rec.state in ("PENDING", "IN_PROGRESS")]
        self.trip(make(TRANSITION_STALL, since + stall, {
            "last_transition_t": state.last_transition_t, "waiting_since": since, "stall": stall,
            "judged_at": now_t, "pending": sum(1 for _, s in waiting if s == "PENDING"),
            "in_progress": sum(1 for _, s in waiting if s == "IN_PROGRESS"),
            "arrivals_due_since": arrivals_due},
            [task for task, _ in waiting[:20]]))

    # --- rule 5: the log fell silent while the database moved on ----------------------------
    def note_log(self, state: RunState, now_t: float) -> None:
        """Called at every check: remembers when the log last advanced."""
        if state.last_seq != self._checked_seq:
            self._checked_seq = state.last_seq
            self._advanced_at = max(now_t, self._advanced_at)

    def log_silence(self, state: RunState, now_t: float, db_last_seq: int, log_seq: int) -> None:
        silent = now_t - self._advanced_at
        if silent >= self.settings.log_gap:
            self.trip(make(LOG_MISSING, now_t, {
                "reason": f"the log has not advanced for {silent:.0f} soak s while the database moved on",
                "db_last_seq": db_last_seq, "log_last_seq": state.last_seq, "behind_by": db_last_seq - log_seq,
                "silent_for": round(silent, 3), "log_gap": self.settings.log_gap}))


# --- what the live views show of the rules ------------------------------------------------
RULE_STATES = ("ok", "armed", "tripped")


def window_volume(settings: Settings, state: RunState) -> int:
    """DONE + FAILED tasks in rule 1's window at the last soak-minute boundary the fold crossed."""
    m = int(state.next_minute // 60) - 1
    start = m - settings.window_minutes
    return state.done_m.window_sum(start, m) + state.failed_m.window_sum(start, m)


def rule_states(settings: Settings, state: RunState, aborts: list[Abort]) -> list[dict[str, Any]]:
    """One row per abort rule, in rule order, with its state (docs/oncall-view.md, "Rule states"):
    `tripped` when it fired (live, on replay, or recorded in the log: `aborts`); `armed` while the
    run is live and the rule can fire now (rule 1: its window holds at least `min_volume` tasks;
    rule 3: work waits; rules 2, 4 and 5: always); `ok` otherwise. The web view, `/metrics`, the
    alerts and the supervisor's terminal view all take the states from here."""
    tripped = {a.rule: a for a in aborts}
    live = not state.closing and state.finished is None
    waiting = state.counts["PENDING"] + state.counts["IN_PROGRESS"] > 0
    rows = []
    for rule, name in RULE_NAMES.items():
        if rule in tripped:
            now = "tripped"
        elif not live:
            now = "ok"
        elif rule == MOVING_SUCCESS:
            now = "armed" if window_volume(settings, state) >= settings.min_volume else "ok"
        elif rule == TRANSITION_STALL:
            now = "armed" if waiting else "ok"
        else:
            now = "armed"
        abort = tripped.get(rule)
        rows.append({"rule": rule, "name": name, "title": RULE_TITLES[rule], "state": now,
                     "t": abort.t if abort else None, "figures": dict(abort.figures) if abort else None,
                     "evidence": list(abort.evidence[:50]) if abort else []})
    return rows
