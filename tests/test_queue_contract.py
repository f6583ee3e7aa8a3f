"""The queue contract: enqueue, lease, heartbeat, complete, fail, block, release, reap, reads.

Written against the public `Queue` API and the storage interface (orchestrator/queue/backend.py)
only: no SQL, no driver. Every test runs once per backend (the `backend` fixture of conftest.py);
what only SQLite has (its schema, pragmas, query plans) is tested in tests/test_queue_sqlite.py.
"""

from __future__ import annotations

import platform

import orjson
import pytest

from orchestrator.core.errors import KeyConflict, UnknownTask, UsageError
from orchestrator.core.heap import keep_freed_memory
from orchestrator.core.model import QueueConfig
from orchestrator.queue.backend import Backend, Tx
from orchestrator.queue.tasks import event_dict, parse_task_id, task_name
from orchestrator.queue.writes import Queue

TTL = 30.0  # TEST_CONFIG.lease_ttl


def events(queue: Queue) -> list[dict]:
    return [event_dict(r) for r in queue.events_after(0)]


def effects(queue: Queue) -> list[dict]:
    return sorted(queue.store.dump()["effects"], key=lambda e: e["key"])


def put_effect(queue: Queue, key: str, task: int) -> None:
    """An effect for `key` that no completion wrote (what a drill forces: the second line of defence)."""
    assert queue.write(lambda tx: tx.insert_effect(key, task, 0, "old", 0.0, None)) is True


@pytest.fixture
def queue(location, clock, test_config):
    with Queue(location, clock, test_config) as q:
        yield q


@pytest.fixture
def dump():
    """The whole database through the interface: equal dumps, nothing written."""
    return lambda queue: queue.store.dump()


# --- the interface --------------------------------------------------------------------------

def test_the_backend_implements_the_whole_interface(queue):
    assert isinstance(queue.store, Backend) and isinstance(queue.store, Tx)
    assert isinstance(queue.store.engine, str) and queue.store.location


def test_reopening_keeps_data(location, clock, test_config):
    with Queue(location, clock, test_config) as queue:
        queue.enqueue("k", {"work": 1})
    with Queue(location, clock, test_config, create=False) as queue:
        assert queue.get(1).key == "k"
        assert queue.store.integrity_check() == ["ok"]


def test_a_failed_transaction_writes_nothing(queue, dump):
    queue.enqueue("k", {})
    before = dump(queue)

    def half(tx: Tx) -> None:
        tx.insert_effect("k", 1, 1, "w1", 0.0, None)
        raise RuntimeError("the handler of this transaction gave up")

    with pytest.raises(RuntimeError):
        queue.write(half)
    assert dump(queue) == before


# --- enqueue --------------------------------------------------------------------------------

def test_enqueue_creates_a_pending_task_and_its_event(queue, clock):
    result = queue.enqueue("order-1", {"work": 1, "budget": 5}, actor="alice")
    assert (result.task, result.created) == (1, True)
    task = queue.get(1)
    assert (task.key, task.state.value, task.attempt, task.epoch) == ("order-1", "PENDING", 0, 0)
    assert task.max_attempts == 3 and task.budget == 5
    assert task.due_at == task.enqueued_at == clock.now()
    assert orjson.loads(task.payload) == {"budget": 5, "work": 1}
    [ev] = events(queue)
    assert ev["seq"] == 1 and ev["event"] == "enqueued" and ev["task"] == "ORCH-1"
    assert (ev["prev"], ev["state"], ev["attempt"], ev["epoch"], ev["actor"]) == (None, "PENDING", 0, 0, "alice")
    assert ev["t"] == clock.now() and ev["wall"] == clock.wall_of(clock.now())


def test_duplicate_enqueue_returns_the_existing_task(queue):
    queue.enqueue("k", {"b": 2, "a": 1})
    clone = queue.enqueue("k", {"a": 1, "b": 2})  # same payload, keys in another order
    assert (clone.task, clone.created) == (1, False)
    assert queue.status()["total"] == 1
    ev = events(queue)[-1]
    assert ev["event"] == "duplicate_enqueue" and ev["task"] == "ORCH-1"
    assert ev["state"] == ev["prev"] == "PENDING"


def test_same_key_other_payload_is_refused_without_a_write(queue, dump):
    queue.enqueue("k", {"work": 1})
    before = dump(queue)
    with pytest.raises(KeyConflict, match=r"^key 'k' is already ORCH-1 with another payload; refused$"):
        queue.enqueue("k", {"work": 2})
    # also inside a batch: the new key of the same call is not written either
    with pytest.raises(KeyConflict):
        queue.enqueue_many([("fresh", {"work": 1}), ("k", {"work": 3})])
    assert dump(queue) == before


