"""The five abort rules of the soak plan: the `Abort` record, its names, and the maths behind
the moving-success volume guard.

The rules are judged in `rules.py` on the fold's state; this module holds what a rule produces
and what the rules share. See docs/sli.md for how each rule reads the log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

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
