"""Every (state, action) pair: operator actions and worker calls.

Allowed pairs do what DESIGN.md / docs/jsonl.md say; every other pair is refused
(`IllegalTransition`, or `stale_rejected` for worker calls) and writes nothing: for operator
actions the full dump of the database is unchanged, for worker calls the only new row is the
`stale_rejected` event that records the refusal.
"""

from __future__ import annotations

import pytest

from orchestrator.core.errors import IllegalTransition
from orchestrator.core.model import ACTION_EVENTS, OPERATOR_ACTIONS, State
from orchestrator.queue.tasks import event_dict
from orchestrator.queue.writes import Queue

P, IP, D, F, B, C = (State.PENDING, State.IN_PROGRESS, State.DONE, State.FAILED, State.BLOCKED, State.CANCELLED)
OPEN = (P, IP, B)

# The documented table, written out here rather than read from the code under test.
ALLOWED: dict[tuple[str, State], State] = {
    **{("cancel", s): C for s in OPEN},
    ("replan", B): P,  # releases a BLOCKED task
    ("replan", C): C,  # records the plan; `ops retry` runs it
    ("replan", F): F,
    ("retry", F): P,
    ("retry", C): P,
    **{("done", s): D for s in OPEN},
    **{("fail", s): F for s in OPEN},
}
EVENT_OF = {"cancel": "cancelled", "replan": "replanned", "retry": "retried", "done": "closed_done",
            "fail": "closed_failed"}
ACTIONS = tuple(EVENT_OF)
CALLS = ("heartbeat", "complete", "fail", "block", "release")


def put_in(queue: Queue, state: State) -> tuple[int, int]:
    """A task in `state` that has been leased at least once; returns (task, current epoch).
    IN_PROGRESS is reached on a second lease, so an older epoch is a real former lease."""
    task = queue.enqueue(f"key-{state.value}", {"work": 1}, budget=2.0).task
    [lease] = queue.lease("w-setup")
    if state is P:
        queue.release(task, lease.epoch, "w-setup")
    elif state is IP:
        queue.release(task, lease.epoch, "w-setup")
        [lease] = queue.lease("w-now")
    elif state is D:
        queue.complete(task, lease.epoch, "w-setup")
    elif state is F:
        queue.fail(task, lease.epoch, "w-setup", "param_error", "bad request")
    elif state is B:
        queue.block(task, lease.epoch, "w-setup", 3.0, 2.0)
    elif state is C:
        queue.operate("cancel", task, actor="setup")
    current = queue.get(task)
    assert current.state is state
    return task, current.epoch


def last_event(queue: Queue) -> dict:
    return event_dict(queue.events_after(queue.last_seq() - 1)[0])


def test_the_code_agrees_with_the_documented_table():
    for action in ACTIONS:
        allowed, _ = OPERATOR_ACTIONS[action]
        assert set(allowed) == {s for (a, s) in ALLOWED if a == action}, action
    assert ACTION_EVENTS == EVENT_OF


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
@pytest.mark.parametrize("action", ACTIONS)
def test_operator_action(action, state, queue, clock, db_path, dump):
    task, epoch = put_in(queue, state)
    clock.advance(7)
    before_task = queue.get(task)
    before = dump(db_path)
    target = ALLOWED.get((action, state))

    if target is None:
        allowed = ", ".join(s.value for s in State if (action, s) in ALLOWED)
        with pytest.raises(IllegalTransition) as refused:
            queue.operate(action, task, actor="alice", notes="why", budget=9.0 if action == "replan" else None)
        assert str(refused.value) == f"ORCH-{task} is {state.value}; {action} is allowed from {allowed}"
        assert dump(db_path) == before
        return

    after = queue.operate(action, task, actor="alice", notes="why",
                          budget=9.0 if action == "replan" else None)
    assert after.state is target and queue.get(task) == after
    ev = last_event(queue)
    assert ev["seq"] == len(before["events"]) + 1  # exactly one new event
    assert (ev["event"], ev["task"], ev["prev"], ev["state"], ev["actor"], ev["notes"]) == (
        EVENT_OF[action], f"ORCH-{task}", state.value, target.value, "alice", "why")
    assert ev["epoch"] == epoch == after.epoch  # operator actions never move the epoch
    assert after.worker is None and after.lease_until is None
    assert dump(db_path)["effects"] == before["effects"]  # no operator action writes an effect

    if target is P:  # a fresh plan: attempts reset, due now, leasable
        assert (after.attempt, after.error, after.detail, after.due_at) == (0, None, None, clock.now())
        [lease] = queue.lease("w-next")
        assert (lease.task, lease.epoch, lease.attempt) == (task, epoch + 1, 1)
    else:
        assert after.attempt == before_task.attempt
    if action == "replan":
        assert after.plan == "why" and after.budget == 9.0 and ev["budget"] == 9.0
    else:
        assert after.plan is None and after.budget == 2.0
    if action == "fail":
        assert (after.error, after.detail, ev["error"], ev["detail"]) == ("operator", "why", "operator", "why")
    if action == "done":
        names = [e["event"] for e in queue.history(task)]
        assert "completed" not in names and queue.effect_of(f"key-{state.value}") is None
    if state is IP:  # the lease is fenced: the worker that held it can no longer finish it
        assert queue.complete(task, epoch, "w-now") == "stale_rejected"
        assert queue.effect_of(f"key-{state.value}") is None
        assert queue.get(task).state is target