def test_malformed_enqueue_is_a_usage_error_without_a_write(queue, dump):
    queue.enqueue("k", None)
    before = dump(queue)
    with pytest.raises(UsageError, match="idempotency key"):
        queue.enqueue("  ", {})
    with pytest.raises(UsageError, match="not JSON-serialisable"):
        queue.enqueue("x", {"when": object()})
    for bad in ("lots", 0, -3, True, [1]):  # a guardrail budget is a positive number, wherever it comes from
        with pytest.raises(UsageError, match=r"^budget of 'x' must be a number greater than 0, got "):
            queue.enqueue("x", {"budget": bad})
    with pytest.raises(UsageError, match="budget of 'y'"):
        queue.enqueue("y", {}, budget=0)
    assert dump(queue) == before


def test_enqueue_many_is_one_transaction_in_order(queue):
    out = queue.enqueue_many([(f"k{i}", {"i": i}) for i in range(5)] + [("k2", {"i": 2})])
    assert [(e.task, e.created) for e in out] == [(1, True), (2, True), (3, True), (4, True), (5, True), (3, False)]
    assert [e["event"] for e in events(queue)] == ["enqueued"] * 5 + ["duplicate_enqueue"]


# --- lease ----------------------------------------------------------------------------------

def test_lease_hands_due_tasks_in_due_order_under_a_new_epoch(queue, clock):
    queue.enqueue("later", {}, due_at=clock.now() + 100)
    queue.enqueue("b", {})
    clock.advance(1)
    queue.enqueue("a", {})
    leases = queue.lease("w1", limit=5)
    assert [lease.key for lease in leases] == ["b", "a"]  # "later" is not due yet
    for lease in leases:
        assert (lease.epoch, lease.attempt) == (1, 1)
        task = queue.get(lease.task)
        assert task.state.value == "IN_PROGRESS" and task.worker == "w1"
        assert task.lease_until == clock.now() + TTL
    leased = [e for e in events(queue) if e["event"] == "leased"]
    assert [(e["task"], e["prev"], e["state"], e["epoch"], e["worker"]) for e in leased] == [
        ("ORCH-2", "PENDING", "IN_PROGRESS", 1, "w1"), ("ORCH-3", "PENDING", "IN_PROGRESS", 1, "w1")]
    assert queue.lease("w2") == []
    assert not queue.has_due()
    clock.advance(100)
    assert queue.has_due()
    assert [lease.key for lease in queue.lease("w2", limit=1, ttl=5)] == ["later"]
    assert queue.get(1).lease_until == clock.now() + 5


def test_lease_respects_the_in_flight_cap(location, clock):
    with Queue(location, clock, QueueConfig(inflight_cap=2)) as queue:
        queue.enqueue_many([(f"k{i}", {}) for i in range(5)])
        assert len(queue.lease("w1", limit=5)) == 2
        assert queue.lease("w2", limit=5) == []


# --- worker calls ---------------------------------------------------------------------------

def test_heartbeat_extends_the_lease(queue, clock):
    queue.enqueue("k", {})
    [lease] = queue.lease("w1")
    clock.advance(20)
    assert queue.heartbeat(lease.task, lease.epoch, "w1") is True
    assert queue.get(lease.task).lease_until == clock.now() + TTL
    assert queue.store.task(lease.task)["heartbeat_at"] == clock.now()
    assert [e["event"] for e in events(queue)] == ["enqueued", "leased"]  # heartbeats are not events


def test_complete_commits_the_effect_and_done_together(queue, clock):
    queue.enqueue("k", {})
    [lease] = queue.lease("w1")
    clock.advance(3)
    assert queue.complete(lease.task, lease.epoch, "w1", {"ok": True}) == "completed"
    task = queue.get(lease.task)
    assert task.state.value == "DONE" and task.worker is None and task.lease_until is None
    [effect] = effects(queue)
    assert (effect["key"], effect["task"], effect["epoch"], effect["worker"], effect["t"]) == (
        "k", lease.task, 1, "w1", clock.now())
    assert orjson.loads(effect["result"]) == {"ok": True}
    ev = events(queue)[-1]
    assert (ev["event"], ev["prev"], ev["state"], ev["epoch"], ev["worker"]) == (
        "completed", "IN_PROGRESS", "DONE", 1, "w1")


