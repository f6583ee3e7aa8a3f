"""The handler contract: what a handler receives (`TaskContext`), the exceptions the worker raises
inside it (`LeaseLost`, `Stopping`) and how a `module:function` spec is loaded."""

from __future__ import annotations

import importlib
import os
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import orjson

from orchestrator.core.clock import Clock
from orchestrator.core.errors import UsageError
from orchestrator.core.model import GuardrailExceeded
from orchestrator.handlers.ledger import Ledger, ServerLedger


class LeaseLost(Exception):
    """Raised inside a handler when its lease was revoked (expired, cancelled, closed)."""


class Stopping(Exception):
    """Raised inside a handler's sleep when the worker must stop and release the task."""


@dataclass
class TaskContext:
    task: str
    key: str
    payload: Any
    attempt: int
    epoch: int
    budget: float | None
    clock: Clock
    lost: threading.Event = field(default_factory=threading.Event)
    spent: float = 0.0
    probe_write: Callable[[], None] | None = None  # one write with no retry (db_lock faults)
    request_lock: Callable[[float], AbstractContextManager[bool]] | None = None  # the lock hog holds the lock in the block
    worker: str | None = None
    ledger: Ledger | ServerLedger | None = None  # the synthetic downstream (`handlers.ledger`), where the worker has one
    on_side_effect: Callable[[bool, str, str], None] | None = None  # the worker records what `side_effect` says

    def sleep(self, soak_seconds: float) -> None:
        """Work for `soak_seconds`; raises `LeaseLost` as soon as the lease is revoked."""
        if self.clock.skips:
            lost = self.clock.wait(self.lost, max(soak_seconds, 0.0))
        else:
            lost = self.lost.wait(self.clock.to_wall(max(soak_seconds, 0.0)))
        if lost:
            raise LeaseLost(f"{self.task} lease lost")

    def side_effect(self, applied: bool, downstream: str = "", detail: str = "") -> None:
        """Report what this attempt's side effect did downstream, right after it happened:
        `applied=True` it landed (a charge made, a message published), `applied=False` the
        downstream refused it as a duplicate of this task's idempotency key. The worker records
        `side_effect_applied` / `side_effect_deduped`; SLI-4 counts a key applied twice as an
        actual duplicate execution (abort rule 2). Call it whether or not the lease still holds:
        a stale attempt's side effect is exactly what must be counted."""
        if self.on_side_effect is not None:
            self.on_side_effect(bool(applied), downstream, detail)

    def spend(self, amount: float) -> None:
        """Account spend against the budget; refuse (before spending) past a hard budget."""
        if self.budget is not None and self.spent + amount > self.budget:
            raise GuardrailExceeded(self.spent + amount, self.budget)
        self.spent += amount


def load_handler(spec: str) -> Callable[[TaskContext], Any]:
    """The handler `module:function`. The module is looked up as `python -m` would: the current
    directory first (it is put on `sys.path` if it is not there), then PYTHONPATH and the
    installed packages; an import that fails names what was searched."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"handler must be module:function, got {spec!r}")
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        searched = [p for p in sys.path if p and p != here]
        shown = ", ".join(searched[:4]) + (f" and {len(searched) - 4} more" if len(searched) > 4 else "")
        raise UsageError(f"cannot import handler module {module_name!r}: {exc}; searched the current directory "
                         f"({here}) first, then {shown} (add a folder with PYTHONPATH)") from None
    handler = getattr(module, attr, None)
    if not callable(handler):
        raise UsageError(f"handler {spec!r} is not a callable")
    return handler


def payload_of(text: str) -> Any:
    return orjson.loads(text)