def _call(queue: Queue, call: str, task: int, epoch: int, worker: str):
    if call == "heartbeat":
        return queue.heartbeat(task, epoch, worker)
    if call == "complete":
        return queue.complete(task, epoch, worker, {"ok": 1})
    if call == "fail":
        return queue.fail(task, epoch, worker, "timeout", "slow upstream")
    if call == "block":
        return queue.block(task, epoch, worker, 3.0, 2.0)
    return queue.release(task, epoch, worker)


ALLOWED_RESULT = {
    "heartbeat": (True, IP),
    "complete": ("completed", D),
    "fail": ("retry_scheduled", P),
    "block": ("blocked", B),
    "release": ("released", P),
}


@pytest.mark.parametrize("which", ["right", "stale"])
@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
@pytest.mark.parametrize("call", CALLS)
def test_worker_call(call, state, which, queue, clock, db_path, dump):
    task, epoch = put_in(queue, state)
    used = epoch if which == "right" else epoch - 1
    clock.advance(5)
    before_task = queue.get(task)
    before = dump(db_path)

    result = _call(queue, call, task, used, "w-now")
    after = dump(db_path)
    now_task = queue.get(task)

    if state is IP and which == "right":
        expected, target = ALLOWED_RESULT[call]
        assert result == expected and now_task.state is target
        assert now_task.epoch == epoch
        new_events = [event_dict(r) for r in queue.events_after(len(before["events"]))]
        if call == "heartbeat":
            assert new_events == []
            assert now_task.lease_until == clock.now() + queue.config.lease_ttl
        else:
            assert new_events[-1]["prev"] == "IN_PROGRESS" and new_events[-1]["state"] == target.value
            assert all(e["worker"] == "w-now" and e["epoch"] == epoch for e in new_events)
        if call == "complete":
            effect = queue.effect_of(now_task.key)
            assert (effect["task"], effect["epoch"], effect["worker"]) == (task, epoch, "w-now")
        else:
            assert after["effects"] == before["effects"]
        if call == "release":
            assert now_task.attempt == before_task.attempt - 1 and now_task.due_at == clock.now()
        if call == "fail":
            assert now_task.due_at == clock.now() + 10.0 and now_task.error == "timeout"
        return

    # refused: stale epoch, or the lease is gone (state changed) even with the last epoch
    assert result in (False, "stale_rejected")
    assert result is False if call == "heartbeat" else result == "stale_rejected"
    assert now_task == before_task
    assert {k: v for k, v in after.items() if k != "events"} == {k: v for k, v in before.items() if k != "events"}
    assert after["events"][:-1] == before["events"]
    ev = last_event(queue)
    assert (ev["event"], ev["task"], ev["call"], ev["worker"]) == ("stale_rejected", f"ORCH-{task}", call, "w-now")
    assert (ev["state"], ev["prev"], ev["epoch"], ev["stale_epoch"]) == (state.value, state.value, epoch, used)