def test_complete_with_an_existing_effect_is_an_idempotency_skip(queue):
    """The second line of defence: an effect for the key already exists (a drill forces it)."""
    queue.enqueue("k", {})
    [lease] = queue.lease("w1")
    put_effect(queue, "k", 1)
    assert queue.effect_of("k")["worker"] == "old"
    assert queue.complete(lease.task, lease.epoch, "w1", {"second": True}) == "idempotency_skip"
    assert effects(queue) == [{"key": "k", "task": 1, "epoch": 0, "worker": "old", "t": 0.0, "result": None}]
    assert queue.get(1).state.value == "DONE"
    assert [e["event"] for e in events(queue)][-1] == "idempotency_skip"


def test_complete_and_lease_is_one_transaction(queue):
    queue.enqueue_many([(f"k{i}", {}) for i in range(4)])
    [first] = queue.lease("w1")
    seq = queue.last_seq()
    outcome, more = queue.complete_and_lease(first.task, first.epoch, "w1", {"n": 1}, limit=2)
    assert outcome == "completed" and [lease.key for lease in more] == ["k1", "k2"]
    assert all(lease.epoch == 1 and not lease.has_effect for lease in more)
    assert [r["event"] for r in queue.events_after(seq)] == ["completed", "leased", "leased"]
    # a stale completion is refused, and the worker may still take new work
    outcome, again = queue.complete_and_lease(first.task, first.epoch, "w1", limit=1)
    assert outcome == "stale_rejected" and [lease.key for lease in again] == ["k3"]
    assert queue.effect_of("k0")["epoch"] == 1


def test_complete_many_acknowledges_a_batch_in_one_transaction_each_fenced(queue):
    queue.enqueue_many([(f"k{i}", {}) for i in range(4)])
    leases = queue.lease("w1", limit=4)
    put_effect(queue, "k2", 3)
    queue.operate("cancel", leases[1].task, actor="oncall", notes="pulled")  # fences k1's lease
    seq = queue.last_seq()
    done = [(lease.task, lease.epoch, {"n": i}) for i, lease in enumerate(leases)]
    assert queue.complete_many(done, "w1") == ["completed", "stale_rejected", "idempotency_skip", "completed"]
    new = queue.events_after(seq)
    assert [(r["event"], r["task"]) for r in new] == [
        ("completed", 1), ("stale_rejected", 2), ("idempotency_skip", 3), ("completed", 4)]
    assert len({r["t"] for r in new}) == 1  # one transaction, one clock reading
    assert {k: queue.effect_of(k)["worker"] for k in ("k0", "k2", "k3")} == {"k0": "w1", "k2": "old", "k3": "w1"}
    assert queue.effect_of("k1") is None
    assert orjson.loads(queue.effect_of("k3")["result"]) == {"n": 3}
    assert [queue.get(lease.task).state.value for lease in leases] == ["DONE", "CANCELLED", "DONE", "DONE"]


def test_complete_many_with_an_unknown_task_writes_nothing(queue, dump):
    queue.enqueue_many([("a", {}), ("b", {})])
    leases = queue.lease("w1", limit=2)
    before = dump(queue)
    with pytest.raises(UnknownTask, match="no task ORCH-99"):
        queue.complete_many([(leases[0].task, leases[0].epoch, None), (99, 1, None)], "w1")
    assert dump(queue) == before
    assert queue.complete_many([], "w1") == [] and dump(queue) == before


def test_a_lease_says_when_the_key_already_has_an_effect(queue):
    queue.enqueue_many([("k", {}), ("other", {})])
    put_effect(queue, "k", 1)
    leases = {lease.key: lease for lease in queue.lease("w1", limit=2)}
    assert leases["k"].has_effect and not leases["other"].has_effect


def test_transient_failures_back_off_then_fail_when_attempts_are_spent(queue, clock):
    queue.enqueue("k", {})
    expected_backoffs = [10.0, 20.0]  # TEST_POLICY, no jitter
    for attempt, backoff in enumerate(expected_backoffs, start=1):
        [lease] = queue.lease("w1")
        assert lease.attempt == attempt
        assert queue.fail(lease.task, lease.epoch, "w1", "timeout", "upstream timed out") == "retry_scheduled"
        task = queue.get(1)
        assert task.state.value == "PENDING" and task.error == "timeout"
        assert task.due_at == clock.now() + backoff
        assert queue.lease("w1") == []  # not due during the backoff
        ev = events(queue)[-1]
        assert ev["event"] == "retry_scheduled" and ev["backoff"] == backoff and ev["detail"] == "upstream timed out"
        clock.advance(backoff)
    [lease] = queue.lease("w1")
    assert lease.attempt == 3
    assert queue.fail(lease.task, lease.epoch, "w1", "timeout") == "failed"
    task = queue.get(1)
    assert (task.state.value, task.error, task.attempt) == ("FAILED", "timeout", 3)
    assert events(queue)[-1]["event"] == "failed"


