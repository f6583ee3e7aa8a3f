"""The supervisor's jobs run in this process, one call at a time, on a real database: what the
arrivals job writes for each arrival and each planned duplicate."""

from __future__ import annotations

import dataclasses
import time

import orjson
import pytest

from orchestrator.core import profiles
from orchestrator.core.clock import WALL
from orchestrator.core.home import Home
from orchestrator.queue.runs import RunStore, new_run_id
from orchestrator.queue.writes import Queue
from orchestrator.soak import arrivals
from orchestrator.soak.supervisor import SoakOptions, Supervisor


def data_of(row) -> dict:
    return orjson.loads(row["data"]) if row["data"] else {}


@pytest.fixture
def supervisor(tmp_path):
    base = profiles.BUILTIN["24h"]
    profile = dataclasses.replace(base, name="jobs", duration=3600.0,
                                  faults=dataclasses.replace(base.faults, duplicate_enqueue=0.5))
    home = Home.resolve(str(tmp_path / "home"))
    home.ensure()
    plan = arrivals.plan(profile, 3)
    with Queue(home.db, WALL) as queue:
        run = RunStore(queue).create(new_run_id(3), profile.to_dict(), 3, 1.0, time.time(),
                                     home.logs / "soak_jobs.jsonl", None)
    sup = Supervisor(home, run, profile, plan, SoakOptions(workers=0, handler="orchestrator.handlers:synthetic",
                                                          live=False))
    yield sup, plan
    sup.queue.close()


def test_every_enqueue_of_an_arrival_carries_its_planned_time(supervisor, monkeypatch):
    sup, plan = supervisor
    monkeypatch.setattr(sup, "now_t", lambda: 1800.0)
    sup.job_arrivals()
    sup.job_arrivals()  # the duplicates of arrivals enqueued by the first tick
    events = [dict(r) | data_of(r) for r in sup.queue.events_after(0)]
    enqueued = [e for e in events if e["event"] == "enqueued"]
    assert len(enqueued) == int(plan.times.searchsorted(1800.0, side="right")) > 10
    for e in enqueued:
        assert e["planned_t"] == round(float(plan.times[e["arrival"]]), 3)
        assert e["planned_t"] <= 1800.0
    dups = [e for e in events if e["event"] == "duplicate_enqueue"]
    assert dups and all(e["planned_t"] == round(float(plan.times[e["arrival"]]), 3) for e in dups)


def test_a_concurrent_duplicate_the_agent_did_not_enqueue_is_not_logged_as_concurrent(supervisor, monkeypatch):
    sup, plan = supervisor  # no chaos agent listens on the run's socket: it cannot answer
    assert plan.dup_concurrent.any()
    monkeypatch.setattr(sup, "now_t", lambda: 3600.0)
    sup.job_arrivals()
    sup.job_arrivals()
    faults = [data_of(r) for r in sup.queue.events_after(0) if r["event"] == "fault_injected"]
    planned = [f for f in faults if "agent" in f]
    assert len(planned) == int(plan.dup_concurrent[plan.dup_times <= 3600.0].sum()) > 0
    assert all(f["concurrent"] is False and f["agent"] == "no answer" for f in planned)
    assert not any(f["concurrent"] for f in faults)
