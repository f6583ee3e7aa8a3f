"""What a drill is: a named, seeded scenario that causes one failure for real, then checks.

A drill's `run(ctx)` does the scenario through `ctx` (a `Harness`: the drill's home, soak clock,
queue, worker processes) and records what it saw as `Check` rows (the report's scenario table).
The harness then checks the shared invariants (invariants.py) over the drill's own events and
tasks. A drill passes only when every check of both tables passed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Evidence:
    """Where to look: task ids and event seqs (the JSONL's `seq`)."""

    tasks: tuple[str, ...] = ()
    seqs: tuple[int, ...] = ()
    note: str = ""

    def text(self) -> str:
        parts = []
        if self.tasks:
            more = f" (+{len(self.tasks) - 10} more)" if len(self.tasks) > 10 else ""
            parts.append("tasks " + ", ".join(self.tasks[:10]) + more)
        if self.seqs:
            more = f" (+{len(self.seqs) - 10} more)" if len(self.seqs) > 10 else ""
            parts.append("seqs " + ", ".join(str(s) for s in self.seqs[:10]) + more)
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)


@dataclass(frozen=True)
class Check:
    """One row of a report table: what was done, what must hold, what was seen."""

    scenario: str
    done: str
    expected: str
    observed: str
    passed: bool
    evidence: Evidence = field(default_factory=Evidence)


@dataclass(frozen=True)
class Recovery:
    """How long one recovery took, in soak seconds (None: it did not recover)."""

    what: str
    soak_seconds: float | None


@dataclass(frozen=True)
class Drill:
    name: str
    causes: str  # what it causes, for real
    must_hold: str  # what must hold afterwards
    run: Callable[[Any], None]  # run(harness): the scenario; records checks on the harness
    speed: float = 60.0  # soak seconds per wall second
    uses_soak: bool = False  # runs `orch soak start` itself (no drill run record)
    abort: dict = field(default_factory=dict)  # abort thresholds of the drill's profile


# Filled by the `drill` decorator as the drill modules are imported (`catalog` imports them all).
REGISTRY: dict[str, Drill] = {}


def drill(name: str, causes: str, must_hold: str, **options: Any) -> Callable:
    """Register `run(harness)` as the drill `name`."""

    def register(fn: Callable) -> Callable:
        if name in REGISTRY:
            raise ValueError(f"drill {name!r} registered twice")
        REGISTRY[name] = Drill(name, causes, must_hold, fn, **options)
        return fn

    return register
