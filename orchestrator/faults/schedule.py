"""The fault schedule: every fault a soak run plans, in one time-ordered table.

Built from the profile and the arrival plan (`soak.arrivals.plan`, which draws every random
choice from the seed), so one profile and seed give one schedule. Each entry is one planned
fault: its soak time (seconds since the run start), its kind, its target and its parameters.
What an entry's time means depends on who causes the fault (docs/soak.md, "Where faults are
planned"):

- `worker_crash`, `worker_stall` (target: a busy worker; the supervisor's chaos job): the soak
  time from which the supervisor signals a worker that holds a lease. While no worker holds one,
  it looks again every `LOOK_AGAIN` soak seconds. The entries of one kind happen in order: the
  next one is not tried before this one has happened.
- `duplicate_enqueue` (target: an arrival; the supervisor's arrivals job): the soak time of the
  second enqueue of the arrival's key, done by the first arrivals tick at or after it that comes
  after the tick which enqueued the arrival itself; a `concurrent` one is enqueued by the chaos
  agent at the same moment too.
- `transient`, `persistent`, `db_lock`, `guardrail` (target: an arrival; the synthetic handler
  obeys the task's payload): the arrival's planned time. The fault happens in the task's first
  attempt after that time (the attempt starts at its first lease, at or after the enqueue); a
  transient fault also hits the second attempt when its `attempts` say so, a persistent one
  every attempt.

The per-arrival fault codes are named here and drawn by the plan (`soak.arrivals`, which
imports this module; this module reads the plan's arrays and imports no part above it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from orchestrator.core.profiles import Profile

# The plan's fault code per arrival (one planned fault at most; duplicates are independent of it).
NONE, TRANSIENT, PERSISTENT, DB_LOCK, GUARDRAIL = range(5)
FAULT_NAMES = {TRANSIENT: "transient", PERSISTENT: "persistent", DB_LOCK: "db_lock", GUARDRAIL: "guardrail"}
GUARDRAIL_BUDGET = 1.0
GUARDRAIL_SPEND = 2.0


class Plan(Protocol):
    """What the schedule reads of the arrival plan (`soak.arrivals.Plan`), arrays indexed by
    arrival number (the `dup_*` ones by duplicate, in time order)."""

    times: np.ndarray
    fault: np.ndarray  # the codes above
    kind: np.ndarray  # index into profile.faults.transient_kinds
    repeat: np.ndarray
    dup_times: np.ndarray
    dup_of: np.ndarray
    dup_concurrent: np.ndarray


DUPLICATE, WORKER_CRASH, WORKER_STALL = "duplicate_enqueue", "worker_crash", "worker_stall"
# Entry kinds, in the order that breaks ties of time (the code of a schedule row is its index here).
KINDS = (*FAULT_NAMES.values(), DUPLICATE, WORKER_CRASH, WORKER_STALL)
WORKER_KINDS = {WORKER_CRASH: "worker_crash_every", WORKER_STALL: "worker_stall_every"}  # kind -> profile key
LOOK_AGAIN = 5.0  # soak seconds: a due worker fault that found no busy worker is tried again this much later
_CODE = {kind: code for code, kind in enumerate(KINDS)}


@dataclass(frozen=True)
class Entry:
    """One planned fault. `arrival` is the target arrival (None: a worker that holds a lease at
    the time); the other fields are the parameters of the kinds that have them."""

    t: float  # soak seconds since the run start; its meaning per kind is in the module's docstring
    kind: str  # one of KINDS
    arrival: int | None = None
    error: str | None = None  # transient, persistent: the error class the handler raises
    attempts: tuple[int, ...] | None = None  # transient: the attempts it hits (persistent: every one)
    hold: float | None = None  # db_lock: soak seconds the lock hog holds the write lock
    budget: float | None = None  # guardrail: the task's budget ...
    spend: float | None = None  # ... and the spend its handler asks for, refused before the work
    concurrent: bool | None = None  # duplicate_enqueue: the chaos agent enqueues a copy at once too
    stall: float | None = None  # worker_stall: soak seconds from SIGSTOP to SIGCONT

    def instructions(self) -> dict[str, Any]:
        """What the synthetic handler obeys, for the task's payload (empty: not a task's fault)."""
        if self.kind == "transient":
            return {"faults": {str(a): self.error for a in self.attempts or ()}}
        if self.kind == "persistent":
            return {"always": self.error}
        if self.kind == "db_lock":
            return {"faults": {"1": "db_lock"}, "lock_hold": self.hold}
        if self.kind == "guardrail":
            return {"budget": self.budget, "spend": self.spend}
        return {}


def task_fault(profile: Profile, plan: Plan, i: int) -> Entry | None:
    """The fault planned into arrival `i` (None: none). The schedule's task entries are these."""
    code = int(plan.fault[i])
    if code == NONE:
        return None
    t, f = float(plan.times[i]), profile.faults
    if code in (TRANSIENT, PERSISTENT):
        error = f.transient_kinds[int(plan.kind[i])]
        if code == PERSISTENT:
            return Entry(t, "persistent", i, error=error)
        return Entry(t, "transient", i, error=error, attempts=(1, 2) if plan.repeat[i] else (1,))
    if code == DB_LOCK:
        return Entry(t, "db_lock", i, attempts=(1,), hold=f.lock_hold)
    return Entry(t, "guardrail", i, budget=GUARDRAIL_BUDGET, spend=GUARDRAIL_SPEND)


