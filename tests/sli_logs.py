"""Hand-made JSONL logs that follow docs/jsonl.md, for the SLI, abort-rule and report tests.

`LogBuilder` keeps each task's state, epoch and attempt so every line carries the right
`state`/`prev`/`epoch`/`attempt`, and numbers `seq` contiguously. Times are soak seconds.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson

from orchestrator.core.profiles import BUILTIN

FIELDS = ("seq", "t", "wall", "event", "task", "key", "state", "prev", "attempt", "epoch", "worker", "error",
          "actor", "notes")


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


class LogBuilder:
    def __init__(self, profile: str = "72h", *, run_id: str = "r20261123T184500-s14-ab12", speed: float = 4320.0,
                 first_seq: int = 1, manifest: dict | None = None, **overrides: Any):
        self.profile = merge(BUILTIN[profile].to_dict(), overrides)
        self.header = {
            "event": "run_started", "run_id": run_id, "profile": self.profile, "seed": 14, "speed": speed,
            "commit": "e144a4e0c0ffee00000000000000000000000000", "started_at": "2026-11-23T18:45:00.000Z",
            "t": 0.0, "wall": "2026-11-23T18:45:00.000Z", "first_seq": first_seq, "workers": 4,
            "manifest": manifest if manifest is not None else {
                "arrivals": 0, "faults": {"transient": 0, "db_lock": 0, "duplicate_enqueue": 0, "guardrail": 0},
                "bursts": [[1800.0, 2100.0]]},
        }
        self.speed = speed
        self.events: list[dict[str, Any]] = []
        self.seq = first_seq
        self.tasks: dict[str, dict[str, Any]] = {}
        self.next_id = 1

    # --- raw ----------------------------------------------------------------------------
    def ev(self, t: float, event: str, task: str | None = None, **fields: Any) -> dict[str, Any]:
        info = self.tasks.get(task) if task else None
        line = dict.fromkeys(FIELDS)
        line.update(seq=self.seq, t=round(float(t), 3), wall=self.wall(t), event=event, task=task)
        if info is not None:
            line.update(key=info["key"], state=info["state"], prev=info["state"], attempt=info["attempt"],
                        epoch=info["epoch"])
        line.update(fields)
        self.seq += 1
        self.events.append(line)
        return line

    def wall(self, t: float) -> str:
        ms = int(round(t / self.speed * 1000))
        sec, ms = divmod(ms, 1000)
        minute, sec = divmod(sec, 60)
        hour, minute = divmod(minute + 45, 60)
        return f"2026-11-23T{18 + hour:02d}:{minute:02d}:{sec:02d}.{ms:03d}Z"

    def _go(self, t: float, event: str, task: str, state: str, **fields: Any) -> dict[str, Any]:
        info = self.tasks[task]
        prev = info["state"]
        info["state"] = state
        return self.ev(t, event, task, state=state, prev=prev, **fields)

    # --- task life ------------------------------------------------------------------------
    def enqueue(self, t: float, key: str | None = None, planned: float | None = None) -> str:
        """A task enqueued at `t`; `planned`: when the plan wanted it (else it was enqueued by hand)."""
        task = f"ORCH-{self.next_id}"
        self.next_id += 1
        self.tasks[task] = {"key": key or f"k{self.next_id - 1}", "state": None, "epoch": 0, "attempt": 0}
        self._go(t, "enqueued", task, "PENDING", arrival=self.next_id - 2, planned_t=planned)
        return task

    def lease(self, task: str, t: float, worker: str = "w1") -> None:
        info = self.tasks[task]
        info["epoch"] += 1
        info["attempt"] += 1
        info["worker"] = worker
        self._go(t, "leased", task, "IN_PROGRESS", worker=worker)

    def complete(self, task: str, t: float, side_effect: bool = True) -> None:
        """DONE; the handler's side effect (applied downstream) is reported just before, as the
        synthetic handler does."""
        if side_effect:
            self.side_effect(task, t)
        self._go(t, "completed", task, "DONE", worker=self.tasks[task].get("worker"))

    def side_effect(self, task: str, t: float, applied: bool = True, worker: str | None = None,
                    epoch: int | None = None) -> None:
        info = self.tasks[task]
        self.ev(t, "side_effect_applied" if applied else "side_effect_deduped", task, state=None, prev=None,
                worker=worker or info.get("worker"), epoch=epoch if epoch is not None else info["epoch"],
                downstream="ledger")

    def skip(self, task: str, t: float) -> None:
        self._go(t, "idempotency_skip", task, "DONE", worker=self.tasks[task].get("worker"))

    def retry(self, task: str, t: float, error: str = "timeout", backoff: float = 60.0) -> None:
        self._go(t, "retry_scheduled", task, "PENDING", error=error, backoff=backoff, detail="boom")

    def fail(self, task: str, t: float, error: str = "param_error") -> None:
        self._go(t, "failed", task, "FAILED", error=error, detail="boom")

    def expire(self, task: str, t: float, spent: bool = False) -> None:
        self._go(t, "lease_expired", task, "FAILED" if spent else "PENDING", error="lease_timeout",
                 worker=self.tasks[task].get("worker"), lease_until=t - 1)

    def stale(self, task: str, t: float, call: str = "complete", worker: str = "w1") -> None:
        info = self.tasks[task]
        self.ev(t, "stale_rejected", task, worker=worker, call=call, stale_epoch=max(info["epoch"] - 1, 0))

    def release(self, task: str, t: float) -> None:
        self.tasks[task]["attempt"] -= 1
        self._go(t, "released", task, "PENDING")

    def guardrail(self, task: str, t: float, block: bool = True, spend: float = 2.0, budget: float = 1.0) -> None:
        self.ev(t, "guardrail_exceeded", task, error="guardrail", spend=spend, budget=budget, blocked=True)
        if block:
            self._go(t, "blocked", task, "BLOCKED", error="guardrail", spend=spend, budget=budget)

    def dup_enqueue(self, task: str, t: float) -> None:
        self.ev(t, "duplicate_enqueue", task, arrival=0)

    def operator(self, action: str, task: str, t: float, actor: str = "alice", notes: str | None = "why") -> None:
        info = self.tasks[task]
        state = info["state"]
        if action == "cancel":
            self._go(t, "cancelled", task, "CANCELLED", actor=actor, notes=notes)
        elif action == "replan":
            target = "PENDING" if state == "BLOCKED" else state
            if target == "PENDING":
                info["attempt"] = 0
            self._go(t, "replanned", task, target, actor=actor, notes=notes, budget=2.0)
        elif action == "retry":
            info["attempt"] = 0
            self._go(t, "retried", task, "PENDING", actor=actor, notes=notes)
        elif action == "done":
            self._go(t, "closed_done", task, "DONE", actor=actor, notes=notes)
        elif action == "fail":
            self._go(t, "closed_failed", task, "FAILED", actor=actor, notes=notes, error="operator", detail=notes)
        else:
            raise ValueError(action)

    def run_task(self, t: float, wait: float = 1.0, work: float = 2.0, key: str | None = None,
                 side_effect: bool = True) -> str:
        """enqueue at t, lease at t + wait, complete at t + wait + work."""
        task = self.enqueue(t, key)
        self.lease(task, t + wait)
        self.complete(task, t + wait + work, side_effect=side_effect)
        return task

    # --- run events -----------------------------------------------------------------------
    def fault(self, t: float, kind: str, task: str | None = None, worker: str | None = None,
              target: Any = None) -> None:
        self.ev(t, "fault_injected", task, worker=worker, kind=kind, target=target or task)

    def finish(self, t: float, verdict: str = "PASS") -> None:
        self.ev(t, "run_finished", None, verdict=verdict, reason="finished")

    # --- output ---------------------------------------------------------------------------
    def ordered(self) -> list[dict[str, Any]]:
        """The events in seq order (they are numbered as written; tests may write out of t order)."""
        return list(self.events)

    def lines(self) -> list[bytes]:
        return [orjson.dumps(self.header) + b"\n"] + [orjson.dumps(e) + b"\n" for e in self.events]

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(self.lines()))
        return path

    def aggregator(self):
        from orchestrator.judge.sli import Aggregator

        agg = Aggregator(copy.deepcopy(self.header))
        agg.feed_many(copy.deepcopy(self.events))
        return agg
