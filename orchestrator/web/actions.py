"""Operator actions from the web view: the same `Queue.operate` / `operate_many` as the ops CLI,
so the same refusals apply and a refused action writes nothing (a bulk action is one
transaction: all or nothing). A request without `confirm` is a preview (count and first ids);
a confirmed request may carry `expect` (the previewed count) and is refused when the selection
changed since."""

from __future__ import annotations

from typing import Any

from orchestrator.core.errors import Refused, UsageError
from orchestrator.core.model import OPERATOR_ACTIONS
from orchestrator.queue.search import TaskFilter, all_ids
from orchestrator.queue.tasks import parse_task_id, task_name
from orchestrator.queue.writes import Queue

NOTES_REQUIRED = frozenset({"replan", "done", "fail"})
BULK_CAP = 100_000


def act(queue: Queue, body: dict[str, Any], actor: str, origin: float = 0.0) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise UsageError("the request body must be a JSON object")
    action = body.get("action")
    if action not in OPERATOR_ACTIONS:
        raise UsageError(f"unknown action {action!r} (one of {', '.join(OPERATOR_ACTIONS)})")
    notes = body.get("notes")
    notes = notes.strip() if isinstance(notes, str) and notes.strip() else None
    if action in NOTES_REQUIRED and notes is None:
        raise UsageError(f"notes are required for {action}")
    budget = body.get("budget")
    if budget is not None and (not isinstance(budget, (int, float)) or not budget > 0):
        raise UsageError("budget must be a number greater than 0")
    if body.get("task"):
        ids = [parse_task_id(str(body["task"]))]
        queue.get(ids[0])  # unknown id: exit-code-3 error, nothing written
    else:
        flt = body.get("filter")
        if not isinstance(flt, dict) or not any(str(v).strip() for v in flt.values() if v is not None):
            raise UsageError("give a task, or a filter with at least one of state, error, from, to, key")
        ids = all_ids(queue, TaskFilter.parse({k: str(v) for k, v in flt.items() if v is not None}, origin),
                      BULK_CAP + 1)
        if len(ids) > BULK_CAP:
            raise Refused(f"the filter selects more than {BULK_CAP:,} tasks; narrow it")
        ids.sort()
    doc = {"action": action, "count": len(ids), "first": [task_name(i) for i in ids[:10]]}
    if not body.get("confirm"):
        return {**doc, "preview": True}
    expect = body.get("expect")
    if expect is not None and expect != len(ids):
        raise Refused(f"the selection changed since the preview ({expect} then, {len(ids)} now); preview again")
    if not ids:
        return {**doc, "preview": False, "applied": 0, "states": {}}
    if len(ids) == 1:
        done = [queue.operate(action, ids[0], actor=actor, notes=notes, budget=budget)]
    else:
        if budget is not None:
            raise UsageError("budget applies to one task at a time")
        done = queue.operate_many(action, ids, actor=actor, notes=notes)
    states: dict[str, int] = {}
    for t in done:
        states[t.state.value] = states.get(t.state.value, 0) + 1
    return {**doc, "preview": False, "applied": len(done), "states": states, "actor": actor}
