"""Pre-soak: the queue contract in brief: enqueue, lease, complete, fail, reap, fencing."""

from __future__ import annotations

from orchestrator.queue.tasks import event_dict


def names(queue) -> list[str]:
    return [r["event"] for r in queue.events_after(0)]


def test_enqueue_lease_complete(queue):
    assert queue.enqueue("k1", {"work": 1}).created
    assert not queue.enqueue("k1", {"work": 1}).created  # duplicate: same task, recorded
    [lease] = queue.lease("w1")
    assert (lease.task, lease.epoch, lease.attempt) == (1, 1, 1)
    assert queue.heartbeat(lease.task, lease.epoch, "w1")
    assert queue.complete(lease.task, lease.epoch, "w1", {"ok": True}) == "completed"
    assert queue.get(1).state.value == "DONE"
    assert queue.effect_of("k1")["epoch"] == 1
    assert names(queue) == ["enqueued", "duplicate_enqueue", "leased", "completed"]


def test_fail_retries_with_backoff_then_fails(queue, clock):
    queue.enqueue("k1", {})
    [lease] = queue.lease("w1")
    assert queue.fail(lease.task, lease.epoch, "w1", "timeout", "upstream timed out") == "retry_scheduled"
    assert queue.lease("w1") == []  # backing off
    clock.advance(60)
    [lease] = queue.lease("w1")
    assert lease.attempt == 2
    assert queue.fail(lease.task, lease.epoch, "w1", "param_error", "bad request") == "failed"
    task = queue.get(1)
    assert (task.state.value, task.error) == ("FAILED", "param_error")


def test_reap_and_fencing(queue, clock):
    queue.enqueue("k1", {})
    [old] = queue.lease("w1")
    clock.advance(31)
    assert queue.reap() == [(1, "PENDING")]
    [new] = queue.lease("w2")
    assert new.epoch == old.epoch + 1
    assert queue.complete(old.task, old.epoch, "w1") == "stale_rejected"
    assert queue.complete(new.task, new.epoch, "w2") == "completed"
    stale = [event_dict(r) for r in queue.events_after(0) if r["event"] == "stale_rejected"]
    assert [(e["worker"], e["stale_epoch"], e["epoch"]) for e in stale] == [("w1", 1, 2)]
    seqs = [r["seq"] for r in queue.events_after(0)]
    assert seqs == list(range(1, len(seqs) + 1))
