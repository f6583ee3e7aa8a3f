"""The seeded arrival schedule: a non-homogeneous Poisson process with burst windows.

Computed up front from (profile, seed) with numpy, so the same profile and seed give the same
schedule byte for byte. Every random choice of the run is drawn here: each arrival's planned
work time and planned fault, and the duplicate enqueues; `faults.schedule` puts them, with the
worker faults, into the run's one fault schedule. The idempotency key is derived from the run id
and the arrival number when it is enqueued, so re-enqueueing an arrival (after a resume) is
harmless.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestrator.core.profiles import Profile
from orchestrator.faults import schedule
from orchestrator.faults.schedule import DB_LOCK, GUARDRAIL, NONE, PERSISTENT, TRANSIENT

__all__ = ["DB_LOCK", "GUARDRAIL", "NONE", "PERSISTENT", "TRANSIENT", "Plan", "arrival_key", "burst_windows",
           "manifest", "payload", "plan"]


@dataclass(frozen=True)
class Plan:
    """Arrays indexed by arrival number (0-based), plus the planned duplicate enqueues."""

    times: np.ndarray  # soak seconds since run start, sorted
    work: np.ndarray  # planned work time, soak seconds
    fault: np.ndarray  # fault code (NONE, TRANSIENT, ...)
    kind: np.ndarray  # index into profile.faults.transient_kinds (TRANSIENT / PERSISTENT)
    repeat: np.ndarray  # bool: a transient fault hits the second attempt too
    dup_times: np.ndarray  # soak time of each planned duplicate enqueue, sorted
    dup_of: np.ndarray  # arrival number each duplicate repeats
    dup_concurrent: np.ndarray  # bool: the duplicate comes from two processes at once
    bursts: tuple[tuple[float, float], ...]

    def __len__(self) -> int:
        return len(self.times)

    def planned_t(self, i: int) -> float:
        """When arrival `i` should arrive, soak seconds since the run start (ms resolution, as `t`)."""
        return round(float(self.times[i]), 3)

    def digest(self) -> str:
        """SHA-256 over every array: equal digests mean byte-for-byte equal schedules."""
        h = hashlib.sha256()
        for arr in (self.times, self.work, self.fault, self.kind, self.repeat, self.dup_times, self.dup_of,
                    self.dup_concurrent):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


def burst_windows(profile: Profile) -> list[tuple[float, float]]:
    windows = []
    for burst in profile.arrivals.bursts:
        start = burst.offset
        while start < profile.duration:
            windows.append((start, min(start + burst.length, profile.duration)))
            start += burst.every
    windows.sort()
    return windows


def _segments(profile: Profile) -> list[tuple[float, float, float]]:
    """(start, end, rate per soak second) covering [0, duration); bursts replace the base rate."""
    base = profile.arrivals.rate / 60.0
    rates = {}
    for burst in profile.arrivals.bursts:
        start = burst.offset
        while start < profile.duration:
            rates[(start, min(start + burst.length, profile.duration))] = burst.rate / 60.0
            start += burst.every
    segments, cursor = [], 0.0
    for (start, end), rate in sorted(rates.items()):
        start = max(start, cursor)
        if start >= end:
            continue
        if start > cursor:
            segments.append((cursor, start, base))
        segments.append((start, end, rate))
        cursor = end
    if cursor < profile.duration:
        segments.append((cursor, profile.duration, base))
    return segments


def plan(profile: Profile, seed: int) -> Plan:
    rng = np.random.default_rng(seed)
    chunks = []
    for start, end, rate in _segments(profile):
        n = rng.poisson(rate * (end - start))
        chunks.append(np.sort(rng.uniform(start, end, n)))
    times = np.concatenate(chunks) if chunks else np.empty(0)
    n = len(times)
    sigma = profile.work_sigma
    mu = np.log(profile.work_mean) - sigma**2 / 2
    work = np.round(rng.lognormal(mu, sigma, n), 3)
    f = profile.faults
    u = rng.random(n)
    edges = np.cumsum([f.transient, f.persistent, f.db_lock, f.guardrail])
    fault = np.full(n, NONE, dtype=np.int8)
    fault[u < edges[3]] = GUARDRAIL
    fault[u < edges[2]] = DB_LOCK
    fault[u < edges[1]] = PERSISTENT
    fault[u < edges[0]] = TRANSIENT
    kind = rng.integers(0, max(len(f.transient_kinds), 1), n).astype(np.int8)
    repeat = (rng.random(n) < f.transient_repeat) & (fault == TRANSIENT)
    is_dup = rng.random(n) < f.duplicate_enqueue
    dup_of = np.flatnonzero(is_dup)
    dup_delay = rng.uniform(1.0, 30.0, len(dup_of))
    dup_concurrent = rng.random(len(dup_of)) < 0.25
    dup_times = times[dup_of] + dup_delay
    order = np.argsort(dup_times, kind="stable")
    return Plan(
        times=times, work=work, fault=fault, kind=kind, repeat=repeat,
        dup_times=dup_times[order], dup_of=dup_of[order], dup_concurrent=dup_concurrent[order],
        bursts=tuple(burst_windows(profile)),
    )


def payload(profile: Profile, p: Plan, i: int) -> dict[str, Any]:
    """The task payload of arrival `i`: its work time and what the synthetic handler obeys (its
    entry in the fault schedule)."""
    body: dict[str, Any] = {"arrival": int(i), "work": float(p.work[i])}
    fault = schedule.task_fault(profile, p, i)
    if fault is not None:
        body.update(fault.instructions())
    return body


def arrival_key(run_id: str, i: int) -> str:
    return f"{run_id}/a{i:07d}"


def manifest(profile: Profile, p: Plan, seed: int) -> dict[str, Any]:
    """The plan as `run_started` carries it: arrivals, the planned faults (from the fault
    schedule), burst windows and the digest."""
    duration = profile.duration
    return {
        "seed": seed,
        "arrivals": len(p),
        "mean_rate_per_min": round(len(p) / duration * 60, 4) if duration else 0.0,
        "faults": schedule.build(profile, p).summary(),
        "bursts": [[round(a, 3), round(b, 3)] for a, b in p.bursts],
        "digest": p.digest(),
    }