def periodic_times(every: float, duration: float) -> np.ndarray:
    """A periodic worker fault's times: half a period in, then every period, before the end."""
    if every <= 0 or duration <= every / 2:
        return np.empty(0)
    times = every / 2 + every * np.arange(math.ceil((duration - every / 2) / every))
    return times[times < duration]


@dataclass(frozen=True, eq=False)
class Duplicates:
    """The planned duplicate enqueues in time order (the order of the run's `next_dup` cursor)."""

    t: np.ndarray  # soak time of each
    arrival: np.ndarray  # the arrival it repeats
    concurrent: np.ndarray  # bool: from two processes at once


@dataclass(frozen=True, eq=False)
class Schedule:
    """Every planned fault of a run, sorted by time (ties: in KINDS order, then by target). Rows
    are numpy columns: `t`, `code` (index into KINDS) and `ref` (the arrival of a task's fault,
    the index into `duplicates` of a duplicate, the number of a worker fault of its kind)."""

    profile: Profile
    plan: Plan
    stall: float  # soak seconds a worker stall lasts: stall_factor x the run's lease TTL
    t: np.ndarray
    code: np.ndarray
    ref: np.ndarray
    duplicates: Duplicates
    worker: Mapping[str, np.ndarray]  # worker kind -> its times

    def __len__(self) -> int:
        return len(self.t)

    def __iter__(self) -> Iterator[Entry]:
        return (self[j] for j in range(len(self)))

    def __getitem__(self, j: int) -> Entry:
        kind, ref = KINDS[int(self.code[j])], int(self.ref[j])
        if kind == DUPLICATE:
            return Entry(float(self.duplicates.t[ref]), kind, int(self.duplicates.arrival[ref]),
                         concurrent=bool(self.duplicates.concurrent[ref]))
        if kind in WORKER_KINDS:
            return self.worker_fault(kind, ref)
        return task_fault(self.profile, self.plan, ref)

    def worker_fault(self, kind: str, n: int) -> Entry:
        """The `n`-th (0-based) planned fault of worker kind `kind`."""
        return Entry(float(self.worker[kind][n]), kind,
                     stall=self.stall if kind == WORKER_STALL else None)

    def times(self, kind: str) -> np.ndarray:
        """The soak times of one kind's entries, in order."""
        return self.t[self.code == _CODE[kind]]

    def counts(self) -> dict[str, int]:
        """Entries per kind (every kind named, zero included)."""
        return dict(zip(KINDS, np.bincount(self.code, minlength=len(KINDS)).tolist(), strict=True))

    def summary(self) -> dict[str, Any]:
        """The planned faults as the run's manifest carries them (`run_started`, docs/jsonl.md):
        per kind, repeats and concurrent duplicates, worker faults of the kinds the profile
        plans, and the transient and persistent ones by error class. The summary's fault table
        reads its planned column from here."""
        counts, plan, f = self.counts(), self.plan, self.profile.faults
        out: dict[str, Any] = {name: counts[name] for name in FAULT_NAMES.values()}
        out["transient_repeat"] = int(np.count_nonzero(plan.repeat))
        out["duplicate_enqueue"] = counts[DUPLICATE]
        out["duplicate_enqueue_concurrent"] = int(np.count_nonzero(self.duplicates.concurrent))
        out.update({kind: counts[kind] for kind, key in WORKER_KINDS.items() if getattr(f, key) > 0})
        erring = (plan.fault == TRANSIENT) | (plan.fault == PERSISTENT)
        out["transient_kinds"] = {name: int(np.count_nonzero(erring & (plan.kind == idx)))
                                  for idx, name in enumerate(f.transient_kinds)}
        return out


