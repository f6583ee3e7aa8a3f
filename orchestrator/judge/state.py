"""What the judge knows about a run: its settings (from the log's header) and the state the event
fold builds (`RunState`), as plain records. The fold (`fold.py`) is the only writer of the state;
the abort rules (`rules.py`) and the figures (`figures.py`) read it.

Memory: per-task state lives only while a task is open (FAILED and CANCELLED tasks keep theirs,
since `ops retry` can reopen them), plus the set of keys with a `completed` (duplicate detection
needs every one), the exact latency sample (16 bytes a task) and per-minute counters.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from orchestrator.core.errors import LogError
from orchestrator.core.model import TRANSIENT
from orchestrator.core.profiles import Abort as AbortLimits
from orchestrator.core.profiles import Retry
from orchestrator.judge.samples import Minutes, Samples

# Rules 3 (no transition while work waits) and 5 (the log stopped while the database moved on)
# judge a silence. At a rehearsal's speed their thresholds are a blink of wall time (10 soak
# minutes are 139 ms at 4320x) and a pause of the machine itself (a filesystem flush, a stolen
# CPU: 220 ms seen on a 2-core VM) would trip them; so neither is shorter than this many wall
# seconds at the run's speed. At speed 1 they are the profile's; at 720x up to 360 soak s.
SILENCE_WALL_FLOOR = 0.5
STATES = ("PENDING", "IN_PROGRESS", "BLOCKED", "DONE", "FAILED", "CANCELLED")
TRANSIENT_CLASSES = frozenset(c.value for c in TRANSIENT)


@dataclass(frozen=True)
class Settings:
    """The run's figures-relevant settings, read once from its `run_started` header."""

    header: dict[str, Any]
    profile: dict[str, Any]
    run_id: str
    window: float  # rule 1's moving window, soak s
    window_minutes: int
    moving_success: float
    min_volume: int
    stall: float  # rule 3's silence, soak s (with the wall floor)
    log_gap: float  # rule 5's silence, soak s (with the wall floor)
    max_attempts: int
    duration: float
    checkpoint_every: float
    first_seq: int | None
    t_limit: float  # an event later than this is not of this run's plan

    @classmethod
    def from_header(cls, header: Any) -> Settings:
        if not isinstance(header, dict) or header.get("event") != "run_started":
            raise LogError("the first line is not a `run_started` header")
        profile = header.get("profile")
        if not isinstance(profile, dict):
            raise LogError("run_started: `profile` is not an object")
        limits = {**AbortLimits().__dict__, **(profile.get("abort") or {})}
        window = float(limits["window"])
        # the skip clock: a pause of the machine stops soak time too, so the profile's own thresholds
        floor = 0.0 if header.get("clock") == "skip" else SILENCE_WALL_FLOOR * float(header.get("speed") or 1.0)
        duration = float(profile.get("duration") or 0.0)
        return cls(
            header=header, profile=profile, run_id=str(header.get("run_id") or "unknown"),
            window=window, window_minutes=max(1, round(window / 60.0)),
            moving_success=float(limits["moving_success"]), min_volume=int(limits["min_volume"]),
            stall=max(float(limits["stall"]), floor), log_gap=max(float(limits["log_gap"]), floor),
            max_attempts=int((profile.get("retry") or {}).get("max_attempts", Retry().max_attempts)),
            duration=duration, checkpoint_every=float(profile.get("checkpoint_every") or 21600.0),
            first_seq=header.get("first_seq"), t_limit=max(10 * duration, 90 * 86400.0),
        )


@dataclass(slots=True)
class OpenTask:
    """What the fold keeps about one task while it can still change."""

    enq: float | None  # when it arrived: `planned_t` of its `enqueued`, else its `t` (None: before this log)
    state: str
    due: float  # when a PENDING task may be leased again (t of entering PENDING + backoff)
    attempt: int = 0
    transient: bool = False  # had a `retry_scheduled` of a transient class
    expired: float | None = None  # t of its last `lease_expired`
    errors: int = 0  # bit mask of error classes met
    faults: int = 0  # bit mask of fault kinds that touched it
    cause: str | None = None  # latest error class
    slot: int = -1  # its latency slot while DONE/FAILED
    final: tuple | None = None  # (state, via event, storm group) while FAILED/CANCELLED


def _zeros(*names: str) -> Any:
    return field(default_factory=lambda: dict.fromkeys(names, 0))