def test_the_task_s_own_max_attempts_bounds_its_retries(queue, clock):
    """`max_attempts` recorded at enqueue governs a failing attempt as it governs the reaper,
    whatever the policy of the process that reports the failure (here 3)."""
    queue.enqueue("once", {}, max_attempts=1)
    queue.enqueue("twice", {}, max_attempts=2)
    leases = {lease.key: lease for lease in queue.lease("w1", limit=2)}
    assert queue.fail(leases["once"].task, leases["once"].epoch, "w1", "timeout") == "failed"
    assert queue.fail(leases["twice"].task, leases["twice"].epoch, "w1", "timeout") == "retry_scheduled"
    clock.advance(10)
    [again] = queue.lease("w1")
    assert (again.key, again.attempt, again.max_attempts) == ("twice", 2, 2)
    assert queue.fail(again.task, again.epoch, "w1", "rate_limit") == "failed"
    assert [queue.get(i).state.value for i in (1, 2)] == ["FAILED", "FAILED"]


def test_permanent_and_unknown_errors(queue):
    queue.enqueue_many([("perm", {}), ("unk", {})])
    leases = {lease.key: lease for lease in queue.lease("w1", limit=2)}
    long_text = "boom\n" + "x" * 500
    assert queue.fail(leases["perm"].task, leases["perm"].epoch, "w1", "param_error", long_text) == "failed"
    detail = queue.get(leases["perm"].task).detail
    assert len(detail) == 200 and "\n" not in detail and detail.startswith("boom x")
    # unknown is retried once, then fails for good
    assert queue.fail(leases["unk"].task, leases["unk"].epoch, "w1", "unknown") == "retry_scheduled"
    queue.clock.advance(10)
    [again] = queue.lease("w1")
    assert queue.fail(again.task, again.epoch, "w1", "unknown") == "failed"
    with pytest.raises(ValueError):
        queue.fail(again.task, again.epoch, "w1", "Traceback: not a class")


def test_block_records_the_guardrail_then_blocks(queue):
    queue.enqueue("k", {}, budget=5.0)
    [lease] = queue.lease("w1")
    assert queue.block(lease.task, lease.epoch, "w1", spend=7.5, budget=5.0) == "blocked"
    task = queue.get(1)
    assert (task.state.value, task.error) == ("BLOCKED", "guardrail")
    guard, blocked = events(queue)[-2:]
    assert (guard["event"], guard["prev"], guard["state"], guard["spend"], guard["budget"]) == (
        "guardrail_exceeded", "IN_PROGRESS", "IN_PROGRESS", 7.5, 5.0)
    assert (blocked["event"], blocked["prev"], blocked["state"]) == ("blocked", "IN_PROGRESS", "BLOCKED")


def test_release_gives_the_lease_back_without_counting_the_attempt(queue, clock):
    queue.enqueue("k", {})
    [lease] = queue.lease("w1")
    clock.advance(2)
    assert queue.release(lease.task, lease.epoch, "w1") == "released"
    task = queue.get(1)
    assert (task.state.value, task.attempt, task.epoch, task.due_at) == ("PENDING", 0, 1, clock.now())
    ev = events(queue)[-1]
    assert (ev["event"], ev["attempt"], ev["epoch"]) == ("released", 0, 1)
    [again] = queue.lease("w2")
    assert (again.epoch, again.attempt) == (2, 1)


def test_stale_calls_change_nothing_and_are_recorded(queue, dump):
    queue.enqueue("k", {})
    [old] = queue.lease("w1")
    queue.release(old.task, old.epoch, "w1")
    [new] = queue.lease("w2")
    for call in ("heartbeat", "complete", "fail", "block", "release"):
        before = dump(queue)
        if call == "heartbeat":
            assert queue.heartbeat(old.task, old.epoch, "w1") is False
        elif call == "complete":
            assert queue.complete(old.task, old.epoch, "w1") == "stale_rejected"
        elif call == "fail":
            assert queue.fail(old.task, old.epoch, "w1", "timeout") == "stale_rejected"
        elif call == "block":
            assert queue.block(old.task, old.epoch, "w1", 1.0, 0.5) == "stale_rejected"
        else:
            assert queue.release(old.task, old.epoch, "w1") == "stale_rejected"
        after = dump(queue)
        assert {k: v for k, v in after.items() if k != "events"} == {k: v for k, v in before.items() if k != "events"}
        assert after["events"][:-1] == before["events"]
        ev = events(queue)[-1]
        assert ev["event"] == "stale_rejected" and ev["call"] == call and ev["worker"] == "w1"
        assert (ev["epoch"], ev["stale_epoch"], ev["state"], ev["prev"]) == (2, 1, "IN_PROGRESS", "IN_PROGRESS")
    assert queue.complete(new.task, new.epoch, "w2") == "completed"