def build(profile: Profile, plan: Plan, ttl: float | None = None) -> Schedule:
    """The schedule of a run of `profile` whose arrival plan is `plan`; `ttl` is the run's lease
    TTL in soak seconds (a stall's length is measured in it; default the profile's)."""
    f = profile.faults
    tasks = np.flatnonzero(plan.fault != NONE)
    dups = Duplicates(plan.dup_times, plan.dup_of, plan.dup_concurrent)
    worker = {kind: periodic_times(getattr(f, key), profile.duration) for kind, key in WORKER_KINDS.items()}
    parts = [(plan.times[tasks], plan.fault[tasks].astype(np.int64) - 1, tasks),
             (dups.t, np.full(len(dups.t), _CODE[DUPLICATE]), np.arange(len(dups.t)))]
    parts += [(times, np.full(len(times), _CODE[kind]), np.arange(len(times))) for kind, times in worker.items()]
    t, code, ref = (np.concatenate([np.asarray(p[col]) for p in parts]) for col in range(3))
    code, ref = code.astype(np.int8), ref.astype(np.int64)
    order = np.lexsort((ref, code, t))
    return Schedule(profile=profile, plan=plan, stall=f.stall_factor * (profile.lease_ttl if ttl is None else ttl),
                    t=t[order].astype(np.float64), code=code[order], ref=ref[order], duplicates=dups, worker=worker)


class WorkerFaults:
    """The supervisor's place in the schedule's worker faults: the next crash and the next stall
    to cause. `injected` counts the ones a run already caused, by kind (its `fault_injected`
    events: a resumed run goes on from there, neither repeating nor skipping one)."""

    def __init__(self, schedule: Schedule, injected: Mapping[str, int]):
        self.schedule = schedule
        self.next = {kind: min(int(injected.get(kind, 0)), len(times)) for kind, times in schedule.worker.items()}

    def pending(self) -> list[Entry]:
        """The next entry of each worker kind not caused yet, in time order."""
        entries = [self.schedule.worker_fault(kind, n) for kind, n in self.next.items()
                   if n < len(self.schedule.worker[kind])]
        return sorted(entries, key=lambda e: (e.t, KINDS.index(e.kind)))

    def due(self, t: float) -> list[Entry]:
        """The entries to try at soak time `t` (at most one per kind), in time order."""
        return [e for e in self.pending() if e.t <= t]

    def happened(self, entry: Entry) -> None:
        """`entry` (one of `due`'s) was caused: its kind's next entry comes next."""
        self.next[entry.kind] += 1

    def next_after(self, t: float) -> float:
        """The next soak time after `t` the chaos job has to look: the earliest pending entry's
        time, or `t + LOOK_AGAIN` when one is due already (no worker held a lease when it was
        tried); infinity when every entry has happened."""
        pending = self.pending()
        if not pending:
            return math.inf
        return pending[0].t if pending[0].t > t else t + LOOK_AGAIN
