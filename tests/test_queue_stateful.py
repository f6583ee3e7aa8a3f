"""Hypothesis drives the queue with random enqueues, leases, worker calls (right and stale epochs),
operator actions, clock moves and reaps, and checks it against a small model after every step.

Invariants: each key in exactly one state (the model's); enqueued = sum over states; the event
table is gap-free and is exactly the sequence of events the model expects (each task's events
chain prev -> state); epochs only grow; at most one effect per key, and only for DONE tasks.
It reads the database through the storage interface only (`Backend.dump`) and runs once per backend.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from orchestrator.core.errors import IllegalTransition, KeyConflict, UnknownTask
from orchestrator.core.model import ErrorClass, QueueConfig, RetryPolicy
from orchestrator.queue.tasks import event_dict
from orchestrator.queue.writes import Queue

KEYS = ("a", "b", "c", "d", "e")
PAYLOADS = ({"work": 1}, {"work": 2})
WORKERS = ("w1", "w2", "w3")
TTL = 10.0
BACKOFF = (4.0, 8.0)
MAX_ATTEMPTS = 3
CONFIG = QueueConfig(retry=RetryPolicy(backoff=BACKOFF, max_attempts=MAX_ATTEMPTS, jitter=0.0, unknown_retries=1),
                     lease_ttl=TTL)
TRANSIENT = {"timeout", "rate_limit", "network", "server_error", "db_lock"}
OPEN = {"PENDING", "IN_PROGRESS", "BLOCKED"}
# operator action -> (states it is allowed from, state it leads to; None = unchanged)
ACTIONS = {
    "cancel": (OPEN, "CANCELLED"),
    "replan": ({"BLOCKED", "CANCELLED", "FAILED"}, None),
    "retry": ({"FAILED", "CANCELLED"}, "PENDING"),
    "done": (OPEN, "DONE"),
    "fail": (OPEN, "FAILED"),
}
ACTION_EVENT = {"cancel": "cancelled", "replan": "replanned", "retry": "retried", "done": "closed_done",
                "fail": "closed_failed"}
# event -> the (prev, state) pairs it may carry; events that change no state carry prev == state
TRANSITIONS = {
    "enqueued": {(None, "PENDING")},
    "leased": {("PENDING", "IN_PROGRESS")},
    "completed": {("IN_PROGRESS", "DONE")},
    "retry_scheduled": {("IN_PROGRESS", "PENDING")},
    "failed": {("IN_PROGRESS", "FAILED")},
    "lease_expired": {("IN_PROGRESS", "PENDING"), ("IN_PROGRESS", "FAILED")},
    "released": {("IN_PROGRESS", "PENDING")},
    "blocked": {("IN_PROGRESS", "BLOCKED")},
    "cancelled": {(s, "CANCELLED") for s in OPEN},
    "replanned": {("BLOCKED", "PENDING"), ("CANCELLED", "CANCELLED"), ("FAILED", "FAILED")},
    "retried": {("FAILED", "PENDING"), ("CANCELLED", "PENDING")},
    "closed_done": {(s, "DONE") for s in OPEN},
    "closed_failed": {(s, "FAILED") for s in OPEN},
}
SAME_STATE_EVENTS = {"duplicate_enqueue", "stale_rejected", "guardrail_exceeded"}


def model_backoff(error: str, attempt: int, unknown_seen: int) -> float | None:
    """The documented retry policy, restated."""
    if attempt >= MAX_ATTEMPTS:
        return None
    if error in TRANSIENT or error == "lease_timeout" or (error == "unknown" and unknown_seen < 1):
        return BACKOFF[min(attempt - 1, len(BACKOFF) - 1)]
    return None


@dataclass
class Model:
    id: int
    key: str
    payload: int
    state: str = "PENDING"
    epoch: int = 0
    attempt: int = 0
    unknown_seen: int = 0
    due_at: float = 0.0
    lease_until: float | None = None
    worker: str | None = None
    error: str | None = None
    plan: str | None = None


class QueueMachine(RuleBasedStateMachine):
    """Subclassed per test with `new_path` (a new database's location) and `clock_class` set."""

    new_path = None
    clock_class = None

    def __init__(self) -> None:
        super().__init__()
        self.clock = self.clock_class()
        self.queue = Queue(self.new_path(), self.clock, CONFIG)
        self.tasks: dict[str, Model] = {}
        self.expected: list[tuple[str, int | None]] = []  # (event, task id) in commit order
        self.last_epoch: dict[int, int] = {}

    def teardown(self) -> None:
        self.queue.close()

    # --- helpers --------------------------------------------------------------------------
    def dump(self) -> dict:
        return self.queue.store.dump()

    def by_id(self, task: int) -> Model:
        return next(m for m in self.tasks.values() if m.id == task)

    def last_event(self, back: int = 0) -> dict:
        """The last event, or the one `back` events before it."""
        return event_dict(self.queue.events_after(self.queue.last_seq() - 1 - back)[0])

    def expect_stale(self, m: Model, call: str, epoch: int, worker: str, back: int = 0) -> None:
        self.expected.append(("stale_rejected", m.id))
        ev = self.last_event(back)
        assert (ev["event"], ev["call"], ev["worker"]) == ("stale_rejected", call, worker)
        assert (ev["epoch"], ev["stale_epoch"], ev["state"], ev["prev"]) == (m.epoch, epoch, m.state, m.state)

    def close_lease(self, m: Model) -> None:
        m.worker = None
        m.lease_until = None

    # --- rules ----------------------------------------------------------------------------
    @initialize(keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True))
    def start(self, keys: list[str]) -> None:
        assert self.queue.last_seq() == 0
        for key in keys:
            self.enqueue(key, 0)

    @rule(key=st.sampled_from(KEYS), payload=st.sampled_from(range(len(PAYLOADS))))
    def enqueue(self, key: str, payload: int) -> None:
        m = self.tasks.get(key)
        if m is not None and m.payload != payload:
            before = self.dump()
            with pytest.raises(KeyConflict):
                self.queue.enqueue(key, PAYLOADS[payload])
            assert self.dump() == before
            return
        result = self.queue.enqueue(key, PAYLOADS[payload])
        if m is None:
            assert result.created
            self.tasks[key] = Model(result.task, key, payload, due_at=self.clock.now())
            self.expected.append(("enqueued", result.task))
        else:
            assert (result.task, result.created) == (m.id, False)
            self.expected.append(("duplicate_enqueue", m.id))

    @rule(worker=st.sampled_from(WORKERS), limit=st.integers(1, 3))
    def lease(self, worker: str, limit: int) -> None:
        self.check_leases(worker, limit, self.queue.lease(worker, limit))

    def check_leases(self, worker: str, limit: int, leases: list) -> None:
        now = self.clock.now()
        due = sorted((m for m in self.tasks.values() if m.state == "PENDING" and m.due_at <= now),
                     key=lambda m: (m.due_at, m.id))[:limit]
        assert [lease.task for lease in leases] == sorted(m.id for m in due)
        for m in sorted(due, key=lambda m: m.id):
            m.state, m.epoch, m.attempt, m.worker, m.lease_until = "IN_PROGRESS", m.epoch + 1, m.attempt + 1, worker, now + TTL
            self.expected.append(("leased", m.id))
        for lease in leases:
            m = self.by_id(lease.task)
            assert (lease.epoch, lease.attempt, lease.key) == (m.epoch, m.attempt, m.key)

    @rule(key=st.sampled_from(KEYS),
          call=st.sampled_from(["heartbeat", "complete", "complete_and_lease", "fail", "block", "release"]),
          offset=st.sampled_from([0, 0, 0, 1, 2, -1]), worker=st.sampled_from(WORKERS),
          error=st.sampled_from([e.value for e in ErrorClass]), more=st.integers(0, 2))
    def worker_call(self, key: str, call: str, offset: int, worker: str, error: str, more: int) -> None:
        m = self.tasks.get(key)
        if m is None:  # a task id nobody enqueued: refused, nothing written
            before = self.dump()
            with pytest.raises(UnknownTask):
                self.queue.complete(99, 1, worker)
            assert self.dump() == before
            return
        epoch = m.epoch - offset
        now = self.clock.now()
        q = self.queue
        holds = m.state == "IN_PROGRESS" and epoch == m.epoch
        if call == "heartbeat":
            assert q.heartbeat(m.id, epoch, worker) is holds
            if holds:
                m.lease_until = now + TTL
        elif call in ("complete", "complete_and_lease"):
            if call == "complete":
                result, leases = q.complete(m.id, epoch, worker, {"by": worker}), None
            else:  # one transaction: the completion, then up to `more` new leases for the worker
                result, leases = q.complete_and_lease(m.id, epoch, worker, {"by": worker}, limit=more)
            assert result == ("completed" if holds else "stale_rejected")
            if holds:
                m.state, m.error = "DONE", None
                self.close_lease(m)
                self.expected.append(("completed", m.id))
            else:
                self.expect_stale(m, "complete", epoch, worker, back=len(leases or ()))
            if leases is not None:
                self.check_leases(worker, more, leases)
            return
        elif call == "fail":
            result = q.fail(m.id, epoch, worker, error, "detail")
            if holds:
                backoff = model_backoff(error, m.attempt, m.unknown_seen)
                assert result == ("failed" if backoff is None else "retry_scheduled")
                m.error = error
                self.close_lease(m)
                if backoff is None:
                    m.state = "FAILED"
                    self.expected.append(("failed", m.id))
                else:
                    m.state, m.due_at = "PENDING", now + backoff
                    m.unknown_seen += error == "unknown"
                    self.expected.append(("retry_scheduled", m.id))
            else:
                assert result == "stale_rejected"
        elif call == "block":
            result = q.block(m.id, epoch, worker, 5.0, 1.0)
            assert result == ("blocked" if holds else "stale_rejected")
            if holds:
                m.state, m.error = "BLOCKED", "guardrail"
                self.close_lease(m)
                self.expected += [("guardrail_exceeded", m.id), ("blocked", m.id)]
        else:
            result = q.release(m.id, epoch, worker)
            assert result == ("released" if holds else "stale_rejected")
            if holds:
                m.state, m.attempt, m.due_at, m.error = "PENDING", m.attempt - 1, now, None
                self.close_lease(m)
                self.expected.append(("released", m.id))
        if not holds:
            self.expect_stale(m, call, epoch, worker)

    @rule(key=st.sampled_from(KEYS), action=st.sampled_from(sorted(ACTIONS)),
          notes=st.sampled_from([None, "split workload"]))
    def operate(self, key: str, action: str, notes: str | None) -> None:
        m = self.tasks.get(key)
        if m is None:
            with pytest.raises(UnknownTask):
                self.queue.operate(action, 99, actor="oncall", notes=notes)
            return
        allowed, target = ACTIONS[action]
        if m.state not in allowed:
            before = self.dump()
            with pytest.raises(IllegalTransition):
                self.queue.operate(action, m.id, actor="oncall", notes=notes)
            assert self.dump() == before
            return
        task = self.queue.operate(action, m.id, actor="oncall", notes=notes)
        new_state = target or ("PENDING" if m.state == "BLOCKED" else m.state)
        if new_state == "PENDING":
            m.attempt, m.unknown_seen, m.due_at, m.error = 0, 0, self.clock.now(), None
        if action == "fail":
            m.error = "operator"
        if action == "replan":
            m.plan = notes
        m.state = new_state
        self.close_lease(m)
        self.expected.append((ACTION_EVENT[action], m.id))
        assert task.state.value == new_state
        ev = self.last_event()
        assert (ev["actor"], ev["notes"]) == ("oncall", notes)

    @rule(seconds=st.sampled_from([0.5, 4.0, 8.0, TTL, TTL + 0.5]), then_reap=st.booleans())
    def advance(self, seconds: float, then_reap: bool) -> None:
        self.clock.advance(seconds)
        if then_reap:
            self.reap()

    @rule()
    def reap(self) -> None:
        now = self.clock.now()
        expired = sorted((m for m in self.tasks.values() if m.state == "IN_PROGRESS" and m.lease_until < now),
                         key=lambda m: (m.lease_until, m.id))
        got = self.queue.reap()
        want = []
        for m in expired:
            m.state = "FAILED" if m.attempt >= MAX_ATTEMPTS else "PENDING"
            m.error = "lease_timeout"
            if m.state == "PENDING":
                m.due_at = now
            self.close_lease(m)
            want.append((m.id, m.state))
        assert sorted(got) == sorted(want)
        # events follow the order the reaper returned
        self.expected += [("lease_expired", task) for task, _ in got]

    # --- invariants -----------------------------------------------------------------------
    @invariant()
    def every_key_in_exactly_the_model_state(self) -> None:
        rows = self.dump()["tasks"]
        assert len({r["key"] for r in rows}) == len(rows) == len(self.tasks)
        for r in rows:
            m = self.tasks[r["key"]]
            got = (r["id"], r["state"], r["epoch"], r["attempt"], r["worker"], r["lease_until"], r["error"], r["plan"])
            assert got == (m.id, m.state, m.epoch, m.attempt, m.worker, m.lease_until, m.error, m.plan)
            if m.state == "PENDING":
                assert r["due_at"] == m.due_at

    @invariant()
    def enqueued_equals_sum_over_states(self) -> None:
        counts = self.queue.status()["counts"]
        enqueued = sum(r["event"] == "enqueued" for r in self.dump()["events"])
        assert sum(counts.values()) == enqueued == len(self.tasks)
        for state, n in counts.items():
            assert n == sum(m.state == state for m in self.tasks.values())

    @invariant()
    def events_are_gap_free_and_match_the_transitions(self) -> None:
        rows = self.dump()["events"]
        assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
        assert [(r["event"], r["task"]) for r in rows] == self.expected
        chain: dict[int, str | None] = defaultdict(lambda: None)
        epochs: dict[int, int] = defaultdict(int)
        for r in rows:
            task = r["task"]
            assert r["prev"] == chain[task], f"event {r['seq']} does not follow the task's previous state"
            if r["event"] in SAME_STATE_EVENTS:
                assert r["state"] == r["prev"]
            else:
                assert (r["prev"], r["state"]) in TRANSITIONS[r["event"]], dict(r)
            assert r["epoch"] >= epochs[task], "an event carries an older epoch"
            if r["event"] == "leased":
                assert r["epoch"] == epochs[task] + 1
            chain[task], epochs[task] = r["state"], r["epoch"]
        for m in self.tasks.values():
            assert chain[m.id] == m.state

    @invariant()
    def epochs_only_grow(self) -> None:
        for task, epoch in ((r["id"], r["epoch"]) for r in self.dump()["tasks"]):
            assert epoch >= self.last_epoch.get(task, 0)
            self.last_epoch[task] = epoch

    @invariant()
    def at_most_one_effect_per_key(self) -> None:
        tables = self.dump()
        completed = [r["key"] for r in tables["events"] if r["event"] == "completed"]
        assert len(completed) == len(set(completed))
        effects = tables["effects"]
        assert {r["key"] for r in effects} == set(completed)
        for r in effects:
            assert self.tasks[r["key"]].state == "DONE"


@pytest.mark.timeout(900)  # PostgreSQL: 200 fresh databases and some 40,000 dumps over a socket take ~4 min
def test_queue_against_the_model(new_location, fake_clock_class):
    numbers = itertools.count()

    class Machine(QueueMachine):
        clock_class = fake_clock_class

        @staticmethod
        def new_path():
            next(numbers)
            return new_location()

    run_state_machine_as_test(
        Machine,
        settings=settings(max_examples=200, stateful_step_count=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]),
    )
    assert next(numbers) >= 2  # hypothesis really ran examples