@dataclass
class RunState:
    """Everything the fold has counted so far (one writer: `fold.Fold`)."""

    minutes: int  # the per-minute series' first length (grown on demand)
    # -- position in the log
    events: int = 0
    last_seq: int | None = None
    last_t: float = 0.0
    last_event: dict[str, Any] = field(default_factory=dict)
    expect: int | None = None  # the next seq the log must carry
    unknown: dict[str, int] = field(default_factory=dict)
    # -- tasks
    open: dict[str, OpenTask] = field(default_factory=dict)
    reopenable: dict[str, OpenTask] = field(default_factory=dict)  # FAILED / CANCELLED: `ops retry` may reopen
    counts: dict[str, int] = _zeros(*STATES)
    foreign: int = 0  # tasks met without their `enqueued` in this log
    samples: Samples = field(default_factory=Samples)  # (latency from the planned arrival, terminal t)
    arrival_lag: Samples = field(default_factory=Samples)  # (enqueue t - planned_t, planned_t) per arrival
    sli3: dict[str, int] = _zeros("tasks", "done")
    completed_keys: set[str] = field(default_factory=set)
    applied: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> its first side effect applied
    side_effects: dict[str, int] = _zeros("applied", "deduped")  # what handlers reported downstream
    deduped: list[dict[str, Any]] = field(default_factory=list)  # examples of duplicates the downstream stopped
    duplicates: list[dict[str, Any]] = field(default_factory=list)  # actual duplicate executions (SLI-4)
    dispatch: dict[str, int] = _zeros("duplicate_enqueue", "stale_complete", "idempotency_skip", "re_lease")
    stale_by_call: dict[str, int] = field(default_factory=dict)
    lease: dict[str, int] = _zeros("expirations", "tasks", "done", "failed", "operator")
    error_bits: dict[str, int] = field(default_factory=dict)
    error_events: dict[str, int] = field(default_factory=dict)
    error_tasks: dict[str, int] = field(default_factory=dict)
    error_final: dict[str, int] = field(default_factory=dict)
    error_windows: dict[int, dict[str, int]] = field(default_factory=dict)
    storms: dict[str, list] = field(default_factory=dict)  # cause -> [tasks, examples]
    operator: dict[tuple[str, str], int] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    manual: list[dict[str, Any]] = field(default_factory=list)
    fault_bits: dict[str, int] = field(default_factory=dict)
    injected: dict[str, int] = field(default_factory=dict)
    observed: dict[str, int] = field(default_factory=dict)
    fenced: dict[str, int] = field(default_factory=dict)
    fault_final: dict[str, dict[str, int]] = field(default_factory=dict)
    faulted_workers: dict[str, str] = field(default_factory=dict)
    guard: dict[str, int] = _zeros("exceeded", "blocked", "replanned", "oncall")
    pending_guards: dict[str, tuple[int | None, float]] = field(default_factory=dict)
    workers: dict[str, int] = _zeros("started", "exited", "restarted")
    handlers: set[str] = field(default_factory=set)  # the handler specs the workers ran (`worker_started`)
    after_close: dict[str, int] = field(default_factory=dict)  # events seen after run_stopped / abort
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    resumes: list[dict[str, Any]] = field(default_factory=list)
    log_aborts: list = field(default_factory=list)  # `abort` events of the log (aborts.Abort)
    stopped: dict[str, Any] | None = None
    finished: dict[str, Any] | None = None
    closing: bool = False  # run_stopped / abort / run_finished seen: time-based rules rest
    failures: deque[tuple[float, str]] = field(default_factory=deque)  # (t, task) of FAILED, rule 1's window
    last_transition_t: float = 0.0
    last_transition_seq: int = -1
    next_minute: float = 60.0  # the next soak-minute boundary the fold has not crossed
    # -- per-minute series (index = soak minute)
    arrivals: Minutes = field(init=False)
    done_m: Minutes = field(init=False)
    failed_m: Minutes = field(init=False)
    backlog: dict[str, Minutes] = field(init=False)

    def __post_init__(self) -> None:
        self.arrivals = Minutes(self.minutes)
        self.done_m = Minutes(self.minutes)
        self.failed_m = Minutes(self.minutes)
        self.backlog = {s: Minutes(self.minutes) for s in ("PENDING", "IN_PROGRESS", "BLOCKED")}

    @property
    def enqueued(self) -> int:
        return sum(self.arrivals.values)

    @property
    def last_wall(self) -> str | None:
        return self.last_event.get("wall")

    @property
    def complete(self) -> bool:
        """True when the log holds the run's last line (`run_finished`)."""
        return self.finished is not None