def test_calls_on_an_unknown_task_are_refused_without_a_write(queue, dump):
    queue.enqueue("k", {})
    before = dump(queue)
    with pytest.raises(UnknownTask, match="no task ORCH-42"):
        queue.heartbeat(42, 1, "w1")
    with pytest.raises(UnknownTask):
        queue.complete(42, 1, "w1")
    with pytest.raises(UnknownTask):
        queue.fail(42, 1, "w1", "timeout")
    with pytest.raises(UnknownTask):
        queue.operate("cancel", 42, actor="alice")
    with pytest.raises(UnknownTask):
        queue.get(42)
    with pytest.raises(UnknownTask):
        queue.history(42)
    assert dump(queue) == before


# --- reaper ---------------------------------------------------------------------------------

def test_reap_returns_expired_leases_and_fails_them_when_attempts_are_spent(queue, clock):
    queue.enqueue("k", {})
    for attempt in (1, 2):
        [lease] = queue.lease("w1")
        clock.advance(TTL)
        assert queue.reap() == []  # lease_until == now is not yet expired
        clock.advance(0.5)
        assert queue.reap() == [(1, "PENDING")]
        ev = events(queue)[-1]
        assert (ev["event"], ev["prev"], ev["state"], ev["error"], ev["attempt"], ev["worker"]) == (
            "lease_expired", "IN_PROGRESS", "PENDING", "lease_timeout", attempt, "w1")
        assert ev["lease_until"] == clock.now() - 0.5
        assert queue.complete(lease.task, lease.epoch, "w1") == "stale_rejected"  # fenced at once
    [lease] = queue.lease("w1")
    assert lease.attempt == 3
    clock.advance(TTL + 1)
    assert queue.reap() == [(1, "FAILED")]
    task = queue.get(1)
    assert (task.state.value, task.error, task.worker, task.lease_until) == ("FAILED", "lease_timeout", None, None)


def test_heartbeat_keeps_the_reaper_away(queue, clock):
    queue.enqueue("k", {})
    [lease] = queue.lease("w1")
    for _ in range(5):
        clock.advance(TTL - 1)
        assert queue.heartbeat(lease.task, lease.epoch, "w1")
        assert queue.reap() == []
    assert queue.complete(lease.task, lease.epoch, "w1") == "completed"


# --- reads ----------------------------------------------------------------------------------

def test_status_counts_and_never_writes(queue, clock, dump):
    queue.enqueue_many([(f"k{i}", {}) for i in range(4)])
    a, b, c = queue.lease("w1", limit=3)
    queue.complete(a.task, a.epoch, "w1")
    queue.fail(b.task, b.epoch, "w1", "param_error")
    queue.operate("cancel", 4, actor="alice", notes="isolate")
    clock.advance(TTL + 5)
    before = dump(queue)
    doc = queue.status()
    assert dump(queue) == before
    assert doc["counts"] == {"PENDING": 0, "IN_PROGRESS": 1, "DONE": 1, "FAILED": 1, "BLOCKED": 0, "CANCELLED": 1}
    assert doc["total"] == 4 and doc["effects"] == 1 and doc["expired_leases"] == 1
    assert doc["in_flight"] == [{"worker": "w1", "tasks": 1, "heartbeat_age": TTL + 5}]
    assert doc["errors"] == [{"error": "param_error", "state": "FAILED", "tasks": 1}]
    assert [(e["event"], e["actor"], e["notes"]) for e in doc["recent_actions"]] == [("cancelled", "alice", "isolate")]
    assert doc["last_seq"] == queue.last_seq() == len(events(queue))


def test_task_ids_parse_strictly():
    assert parse_task_id("ORCH-12") == 12 and parse_task_id(" ORCH-7 ") == 7
    assert task_name(12) == "ORCH-12"
    for bad in ("12", "ORCH-0", "ORCH-012", "orch-12", "ORCH-", "ORCH-1x", "ORCH-1234567890123456789", None):
        with pytest.raises(UsageError, match="malformed task id"):
            parse_task_id(bad)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_soak_processes_heap_setting_is_accepted():
    # what orch worker, the supervisor, the shipper and the chaos agent call first: mallopt accepted both
    assert keep_freed_memory() is True
