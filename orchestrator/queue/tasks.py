"""What the queue hands out and reads back: task ids (`ORCH-n`), payloads as canonical JSON,
the task, lease and event records."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from orchestrator.core.errors import UsageError
from orchestrator.core.model import State

_TASK_ID = re.compile(r"^ORCH-([1-9][0-9]{0,17})$")


def parse_task_id(text: str) -> int:
    """`ORCH-12` -> 12; anything else is a usage error."""
    match = _TASK_ID.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise UsageError(f"malformed task id {text!r} (expected ORCH-<n>, e.g. ORCH-12)")
    return int(match.group(1))


def task_name(task_id: int) -> str:
    return f"ORCH-{task_id}"


def canonical_json(payload: Any) -> str:
    try:
        return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError as exc:
        raise UsageError(f"payload is not JSON-serialisable: {exc}") from None


def parse_payload(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"payload is not valid JSON: {exc}") from None


@dataclass(frozen=True)
class Task:
    id: int
    key: str
    payload: str
    state: State
    attempt: int
    max_attempts: int
    epoch: int
    worker: str | None
    lease_until: float | None
    due_at: float
    enqueued_at: float
    updated_at: float
    budget: float | None
    error: str | None
    detail: str | None
    plan: str | None

    @property
    def name(self) -> str:
        return task_name(self.id)

    @classmethod
    def from_row(cls, row: dict) -> Task:
        return cls(**{f: row[f] for f in cls.__dataclass_fields__ if f != "state"}, state=State(row["state"]))


@dataclass(frozen=True)
class Lease:
    """A task handed to one worker under `epoch` (the fencing token)."""

    task: int
    key: str
    payload: str
    attempt: int
    max_attempts: int
    epoch: int
    budget: float | None
    enqueued_at: float
    has_effect: bool = False  # the key's effect already exists: do not run the handler

    @property
    def name(self) -> str:
        return task_name(self.task)


@dataclass(frozen=True)
class Enqueued:
    task: int
    created: bool


def event_dict(row: dict) -> dict:
    """An event row as a plain dict (task as `ORCH-n`, `data` merged in)."""
    out = {k: row[k] for k in row.keys() if k != "data"}
    if out.get("task") is not None:
        out["task"] = task_name(out["task"])
    if row["data"]:
        out.update(orjson.loads(row["data"]))
    return out


@dataclass(frozen=True)
class SideEffect:
    """What a handler reported of one side effect (`TaskContext.side_effect`): landed or refused by
    the downstream as a duplicate of the key. Recorded as `side_effect_applied` / `_deduped`."""

    applied: bool
    key: str
    attempt: int
    data: dict = field(default_factory=dict)  # downstream, detail

    @property
    def event(self) -> str:
        return "side_effect_applied" if self.applied else "side_effect_deduped"
