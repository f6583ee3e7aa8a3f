"""The fault schedule (orchestrator/faults/schedule.py): one time-ordered table of every planned
fault, built from the profile and the seeded arrival plan; the supervisor's place in its worker
faults; the planned counts the summary's fault table reads. Whole runs that check the injected
faults against it are in tests/test_soak.py."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np
import pytest
from sli_logs import LogBuilder

from orchestrator.core import profiles
from orchestrator.faults import schedule
from orchestrator.faults.schedule import LOOK_AGAIN, WORKER_CRASH, WORKER_STALL, WorkerFaults
from orchestrator.soak import arrivals

P72 = profiles.BUILTIN["72h"]


@pytest.fixture(scope="module")
def sched72() -> schedule.Schedule:
    return schedule.build(P72, arrivals.plan(P72, 3))


def test_entries_are_in_time_order_with_ties_broken_by_kind_then_target(sched72):
    keys = [(float(t), int(c), int(r)) for t, c, r in zip(sched72.t, sched72.code, sched72.ref, strict=True)]
    assert keys == sorted(keys)
    entries = list(sched72)
    assert [e.t for e in entries] == sched72.t.tolist()
    assert {e.kind for e in entries} == set(schedule.KINDS)


def test_counts_follow_the_profiles_shares_and_periods(sched72):
    plan, n = sched72.plan, len(sched72.plan)
    counts = sched72.counts()
    f = P72.faults
    for kind, share in (("transient", f.transient), ("db_lock", f.db_lock), ("guardrail", f.guardrail),
                        ("persistent", f.persistent), ("duplicate_enqueue", f.duplicate_enqueue)):
        assert abs(counts[kind] - share * n) < 5 * math.sqrt(n * share * (1 - share)), (kind, counts[kind])
    # worker faults: half a period in, then every period, before the run's end
    assert sched72.times(WORKER_CRASH).tolist() == [5400.0 + 10800.0 * k for k in range(24)]
    assert sched72.times(WORKER_STALL).tolist() == [7200.0 + 14400.0 * k for k in range(18)]
    # one entry per arrival with a planned fault, at its planned time
    tasks = [e for e in sched72 if e.kind in schedule.FAULT_NAMES.values()]
    assert sorted(e.arrival for e in tasks) == np.flatnonzero(plan.fault != schedule.NONE).tolist()
    assert all(e.t == float(plan.times[e.arrival]) for e in tasks)
    assert sum(counts.values()) == len(sched72)


def test_same_profile_and_seed_give_the_same_schedule():
    a, b = (schedule.build(P72, arrivals.plan(P72, 11)) for _ in range(2))
    for column in ("t", "code", "ref"):
        assert getattr(a, column).tobytes() == getattr(b, column).tobytes()
    assert list(a) == list(b) and a.summary() == b.summary()
    other = schedule.build(P72, arrivals.plan(P72, 12))
    assert other.t.tobytes() != a.t.tobytes()


def test_each_entry_says_what_causes_it_and_with_which_parameters(sched72):
    plan = sched72.plan
    by_kind: dict[str, schedule.Entry] = {}
    for entry in sched72:
        by_kind.setdefault(entry.kind, entry)
    transient = by_kind["transient"]
    assert transient.error in P72.faults.transient_kinds and transient.attempts in ((1,), (1, 2))
    assert by_kind["persistent"].attempts is None and by_kind["persistent"].error in P72.faults.transient_kinds
    assert by_kind["db_lock"].hold == P72.faults.lock_hold
    guard = by_kind["guardrail"]
    assert guard.spend > guard.budget
    dup = by_kind["duplicate_enqueue"]
    assert dup.t >= float(plan.times[dup.arrival]) and isinstance(dup.concurrent, bool)
    crash, stall = by_kind[WORKER_CRASH], by_kind[WORKER_STALL]
    assert crash.arrival is None and crash.stall is None
    assert stall.arrival is None and stall.stall == P72.faults.stall_factor * P72.lease_ttl
    assert schedule.build(P72, plan, ttl=90.0).worker_fault(WORKER_STALL, 0).stall == P72.faults.stall_factor * 90.0
    # the task's payload carries its entry's instructions for the synthetic handler
    for entry in (transient, by_kind["persistent"], by_kind["db_lock"], guard):
        body = arrivals.payload(P72, plan, entry.arrival)
        assert body == {"arrival": entry.arrival, "work": float(plan.work[entry.arrival])} | entry.instructions()
    repeat = next(e for e in sched72 if e.kind == "transient" and e.attempts == (1, 2))
    assert arrivals.payload(P72, plan, repeat.arrival)["faults"] == {"1": repeat.error, "2": repeat.error}


def test_the_manifest_counts_are_the_schedules(sched72):
    summary = arrivals.manifest(P72, sched72.plan, 3)["faults"]
    counts = sched72.counts()
    assert summary == sched72.summary()
    for kind in ("transient", "persistent", "db_lock", "guardrail", "duplicate_enqueue", WORKER_CRASH, WORKER_STALL):
        assert summary[kind] == counts[kind]
    assert summary["transient_repeat"] == sum(1 for e in sched72 if e.attempts == (1, 2))
    assert summary["duplicate_enqueue_concurrent"] == sum(1 for e in sched72 if e.concurrent)
    errors = Counter(e.error for e in sched72 if e.kind in ("transient", "persistent"))
    assert summary["transient_kinds"] == {name: errors[name] for name in P72.faults.transient_kinds}
    # a kind of worker fault the profile does not plan is not in the manifest at all
    quiet = dataclasses.replace(P72, faults=dataclasses.replace(P72.faults, worker_stall_every=0.0))
    faults = schedule.build(quiet, sched72.plan).summary()
    assert WORKER_STALL not in faults and faults[WORKER_CRASH] == 24


@pytest.mark.parametrize(("every", "duration", "times"), [
    (7200.0, 86400.0, [3600.0 + 7200.0 * k for k in range(12)]),
    (10800.0, 21600.0, [5400.0, 16200.0]),
    (4000.0, 10000.0, [2000.0, 6000.0]),  # the third would be at the end itself: not planned
    (4000.0, 10001.0, [2000.0, 6000.0, 10000.0]),
    (0.0, 86400.0, []),
    (7200.0, 3600.0, []),
])
def test_periodic_worker_fault_times(every, duration, times):
    assert schedule.periodic_times(every, duration).tolist() == times


def test_the_next_worker_fault_after_t_waits_for_each_to_happen(sched72):
    faults = WorkerFaults(sched72, {})
    assert faults.next_after(0.0) == 5400.0  # the first crash
    assert faults.due(5399.0) == []
    (crash,) = faults.due(5400.0)
    assert (crash.kind, crash.t) == (WORKER_CRASH, 5400.0)
    # no worker held a lease: the crash stays due, looked at again LOOK_AGAIN on
    assert faults.next_after(5400.0) == 5400.0 + LOOK_AGAIN
    assert [e.kind for e in faults.due(7300.0)] == [WORKER_CRASH, WORKER_STALL]  # both due, in time order
    faults.happened(crash)
    assert faults.next_after(7100.0) == 7200.0  # the first stall
    stall = faults.due(7200.0)[0]
    faults.happened(stall)
    assert faults.next_after(7200.0) == 16200.0  # the second crash (the second stall is at 21600)
    for entry in list(sched72):  # everything happens
        if entry.kind in (WORKER_CRASH, WORKER_STALL) and entry.t > 7200.0:
            (due,) = [e for e in faults.due(entry.t) if e.kind == entry.kind]
            assert due == entry
            faults.happened(due)
    assert faults.due(math.inf) == [] and faults.next_after(300000.0) == math.inf


def test_a_resumed_run_goes_on_after_the_worker_faults_its_events_show():
    sched = schedule.build(P72, arrivals.plan(P72, 3))
    faults = WorkerFaults(sched, {WORKER_CRASH: 3, WORKER_STALL: 1, "timeout": 40})
    # the fourth crash (5400 + 3 x 10800) and the second stall (7200 + 14400) are next
    assert [(e.kind, e.t) for e in faults.pending()] == [(WORKER_STALL, 21600.0), (WORKER_CRASH, 37800.0)]
    done = WorkerFaults(sched, {WORKER_CRASH: 99, WORKER_STALL: 18})
    assert done.pending() == [] and done.next_after(0.0) == math.inf


def test_the_fault_table_plans_the_worker_faults_the_manifest_names():
    manifest = {"arrivals": 30, "faults": {"transient": 0, "db_lock": 0, "duplicate_enqueue": 0, "guardrail": 0,
                                           WORKER_CRASH: 5},
                "bursts": []}
    b = LogBuilder("24h", manifest=manifest)  # the profile itself would plan 12 crashes and 8 stalls
    for i in range(30):
        b.run_task(10.0 + i)
    rows = {r["kind"]: r for r in b.aggregator().figures()["faults"]}
    assert rows[WORKER_CRASH]["planned"] == 5 and WORKER_STALL not in rows
    slo = next(r for r in b.aggregator().figures()["slo"] if r["name"] == "Lease-timeout recovery")
    assert slo["note"] == "no lease expired: not exercised although the profile planned 5 worker crashes"
